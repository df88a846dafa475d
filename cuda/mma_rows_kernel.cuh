// y (M, N) = x (M, K) @ w^T (+ bias) on tensor cores for the decode step's
// projections at 9..64 rows a tile (device code; the host launcher is
// cuda/mma_rows.cu, the declaration cuda/mamba_step.h). Plain CUDA C++ with
// the PTX pieces behind the functions of cuda/device_prims.cuh, so
// tests/cuda/mma_rows_emu.cpp runs it on the CPU.
//
// Why not cuBLASLt: at 64 rows a projection is a weight stream (mamba-130m's
// in_proj 4.7 MB, out_proj 2.4 MB) and cuBLASLt's kernels take ~6 us for
// ~1.6 us of bytes, and they end the decode step's PDL chain. Here a block
// owns 16 * MT weight rows (output features): it copies them to shared
// memory with cp.async *before* the PDL wait (no kernel of the step writes
// weights), so that stream overlaps the previous kernel; after the wait only
// the small x is read (from L2).
//
// mma.sync m16n8k16 (f32 accumulate) with w as operand A (16 features x 16
// k) and x as operand B (16 k x 8 rows). Each lane reads 16 contiguous bytes
// of a w row and of an x row per 32-wide K block: the dot product does not
// care which k pairs with which, so lane t's 8 elements at 32 kb + 8 t feed
// the fragment slots {2t, 2t+1, 2t+8, 2t+9} of two k16 steps (elements 0-3
// the first step, 4-7 the second), the same way for A and B. The 8 warps
// split K; their partial tiles are added in warp order in shared memory
// (deterministic), with the bias, then rounded once to T.
#pragma once
#include <cstdint>

#include "core/half.h"
#include "cuda/device_prims.cuh"

namespace coil::cuda::mma_kernel {

constexpr int kThreads = 256;  // 8 warps, each a share of K
constexpr int kWarps = kThreads / 32;
constexpr int kTileRows = 64;  // x rows a block takes (8 n-tiles of 8); grid.y walks the tiles
constexpr int kKBlock = 32;    // K per 16-byte lane vector step
constexpr int kAhead = 3;      // K blocks whose x vectors a warp loads before using any

struct Args {
  const void* x;  // (M, K), row stride x_row elements, rows 16-byte aligned
  int64_t x_row;
  const void* w;     // (N, K) contiguous, 16-byte aligned
  const void* bias;  // (N) or null
  void* y;           // (M, N) contiguous
  int M, N, K;
  int w_row_bytes;  // a staged weight row in shared memory (w_row_bytes below)
};

// Host helpers. A staged row is padded to 64 mod 128 bytes: the 8 lanes of
// a shared-memory phase (rows g, g+1; 16-byte columns t = 0..3) then fall in
// different banks.
inline int w_row_bytes(int K) { return 2 * K % 128 == 0 ? 2 * K + 64 : 2 * K; }
inline size_t smem_bytes(int K, int MT) {
  const size_t w = size_t(16 * MT) * size_t(w_row_bytes(K));
  const size_t red = size_t(kWarps) * MT * 8 * 4 * 32 * sizeof(float);  // the warps' partial tiles
  return w > red ? w : red;
}

// Grid (ceil(N / (16 MT)), ceil(M / kTileRows)) blocks of kThreads;
// smem_bytes(K, MT) of dynamic shared memory. K a multiple of kKBlock.
template <class T, int MT>
__global__ void __launch_bounds__(kThreads, 1) mma_rows_kernel(const __grid_constant__ Args a) {
  unsigned char* smem = dyn_smem_bytes();
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  constexpr int F = 16 * MT;  // weight rows (features) of the block
  const int n0 = int(blockIdx.x) * F, m0 = int(blockIdx.y) * kTileRows;
  const int K = a.K, rb = a.w_row_bytes, vrow = K / 8;  // 16-byte vectors a row

  // 1. The block's weight rows -> shared memory; rows past N read as zeros.
  const T* w = static_cast<const T*>(a.w);
  for (int i = tid; i < F * vrow; i += kThreads) {
    const int r = i / vrow, v = i - r * vrow;
    unsigned char* dst = smem + r * rb + v * 16;
    if (n0 + r < a.N)
      cp_async16(dst, w + int64_t(n0 + r) * K + v * 8);
    else
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
  }
  cp_async_commit();
  pdl_wait();
  pdl_trigger();

  // 2. The warp's K blocks [kb0, kb1), kAhead at a time: the x vectors of
  // all 8 n-tiles first (rows past M read as zeros), then the mma's.
  const int nkb = K / kKBlock, kb0 = warp * nkb / kWarps, kb1 = (warp + 1) * nkb / kWarps;
  const int rows = a.M - m0 < kTileRows ? a.M - m0 : kTileRows, nt = (rows + 7) / 8;
  const T* x = static_cast<const T*>(a.x) + int64_t(m0) * a.x_row;
  float acc[MT][8][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.f;
  cp_async_wait_all();
  __syncthreads();
  for (int kb = kb0; kb < kb1; kb += kAhead) {
    uint4 xv[kAhead][8];
#pragma unroll
    for (int s = 0; s < kAhead; ++s)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int row = 8 * j + gid;
        xv[s][j] = (kb + s < kb1 && row < rows)
                       ? *reinterpret_cast<const uint4*>(x + int64_t(row) * a.x_row + (kb + s) * kKBlock + 8 * tig)
                       : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
    for (int s = 0; s < kAhead; ++s) {
      if (kb + s >= kb1) break;  // warp-uniform
      const int col = (kb + s) * kKBlock * 2 + 16 * tig;
      uint4 wa[MT], wb[MT];  // weight rows 16 i + gid and 16 i + gid + 8
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        wa[i] = *reinterpret_cast<const uint4*>(smem + (16 * i + gid) * rb + col);
        wb[i] = *reinterpret_cast<const uint4*>(smem + (16 * i + gid + 8) * rb + col);
      }
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (j >= nt) break;  // warp-uniform
          mma16816<T>(acc[i][j], wa[i].x, wb[i].x, wa[i].y, wb[i].y, xv[s][j].x, xv[s][j].y);
          mma16816<T>(acc[i][j], wa[i].z, wb[i].z, wa[i].w, wb[i].w, xv[s][j].z, xv[s][j].w);
        }
    }
  }

  // 3. The warps' partial tiles over the weights (no longer read), then each
  // output summed over the warps in order. acc[i][j][c] of lane (gid, tig)
  // is feature 16 i + gid (+8 for c >= 2), row 8 j + 2 tig (+1 for odd c).
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  constexpr int per = MT * 8 * 4 * 32;  // floats a warp
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) red[warp * per + ((i * 8 + j) * 4 + c) * 32 + lane] = acc[i][j][c];
  __syncthreads();
  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  for (int q = tid; q < per; q += kThreads) {
    const int l = q % 32, idx = q / 32, c = idx % 4, j = (idx / 4) % 8, i = idx / 32;
    const int feat = n0 + 16 * i + (l >> 2) + (c >= 2 ? 8 : 0), row = 8 * j + 2 * (l & 3) + (c & 1);
    if (row >= rows || feat >= a.N) continue;
    float s = 0.f;
#pragma unroll
    for (int ww = 0; ww < kWarps; ++ww) s += red[ww * per + q];
    if (bias) s += load_as<float, T>(bias[feat]);
    y[int64_t(m0 + row) * a.N + feat] = store_as<T, float>(s);
  }
}

}  // namespace coil::cuda::mma_kernel
