#include "cuda/common.cuh"
#include "cuda/mamba_step.h"

#include <cfloat>

namespace coil::cuda {

namespace {

// f32, bf16 or f16 activations (the decode step has no f64 path on the GPU).
template <class Fn> void dispatch_act(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(type_tag<float>{});
    case DType::bf16: return fn(type_tag<bf16>{});
    case DType::f16: return fn(type_tag<f16>{});
    default: fail(detail::cat(op, ": CUDA supports f32, bf16 and f16 activations, got ", dtype_name(t)));
  }
}

__device__ __forceinline__ float silu_f(float v) { return v / (1.f + __expf(-v)); }

// One thread per (b, c): the K-1 state entries of one channel are contiguous,
// so a thread reads, convolves and shifts them without talking to others.
template <class T>
__global__ void conv_step_kernel(ConvStepArgs a) {
  const int64_t n = a.batch * a.dim;
  const int64_t km1 = a.width - 1;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / a.dim, c = i - b * a.dim;
    const T xt = static_cast<const T*>(a.x)[b * a.x_row + c];
    T* s = static_cast<T*>(a.state) + i * km1;
    const float* w = a.w + c * a.width;
    float acc = a.bias ? a.bias[c] : 0.f;
    for (int64_t k = 0; k < km1; ++k) acc += w[k] * load_as<float, T>(s[k]);
    acc += w[km1] * load_as<float, T>(xt);
    for (int64_t k = 0; k + 1 < km1; ++k) s[k] = s[k + 1];
    if (km1 > 0) s[km1 - 1] = xt;
    static_cast<T*>(a.out)[i] = store_as<T, float>(a.silu ? silu_f(acc) : acc);
  }
}

// One thread per (b, d): its dstate entries of h are contiguous f32; B and C
// rows are shared by the threads of one sequence (served from L1).
template <class T>
__global__ void ssm_step_kernel(SsmStepArgs a) {
  const int64_t n = a.batch * a.dim;
  const T* x = static_cast<const T*>(a.x);
  const T* dt_in = static_cast<const T*>(a.dt_in);
  const T* dt_w = static_cast<const T*>(a.dt_w);
  const T* Bm = static_cast<const T*>(a.B);
  const T* Cm = static_cast<const T*>(a.C);
  const T* z = static_cast<const T*>(a.z);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / a.dim, d = i - b * a.dim;
    const float xv = load_as<float, T>(x[b * a.x_row + d]);
    float dt = 0.f;
    if (dt_w) {
      const T* wr = dt_w + d * a.dt_rank;
      const T* ir = dt_in + b * a.dt_row;
      for (int64_t r = 0; r < a.dt_rank; ++r) dt += load_as<float, T>(wr[r]) * load_as<float, T>(ir[r]);
    } else {
      dt = load_as<float, T>(dt_in[b * a.dt_row + d]);
    }
    if (a.dt_bias) dt += a.dt_bias[d];
    // softplus with PyTorch's threshold 20 (the scan kernels' choice too);
    // accurate expf/log1pf here: dt feeds an exponent.
    if (a.softplus) dt = dt <= 20.f ? log1pf(expf(dt)) : dt;
    const float dtx = dt * xv;
    float* h = a.state + i * a.dstate;
    const float* Ad = a.A + d * a.dstate;
    const T* Bb = Bm + b * a.B_row;
    const T* Cb = Cm + b * a.C_row;
    float y = 0.f;
    for (int64_t k = 0; k < a.dstate; ++k) {
      const float hv = expf(dt * Ad[k]) * h[k] + dtx * load_as<float, T>(Bb[k]);
      h[k] = hv;
      y += load_as<float, T>(Cb[k]) * hv;
    }
    if (a.D) y += a.D[d] * xv;
    if (z) y *= silu_f(load_as<float, T>(z[b * a.z_row + d]));
    static_cast<T*>(a.out)[i] = store_as<T, float>(y);
  }
}

// (value, index) pairs: larger value wins, then the lower index.
__device__ __forceinline__ bool better(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

constexpr int kArgmaxThreads = 256;

// One block per row: a strided pass per thread, then a warp-shuffle and
// shared-memory reduction. Reads each logit once.
template <class T, class I>
__global__ void argmax_kernel(const T* x, int64_t limit, int64_t x_row, I* out) {
  const T* row = x + int64_t(blockIdx.x) * x_row;
  float bv = -INFINITY;
  int64_t bi = INT64_MAX;
  for (int64_t j = threadIdx.x; j < limit; j += blockDim.x) {
    float v = load_as<float, T>(row[j]);
    if (v != v) v = -INFINITY;
    if (better(v, j, bv, bi)) {
      bv = v;
      bi = j;
    }
  }
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

}  // namespace

void conv_step(const ConvStepArgs& a, int device) {
  const int64_t n = a.batch * a.dim;
  if (n == 0) return;
  dispatch_act(a.dtype, "conv_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    conv_step_kernel<T><<<grid_for(n, 256), 256, 0, stream_of(device)>>>(a);
    COIL_CUDA_LAUNCH_CHECK();
  });
}

void ssm_step(const SsmStepArgs& a, int device) {
  const int64_t n = a.batch * a.dim;
  if (n == 0) return;
  dispatch_act(a.dtype, "ssm_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    // 128 threads: at batch 1 (d_inner 1536) that is 12 blocks' worth of
    // parallel channels instead of 6, more SMs pulling state.
    ssm_step_kernel<T><<<grid_for(n, 128), 128, 0, stream_of(device)>>>(a);
    COIL_CUDA_LAUNCH_CHECK();
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
      argmax_kernel<T, I><<<unsigned(rows), kArgmaxThreads, 0, stream_of(device)>>>(static_cast<const T*>(x), limit,
                                                                                   x_row, static_cast<I*>(out));
      COIL_CUDA_LAUNCH_CHECK();
    });
  });
}

}  // namespace coil::cuda
