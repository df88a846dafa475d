#include "cuda/block_reduce.cuh"
#include "cuda/common.cuh"
#include "cuda/mamba_step.h"
#include "cuda/mamba_step_common.cuh"
#include "cuda/pdl.cuh"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace coil::cuda {

namespace {

// The conv step of one (b, c): the K-1 state entries of a channel are
// contiguous, so one thread reads, convolves and shifts them alone.
template <class T>
__device__ __forceinline__ void conv_one(const ConvStepArgs& a, int64_t b, int64_t c, T xt) {
  const int64_t km1 = a.width - 1;
  T* s = static_cast<T*>(a.state) + (b * a.dim + c) * km1;
  const float* w = a.w + c * a.width;
  float acc = a.bias ? a.bias[c] : 0.f;
  for (int64_t k = 0; k < km1; ++k) acc += w[k] * load_as<float, T>(s[k]);
  acc += w[km1] * load_as<float, T>(xt);
  for (int64_t k = 0; k + 1 < km1; ++k) s[k] = s[k + 1];
  if (km1 > 0) s[km1 - 1] = xt;
  static_cast<T*>(a.out)[b * a.dim + c] = store_as<T, float>(a.silu ? silu_f(acc) : acc);
}

// conv_one for batch row 0 split in two: the state, weights and bias of
// channel c loaded ahead (width <= 4; before the PDL wait: no kernel of the
// step writes them before this one), then the same arithmetic in the same
// order once x arrives.
struct ConvPre {
  float s[3], w[4], bias;
};
template <class T>
__device__ __forceinline__ void conv_preload(const ConvStepArgs& a, int64_t c, ConvPre& p) {
  const int km1 = int(a.width) - 1;
  const T* s = static_cast<const T*>(a.state) + c * km1;
#pragma unroll
  for (int k = 0; k < 3; ++k) p.s[k] = k < km1 ? load_as<float, T>(ld_cg(s + k)) : 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) p.w[k] = k <= km1 ? a.w[c * a.width + k] : 0.f;
  p.bias = a.bias ? a.bias[c] : 0.f;
}
template <class T>
__device__ __forceinline__ void conv_finish(const ConvStepArgs& a, int64_t c, T xt, const ConvPre& p) {
  const int km1 = int(a.width) - 1;
  T* s = static_cast<T*>(a.state) + c * km1;
  float acc = p.bias;
#pragma unroll
  for (int k = 0; k < 3; ++k)
    if (k < km1) acc += p.w[k] * p.s[k];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k == km1) acc += p.w[k] * load_as<float, T>(xt);
#pragma unroll
  for (int k = 0; k < 2; ++k)
    if (k + 1 < km1) s[k] = store_as<T, float>(p.s[k + 1]);
  if (km1 > 0) s[km1 - 1] = xt;
  static_cast<T*>(a.out)[c] = store_as<T, float>(a.silu ? silu_f(acc) : acc);
}

// One thread per (b, c).
template <class T>
__global__ void conv_step_kernel(ConvStepArgs a) {
  const int64_t n = a.batch * a.dim;
  {
    // The first item's state and taps into L2 while the previous kernel
    // drains: the state's only writer is this kernel at the previous token,
    // the taps are parameters.
    // One prefetch a line: by the thread whose item starts in it.
    const int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t sb = (a.width - 1) * int64_t(sizeof(T)), wb = a.width * int64_t(sizeof(float));
    if (i0 < n && sb > 0 && (i0 * sb) % 128 < sb) prefetch_l2(static_cast<const T*>(a.state) + i0 * (a.width - 1));
    if (i0 < n && ((i0 % a.dim) * wb) % 128 < wb) prefetch_l2(a.w + (i0 % a.dim) * a.width);
  }
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / a.dim, c = i - b * a.dim;
    conv_one<T>(a, b, c, static_cast<const T*>(a.x)[b * a.x_row + c]);
  }
}

template <class T, int G>
__global__ void ssm_step_kernel(SsmStepArgs a) {
  const int64_t n = a.batch * a.dim;
  const T* x = static_cast<const T*>(a.x);
  const T* dt_in = static_cast<const T*>(a.dt_in);
  const T* dt_w = static_cast<const T*>(a.dt_w);
  const T* Bm = static_cast<const T*>(a.B);
  const T* Cm = static_cast<const T*>(a.C);
  const T* z = static_cast<const T*>(a.z);
  const int j = threadIdx.x % G;
  constexpr int kGroupsPerWarp = 32 / G;
  const int64_t groups_per_block = blockDim.x / G;
  {
    // While the previous kernel (x_proj) drains: pull the first channel's
    // state row, A row and dt_proj row into L2. Only a cache hint (the L2
    // is the point of coherence), and none of these is written by the
    // kernels this one waits for.
    const int64_t i0 = int64_t(blockIdx.x) * groups_per_block + threadIdx.x / G;
    if (j == 0 && i0 < n) {
      const int64_t d0 = i0 % a.dim;
      prefetch_l2(a.state + i0 * a.dstate);
      prefetch_l2(a.A + d0 * a.dstate);
      if (dt_w) prefetch_l2(dt_w + d0 * a.dt_rank);
    }
  }
  pdl_wait();
  pdl_trigger();
  // The loop runs per warp (its first group's index decides), so every lane
  // of a warp reaches each full-mask shuffle; groups past the end compute
  // on a clamped index and store nothing.
  for (int64_t iw = int64_t(blockIdx.x) * groups_per_block + (threadIdx.x / 32) * kGroupsPerWarp; iw < n;
       iw += int64_t(gridDim.x) * groups_per_block) {
    const int64_t iv = iw + (threadIdx.x % 32) / G;
    const bool live = iv < n;
    const int64_t i = live ? iv : n - 1;
    const int64_t b = i / a.dim, d = i - b * a.dim;
    const float xv = load_as<float, T>(x[b * a.x_row + d]);
    float dt = 0.f;
    if (dt_w) {
      const T* wr = dt_w + d * a.dt_rank;
      const T* ir = dt_in + b * a.dt_row;
      for (int64_t r = j; r < a.dt_rank; r += G) dt += load_as<float, T>(wr[r]) * load_as<float, T>(ir[r]);
      dt = group_sum<G>(dt);
    } else {
      dt = load_as<float, T>(dt_in[b * a.dt_row + d]);
    }
    if (a.dt_bias) dt += a.dt_bias[d];
    if (a.softplus) dt = step_softplus(dt);
    const float dtx = dt * xv;
    float* h = a.state + i * a.dstate;
    const float* Ad = a.A + d * a.dstate;
    const T* Bb = Bm + b * a.B_row;
    const T* Cb = Cm + b * a.C_row;
    float y = 0.f;
    for (int64_t k = j; k < a.dstate; k += G) {
      // Dead lanes neither read nor write the state (the last live channel's).
      const float hv = expf(dt * Ad[k]) * (live ? h[k] : 0.f) + dtx * load_as<float, T>(Bb[k]);
      if (live) h[k] = hv;
      y += load_as<float, T>(Cb[k]) * hv;
    }
    y = group_sum<G>(y);
    if (live && j == 0) {
      if (a.D) y += a.D[d] * xv;
      if (z) y *= silu_f(load_as<float, T>(z[b * a.z_row + d]));
      static_cast<T*>(a.out)[i] = store_as<T, float>(y);
    }
  }
}

// The same step with G = dstate/4 lanes per (b, d), lane j owning states
// 4j..4j+3: its state, A, B and C are one vector load each, and every load
// the lane needs (state, B, C, x, z and its dt_proj terms) is issued before
// any arithmetic waits on one, so a step costs about one memory round trip
// after the wait (the G-lane kernel above chains three). The parameters
// (A, D, dt bias) are read before the wait: no kernel of the step writes
// them. The grid covers every (b, d) once.
template <class T, int G>
__global__ void ssm_step_vec_kernel(SsmStepArgs a, bool dt_vec) {
  const int64_t n = a.batch * a.dim;
  const int j = threadIdx.x % G;
  const int64_t iv = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;
  const bool live = iv < n;
  const int64_t i = live ? iv : n - 1;  // dead lanes compute on the last channel and store nothing
  const int64_t b = i / a.dim, d = i - b * a.dim;
  const float4 A4 = *reinterpret_cast<const float4*>(a.A + d * a.dstate + 4 * j);
  const float Dd = a.D ? a.D[d] : 0.f, bias = a.dt_bias ? a.dt_bias[d] : 0.f;
  const T* dt_w = static_cast<const T*>(a.dt_w);
  if (dt_w && j == 0) prefetch_l2(dt_w + d * a.dt_rank);
  // The lane's state vector into L2 while the previous kernel drains (a
  // hint, as pdl.cuh allows before the wait): the state load after it is
  // then an L2 hit for the blocks resident early.
  prefetch_l2(a.state + i * a.dstate + 4 * j);
  pdl_wait();
  pdl_trigger();
  float* hp = a.state + i * a.dstate + 4 * j;
  const float4 h4 = *reinterpret_cast<const float4*>(hp);
  float Bv[4], Cv[4];
  load4<T>(static_cast<const T*>(a.B) + b * a.B_row + 4 * j, Bv);
  load4<T>(static_cast<const T*>(a.C) + b * a.C_row + 4 * j, Cv);
  const float xv = load_as<float, T>(static_cast<const T*>(a.x)[b * a.x_row + d]);
  const T* z = static_cast<const T*>(a.z);
  const float zv = z ? load_as<float, T>(z[b * a.z_row + d]) : 0.f;
  const T* dt_in = static_cast<const T*>(a.dt_in);
  float dt = 0.f;
  if (dt_w) {
    const T* wr = dt_w + d * a.dt_rank;
    const T* ir = dt_in + b * a.dt_row;
    if (dt_vec) {
      // Lane j takes the contiguous run [j*R/G, (j+1)*R/G) (a multiple of 4
      // terms, 4-element aligned): one 8- or 16-byte load per 4 terms of
      // each operand (dt_rank 48 at G 4: 3 + 3 loads instead of 24).
      const int64_t per = a.dt_rank / G, r0 = j * per;
      for (int64_t r = r0; r < r0 + per; r += 4) {
        float wv[4], xi[4];
        load4<T>(wr + r, wv);
        load4<T>(ir + r, xi);
#pragma unroll
        for (int q = 0; q < 4; ++q) dt += wv[q] * xi[q];
      }
    } else {
      // Four terms per round, loads first.
      int64_t r = j;
      for (; r + 3 * G < a.dt_rank; r += 4 * G) {
        float wv[4], xi[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) wv[q] = load_as<float, T>(wr[r + q * G]), xi[q] = load_as<float, T>(ir[r + q * G]);
#pragma unroll
        for (int q = 0; q < 4; ++q) dt += wv[q] * xi[q];
      }
      for (; r < a.dt_rank; r += G) dt += load_as<float, T>(wr[r]) * load_as<float, T>(ir[r]);
    }
    dt = group_sum<G>(dt);
  } else {
    dt = load_as<float, T>(dt_in[b * a.dt_row + d]);
  }
  dt += bias;
  if (a.softplus) dt = step_softplus(dt);
  const float dtx = dt * xv;
  const float Av[4] = {A4.x, A4.y, A4.z, A4.w}, hv[4] = {h4.x, h4.y, h4.z, h4.w};
  float hn[4], y = 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    hn[k] = expf(dt * Av[k]) * hv[k] + dtx * Bv[k];
    y += Cv[k] * hn[k];
  }
  if (live) *reinterpret_cast<float4*>(hp) = make_float4(hn[0], hn[1], hn[2], hn[3]);
  y = group_sum<G>(y);
  if (live && j == 0) {
    y += Dd * xv;
    if (z) y *= silu_f(zv);
    static_cast<T*>(a.out)[i] = store_as<T, float>(y);
  }
}

// (value, index) pairs: larger value wins, then the lower index.
__device__ __forceinline__ bool better(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

constexpr int kArgmaxThreads = 1024;

template <class T> struct Argmax {
  float v = -INFINITY;
  int64_t i = INT64_MAX;
  __device__ __forceinline__ void see(T t, int64_t j) {
    float f = load_as<float, T>(t);
    if (f != f) f = -INFINITY;
    if (better(f, j, v, i)) {
      v = f;
      i = j;
    }
  }
};

// One block per row (a decode step has few rows, so a block is wide and
// keeps four 16-byte loads in flight per thread: a single block can then
// pull a 50k-entry row at a good fraction of the bandwidth), then a
// warp-shuffle and shared-memory reduction. Vec: 16-byte aligned rows.
template <class T, class I, bool Vec>
__global__ void argmax_kernel(const T* x, int64_t limit, int64_t x_row, I* out) {
  pdl_wait();
  pdl_trigger();
  const T* row = x + int64_t(blockIdx.x) * x_row;
  const int64_t nt = blockDim.x;
  Argmax<T> best;
  int64_t tail = 0;
  if constexpr (Vec) {
    constexpr int E = 16 / int(sizeof(T));
    union Pack {
      uint4 v;
      T e[E];
    };
    const uint4* rv = reinterpret_cast<const uint4*>(row);
    const int64_t nv = limit / E;
    int64_t v = threadIdx.x;
    for (; v + 3 * nt < nv; v += 4 * nt) {
      Pack p[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) p[q].v = rv[v + q * nt];
#pragma unroll
      for (int q = 0; q < 4; ++q)
#pragma unroll
        for (int e = 0; e < E; ++e) best.see(p[q].e[e], (v + q * nt) * E + e);
    }
    for (; v < nv; v += nt) {
      Pack p;
      p.v = rv[v];
#pragma unroll
      for (int e = 0; e < E; ++e) best.see(p.e[e], v * E + e);
    }
    tail = nv * E;
  }
  for (int64_t j = tail + threadIdx.x; j < limit; j += nt) best.see(row[j], j);
  float bv = best.v;
  int64_t bi = best.i;
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_down_sync(0xffffffffu, bv, off);
    const int64_t oi = __shfl_down_sync(0xffffffffu, bi, off);
    if (better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  __shared__ float sv[kArgmaxThreads / 32];
  __shared__ int64_t si[kArgmaxThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w)
      if (better(sv[w], si[w], bv, bi)) {
        bv = sv[w];
        bi = si[w];
      }
    out[blockIdx.x] = I(bi == INT64_MAX ? 0 : bi);
  }
}

constexpr int kGemvThreads = 256;
constexpr int kGemvMax = int(kGemvMaxRows);

// Loads, stores and roundings through a dtype known at run time (the norm
// prologue's few values per block; f32, bf16 or f16).
__device__ __forceinline__ float round_dyn(float v, DType t) {
  if (t == DType::bf16) return load_as<float, bf16>(store_as<bf16, float>(v));
  if (t == DType::f16) return load_as<float, f16>(store_as<f16, float>(v));
  return v;
}
__device__ __forceinline__ void store_dyn(void* p, DType t, int64_t i, float v) {
  if (t == DType::bf16)
    static_cast<bf16*>(p)[i] = store_as<bf16, float>(v);
  else if (t == DType::f16)
    static_cast<f16*>(p)[i] = store_as<f16, float>(v);
  else
    static_cast<float*>(p)[i] = v;
}

// n values p[idx[0..n)] of a run-time dtype into v (n <= kNormPer): the
// dtype switch sits outside the loop, so the loads issue back to back.
constexpr int kNormPer = 4;  // values per thread and round: K 768-1024 over 256 threads in one round
__device__ __forceinline__ void load_dyn_n(const void* p, DType t, const int64_t* idx, int n, float* v) {
  if (t == DType::bf16) {
#pragma unroll
    for (int j = 0; j < kNormPer; ++j)
      if (j < n) v[j] = load_as<float, bf16>(static_cast<const bf16*>(p)[idx[j]]);
  } else if (t == DType::f16) {
#pragma unroll
    for (int j = 0; j < kNormPer; ++j)
      if (j < n) v[j] = load_as<float, f16>(static_cast<const f16*>(p)[idx[j]]);
  } else {
#pragma unroll
    for (int j = 0; j < kNormPer; ++j)
      if (j < n) v[j] = static_cast<const float*>(p)[idx[j]];
  }
}

// One row of the fused residual add + RMSNorm, the formula of ops/rms_norm's
// CUDA kernel and the cast to T (its sum of squares is ordered differently:
// the warp-per-row kernel there, the block here): r = x + residual rounded
// through the residual's dtype, y = r * rsqrt(mean(r^2) + eps) * weight
// rounded to x's dtype, then to T. The block's threads share the row; xs
// (K floats) gets y; write_res: this block also writes the residual stream.
// A thread takes up to kNormPer values per round and issues all their loads
// (x, residual, weight) before using any: a decode row is a few values per
// thread, so the row costs one memory round trip instead of one per value.
template <class T>
__device__ void norm_row(const NormPrologue& p, int64_t m, int64_t K, float* xs, bool write_res) {
  __shared__ float scratch[32];
  const int nt = int(blockDim.x);
  const int64_t per_round = int64_t(kNormPer) * nt;
  const bool one_round = K <= per_round;  // then the weights stay in registers
  float ss = 0.f, wv[kNormPer];
  for (int64_t k0 = 0; k0 < K; k0 += per_round) {
    int64_t idx[kNormPer];
    int n = 0;
#pragma unroll
    for (int j = 0; j < kNormPer; ++j) {
      idx[j] = m * K + k0 + threadIdx.x + int64_t(j) * nt;
      if (k0 + threadIdx.x + int64_t(j) * nt < K) n = j + 1;
    }
    float xv[kNormPer], rv[kNormPer];
    load_dyn_n(p.x, p.x_dtype, idx, n, xv);
    if (p.residual) load_dyn_n(p.residual, p.residual_dtype, idx, n, rv);
#pragma unroll
    for (int j = 0; j < kNormPer; ++j)
      if (j < n) wv[j] = __ldg(p.weight + (idx[j] - m * K));
#pragma unroll
    for (int j = 0; j < kNormPer; ++j) {
      if (j >= n) continue;
      float v = p.residual ? xv[j] + rv[j] : xv[j];
      v = round_dyn(v, p.residual_out_dtype);
      if (write_res) store_dyn(p.residual_out, p.residual_out_dtype, idx[j], v);
      xs[idx[j] - m * K] = v;
      ss += v * v;
    }
  }
  ss = block_sum(ss, scratch);  // ends with a barrier
  const float rstd = rsqrtf(ss / float(K) + p.eps);
  // Each thread rescales the values it staged itself (no barrier needed).
  for (int64_t k0 = 0; k0 < K; k0 += per_round) {
#pragma unroll
    for (int j = 0; j < kNormPer; ++j) {
      const int64_t k = k0 + threadIdx.x + int64_t(j) * nt;
      if (k >= K) continue;
      const float w = one_round ? wv[j] : __ldg(p.weight + k);
      xs[k] = load_as<float, T>(store_as<T, float>(round_dyn(xs[k] * rstd * w, p.x_dtype)));
    }
  }
}

// The norm prologue: each block normalises the M input rows into shared
// memory (xs, M*K floats); block 0 also writes the new residual stream (a
// buffer no block reads).
template <class T>
__device__ void norm_prologue(const NormPrologue& p, int M, int64_t K, float* xs) {
  for (int m = 0; m < M; ++m) norm_row<T>(p, m, K, xs + m * K, blockIdx.x == 0);
  __syncthreads();
}

// The decode step's standalone add + RMSNorm (batches too large for the
// GEMV's prologue): one block per row, the row staged in shared memory (K
// floats), y written in T (the compute dtype: no separate cast kernel).
template <class T>
__global__ void add_rms_norm_kernel(NormPrologue p, int64_t K, T* y) {
  extern __shared__ float4 xs4[];
  float* xs = reinterpret_cast<float*>(xs4);
  // The norm weight (a parameter: no kernel of the step writes it) into L2
  // while the previous kernel drains, a 128-byte line a thread.
  if (int64_t(threadIdx.x) * 32 < K) prefetch_l2(p.weight + int64_t(threadIdx.x) * 32);
  pdl_wait();
  pdl_trigger();
  const int64_t m = blockIdx.x;
  norm_row<T>(p, m, K, xs, true);
  // Each thread stores the values it normalised itself: no barrier needed.
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) y[m * K + k] = store_as<T, float>(xs[k]);
}

// Warps per output row `wpr` (1, 2, 4 or 8) split the K dimension; a block
// covers 8 / wpr rows per pass and strides over the rows by the grid (the
// norm variant runs a capped grid, so each block's prologue is amortised
// over several passes). Every thread reaches the barriers: the pass loop
// depends on the block index only. Norm: the input rows come from the norm
// prologue (shared memory) instead of x.
//
// MR: the most input rows a launch has (1 for batch 1, else kGemvMax); the
// per-row loops unroll to MR. Batch 1 with the 8-row loops was ~7,900 SASS
// instructions: its one-pass blocks stalled half their time on instruction
// fetch (ncu: stall_no_inst 51% in the norm + in_proj + conv kernel).
template <class T, bool Vec, bool Norm, int MR>
__global__ void gemv_kernel(const T* x, int64_t x_row, const T* w, const T* bias, T* y, int M_all, int64_t N,
                            int64_t K, int wpr, ConvStepArgs conv, NormPrologue norm) {
  extern __shared__ float4 xs4[];  // Norm: M*K floats, 16-byte aligned
  float* xs = reinterpret_cast<float*>(xs4);
  // blockIdx.y picks a tile of up to kGemvMax input rows (one tile with
  // the norm prologue or the conv epilogue: the host checks).
  const int m0 = int(blockIdx.y) * kGemvMax;
  const int M = min(M_all - m0, kGemvMax);
  x += int64_t(m0) * x_row;
  y += int64_t(m0) * N;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows_per_block = kGemvThreads / 32 / wpr;
  const int part = warp % wpr;
  constexpr int E = 16 / int(sizeof(T));
  union Pack {
    uint4 v;
    T e[E];
  };
  // Before the PDL wait, what no kernel of the step has just written: the
  // lane's first kPre weight vectors of its first row into registers (the
  // rest of the row into L2), and with the conv epilogue at batch 1 the
  // row's conv state, weights and bias. After the wait only x (or the
  // norm's input) is still to come.
  constexpr int kPre = 4;
  const int64_t n_first = int64_t(blockIdx.x) * rows_per_block + warp / wpr;
  uint4 wpre[kPre];
  if (n_first < N) {
    const char* wr = reinterpret_cast<const char*>(w + n_first * K);
    const int64_t bytes = K * int64_t(sizeof(T));
    if constexpr (Vec) {
#pragma unroll
      for (int i = 0; i < kPre; ++i) {
        const int64_t v = int64_t(part) * 32 + lane + int64_t(i) * 32 * wpr;
        if (v < K / E) wpre[i] = __ldg(reinterpret_cast<const uint4*>(wr) + v);
      }
    }
    const int64_t skip = Vec ? int64_t(kPre) * 32 * wpr * 16 : 0;
    for (int64_t off = (int64_t(part) * 32 + lane) * 128 + skip; off < bytes; off += int64_t(32) * wpr * 128)
      prefetch_l2(wr + off);
  }
  ConvPre cpre;
  bool conv_pre = false;
  if constexpr (MR == 1) {
    if (conv.out && conv.width <= 4 && part == 0 && lane == 0 && m0 == 0 && n_first < conv.dim) {
      conv_preload<T>(conv, n_first, cpre);
      conv_pre = true;
    }
  }
  pdl_wait();
  pdl_trigger();
  if constexpr (Norm) norm_prologue<T>(norm, M, K, xs);
  __shared__ float partial[kGemvThreads / 32][MR];
  for (int64_t base = int64_t(blockIdx.x) * rows_per_block; base < N;
       base += int64_t(gridDim.x) * rows_per_block) {
    const int64_t n = base + warp / wpr;
    float acc[MR];
#pragma unroll
    for (int m = 0; m < MR; ++m) acc[m] = 0.f;
    if (n < N) {
      const T* wr = w + n * K;
      if constexpr (Vec) {
        const int64_t nv = K / E;
        const bool first = n == n_first;
        auto dot = [&](uint4 raw, int64_t v) {
          Pack wp;
          wp.v = raw;
          float wf[E];
#pragma unroll
          for (int e = 0; e < E; ++e) wf[e] = load_as<float, T>(wp.e[e]);
#pragma unroll
          for (int m = 0; m < MR; ++m) {
            if (m < M) {
              if constexpr (Norm) {
                // K % E == 0, so row m's chunk v starts 16-byte aligned.
                const float4* xr = reinterpret_cast<const float4*>(xs + m * K + v * E);
#pragma unroll
                for (int q = 0; q < E / 4; ++q) {
                  const float4 t = xr[q];
                  acc[m] += wf[4 * q] * t.x + wf[4 * q + 1] * t.y + wf[4 * q + 2] * t.z + wf[4 * q + 3] * t.w;
                }
              } else {
                Pack xp;
                xp.v = reinterpret_cast<const uint4*>(x + m * x_row)[v];
#pragma unroll
                for (int e = 0; e < E; ++e) acc[m] += wf[e] * load_as<float, T>(xp.e[e]);
              }
            }
          }
        };
        // The first kPre vectors (registers on the first pass), then the
        // rest, in the same order (same bits as one loop). A lane has a few
        // vectors per row (K 768-2048): unrolled, their loads are issued
        // together instead of one round trip each.
#pragma unroll
        for (int i = 0; i < kPre; ++i) {
          const int64_t v = int64_t(part) * 32 + lane + int64_t(i) * 32 * wpr;
          if (v < nv) dot(first ? wpre[i] : reinterpret_cast<const uint4*>(wr)[v], v);
        }
#pragma unroll 4
        for (int64_t v = int64_t(part) * 32 + lane + int64_t(kPre) * 32 * wpr; v < nv; v += 32 * wpr)
          dot(reinterpret_cast<const uint4*>(wr)[v], v);
      } else {
        for (int64_t k = int64_t(part) * 32 + lane; k < K; k += 32 * wpr) {
          const float wv = load_as<float, T>(wr[k]);
#pragma unroll
          for (int m = 0; m < MR; ++m)
            if (m < M) acc[m] += wv * (Norm ? xs[m * K + k] : load_as<float, T>(x[m * x_row + k]));
        }
      }
    }
#pragma unroll
    for (int m = 0; m < MR; ++m)
      for (int off = 16; off > 0; off >>= 1) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
    // Lane m of the row's first warp writes y[m, n] from the row's sum.
    auto finish = [&](float sum) {
      if (bias) sum += load_as<float, T>(bias[n]);
      const T out = store_as<T, float>(sum);
      y[int64_t(lane) * N + n] = out;
      // Fused conv step on the first conv.dim output columns (the x half of
      // in_proj): the thread that made x[m, c] owns channel c of sequence m.
      if (conv.out && n < conv.dim) {
        if (conv_pre && n == n_first)
          conv_finish<T>(conv, n, out, cpre);
        else
          conv_one<T>(conv, lane, n, out);
      }
    };
    if (wpr == 1) {
      // A warp owns its row (every lane holds the sums after the xor
      // shuffles): no shared memory, no block barrier, so a warp goes on to
      // its next row without waiting for the block's slowest load. Same bits
      // as the partial path (0 + sum).
      float mine = 0.f;
#pragma unroll
      for (int m = 0; m < MR; ++m)
        if (lane == m) mine = acc[m];
      if (lane < M && n < N) finish(0.f + mine);
      continue;  // wpr is uniform over the grid: no thread reaches the barriers below
    }
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < MR; ++m) partial[warp][m] = acc[m];
    }
    __syncthreads();
    // The row's first warp sums the parts in a fixed order.
    if (part == 0 && lane < M && n < N) {
      float sum = 0.f;
      for (int p = 0; p < wpr; ++p) sum += partial[warp + p][lane];
      finish(sum);
    }
    __syncthreads();  // partial is rewritten by the next pass
  }
}

}  // namespace

void gemv_rows(const void* x, int64_t x_row, const void* w, const void* bias, void* y, DType dtype, int64_t M,
               int64_t N, int64_t K, int device, const ConvStepArgs* conv, const NormPrologue* norm) {
  COIL_CHECK(M >= 1 && M <= kGemvMaxTiledRows, "gemv_rows: 1..", kGemvMaxTiledRows, " input rows, got ", M);
  COIL_CHECK(M <= kGemvMaxRows || (!conv && !norm), "gemv_rows: the conv epilogue and the norm prologue take 1..",
             kGemvMaxRows, " rows, got ", M);
  ConvStepArgs ca;  // out == nullptr: no conv epilogue
  if (conv) {
    COIL_CHECK(conv->batch == M && conv->dim <= N && conv->dtype == dtype && conv->out && conv->w,
               "gemv_rows: the conv epilogue does not match the product (batch ", conv->batch, " vs ", M, ", dim ",
               conv->dim, " vs ", N, ")");
    ca = *conv;
  }
  NormPrologue np;
  size_t smem = 0;
  if (norm) {
    COIL_CHECK(norm->x && norm->weight && norm->residual_out, "gemv_rows: incomplete norm prologue");
    smem = size_t(M * K) * sizeof(float);
    COIL_CHECK(smem <= kGemvNormMaxSmem, "gemv_rows: the norm prologue needs ", smem,
               " bytes of shared memory (at most ", kGemvNormMaxSmem, ")");
    np = *norm;
  }
  if (N == 0) return;
  const int wpr = N >= 2048 ? 1 : N >= 512 ? 2 : N >= 128 ? 4 : 8;
  int64_t blocks = (N + (8 / wpr) - 1) / (8 / wpr);
  COIL_CHECK(blocks <= int64_t(INT32_MAX), "gemv_rows: too many rows (", N, ")");
  dispatch_act(dtype, "gemv_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int64_t E = 16 / int64_t(sizeof(T));
    auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    // (x_row % E also keeps every row tile's start aligned.)
    const bool vec = K % E == 0 && aligned(w) && (norm || ((M == 1 || x_row % E == 0) && aligned(x)));
    auto launch = [&](auto kernel) {
      int64_t grid = blocks;
      if (norm) {
        // With the norm prologue every block pays for the M norms: one wave
        // of resident blocks, each striding over many rows (the LM head:
        // 6285 row groups), instead of one prologue per 8 rows.
        int per_sm = 0;
        COIL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvThreads, smem));
        grid = std::min<int64_t>(grid, int64_t(std::max(per_sm, 1)) * sm_count());
      }
      const unsigned tiles = unsigned((M + kGemvMaxRows - 1) / kGemvMaxRows);
      launch_maybe_pdl(kernel, dim3(unsigned(grid), tiles), dim3(kGemvThreads), smem, stream_of(device),
                       static_cast<const T*>(x), x_row, static_cast<const T*>(w), static_cast<const T*>(bias),
                       static_cast<T*>(y), int(M), N, K, wpr, ca, np);
    };
    auto by_rows = [&](auto vec_tag, auto norm_tag) {
      constexpr bool V = decltype(vec_tag)::value, Nm = decltype(norm_tag)::value;
      if (M == 1)
        launch(gemv_kernel<T, V, Nm, 1>);
      else
        launch(gemv_kernel<T, V, Nm, kGemvMax>);
    };
    using yes = std::true_type;
    using no = std::false_type;
    if (norm) {
      if (vec)
        by_rows(yes{}, yes{});
      else
        by_rows(no{}, yes{});
    } else {
      if (vec)
        by_rows(yes{}, no{});
      else
        by_rows(no{}, no{});
    }
  });
}

namespace {
std::atomic<bool> g_decode_pdl{false};
}  // namespace

void set_decode_pdl(bool on) { g_decode_pdl.store(on); }
bool decode_pdl_enabled() { return g_decode_pdl.load(); }
void clear_launch_error() { (void)cudaGetLastError(); }

void add_rms_norm_rows(const NormPrologue& p, int64_t rows, int64_t K, void* y, DType y_dtype, int device) {
  COIL_CHECK(p.x && p.weight && p.residual_out && y, "add_rms_norm_rows: incomplete arguments");
  COIL_CHECK(size_t(K) * sizeof(float) <= kGemvNormMaxSmem, "add_rms_norm_rows: rows of ", K,
             " need too much shared memory");
  if (rows == 0 || K == 0) return;
  COIL_CHECK(rows <= int64_t(INT32_MAX), "add_rms_norm_rows: too many rows (", rows, ")");
  // One block per row, a round of kNormPer values per thread: 128 threads up
  // to K 512, else 256 (mamba-130m's 768 in 3 values each).
  const int threads = K > 4 * 128 ? 256 : 128;
  dispatch_act(y_dtype, "add_rms_norm_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_maybe_pdl(add_rms_norm_kernel<T>, dim3(unsigned(rows)), dim3(threads), size_t(K) * sizeof(float),
                     stream_of(device), p, K, static_cast<T*>(y));
  });
}

void conv_step(const ConvStepArgs& a, int device) {
  const int64_t n = a.batch * a.dim;
  if (n == 0) return;
  dispatch_act(a.dtype, "conv_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_maybe_pdl(conv_step_kernel<T>, dim3(grid_for(n, 256)), dim3(256), 0, stream_of(device), a);
  });
}

void ssm_step(const SsmStepArgs& a, int device) {
  const int64_t n = a.batch * a.dim;
  if (n == 0) return;
  constexpr int kThreads = 128;
  // Vector path: 4 states per lane (1 to 8 lanes per channel) and every
  // vector operand aligned to its 4 elements.
  const int64_t es = int64_t(element_size(a.dtype));
  auto al = [](const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % uintptr_t(bytes) == 0; };
  const int64_t g4 = a.dstate / 4;
  const bool vec = a.dstate % 4 == 0 && (g4 == 1 || g4 == 2 || g4 == 4 || g4 == 8) && al(a.state, 16) &&
                   al(a.A, 16) && al(a.B, 4 * es) && al(a.C, 4 * es) && (a.batch == 1 || (a.B_row % 4 == 0 && a.C_row % 4 == 0));
  if (vec) {
    COIL_CHECK(n * g4 / kThreads < int64_t(INT32_MAX), "ssm_step: batch x dim too large (", n, ")");
    // The dt_proj dot in contiguous 4-element runs per lane: every run and row aligned.
    const bool dt_vec = a.dt_w && a.dt_rank % (4 * g4) == 0 && al(a.dt_w, 4 * es) && al(a.dt_in, 4 * es) &&
                        (a.batch == 1 || a.dt_row % 4 == 0);
    dispatch_act(a.dtype, "ssm_step", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const dim3 grid(unsigned((n * g4 + kThreads - 1) / kThreads));
      auto launch = [&](auto kernel) {
        launch_maybe_pdl(kernel, grid, dim3(kThreads), 0, stream_of(device), a, dt_vec);
      };
      switch (g4) {
        case 1: return launch(ssm_step_vec_kernel<T, 1>);
        case 2: return launch(ssm_step_vec_kernel<T, 2>);
        case 4: return launch(ssm_step_vec_kernel<T, 4>);
        default: return launch(ssm_step_vec_kernel<T, 8>);
      }
    });
    return;
  }
  // Lanes per channel: one per state up to 16 (mamba's d_state), at least 4
  // so the dt_proj dot (dt_rank 48 for mamba-130m) is split too.
  const int64_t want = std::max<int64_t>(a.dstate, a.dt_w ? std::min<int64_t>(a.dt_rank, 4) : 1);
  const int g = want <= 1 ? 1 : want <= 2 ? 2 : want <= 4 ? 4 : want <= 8 ? 8 : 16;
  dispatch_act(a.dtype, "ssm_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const unsigned grid = grid_for(n * g, kThreads);
    auto launch = [&](auto kernel) { launch_maybe_pdl(kernel, dim3(grid), dim3(kThreads), 0, stream_of(device), a); };
    switch (g) {
      case 1: return launch(ssm_step_kernel<T, 1>);
      case 2: return launch(ssm_step_kernel<T, 2>);
      case 4: return launch(ssm_step_kernel<T, 4>);
      case 8: return launch(ssm_step_kernel<T, 8>);
      default: return launch(ssm_step_kernel<T, 16>);
    }
  });
}

void argmax_rows(const void* x, DType dtype, int64_t rows, int64_t limit, int64_t x_row, void* out, DType out_dtype,
                 int device) {
  if (rows == 0) return;
  COIL_CHECK(rows <= int64_t(INT32_MAX), "argmax_rows: too many rows (", rows, ")");
  dispatch_act(dtype, "argmax_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(out_dtype, "argmax_rows", [&](auto itag) {
      using I = typename decltype(itag)::type;
      constexpr int64_t E = 16 / int64_t(sizeof(T));
      const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0 && (rows == 1 || x_row % E == 0);
      auto kernel = vec ? argmax_kernel<T, I, true> : argmax_kernel<T, I, false>;
      launch_maybe_pdl(kernel, dim3(unsigned(rows)), dim3(kArgmaxThreads), 0, stream_of(device),
                       static_cast<const T*>(x), limit, x_row, static_cast<I*>(out));
    });
  });
}

}  // namespace coil::cuda
