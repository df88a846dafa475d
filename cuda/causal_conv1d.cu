#include "cuda/block_reduce.cuh"
#include "cuda/causal_conv1d.h"
#include "cuda/common.cuh"

namespace coil::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kTile = 1024;  // time steps per block (8 per thread)
constexpr int kMaxW = 8;

// SiLU and the sigmoid with the fast divide (MUFU reciprocal + multiply, ~2
// ulp) instead of IEEE division's ~10-instruction sequence with its slow-path
// branch: the conv kernels do little else per element but move memory.
__device__ __forceinline__ float sigmoid_f(float v) { return __fdividef(1.f, 1.f + __expf(-v)); }
__device__ __forceinline__ float silu_f(float v) { return __fdividef(v, 1.f + __expf(-v)); }

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

// Final-state entry j of row bd: input len-(K-1)+j (from the initial state
// when len < K-1). Written by whichever thread holds the row's last inputs.
template <class T>
__device__ __forceinline__ void store_final(const ConvArgs& a, const T* x, const T* init, int64_t bd, int j) {
  const int64_t H = a.width - 1;
  static_cast<T*>(a.final_state)[bd * H + j] = store_as<T, float>(x_at(a, x, init, a.len - H + j));
}

// Channel d's taps and bias (K a template parameter: they stay in registers).
template <int K> __device__ __forceinline__ void load_taps(const ConvArgs& a, int64_t d, float (&w)[K], float& b) {
#pragma unroll
  for (int k = 0; k < K; ++k) w[k] = a.w[d * K + k];
  b = a.bias ? a.bias[d] : 0.f;
}

// The E outputs of a 16-byte vector from its window win = x(t0-K+1 .. t0+E-1).
template <class T, int K, int E>
__device__ __forceinline__ void conv_vector(const float (&win)[K - 1 + E], const float (&w)[K], float b, bool silu,
                                            T (&o)[E]) {
#pragma unroll
  for (int e = 0; e < E; ++e) {
    float acc = b;
#pragma unroll
    for (int k = 0; k < K; ++k) acc += w[k] * win[e + k];
    o[e] = store_as<T, float>(silu ? silu_f(acc) : acc);
  }
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
  if (a.final_state && blockIdx.y == gridDim.y - 1)
    for (int j = threadIdx.x; j < K - 1; j += blockDim.x) store_final(a, x, init, bd, j);
}

// Vectorised forward for the common case (len a multiple of the vector
// width, aligned rows, K-1 <= width). A block of NT threads covers NT*E*NV
// steps of one row: thread t holds vectors j < NV of E consecutive inputs at
// t0 = tile0 + (j*NT + t)*E (so each of the NV 16-byte loads is coalesced
// across the warp, and all NV are in flight before any is used). The K-1
// inputs before a vector come from the left neighbour by a warp shuffle,
// across warps through shared memory (thread 0's from the last thread's
// vector j-1, or at the tile's left edge from global memory). K is a
// template parameter so the window stays in registers.
template <class T, int K, int NT, int NV> __global__ void __launch_bounds__(NT) fwd_vec_kernel(ConvArgs a) {
  constexpr int E = 16 / sizeof(T);
  constexpr int H = K - 1;  // halo
  constexpr int HH = H > 0 ? H : 1;
  constexpr int NW = NT / 32;
  union Pack { uint4 u; T e[E]; };
  __shared__ float warp_tail[NV][NW][HH];
  const int64_t bd = blockIdx.x, d = bd % a.dim;
  const int64_t tile0 = int64_t(blockIdx.y) * (NT * E * NV);
  const T* x = x_row<T>(a, bd);
  const T* init = a.init_state ? static_cast<const T*>(a.init_state) + bd * H : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Pack p[NV];
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int64_t t0 = tile0 + (int64_t(j) * NT + threadIdx.x) * E;
    if (t0 < a.len)
      p[j].u = *reinterpret_cast<const uint4*>(x + t0);
    else
      p[j].u = make_uint4(0u, 0u, 0u, 0u);  // zero in every dtype
  }
  float w[K], b;
  load_taps<K>(a, d, w, b);
  float head[NV][HH];  // x(t0 - H .. t0 - 1) for each vector
  if constexpr (H > 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
#pragma unroll
      for (int h = 0; h < H; ++h) {
        const float v = load_as<float, T>(p[j].e[E - H + h]);
        if (lane == 31) warp_tail[j][warp][h] = v;
        head[j][h] = __shfl_up_sync(0xffffffffu, v, 1);
      }
    }
    __syncthreads();
    if (lane == 0) {
#pragma unroll
      for (int j = 0; j < NV; ++j)
#pragma unroll
        for (int h = 0; h < H; ++h)
          head[j][h] = warp > 0  ? warp_tail[j][warp - 1][h]
                       : j > 0   ? warp_tail[j - 1][NW - 1][h]
                                 : x_at(a, x, init, tile0 - H + h);  // the block's left edge
    }
  }
  T* out = static_cast<T*>(a.out) + bd * a.len;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int64_t t0 = tile0 + (int64_t(j) * NT + threadIdx.x) * E;
    if (t0 >= a.len) continue;
    float win[H + E];  // x(t0 - H .. t0 + E - 1)
#pragma unroll
    for (int h = 0; h < H; ++h) win[h] = head[j][h];
#pragma unroll
    for (int e = 0; e < E; ++e) win[H + e] = load_as<float, T>(p[j].e[e]);
    Pack o;
    conv_vector<T, K, E>(win, w, b, a.silu, o.e);
    *reinterpret_cast<uint4*>(out + t0) = o.u;
    if (a.final_state && t0 + E >= a.len)  // the thread holding the last inputs
      for (int q = 0; q < H; ++q) store_final(a, x, init, bd, q);
  }
}

// Four vectors per thread; 128 threads when a row has room for them, else
// 64 (B16 D1536 L2048 bf16: one 64-thread block per row).
constexpr int kFwdVecs = 4;

// Short rows (under half of a 64-thread tile: L < 1024 in bf16): the row
// kernel above would leave most of each block idle (at L 16, one thread of
// 64, and one block per row). Here each thread takes one 16-byte vector of
// any row and reads the K-1 inputs before it from global memory (its
// neighbour's vector, from L1/L2), so every block is full.
template <class T, int K> __global__ void __launch_bounds__(256) fwd_rows_kernel(ConvArgs a) {
  constexpr int E = 16 / sizeof(T);
  constexpr int H = K - 1;
  union Pack { uint4 u; T e[E]; };
  const int64_t vpr = a.len / E;  // vectors per row
  const int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (v >= a.batch * a.dim * vpr) return;
  const int64_t bd = v / vpr, d = bd % a.dim, t0 = (v - bd * vpr) * E;
  const T* x = x_row<T>(a, bd);
  const T* init = a.init_state ? static_cast<const T*>(a.init_state) + bd * H : nullptr;
  Pack p;
  p.u = *reinterpret_cast<const uint4*>(x + t0);
  float win[H + E];  // x(t0 - H .. t0 + E - 1)
#pragma unroll
  for (int h = 0; h < H; ++h) win[h] = x_at(a, x, init, t0 - H + h);
#pragma unroll
  for (int e = 0; e < E; ++e) win[H + e] = load_as<float, T>(p.e[e]);
  float w[K], b;
  load_taps<K>(a, d, w, b);
  Pack o;
  conv_vector<T, K, E>(win, w, b, a.silu, o.e);
  *reinterpret_cast<uint4*>(static_cast<T*>(a.out) + bd * a.len + t0) = o.u;
  if (a.final_state && t0 + E >= a.len)  // the thread holding the row's last inputs
    for (int q = 0; q < H; ++q) store_final(a, x, init, bd, q);
}

template <class T> bool fwd_vec(const ConvArgs& a, int device) {
  constexpr int E = 16 / sizeof(T);
  const bool aligned = (reinterpret_cast<uintptr_t>(a.x) % 16 == 0) && (reinterpret_cast<uintptr_t>(a.out) % 16 == 0) &&
                       a.x_sb % E == 0 && a.x_sd % E == 0;
  if (!aligned || a.len % E != 0 || a.width - 1 > E || a.len < E) return false;
  if (2 * a.len < int64_t(64) * E * kFwdVecs) {
    const int64_t vectors = a.batch * a.dim * (a.len / E);
    const unsigned blocks = unsigned((vectors + 255) / 256);
    auto launch_rows = [&](auto kern) {
      kern<<<blocks, 256, 0, stream_of(device)>>>(a);
      COIL_CUDA_LAUNCH_CHECK();
    };
    switch (a.width) {
      case 1: launch_rows(fwd_rows_kernel<T, 1>); return true;
      case 2: launch_rows(fwd_rows_kernel<T, 2>); return true;
      case 3: launch_rows(fwd_rows_kernel<T, 3>); return true;
      case 4: launch_rows(fwd_rows_kernel<T, 4>); return true;
      case 5:
        if constexpr (E >= 4) {
          launch_rows(fwd_rows_kernel<T, 5>);
          return true;
        }
        return false;
      default: return false;
    }
  }
  const bool wide = a.len >= int64_t(128) * E * kFwdVecs;
  const int64_t tile = int64_t(wide ? 128 : 64) * E * kFwdVecs;
  dim3 grid(unsigned(a.batch * a.dim), unsigned((a.len + tile - 1) / tile));
  auto launch = [&](auto k128, auto k64) {
    if (wide)
      k128<<<grid, 128, 0, stream_of(device)>>>(a);
    else
      k64<<<grid, 64, 0, stream_of(device)>>>(a);
    COIL_CUDA_LAUNCH_CHECK();
  };
  switch (a.width) {
    case 1: launch(fwd_vec_kernel<T, 1, 128, kFwdVecs>, fwd_vec_kernel<T, 1, 64, kFwdVecs>); return true;
    case 2: launch(fwd_vec_kernel<T, 2, 128, kFwdVecs>, fwd_vec_kernel<T, 2, 64, kFwdVecs>); return true;
    case 3: launch(fwd_vec_kernel<T, 3, 128, kFwdVecs>, fwd_vec_kernel<T, 3, 64, kFwdVecs>); return true;
    case 4: launch(fwd_vec_kernel<T, 4, 128, kFwdVecs>, fwd_vec_kernel<T, 4, 64, kFwdVecs>); return true;
    case 5:
      if constexpr (E >= 4) {
        launch(fwd_vec_kernel<T, 5, 128, kFwdVecs>, fwd_vec_kernel<T, 5, 64, kFwdVecs>);
        return true;
      }
      return false;
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
    float s = sigmoid_f(pre);
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
// per channel walks the sequence in tiles of kThreads*E*NV steps from the
// end. Thread t holds vectors j < NV of E inputs and E output gradients at
// s0 = tile0 + (j*kThreads + t)*E (16-byte loads, all 2*NV in flight before
// any is used), recomputes the pre-activation with the x halo from its left
// neighbour (as in the forward), forms g = dout * silu'(pre), takes the g
// halo (the next K-1 steps) from its right neighbour (across warps through
// shared memory; the last thread's from thread 0's vector j+1, or for the
// last vector from the tile done before), and writes E input gradients at once.
// At most 80 registers (6 blocks of 128 per SM; spill-free for f32 and bf16).
template <class T, int K, int NV> __global__ void __launch_bounds__(kThreads, 6) bwd_vec_kernel(ConvArgs a, ConvGrads gr) {
  constexpr int E = 16 / sizeof(T);
  constexpr int H = K - 1;
  constexpr int HH = H > 0 ? H : 1;
  constexpr int kWarps = kThreads / 32;
  union Pack { uint4 u; T e[E]; };
  __shared__ float x_tail[NV][kWarps][HH];  // each warp's last H inputs, per vector
  __shared__ float g_head[NV][kWarps][HH];  // each warp's first H g values, per vector
  __shared__ float g_carry[HH];             // g at the start of the tile done before
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
  const int64_t tile = int64_t(kThreads) * E * NV;
  const int64_t n_tiles = (a.len + tile - 1) / tile;
  for (int64_t ti = n_tiles - 1; ti >= 0; --ti) {
    const int64_t tile0 = ti * tile;
    Pack px[NV], pd[NV];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t s0 = tile0 + (int64_t(j) * kThreads + threadIdx.x) * E;
      if (s0 < a.len) {
        px[j].u = *reinterpret_cast<const uint4*>(x + s0);
        pd[j].u = *reinterpret_cast<const uint4*>(dout + s0);
      } else {
        px[j].u = make_uint4(0u, 0u, 0u, 0u);  // zero in every dtype: g is 0 past the end
        pd[j].u = make_uint4(0u, 0u, 0u, 0u);
      }
    }
    // x(s0 - H .. s0 - 1) for each vector.
    float xh[NV][HH];
    if constexpr (H > 0) {
#pragma unroll
      for (int j = 0; j < NV; ++j) {
#pragma unroll
        for (int h = 0; h < H; ++h) {
          const float v = load_as<float, T>(px[j].e[E - H + h]);
          if (lane == 31) x_tail[j][warp][h] = v;
          xh[j][h] = __shfl_up_sync(0xffffffffu, v, 1);
        }
      }
    }
    __syncthreads();
    if constexpr (H > 0) {
      if (lane == 0) {
#pragma unroll
        for (int j = 0; j < NV; ++j)
#pragma unroll
          for (int h = 0; h < H; ++h)
            xh[j][h] = warp > 0  ? x_tail[j][warp - 1][h]
                       : j > 0   ? x_tail[j - 1][kWarps - 1][h]
                                 : x_at(a, x, init, tile0 - H + h);  // the tile's left edge
      }
    }
    // g = dout * silu'(pre), 0 beyond the sequence (dout was loaded as 0).
    float gv[NV][E];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
#pragma unroll
      for (int e = 0; e < E; ++e) gv[j][e] = load_as<float, T>(pd[j].e[e]);
      if (a.silu) {
#pragma unroll
        for (int e = 0; e < E; ++e) {
          float pre = b;
#pragma unroll
          for (int k = 0; k < K; ++k) {
            const int q = e + k;  // index into x(s0 - H .. s0 + E - 1)
            pre += w[k] * (q < H ? xh[j][q < H ? q : 0] : load_as<float, T>(px[j].e[q >= H ? q - H : 0]));
          }
          const float sg = sigmoid_f(pre);
          gv[j][e] *= sg * (1.f + pre * (1.f - sg));
        }
      }
    }
    // g(s0 + E .. s0 + E + H - 1) for each vector, from the right neighbour.
    float gt[NV][HH];
    if constexpr (H > 0) {
#pragma unroll
      for (int j = 0; j < NV; ++j) {
#pragma unroll
        for (int h = 0; h < H; ++h) {
          if (lane == 0) g_head[j][warp][h] = gv[j][h];
          gt[j][h] = __shfl_down_sync(0xffffffffu, gv[j][h], 1);
        }
      }
    }
    __syncthreads();
    if constexpr (H > 0) {
      if (lane == 31) {
#pragma unroll
        for (int j = 0; j < NV; ++j)
#pragma unroll
          for (int h = 0; h < H; ++h)
            gt[j][h] = warp < kWarps - 1 ? g_head[j][warp + 1][h]
                       : j < NV - 1      ? g_head[j + 1 < NV ? j + 1 : 0][0][h]
                                         : g_carry[h];
      }
    }
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t s0 = tile0 + (int64_t(j) * kThreads + threadIdx.x) * E;
      if (s0 >= a.len) continue;
      Pack o;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int q = e + H - k;  // index into g(s0 .. s0 + E + H - 1)
          acc += w[k] * (q < E ? gv[j][q < E ? q : 0] : gt[j][q >= E ? q - E : 0]);
        }
        if (dfs) {
          const int64_t jf = s0 + e - (a.len - H);  // index into the final state
          if (jf >= 0) acc += load_as<float, T>(dfs[jf]);
        }
        o.e[e] = store_as<T, float>(acc);
        db += gv[j][e];
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int q = e + k;
          dw[k] += gv[j][e] * (q < H ? xh[j][q < H ? q : 0] : load_as<float, T>(px[j].e[q >= H ? q - H : 0]));
        }
      }
      *reinterpret_cast<uint4*>(dx + s0) = o.u;
    }
    __syncthreads();  // everyone has read g_carry and the halos
    if constexpr (H > 0) {
      if (threadIdx.x == 0)
#pragma unroll
        for (int h = 0; h < H; ++h) g_carry[h] = gv[0][h];
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
          float sg = sigmoid_f(pre);
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

// Two vectors per thread: at B16 D1536 L2048 bf16 a block does its row in
// one tile (one pass of loads, halos and barriers instead of two).
constexpr int kBwdVecs = 2;

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
    case 1: launch(bwd_vec_kernel<T, 1, kBwdVecs>); return true;
    case 2: launch(bwd_vec_kernel<T, 2, kBwdVecs>); return true;
    case 3: launch(bwd_vec_kernel<T, 3, kBwdVecs>); return true;
    case 4: launch(bwd_vec_kernel<T, 4, kBwdVecs>); return true;
    case 5: if constexpr (E >= 4) { launch(bwd_vec_kernel<T, 5, kBwdVecs>); return true; } return false;
    default: return false;
  }
}

// dw and dbias from the per-(batch, channel) partials: one thread per output
// value (channel d, tap k, or k == K for the bias), summing over the batch in
// order. One thread per value rather than per channel keeps (K+1) times more
// loads in flight.
__global__ void reduce_kernel(const float* part, int64_t batch, int64_t dim, int K, float* dw, float* dbias) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= dim * (K + 1)) return;
  const int64_t d = i / (K + 1);
  const int k = int(i % (K + 1));
  if (k == K && !dbias) return;
  const int idx = k == K ? kMaxW : k;
  float s = 0.f;
  for (int64_t b = 0; b < batch; ++b) s += part[(b * dim + d) * (kMaxW + 1) + idx];  // fixed order
  if (k < K)
    dw[d * K + k] = s;
  else
    dbias[d] = s;
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
  reduce_kernel<<<grid_for(a.dim * (a.width + 1), 128), 128, 0, stream_of(device)>>>(g.workspace, a.batch, a.dim, int(a.width), g.dw,
                                                                      g.dbias);
  COIL_CUDA_LAUNCH_CHECK();
}

}  // namespace coil::cuda
