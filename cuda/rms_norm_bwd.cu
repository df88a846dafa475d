// Backward of the fused add + RMSNorm (see rms_norm.h).
//
// Per element the backward must read r (the forward's residual_out), dy and,
// when the residual stream's gradient is used, dr_extra, and write dx (and
// dres when the residual's dtype differs from x's): 12-16 bytes per element
// for bf16 x with an fp32 residual stream. Everything else (rstd, the
// weight, the dw partials) is small, so the kernel has to stream.
//
// Fast path (`row_kernel`): a team of W warps owns a row and holds it in
// registers (each thread V contiguous columns per chunk, NJ chunks), so each
// input is read once with vector loads and every output written once; the
// row's dot product is one warp reduction (plus a shared-memory step across
// the W warps). dw accumulates per thread in registers over all rows the
// team visits, then the block's teams add theirs in team order and the block
// writes one partial row; `dw_reduce_kernel` sums the partial rows in a fixed
// order. No float atomics anywhere, so reruns are bit-identical.
//
// Shapes or dtype combinations the fast path does not cover go to the
// original block-per-row kernel (`block_kernel`).
#include <algorithm>

#include "cuda/block_reduce.cuh"
#include "cuda/common.cuh"
#include "cuda/rms_norm.h"

namespace coil::cuda {

namespace {

constexpr int kThreads = 256;        // block_kernel
constexpr int kBlockKernelGrid = 264;  // block_kernel: 2 blocks per H100 SM
constexpr int kRowThreads = 128;     // row_kernel: 4 warps, one team of 4 or 4 teams of 1
constexpr int kMaxRowBlocksPerSm = 2048 / kRowThreads;  // the SM's thread limit bounds the grid

template <class T> __device__ __forceinline__ float ld(const void* p, int64_t i) {
  return load_as<float, T>(static_cast<const T*>(p)[i]);
}
template <class T> __device__ __forceinline__ void st(void* p, int64_t i, float v) {
  static_cast<T*>(p)[i] = store_as<T, float>(v);
}

// V contiguous elements of T at p + i as floats (one 8- or 16-byte access
// when V is 4; the caller checked the alignment).
template <int Bytes> struct Bits;
template <> struct Bits<8> { using type = uint2; };
template <> struct Bits<16> { using type = uint4; };

template <class T, int V> __device__ __forceinline__ void ld_vec(const void* p, int64_t i, float (&out)[V]) {
  if constexpr (V == 1) {
    out[0] = ld<T>(p, i);
  } else {
    using U = typename Bits<V * sizeof(T)>::type;
    union { U u; T e[V]; } pk;
    pk.u = *reinterpret_cast<const U*>(static_cast<const T*>(p) + i);
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = load_as<float, T>(pk.e[v]);
  }
}
template <class T, int V> __device__ __forceinline__ void st_vec(void* p, int64_t i, const float (&in)[V]) {
  if constexpr (V == 1) {
    st<T>(p, i, in[0]);
  } else {
    using U = typename Bits<V * sizeof(T)>::type;
    union { U u; T e[V]; } pk;
#pragma unroll
    for (int v = 0; v < V; ++v) pk.e[v] = store_as<T, float>(in[v]);
    *reinterpret_cast<U*>(static_cast<T*>(p) + i) = pk.u;
  }
}

// The weight's V columns at c0 from shared memory: one 16-byte access when V
// is 4 (conflict-free; four scalar ones would be 4-way bank conflicts).
template <int V> __device__ __forceinline__ void ld_w(const float* sw, int64_t c0, float (&out)[V]) {
  if constexpr (V == 4) {
    const float4 q = reinterpret_cast<const float4*>(sw)[c0 / 4];
    out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = sw[c0 + v];
  }
}

// Rows of up to W*32*NJ*V columns. Thread tt of a team owns the chunks that
// start at column (tt + 32*W*j) * V, j < NJ; with V = 4 the column count is a
// multiple of 4, so a chunk is either wholly inside the row or wholly out.
// The block is kRowThreads threads: 4/W teams. When W > 1 the block is one
// team, all its threads walk the same rows, and the barrier in the loop is
// reached by every thread the same number of times.
// dr_extra and dres have r's dtype (RT); dx has dy's (DY).
template <class RT, class DY, int V, int NJ, int W>
__global__ void __launch_bounds__(kRowThreads, 3) row_kernel(RmsNormBwdArgs a) {
  constexpr int TT = 32 * W;              // threads per team
  constexpr int TEAMS = kRowThreads / TT;  // teams per block
  extern __shared__ float4 smem4[];
  float* sw = reinterpret_cast<float*>(smem4);  // cols: the weight
  float* sdw = sw + a.cols;                     // cols: the block's dw (W == 1 only)
  __shared__ float red[2][W];                   // the team's warp sums, double-buffered by row
  const int tt = threadIdx.x % TT, team = threadIdx.x / TT, lane = threadIdx.x & 31, wt = tt >> 5;
  (void)red, (void)sdw, (void)lane, (void)wt;  // used for W == 1 or W > 1 only
  const int64_t cols = a.cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sw[c] = a.weight[c];
  __syncthreads();

  float dw[NJ][V];
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int v = 0; v < V; ++v) dw[j][v] = 0.f;
  int buf = 0;
  for (int64_t i = int64_t(blockIdx.x) * TEAMS + team; i < a.rows; i += int64_t(gridDim.x) * TEAMS) {
    const int64_t base = i * cols;
    const float rstd = a.rstd[i];
    // All loads of the row first: r, dy and dr_extra are independent, so each
    // thread has 3*NJ accesses in flight.
    float r[NJ][V], dy[NJ][V], de[NJ][V];
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int64_t c0 = int64_t(tt + TT * j) * V;
      if (c0 < cols) {
        ld_vec<RT, V>(a.r, base + c0, r[j]);
        ld_vec<DY, V>(a.dy, base + c0, dy[j]);
        if (a.dr_extra) {
          ld_vec<RT, V>(a.dr_extra, base + c0, de[j]);
        } else {
#pragma unroll
          for (int v = 0; v < V; ++v) de[j][v] = 0.f;
        }
      } else {
#pragma unroll
        for (int v = 0; v < V; ++v) r[j][v] = 0.f, dy[j][v] = 0.f, de[j][v] = 0.f;
      }
    }
    // dot = mean_c (dy w)_c r_hat_c
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int64_t c0 = int64_t(tt + TT * j) * V;
      if (c0 < cols) {
        float wv[V];
        ld_w<V>(sw, c0, wv);
#pragma unroll
        for (int v = 0; v < V; ++v) dot += (dy[j][v] * wv[v]) * (r[j][v] * rstd);
      }
    }
    dot = warp_sum(dot);
    if constexpr (W > 1) {
      if (lane == 0) red[buf][wt] = dot;
      __syncthreads();
      dot = 0.f;
#pragma unroll
      for (int k = 0; k < W; ++k) dot += red[buf][k];  // fixed order
      buf ^= 1;  // the next row writes the other buffer, so no second barrier
    }
    dot /= float(cols);
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int64_t c0 = int64_t(tt + TT * j) * V;
      if (c0 < cols) {
        float o[V], wv[V];
        ld_w<V>(sw, c0, wv);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const float rh = r[j][v] * rstd, g = dy[j][v] * wv[v];
          o[v] = rstd * (g - rh * dot) + de[j][v];
          dw[j][v] += dy[j][v] * rh;
        }
        st_vec<DY, V>(a.dx, base + c0, o);
        if (a.dres) st_vec<RT, V>(a.dres, base + c0, o);
      }
    }
  }

  float* part = a.workspace + int64_t(blockIdx.x) * cols;
  if constexpr (W == 1) {
    // The block's teams add their dw into sdw in team order, then one
    // coalesced partial row per block.
    for (int t = 0; t < TEAMS; ++t) {
      if (team == t) {
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          const int64_t c0 = int64_t(tt + TT * j) * V;
          if (c0 < cols)
#pragma unroll
            for (int v = 0; v < V; ++v) sdw[c0 + v] = (t == 0 ? 0.f : sdw[c0 + v]) + dw[j][v];
        }
      }
      __syncthreads();
    }
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) part[c] = sdw[c];
  } else {
    // One team per block: each column belongs to exactly one thread.
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int64_t c0 = int64_t(tt + TT * j) * V;
      if (c0 < cols)
#pragma unroll
        for (int v = 0; v < V; ++v) part[c0 + v] = dw[j][v];
    }
  }
}

// The original kernel, kept for what row_kernel does not take (rows over
// 4096 columns, unusual dtype mixes). Grid-strided rows per block; each block
// keeps a dw partial (cols floats in shared memory, each column owned by one
// thread) and writes it out. The row's r_hat and dy*w are cached in shared
// memory so each input is read once.
template <class RT, class DY, class DE, class DX, class DR>
__global__ void block_kernel(RmsNormBwdArgs a) {
  __shared__ float scratch[32];
  extern __shared__ float smem[];
  float* dw_part = smem;           // cols
  float* rh_row = smem + a.cols;   // cols
  float* g_row = rh_row + a.cols;  // cols
  for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) dw_part[c] = 0;
  for (int64_t i = blockIdx.x; i < a.rows; i += gridDim.x) {
    const float rstd = a.rstd[i];
    float dot = 0;  // sum_j g_j r_hat_j with g = dy * w
    for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) {
      float rh = ld<RT>(a.r, i * a.cols + c) * rstd;
      float dy = ld<DY>(a.dy, i * a.cols + c);
      float g = dy * a.weight[c];
      rh_row[c] = rh;
      g_row[c] = g;
      dot += g * rh;
      dw_part[c] += dy * rh;
    }
    dot = block_sum(dot, scratch) / float(a.cols);
    for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) {
      float d = rstd * (g_row[c] - rh_row[c] * dot);
      if (a.dr_extra) d += ld<DE>(a.dr_extra, i * a.cols + c);
      st<DX>(a.dx, i * a.cols + c, d);
      if (a.dres) st<DR>(a.dres, i * a.cols + c, d);
    }
  }
  for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) a.workspace[int64_t(blockIdx.x) * a.cols + c] = dw_part[c];
}

// dw[c] = sum over the partial rows, in a fixed order: thread (x, y) of a
// 32x32 block sums rows y, y+32, ... of column blockIdx.x*32 + x, then row 0
// of threads adds the 32 sums in y order. Many loads in flight per column,
// unlike one thread walking all partial rows.
__global__ void dw_reduce_kernel(const float* part, int parts, int64_t cols, float* dw) {
  __shared__ float s[32][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < cols)
    for (int p = threadIdx.y; p < parts; p += 32) acc += part[int64_t(p) * cols + c];
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < 32; ++k) t += s[k][threadIdx.x];
    dw[c] = t;
  }
}

template <class Fn> void by_act(DType t, const char* what, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(type_tag<float>{});
    case DType::bf16: return fn(type_tag<bf16>{});
    case DType::f16: return fn(type_tag<f16>{});
    default: fail(detail::cat("cuda rms_norm: ", what, " must be f32, bf16 or f16, got ", dtype_name(t)));
  }
}

int64_t block_kernel_grid(int64_t rows) { return std::max<int64_t>(1, std::min<int64_t>(rows, kBlockKernelGrid)); }

// Upper bound on row_kernel's grid: rows (one team per block at most) or
// what can be resident at once.
int64_t row_kernel_max_grid(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(rows, int64_t(sm_count()) * kMaxRowBlocksPerSm));
}

bool aligned(const void* p, size_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Launches row_kernel<RT, DY, V, NJ, W> with one resident wave of blocks;
// returns the number of partial rows written.
template <class RT, class DY, int V, int NJ, int W> int64_t launch_rows(const RmsNormBwdArgs& a, int device) {
  auto kern = row_kernel<RT, DY, V, NJ, W>;
  const size_t smem = size_t(W == 1 ? 2 : 1) * size_t(a.cols) * sizeof(float);
  static const int per_sm = [&] {
    int n = 0;
    COIL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, kRowThreads, 16 * 1024));
    return std::max(1, std::min(n, kMaxRowBlocksPerSm));
  }();
  constexpr int kTeams = kRowThreads / (32 * W);
  const int64_t want = (a.rows + kTeams - 1) / kTeams;
  const int64_t grid = std::max<int64_t>(1, std::min({want, int64_t(sm_count()) * per_sm, row_kernel_max_grid(a.rows)}));
  kern<<<unsigned(grid), kRowThreads, smem, stream_of(device)>>>(a);
  COIL_CUDA_LAUNCH_CHECK();
  return grid;
}

// The fast path for the dtype pair; 0 when the shape is not covered.
template <class RT, class DY> int64_t try_rows(const RmsNormBwdArgs& a, int device) {
  const int64_t c = a.cols;
  const bool v4 = c % 4 == 0 && aligned(a.r, 4 * sizeof(RT)) && aligned(a.dr_extra, 4 * sizeof(RT)) &&
                  aligned(a.dres, 4 * sizeof(RT)) && aligned(a.dy, 4 * sizeof(DY)) && aligned(a.dx, 4 * sizeof(DY));
  if (v4) {
    if (c <= 256) return launch_rows<RT, DY, 4, 2, 1>(a, device);
    if (c <= 512) return launch_rows<RT, DY, 4, 4, 1>(a, device);
    if (c <= 768) return launch_rows<RT, DY, 4, 6, 1>(a, device);
    if (c <= 1024) return launch_rows<RT, DY, 4, 8, 1>(a, device);
    if (c <= 2048) return launch_rows<RT, DY, 4, 4, 4>(a, device);
    if (c <= 3072) return launch_rows<RT, DY, 4, 6, 4>(a, device);
    if (c <= 4096) return launch_rows<RT, DY, 4, 8, 4>(a, device);
    return 0;
  }
  if (c <= 256) return launch_rows<RT, DY, 1, 8, 1>(a, device);
  if (c <= 1024) return launch_rows<RT, DY, 1, 32, 1>(a, device);
  return 0;
}

// Dtype pairs of the fast path: r f32 (the fp32 residual stream) with any
// activation dtype, or r in dy's dtype; dres (if any) in r's dtype.
int64_t try_row_kernel(const RmsNormBwdArgs& a, int device) {
  if (a.dres && a.dres_dtype != a.r_dtype) return 0;
  int64_t parts = 0;
  auto act = [&](auto dt) {
    using DY = typename decltype(dt)::type;
    if (a.r_dtype == DType::f32)
      parts = try_rows<float, DY>(a, device);
    else if (a.r_dtype == a.dy_dtype)
      parts = try_rows<DY, DY>(a, device);
  };
  switch (a.dy_dtype) {
    case DType::f32: act(type_tag<float>{}); break;
    case DType::bf16: act(type_tag<bf16>{}); break;
    case DType::f16: act(type_tag<f16>{}); break;
    default: break;
  }
  return parts;
}

}  // namespace

size_t rms_norm_bwd_workspace(int64_t rows, int64_t cols) {
  return size_t(std::max(block_kernel_grid(rows), row_kernel_max_grid(rows))) * size_t(cols);
}

void rms_norm_bwd(const RmsNormBwdArgs& a, int device) {
  // r and dr_extra share the residual's dtype; dy and dx share x's.
  COIL_CHECK(!a.dr_extra || a.dr_extra_dtype == a.r_dtype, "cuda rms_norm: residual gradient dtype mismatch");
  COIL_CHECK(a.dx_dtype == a.dy_dtype, "cuda rms_norm: dx and dy dtypes differ");
  if (a.cols == 0) return;  // nothing to write: dx and dw are empty
  int64_t parts = try_row_kernel(a, device);
  if (parts == 0) {
    parts = block_kernel_grid(a.rows);
    size_t smem = 3 * size_t(a.cols) * sizeof(float);
    COIL_CHECK(smem <= 48 * 1024, "cuda rms_norm: rows of ", a.cols, " columns exceed the kernel's 4096 limit");
    by_act(a.r_dtype, "residual", [&](auto rt) {
      by_act(a.dy_dtype, "dy", [&](auto dt) {
        by_act(a.dres ? a.dres_dtype : a.r_dtype, "dresidual", [&](auto ot) {
          using RT = typename decltype(rt)::type;
          using DY = typename decltype(dt)::type;
          using DR = typename decltype(ot)::type;
          block_kernel<RT, DY, RT, DY, DR><<<unsigned(parts), kThreads, smem, stream_of(device)>>>(a);
          COIL_CUDA_LAUNCH_CHECK();
        });
      });
    });
  }
  dw_reduce_kernel<<<unsigned((a.cols + 31) / 32), dim3(32, 32), 0, stream_of(device)>>>(a.workspace, int(parts),
                                                                                        a.cols, a.dw);
  COIL_CUDA_LAUNCH_CHECK();
}

}  // namespace coil::cuda
