#include "cuda/block_reduce.cuh"
#include "cuda/common.cuh"
#include "cuda/rms_norm.h"

namespace coil::cuda {

namespace {

constexpr int kThreads = 256;

template <class T> __device__ __forceinline__ float ld(const void* p, int64_t i) {
  return load_as<float, T>(static_cast<const T*>(p)[i]);
}
template <class T> __device__ __forceinline__ void st(void* p, int64_t i, float v) {
  static_cast<T*>(p)[i] = store_as<T, float>(v);
}

// One block per row. The row is read once into registers-by-stride (x +
// residual), reduced, then written: y and the new residual.
template <class X, class R, class RO>
__global__ void fwd_kernel(RmsNormArgs a) {
  __shared__ float scratch[32];
  extern __shared__ float row[];  // cols floats: r for this row
  for (int64_t i = blockIdx.x; i < a.rows; i += gridDim.x) {
    float ss = 0;
    for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) {
      float v = ld<X>(a.x, i * a.cols + c);
      if (a.residual) v += ld<R>(a.residual, i * a.cols + c);
      // Round through the residual's storage type so y is computed from
      // exactly the residual the next layer will see.
      v = load_as<float, RO>(store_as<RO, float>(v));
      row[c] = v;
      ss += v * v;
    }
    ss = block_sum(ss, scratch);
    float rstd = rsqrtf(ss / float(a.cols) + float(a.eps));
    for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) {
      float v = row[c];
      st<X>(a.y, i * a.cols + c, v * rstd * a.weight[c]);
      st<RO>(a.residual_out, i * a.cols + c, v);
    }
    if (threadIdx.x == 0) a.rstd[i] = rstd;
    __syncthreads();
  }
}

// Rows of up to 1024 columns: one warp per row, the row held in registers
// (32 values per lane), reductions by shuffles only. Each lane keeps up to 32
// loads in flight and no block barrier is needed, which is what short rows
// lack in the block-per-row kernel.
template <class X, class R, class RO>
__global__ void fwd_warp_kernel(RmsNormArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t i = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (i >= a.rows) return;
  float v[32];
  float ss = 0;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int64_t c = lane + 32 * j;
    if (c < a.cols) {
      float t = ld<X>(a.x, i * a.cols + c);
      if (a.residual) t += ld<R>(a.residual, i * a.cols + c);
      t = load_as<float, RO>(store_as<RO, float>(t));
      v[j] = t;
      ss += t * t;
    }
  }
  ss = warp_sum(ss);
  const float rstd = rsqrtf(ss / float(a.cols) + float(a.eps));
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int64_t c = lane + 32 * j;
    if (c < a.cols) {
      st<X>(a.y, i * a.cols + c, v[j] * rstd * a.weight[c]);
      st<RO>(a.residual_out, i * a.cols + c, v[j]);
    }
  }
  if (lane == 0) a.rstd[i] = rstd;
}

template <class Fn> void by_act(DType t, const char* what, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(type_tag<float>{});
    case DType::bf16: return fn(type_tag<bf16>{});
    case DType::f16: return fn(type_tag<f16>{});
    default: fail(detail::cat("cuda rms_norm: ", what, " must be f32, bf16 or f16, got ", dtype_name(t)));
  }
}

}  // namespace

void rms_norm_fwd(const RmsNormArgs& a, int device) {
  if (a.rows == 0) return;
  size_t smem = size_t(a.cols) * sizeof(float);
  COIL_CHECK(smem <= 48 * 1024, "cuda rms_norm: rows of ", a.cols, " columns exceed the kernel's 12288 limit");
  by_act(a.x_dtype, "x", [&](auto xt) {
    by_act(a.residual ? a.residual_dtype : a.x_dtype, "residual", [&](auto rt) {
      by_act(a.residual_out_dtype, "residual_out", [&](auto ot) {
        using X = typename decltype(xt)::type;
        using R = typename decltype(rt)::type;
        using O = typename decltype(ot)::type;
        if (a.cols <= 1024) {
          const int64_t rows_per_block = kThreads / 32;
          fwd_warp_kernel<X, R, O><<<unsigned((a.rows + rows_per_block - 1) / rows_per_block), kThreads, 0,
                                     stream_of(device)>>>(a);
        } else {
          unsigned grid = unsigned(a.rows < 65535 * 8 ? a.rows : 65535 * 8);
          fwd_kernel<X, R, O><<<grid, kThreads, smem, stream_of(device)>>>(a);
        }
        COIL_CUDA_LAUNCH_CHECK();
      });
    });
  });
}

}  // namespace coil::cuda
