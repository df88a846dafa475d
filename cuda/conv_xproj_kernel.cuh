// The conv step and x_proj of a decode step in one kernel (cuda/mamba_step.h,
// ConvXprojArgs; device code: the launcher is cuda/conv_xproj.cu, and
// tests/cuda/conv_xproj_emu.cpp runs it on the CPU), for batches above the GEMV's 8 rows. It replaces the conv
// kernel and a cuBLASLt GEMM of 64 x 80 outputs (two launches, the second
// without a PDL edge) with one launch whose blocks trigger the SSM step's
// early start.
//
// Grid (kCluster, ceil(batch / kRows)), clusters of kCluster blocks along x:
// a cluster takes kRows batch rows, its block k the channels [k S, k S + S).
//   1. before the PDL wait: the slice's x_proj columns (E x S) -> shared
//      memory with cp.async, read once for all kRows rows (a cluster per
//      batch row would pull every weight through L2 once per row);
//   2. the conv step of the slice for the rows (conv_step's arithmetic):
//      conv_out, the shifted windows, and the outputs in shared memory;
//   3. x_proj partial sums over the slice: thread (e, group of 4 rows) walks
//      the slice in 16-byte pieces (the staged rows are padded by 16 bytes,
//      so a warp's 32 rows fall in different banks; x is a broadcast);
//   4. cluster barrier; the blocks split the (row, e) outputs, each adding
//      the kCluster partials from distributed shared memory in rank order,
//      rounded once to the dtype; a last cluster barrier keeps every block's
//      partials alive until they are read.
#pragma once
#include <cstdint>

#include "cuda/device_prims.cuh"
#include "cuda/mamba_step.h"
#if defined(__CUDACC__)
#include "cuda/mamba_step_common.cuh"  // silu_f
#endif

namespace coil::cuda::conv_xproj_impl {

constexpr int kCluster = kConvXprojCluster;
constexpr int kRows = kConvXprojRows;
static_assert(kRows % 4 == 0, "x_proj threads take rows in fours");
constexpr int kThreads = 256;
constexpr int kMaxWidth = 4;
constexpr int kConvBatch = 4;  // conv items a thread loads before using any
constexpr size_t kMaxSmem = 100 * 1024;

// Channels a block owns: the dim split over the cluster, a multiple of 8 so
// every slice of an x_proj row starts 16-byte aligned.
inline int64_t slice_of(int64_t dim) { return ((dim + kCluster - 1) / kCluster + 7) / 8 * 8; }
// Staged x_proj row stride in elements: the slice plus 16 bytes.
inline int64_t padded(int64_t S, size_t es) { return S + int64_t(16 / es); }
inline size_t smem_bytes(const ConvXprojArgs& a) {
  const size_t es = element_size(a.dtype);
  const int64_t S = slice_of(a.dim), E = a.out_dim;
  const size_t w = (size_t(E * padded(S, es)) * es + 15) / 16 * 16;
  return w + size_t(kRows * S + kRows * E) * sizeof(float);
}

template <class T>
__global__ void __launch_bounds__(kThreads) conv_xproj_kernel(const __grid_constant__ ConvXprojArgs a, int S) {
  float4* smem4 = reinterpret_cast<float4*>(dyn_smem_bytes());
  constexpr int V = 16 / int(sizeof(T));  // elements per 16 bytes
  const int E = int(a.out_dim), SP = S + V;
  T* w_s = reinterpret_cast<T*>(smem4);                                                     // (E, SP)
  float* x_s = reinterpret_cast<float*>(smem4) + (E * SP * int(sizeof(T)) + 15) / 16 * 4;  // (kRows, S)
  float* part_s = x_s + kRows * S;                                                          // (kRows, E)

  const int rank = cluster_rank();
  const int tid = threadIdx.x;
  const int64_t dim = a.dim, c0 = int64_t(rank) * S, b0 = int64_t(blockIdx.y) * kRows;
  const int nloc = int(dim - c0 < 0 ? 0 : (dim - c0 < S ? dim - c0 : S));
  const int rows = int(a.batch - b0 < kRows ? a.batch - b0 : kRows);

  // 1. The slice's x_proj columns: no kernel of the step writes them.
  const T* wx = static_cast<const T*>(a.w_x);
  const int nvec = nloc / V;
  for (int i = tid; i < E * nvec; i += kThreads) {
    const int e = i / nvec, v = i - e * nvec;
    cp_async16(w_s + e * SP + v * V, wx + int64_t(e) * dim + c0 + v * V);
  }
  cp_async_commit();
  pdl_wait();
  pdl_trigger();

  // 2. The conv step of items (row, channel), kConvBatch a thread at a time
  // with all their loads issued first; rows past the batch read as zeros.
  const int km1 = int(a.width) - 1, items = rows * nloc;
  T* conv_state = static_cast<T*>(a.conv_state);
  for (int base = 0; base < items; base += kThreads * kConvBatch) {
    T xt[kConvBatch], st[kConvBatch][kMaxWidth - 1];
    float w[kConvBatch][kMaxWidth], bias[kConvBatch];
#pragma unroll
    for (int q = 0; q < kConvBatch; ++q) {
      const int it = base + q * kThreads + tid;
      if (it >= items) continue;
      const int m = it / nloc, cl = it - m * nloc;
      const int64_t b = b0 + m, d = c0 + cl;
      xt[q] = static_cast<const T*>(a.x)[b * a.x_row + d];
      const T* s = conv_state + (b * dim + d) * km1;
#pragma unroll
      for (int k = 0; k < kMaxWidth - 1; ++k)
        if (k < km1) st[q][k] = s[k];
#pragma unroll
      for (int k = 0; k < kMaxWidth; ++k)
        if (k <= km1) w[q][k] = a.conv_w[d * a.width + k];
      bias[q] = a.conv_b ? a.conv_b[d] : 0.f;
    }
#pragma unroll
    for (int q = 0; q < kConvBatch; ++q) {
      const int it = base + q * kThreads + tid;
      if (it >= items) continue;
      const int m = it / nloc, cl = it - m * nloc;
      const int64_t b = b0 + m, d = c0 + cl;
      float acc = bias[q];  // conv_one's order: the window, then x
#pragma unroll
      for (int k = 0; k < kMaxWidth - 1; ++k)
        if (k < km1) acc += w[q][k] * load_as<float, T>(st[q][k]);
#pragma unroll
      for (int k = 0; k < kMaxWidth; ++k)
        if (k == km1) acc += w[q][k] * load_as<float, T>(xt[q]);
      const T y = store_as<T, float>(silu_f(acc));
      static_cast<T*>(a.conv_out)[b * dim + d] = y;
      x_s[m * S + cl] = load_as<float, T>(y);
      T* s = conv_state + (b * dim + d) * km1;
#pragma unroll
      for (int k = 0; k + 1 < kMaxWidth - 1; ++k)
        if (k + 1 < km1) s[k] = st[q][k + 1];
      if (km1 > 0) s[km1 - 1] = xt[q];
    }
  }
  for (int i = items + tid; i < kRows * nloc; i += kThreads) x_s[(i / nloc) * S + i % nloc] = 0.f;
  cp_async_wait_all();
  __syncthreads();

  // 3. x_proj partial sums: thread (e, rows 4g..4g+3), the slice in pieces of V.
  for (int t = tid; t < E * (kRows / 4); t += kThreads) {
    const int e = t % E, g = t / E;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int v = 0; v < nvec; ++v) {
      union {
        uint4 u;
        T e[V];
      } q;
      q.u = *reinterpret_cast<const uint4*>(w_s + e * SP + v * V);
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const float* xr = x_s + (4 * g + m) * S + v * V;
#pragma unroll
        for (int i = 0; i < V; i += 4) {
          const float4 x4 = *reinterpret_cast<const float4*>(xr + i);
          acc[m] = fmaf(load_as<float, T>(q.e[i]), x4.x, acc[m]);
          acc[m] = fmaf(load_as<float, T>(q.e[i + 1]), x4.y, acc[m]);
          acc[m] = fmaf(load_as<float, T>(q.e[i + 2]), x4.z, acc[m]);
          acc[m] = fmaf(load_as<float, T>(q.e[i + 3]), x4.w, acc[m]);
        }
      }
    }
#pragma unroll
    for (int m = 0; m < 4; ++m) part_s[(4 * g + m) * E + e] = acc[m];
  }

  // 4. The cluster's partials, in rank order; block k writes every
  // kCluster-th run of kThreads outputs.
  cluster_sync_all();
  T* out = static_cast<T*>(a.x_dbl);
  for (int i = rank * kThreads + tid; i < rows * E; i += kCluster * kThreads) {
    float s = 0.f;
    for (int r = 0; r < kCluster; ++r) s += cluster_map(part_s, r)[i];
    out[(b0 + i / E) * E + i % E] = store_as<T, float>(s);
  }
  cluster_sync_all();
}

}  // namespace coil::cuda::conv_xproj_impl
