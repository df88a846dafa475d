#include "cuda/block_reduce.cuh"
#include "cuda/causal_conv1d.h"
#include "cuda/common.cuh"

namespace coil::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kTile = 1024;  // time steps per block (8 per thread)
constexpr int kMaxW = 8;

__device__ __forceinline__ float silu_f(float v) { return v / (1.f + __expf(-v)); }

// Row bd = b * dim + d of x, through its strides.
template <class T> __device__ __forceinline__ const T* x_row(const ConvArgs& a, int64_t bd) {
  return static_cast<const T*>(a.x) + (bd / a.dim) * a.x_sb + (bd % a.dim) * a.x_sd;
}

// x at time t (t may be negative: then from the initial state, else 0).
template <class T> __device__ __forceinline__ float x_at(const ConvArgs& a, const T* x, const T* init, int64_t t) {
  if (t >= 0) return load_as<float, T>(x[t]);
  if (init) return load_as<float, T>(init[a.width - 1 + t]);
  return 0.f;
}

// Grid (tiles of time, batch*dim). Each block loads its tile plus the K-1
// step halo into shared memory once, then each thread computes its outputs.
template <class T> __global__ void fwd_kernel(ConvArgs a) {
  __shared__ float xs[kTile + kMaxW];
  const int64_t bd = blockIdx.x, d = bd % a.dim;
  const int64_t t0 = int64_t(blockIdx.y) * kTile;
  const int K = int(a.width);
  const T* x = x_row<T>(a, bd);
  const T* init = a.init_state ? static_cast<const T*>(a.init_state) + bd * (K - 1) : nullptr;
  for (int i = threadIdx.x; i < kTile + K - 1; i += blockDim.x) {
    int64_t t = t0 - (K - 1) + i;
    xs[i] = t < a.len ? x_at(a, x, init, t) : 0.f;
  }
  __syncthreads();
  float w[kMaxW];
#pragma unroll
  for (int k = 0; k < kMaxW; ++k) w[k] = k < K ? a.w[d * K + k] : 0.f;
  const float b = a.bias ? a.bias[d] : 0.f;
  T* out = static_cast<T*>(a.out) + bd * a.len;
  for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
    int64_t t = t0 + i;
    if (t >= a.len) break;
    float acc = b;
#pragma unroll
    for (int k = 0; k < kMaxW; ++k)
      if (k < K) acc += w[k] * xs[i + k];
    out[t] = store_as<T, float>(a.silu ? silu_f(acc) : acc);
  }
  // The last K-1 inputs (reaching into the initial state when len < K-1).
  if (a.final_state && blockIdx.y == gridDim.y - 1) {
    T* fs = static_cast<T*>(a.final_state) + bd * (K - 1);
    for (int j = threadIdx.x; j < K - 1; j += blockDim.x)
      fs[j] = store_as<T, float>(x_at(a, x, init, a.len - (K - 1) + j));
  }
}

// Vectorised forward for the common case (len a multiple of the vector
// width, aligned rows, K-1 <= width): each thread holds E consecutive inputs
// (one 16-byte load), gets the K-1 inputs before them from its left
// neighbour by a warp shuffle (across warps through shared memory), and
// writes E outputs with one 16-byte store. K is a template parameter so the
// window stays in registers.
template <class T, int K> __global__ void fwd_vec_kernel(ConvArgs a) {
  constexpr int E = 16 / sizeof(T);
  constexpr int H = K - 1;  // halo
  union Pack { uint4 u; T e[E]; };
  __shared__ float warp_tail[kThreads / 32][H > 0 ? H : 1];
  const int64_t bd = blockIdx.x, d = bd % a.dim;
  const int64_t t0 = (int64_t(blockIdx.y) * kThreads + threadIdx.x) * E;
  const T* x = x_row<T>(a, bd);
  const T* init = a.init_state ? static_cast<const T*>(a.init_state) + bd * H : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float xv[E];
  if (t0 < a.len) {
    Pack p;
    p.u = *reinterpret_cast<const uint4*>(x + t0);
#pragma unroll
    for (int j = 0; j < E; ++j) xv[j] = load_as<float, T>(p.e[j]);
  } else {
#pragma unroll
    for (int j = 0; j < E; ++j) xv[j] = 0.f;
  }
  float win[H + E];  // x(t0 - H .. t0 + E - 1)
#pragma unroll
  for (int j = 0; j < E; ++j) win[H + j] = xv[j];
  if constexpr (H > 0) {
    if (lane == 31)
#pragma unroll
      for (int j = 0; j < H; ++j) warp_tail[warp][j] = xv[E - H + j];
#pragma unroll
    for (int j = 0; j < H; ++j) win[j] = __shfl_up_sync(0xffffffffu, xv[E - H + j], 1);
    __syncthreads();
    if (lane == 0) {
      if (warp > 0) {
#pragma unroll
        for (int j = 0; j < H; ++j) win[j] = warp_tail[warp - 1][j];
      } else {
#pragma unroll
        for (int j = 0; j < H; ++j) win[j] = x_at(a, x, init, t0 - H + j);  // the block's left edge
      }
    }
  }
  if (t0 >= a.len) return;
  float w[K];
#pragma unroll
  for (int k = 0; k < K; ++k) w[k] = a.w[d * K + k];
  const float b = a.bias ? a.bias[d] : 0.f;
  Pack o;
#pragma unroll
  for (int j = 0; j < E; ++j) {
    float acc = b;
#pragma unroll
    for (int k = 0; k < K; ++k) acc += w[k] * win[j + k];
    o.e[j] = store_as<T, float>(a.silu ? silu_f(acc) : acc);
  }
  *reinterpret_cast<uint4*>(static_cast<T*>(a.out) + bd * a.len + t0) = o.u;
  if (a.final_state && t0 + E >= a.len) {  // the thread holding the last inputs
    T* fs = static_cast<T*>(a.final_state) + bd * H;
    for (int j = 0; j < H; ++j) fs[j] = store_as<T, float>(x_at(a, x, init, a.len - H + j));
  }
}

template <class T> bool fwd_vec(const ConvArgs& a, int device) {
  constexpr int E = 16 / sizeof(T);
  const bool aligned = (reinterpret_cast<uintptr_t>(a.x) % 16 == 0) && (reinterpret_cast<uintptr_t>(a.out) % 16 == 0) &&
                       a.x_sb % E == 0 && a.x_sd % E == 0;
  if (!aligned || a.len % E != 0 || a.width - 1 > E || a.len < E) return false;
  dim3 grid(unsigned(a.batch * a.dim), unsigned((a.len + int64_t(kThreads) * E - 1) / (int64_t(kThreads) * E)));
  auto launch = [&](auto kern) {
    kern<<<grid, kThreads, 0, stream_of(device)>>>(a);
    COIL_CUDA_LAUNCH_CHECK();
  };
  switch (a.width) {
    case 1: launch(fwd_vec_kernel<T, 1>); return true;
    case 2: launch(fwd_vec_kernel<T, 2>); return true;
    case 3: launch(fwd_vec_kernel<T, 3>); return true;
    case 4: launch(fwd_vec_kernel<T, 4>); return true;
    case 5: if constexpr (E >= 4) { launch(fwd_vec_kernel<T, 5>); return true; } return false;
    default: return false;
  }
}

// Backward, one block per (batch, channel) walking the sequence in tiles.
// g(t) = dout(t) * silu'(pre(t)) is recomputed from x into shared memory for
// the tile plus K-1 steps ahead; dx(t) = sum_k w[k] g(t + K-1-k), plus the
// final-state gradient on the last K-1 inputs. dw, dbias: per-block sums in a
// fixed order, written as partials; dinit: taps that read the initial state.
template <class T> __global__ void bwd_kernel(ConvArgs a, ConvGrads gr) {
  __shared__ float xs[kTile + 2 * kMaxW];
  __shared__ float gs[kTile + kMaxW];
  __shared__ float scratch[32];
  const int64_t bd = blockIdx.x, d = bd % a.dim;
  const int K = int(a.width);
  const T* x = x_row<T>(a, bd);
  const T* init = a.init_state ? static_cast<const T*>(a.init_state) + bd * (K - 1) : nullptr;
  const T* dout = static_cast<const T*>(gr.dout) + bd * a.len;
  const T* dfs = gr.dfinal_state ? static_cast<const T*>(gr.dfinal_state) + bd * (K - 1) : nullptr;
  T* dx = static_cast<T*>(gr.dx) + bd * a.len;
  float w[kMaxW];
#pragma unroll
  for (int k = 0; k < kMaxW; ++k) w[k] = k < K ? a.w[d * K + k] : 0.f;
  const float b = a.bias ? a.bias[d] : 0.f;
  float dw[kMaxW] = {};
  float db = 0.f;

  // g at time t (0 outside [0, len)).
  auto g_at = [&](int64_t t, const float* xwin /* x(t-K+1..t) */) {
    if (t < 0 || t >= a.len) return 0.f;
    float go = load_as<float, T>(dout[t]);
    if (!a.silu) return go;
    float pre = b;
    for (int k = 0; k < K; ++k) pre += w[k] * xwin[k];
    float s = 1.f / (1.f + __expf(-pre));
    return go * s * (1.f + pre * (1.f - s));
  };

  for (int64_t t0 = 0; t0 < a.len; t0 += kTile) {
    // xs[i] = x(t0 - (K-1) + i) for i in [0, kTile + 2(K-1)): enough to
    // recompute g up to t0 + kTile + K - 2.
    for (int i = threadIdx.x; i < kTile + 2 * (K - 1); i += blockDim.x) {
      int64_t t = t0 - (K - 1) + i;
      xs[i] = t < a.len ? x_at(a, x, init, t) : 0.f;
    }
    __syncthreads();
    // gs[i] = g(t0 + i) for i in [0, kTile + K - 1).
    for (int i = threadIdx.x; i < kTile + K - 1; i += blockDim.x) gs[i] = g_at(t0 + i, &xs[i]);
    __syncthreads();
    for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
      int64_t t = t0 + i;
      if (t >= a.len) break;
      float acc = 0.f;
      for (int k = 0; k < K; ++k) acc += w[k] * gs[i + K - 1 - k];
      if (dfs) {
        int64_t j = t - (a.len - (K - 1));  // index into the final state
        if (j >= 0) acc += load_as<float, T>(dfs[j]);
      }
      dx[t] = store_as<T, float>(acc);
      float gt = gs[i];
      db += gt;
      for (int k = 0; k < K; ++k) dw[k] += gt * xs[i + k];
    }
    __syncthreads();
  }
  // Fixed-order block sums of the weight and bias gradients.
  float* part = gr.workspace + bd * (kMaxW + 1);
  for (int k = 0; k < K; ++k) {
    float s = block_sum(dw[k], scratch);
    if (threadIdx.x == 0) part[k] = s;
  }
  float s = block_sum(db, scratch);
  if (threadIdx.x == 0) part[kMaxW] = s;

  // Initial-state gradient: x(j - (K-1)) for j in [0, K-1) feeds outputs
  // t = j - k for k <= j (when t < len), and the final state when len < K-1.
  if (gr.dinit_state && threadIdx.x == 0) {
    T* di = static_cast<T*>(gr.dinit_state) + bd * (K - 1);
    for (int j = 0; j < K - 1; ++j) {
      float acc = 0.f;
      for (int k = 0; k <= j; ++k) {
        int64_t t = j - k;
        if (t >= a.len) continue;
        // recompute g(t): x window is x(t-K+1..t)
        float xwin[kMaxW];
        for (int q = 0; q < K; ++q) xwin[q] = x_at(a, x, init, t - (K - 1) + q);
        acc += w[k] * g_at(t, xwin);  // tap k of output t = j - k reads this input
      }
      if (dfs) {
        int64_t jf = (j - (K - 1)) - (a.len - (K - 1));  // time j-(K-1) as a final-state index
        if (jf >= 0 && jf < K - 1) acc += load_as<float, T>(dfs[jf]);
      }
      di[j] = store_as<T, float>(acc);
    }
  }
}

// Vectorised backward (same conditions as the vectorised forward). One block
// per channel walks the tiles from the end: each thread holds E inputs and
// E output gradients (16-byte loads), recomputes the pre-activation with the
// x halo from its left neighbour, forms g = dout * silu'(pre), takes the g
// halo (the next K-1 steps) from its right neighbour, or for the last thread
// from the tile done just before, and writes E input gradients at once.
template <class T, int K> __global__ void bwd_vec_kernel(ConvArgs a, ConvGrads gr) {
  constexpr int E = 16 / sizeof(T);
  constexpr int H = K - 1;
  constexpr int HH = H > 0 ? H : 1;
  constexpr int kWarps = kThreads / 32;
  union Pack { uint4 u; T e[E]; };
  __shared__ float x_tail[kWarps][HH];  // each warp's last H inputs
  __shared__ float g_head[kWarps][HH];  // each warp's first H g values
  __shared__ float g_carry[HH];         // g at the start of the tile done before
  __shared__ float scratch[32];
  const int64_t bd = blockIdx.x, d = bd % a.dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* x = x_row<T>(a, bd);
  const T* init = a.init_state ? static_cast<const T*>(a.init_state) + bd * H : nullptr;
  const T* dout = static_cast<const T*>(gr.dout) + bd * a.len;
  const T* dfs = gr.dfinal_state ? static_cast<const T*>(gr.dfinal_state) + bd * H : nullptr;
  T* dx = static_cast<T*>(gr.dx) + bd * a.len;
  float w[K];
#pragma unroll
  for (int k = 0; k < K; ++k) w[k] = a.w[d * K + k];
  const float b = a.bias ? a.bias[d] : 0.f;
  float dw[K];
#pragma unroll
  for (int k = 0; k < K; ++k) dw[k] = 0.f;
  float db = 0.f;
  if (threadIdx.x < HH) g_carry[threadIdx.x] = 0.f;  // nothing after the sequence
  const int64_t tile = int64_t(kThreads) * E;
  const int64_t n_tiles = (a.len + tile - 1) / tile;
  for (int64_t ti = n_tiles - 1; ti >= 0; --ti) {
    const int64_t s0 = ti * tile + int64_t(threadIdx.x) * E;
    const bool active = s0 < a.len;
    float xv[E], gv[E];
    if (active) {
      Pack px, pd;
      px.u = *reinterpret_cast<const uint4*>(x + s0);
      pd.u = *reinterpret_cast<const uint4*>(dout + s0);
#pragma unroll
      for (int j = 0; j < E; ++j) xv[j] = load_as<float, T>(px.e[j]), gv[j] = load_as<float, T>(pd.e[j]);
    } else {
#pragma unroll
      for (int j = 0; j < E; ++j) xv[j] = 0.f, gv[j] = 0.f;
    }
    // x(s0 - H .. s0 + E - 1)
    float xw[H + E];
#pragma unroll
    for (int j = 0; j < E; ++j) xw[H + j] = xv[j];
    if constexpr (H > 0) {
      if (lane == 31)
#pragma unroll
        for (int j = 0; j < H; ++j) x_tail[warp][j] = xv[E - H + j];
#pragma unroll
      for (int j = 0; j < H; ++j) xw[j] = __shfl_up_sync(0xffffffffu, xv[E - H + j], 1);
    }
    __syncthreads();
    if constexpr (H > 0) {
      if (lane == 0) {
#pragma unroll
        for (int j = 0; j < H; ++j) xw[j] = warp > 0 ? x_tail[warp - 1][j] : x_at(a, x, init, s0 - H + j);
      }
    }
    // g = dout * silu'(pre), 0 beyond the sequence (dout was loaded as 0).
    if (a.silu) {
#pragma unroll
      for (int j = 0; j < E; ++j) {
        float pre = b;
#pragma unroll
        for (int k = 0; k < K; ++k) pre += w[k] * xw[j + k];
        float sg = 1.f / (1.f + __expf(-pre));
        gv[j] *= sg * (1.f + pre * (1.f - sg));
      }
    }
    // g(s0 .. s0 + E + H - 1): the next H from the right neighbour.
    float gw[E + H];
#pragma unroll
    for (int j = 0; j < E; ++j) gw[j] = gv[j];
    if constexpr (H > 0) {
      if (lane == 0)
#pragma unroll
        for (int j = 0; j < H; ++j) g_head[warp][j] = gv[j];
#pragma unroll
      for (int j = 0; j < H; ++j) gw[E + j] = __shfl_down_sync(0xffffffffu, gv[j], 1);
    }
    __syncthreads();
    if constexpr (H > 0) {
      if (lane == 31) {
#pragma unroll
        for (int j = 0; j < H; ++j) gw[E + j] = warp < kWarps - 1 ? g_head[warp + 1][j] : g_carry[j];
      }
    }
    if (active) {
      Pack o;
#pragma unroll
      for (int j = 0; j < E; ++j) {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < K; ++k) acc += w[k] * gw[j + H - k];
        if (dfs) {
          const int64_t jf = s0 + j - (a.len - H);  // index into the final state
          if (jf >= 0) acc += load_as<float, T>(dfs[jf]);
        }
        o.e[j] = store_as<T, float>(acc);
        db += gv[j];
#pragma unroll
        for (int k = 0; k < K; ++k) dw[k] += gv[j] * xw[j + k];
      }
      *reinterpret_cast<uint4*>(dx + s0) = o.u;
    }
    __syncthreads();  // everyone has read g_carry and the halos
    if constexpr (H > 0) {
      if (threadIdx.x == 0)
#pragma unroll
        for (int j = 0; j < H; ++j) g_carry[j] = gv[j];
    }
    __syncthreads();
  }
  float* part = gr.workspace + bd * (kMaxW + 1);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    float sum = block_sum(dw[k], scratch);
    if (threadIdx.x == 0) part[k] = sum;
  }
  float sb = block_sum(db, scratch);
  if (threadIdx.x == 0) part[kMaxW] = sb;
  // Initial-state gradient (K-1 values per channel): as in the scalar kernel.
  if (gr.dinit_state && threadIdx.x == 0) {
    T* di = static_cast<T*>(gr.dinit_state) + bd * H;
    for (int j = 0; j < H; ++j) {
      float acc = 0.f;
      for (int k = 0; k <= j; ++k) {
        const int64_t t = j - k;
        if (t >= a.len) continue;
        float pre = b;
        for (int q = 0; q < K; ++q) pre += w[q] * x_at(a, x, init, t - H + q);
        float go = load_as<float, T>(dout[t]);
        if (a.silu) {
          float sg = 1.f / (1.f + __expf(-pre));
          go *= sg * (1.f + pre * (1.f - sg));
        }
        acc += w[k] * go;
      }
      if (dfs) {
        const int64_t jf = j - a.len;
        if (jf >= 0 && jf < H) acc += load_as<float, T>(dfs[jf]);
      }
      di[j] = store_as<T, float>(acc);
    }
  }
}

template <class T> bool bwd_vec(const ConvArgs& a, const ConvGrads& g, int device) {
  constexpr int E = 16 / sizeof(T);
  auto al = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!al(a.x) || !al(g.dout) || !al(g.dx) || a.len % E != 0 || a.width - 1 > E || a.len < E) return false;
  if (a.x_sb % E != 0 || a.x_sd % E != 0) return false;
  auto launch = [&](auto kern) {
    kern<<<unsigned(a.batch * a.dim), kThreads, 0, stream_of(device)>>>(a, g);
    COIL_CUDA_LAUNCH_CHECK();
  };
  switch (a.width) {
    case 1: launch(bwd_vec_kernel<T, 1>); return true;
    case 2: launch(bwd_vec_kernel<T, 2>); return true;
    case 3: launch(bwd_vec_kernel<T, 3>); return true;
    case 4: launch(bwd_vec_kernel<T, 4>); return true;
    case 5: if constexpr (E >= 4) { launch(bwd_vec_kernel<T, 5>); return true; } return false;
    default: return false;
  }
}

__global__ void reduce_kernel(const float* part, int64_t batch, int64_t dim, int K, float* dw, float* dbias) {
  int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= dim) return;
  for (int k = 0; k <= K; ++k) {
    int idx = k == K ? kMaxW : k;
    float s = 0.f;
    for (int64_t b = 0; b < batch; ++b) s += part[(b * dim + d) * (kMaxW + 1) + idx];  // fixed order
    if (k < K)
      dw[d * K + k] = s;
    else if (dbias)
      dbias[d] = s;
  }
}

template <class Fn> void by_act(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(type_tag<float>{});
    case DType::bf16: return fn(type_tag<bf16>{});
    case DType::f16: return fn(type_tag<f16>{});
    default: fail(detail::cat("cuda causal_conv1d: x must be f32, bf16 or f16, got ", dtype_name(t)));
  }
}

// x's strides with the contiguous default filled in.
ConvArgs resolved(const ConvArgs& in) {
  ConvArgs a = in;
  if (a.x_sb == 0 && a.x_sd == 0) a.x_sb = a.dim * a.len, a.x_sd = a.len;
  return a;
}

}  // namespace

void causal_conv1d_fwd(const ConvArgs& args, int device) {
  const ConvArgs a = resolved(args);
  COIL_CHECK(a.width >= 1 && a.width <= kMaxW, "cuda causal_conv1d: width must be 1..", kMaxW, ", got ", a.width);
  COIL_CHECK(a.batch * a.dim < (int64_t(1) << 31) && (a.len + kTile - 1) / kTile <= 65535,
             "cuda causal_conv1d: batch*dim ", a.batch * a.dim, " or len ", a.len, " too large");
  if (a.batch * a.dim == 0) return;
  if (a.len == 0) {
    COIL_CHECK(a.final_state == nullptr || a.width == 1, "cuda causal_conv1d: len 0 with a final state");
    return;
  }
  by_act(a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (fwd_vec<T>(a, device)) return;
    dim3 grid(unsigned(a.batch * a.dim), unsigned((a.len + kTile - 1) / kTile));
    fwd_kernel<T><<<grid, kThreads, 0, stream_of(device)>>>(a);
    COIL_CUDA_LAUNCH_CHECK();
  });
}

size_t conv_bwd_workspace(const ConvArgs& a) { return size_t(a.batch * a.dim) * (kMaxW + 1); }

void causal_conv1d_bwd(const ConvArgs& args, const ConvGrads& g, int device) {
  const ConvArgs a = resolved(args);
  COIL_CHECK(a.width >= 1 && a.width <= kMaxW, "cuda causal_conv1d: width must be 1..", kMaxW, ", got ", a.width);
  if (a.batch * a.dim == 0) return;
  by_act(a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (!bwd_vec<T>(a, g, device)) {
      bwd_kernel<T><<<unsigned(a.batch * a.dim), kThreads, 0, stream_of(device)>>>(a, g);
      COIL_CUDA_LAUNCH_CHECK();
    }
  });
  reduce_kernel<<<grid_for(a.dim, 128), 128, 0, stream_of(device)>>>(g.workspace, a.batch, a.dim, int(a.width), g.dw,
                                                                      g.dbias);
  COIL_CUDA_LAUNCH_CHECK();
}

}  // namespace coil::cuda
