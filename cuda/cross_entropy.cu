#include "cuda/block_reduce.cuh"
#include "cuda/common.cuh"
#include "cuda/cross_entropy.h"

namespace coil::cuda {

namespace {

constexpr int kThreads = 512;

// Combines two (max, sum of exp(x - max)) pairs.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    s = s * __expf(m - m2) + s2;
    m = m2;
  } else if (m2 != -INFINITY) {
    s += s2 * __expf(m2 - m);
  }
}

// log-sum-exp of one row, reduced over the block: each thread folds its
// columns into (max, sum), warps combine by shuffles, thread 0 combines the
// warps in order (deterministic). Every thread gets the result; shared memory
// is free again on return, so a caller may loop over rows.
template <class T>
__device__ __forceinline__ float block_row_lse(const T* row, int64_t V) {
  __shared__ float sm[32], ss[32], result;
  float m = -INFINITY, s = 0;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) merge(m, s, load_as<float, T>(row[c]), 1.f);
  for (int o = 16; o > 0; o >>= 1) merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sm[warp] = m, ss[warp] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float M = -INFINITY, S = 0;
    for (int w = 0; w < int(blockDim.x >> 5); ++w) merge(M, S, sm[w], ss[w]);
    result = M + __logf(S);
  }
  __syncthreads();
  const float lse = result;
  __syncthreads();
  return lse;
}

template <class T, class I>
__global__ void fwd_kernel(const T* logits, int64_t n, int64_t V, const I* targets, int64_t ignore, float* loss,
                           float* lse_out, float* weight) {
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const T* row = logits + r * V;
    const float lse = block_row_lse(row, V);
    if (threadIdx.x == 0) {
      int64_t t = int64_t(targets[r]);
      lse_out[r] = lse;
      if (t == ignore) {
        loss[r] = 0.f;
        weight[r] = 0.f;
      } else {
        loss[r] = (t >= 0 && t < V) ? lse - load_as<float, T>(row[t]) : NAN;
        weight[r] = 1.f;
      }
    }
  }
}

// Forward and logits gradient in one kernel, in place: the row is read for
// its log-sum-exp, then each thread overwrites its own columns with
// softmax - onehot (zeros on ignored rows; NaN on rows whose target is out of
// range, whose loss is NaN too).
template <class T, class I>
__global__ void fwd_grad_kernel(T* logits, int64_t n, int64_t V, const I* targets, int64_t ignore, float* loss,
                                float* weight) {
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    T* row = logits + r * V;
    const float lse = block_row_lse(row, V);
    const int64_t t = int64_t(targets[r]);
    const bool ignored = t == ignore, valid = t >= 0 && t < V;
    if (threadIdx.x == 0) {
      loss[r] = ignored ? 0.f : valid ? lse - load_as<float, T>(row[t]) : NAN;
      weight[r] = ignored ? 0.f : 1.f;
    }
    __syncthreads();  // row[t] is read above before any thread overwrites it
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
      const float p = __expf(load_as<float, T>(row[c]) - lse);
      row[c] = store_as<T, float>(ignored ? 0.f : valid ? p - (c == t ? 1.f : 0.f) : NAN);
    }
  }
}

template <class T, class I>
__global__ void bwd_kernel(const T* logits, int64_t n, int64_t V, const I* targets, int64_t ignore, const float* lse,
                           const float* dloss, T* dlogits) {
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const int64_t t = int64_t(targets[r]);
    const float g = t == ignore ? 0.f : dloss[r], l = lse[r];
    const T* row = logits + r * V;
    T* drow = dlogits + r * V;
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
      float p = __expf(load_as<float, T>(row[c]) - l);
      drow[c] = store_as<T, float>(g * (p - (c == t ? 1.f : 0.f)));
    }
  }
}

template <class Fn> void by_logit(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(type_tag<float>{});
    case DType::bf16: return fn(type_tag<bf16>{});
    case DType::f16: return fn(type_tag<f16>{});
    default: fail(detail::cat("cuda cross_entropy: logits must be f32, bf16 or f16, got ", dtype_name(t)));
  }
}

unsigned rows_grid(int64_t n) { return unsigned(n < 65535 * 32 ? (n > 0 ? n : 1) : 65535 * 32); }

}  // namespace

void cross_entropy_fwd(const void* logits, DType dtype, int64_t n, int64_t V, const void* targets, DType tdtype,
                       int64_t ignore_index, float* loss, float* lse, float* weight, int device) {
  if (n == 0) return;
  by_logit(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(tdtype, "cuda cross_entropy", [&](auto itag) {
      using I = typename decltype(itag)::type;
      fwd_kernel<T, I><<<rows_grid(n), kThreads, 0, stream_of(device)>>>(
          static_cast<const T*>(logits), n, V, static_cast<const I*>(targets), ignore_index, loss, lse, weight);
      COIL_CUDA_LAUNCH_CHECK();
    });
  });
}

void cross_entropy_bwd(const void* logits, DType dtype, int64_t n, int64_t V, const void* targets, DType tdtype,
                       int64_t ignore_index, const float* lse, const float* dloss, void* dlogits, int device) {
  if (n == 0) return;
  by_logit(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(tdtype, "cuda cross_entropy backward", [&](auto itag) {
      using I = typename decltype(itag)::type;
      bwd_kernel<T, I><<<rows_grid(n), kThreads, 0, stream_of(device)>>>(static_cast<const T*>(logits), n, V,
                                                                          static_cast<const I*>(targets), ignore_index,
                                                                          lse, dloss, static_cast<T*>(dlogits));
      COIL_CUDA_LAUNCH_CHECK();
    });
  });
}

void cross_entropy_fwd_grad(void* logits, DType dtype, int64_t n, int64_t V, const void* targets, DType tdtype,
                            int64_t ignore_index, float* loss, float* weight, int device) {
  if (n == 0) return;
  by_logit(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_index(tdtype, "cuda cross_entropy (fused gradient)", [&](auto itag) {
      using I = typename decltype(itag)::type;
      fwd_grad_kernel<T, I><<<rows_grid(n), kThreads, 0, stream_of(device)>>>(
          static_cast<T*>(logits), n, V, static_cast<const I*>(targets), ignore_index, loss, weight);
      COIL_CUDA_LAUNCH_CHECK();
    });
  });
}

}  // namespace coil::cuda
