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

// The same for 16-bit logits whose row fits the registers of one block
// (V <= kVecThreads * 8 * 28: 57,344 columns; beyond, ptxas spills): each thread loads its NV
// 16-byte vectors of the row once, then max, sum of exp(x - max) and the
// in-place write of softmax - onehot all work from registers. The row
// crosses memory once each way; the scalar kernel above reads it twice with
// an exp per element in its online merge, and ran at a quarter of the copy
// bandwidth on the 50K-vocabulary LM head.
constexpr int kVecThreads = 256;

template <class T, class I, int NV>
__global__ void __launch_bounds__(kVecThreads, 2)
    fwd_grad_vec_kernel(T* logits, int64_t n, int64_t V, const I* targets, int64_t ignore, float* loss,
                        float* weight) {
  constexpr int E = 16 / int(sizeof(T));
  union Pack {
    uint4 v;
    T e[E];
  };
  __shared__ float scratch[32];
  const int nv = int(V / E);  // column indices fit 32 bits (V <= 65536)
  const int tid = int(threadIdx.x);
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    uint4* row = reinterpret_cast<uint4*>(logits + r * V);
    Pack p[NV];
#pragma unroll
    for (int j = 0; j < NV; ++j)
      if (tid + j * kVecThreads < nv) p[j].v = row[tid + j * kVecThreads];
    const int64_t t = int64_t(targets[r]);
    const bool ignored = t == ignore, valid = t >= 0 && t < V;
    // Read before any thread of the block overwrites the row (the
    // reductions below end with barriers).
    const float xt = tid == 0 && !ignored && valid ? load_as<float, T>(logits[r * V + t]) : 0.f;
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < NV; ++j)
      if (tid + j * kVecThreads < nv) {
#pragma unroll
        for (int e = 0; e < E; ++e) m = fmaxf(m, load_as<float, T>(p[j].e[e]));
      }
    m = block_max(m, scratch);
    const float shift = m == -INFINITY ? 0.f : m;  // an all -inf row: lse -inf, as the scalar kernel
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < NV; ++j)
      if (tid + j * kVecThreads < nv) {
#pragma unroll
        for (int e = 0; e < E; ++e) s += __expf(load_as<float, T>(p[j].e[e]) - shift);
      }
    s = block_sum(s, scratch);
    const float lse = shift + __logf(s);
    if (tid == 0) {
      loss[r] = ignored ? 0.f : valid ? lse - xt : NAN;
      weight[r] = ignored ? 0.f : 1.f;
    }
    // Ignored rows become zeros (scale 0; NaN where their logits are not
    // finite, as PyTorch's masked gradient), rows with a bad target NaN;
    // the one-hot is subtracted at the target's column (tcol -1: nowhere).
    // (A select per element here instead of the scale made ptxas spill.)
    const float scale = ignored ? 0.f : valid ? 1.f : NAN;
    const int tcol = valid && !ignored ? int(t) : -1;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int v = tid + j * kVecThreads;
      if (v < nv) {
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const float q = __expf(load_as<float, T>(p[j].e[e]) - lse) - (v * E + e == tcol ? 1.f : 0.f);
          p[j].e[e] = store_as<T, float>(q * scale);
        }
        row[v] = p[j].v;
      }
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
      if constexpr (sizeof(T) == 2) {
        constexpr int64_t E = 8;
        const int64_t nv = V / E, need = (nv + kVecThreads - 1) / kVecThreads;
        if (V % E == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0 && need <= 28) {
          auto launch = [&](auto kernel) {
            kernel<<<rows_grid(n), kVecThreads, 0, stream_of(device)>>>(
                static_cast<T*>(logits), n, V, static_cast<const I*>(targets), ignore_index, loss, weight);
            COIL_CUDA_LAUNCH_CHECK();
          };
          // Registers sized to the row, in steps of 4 vectors (V 50280: 25 -> 28).
          if (need <= 4) return launch(fwd_grad_vec_kernel<T, I, 4>);
          if (need <= 8) return launch(fwd_grad_vec_kernel<T, I, 8>);
          if (need <= 12) return launch(fwd_grad_vec_kernel<T, I, 12>);
          if (need <= 16) return launch(fwd_grad_vec_kernel<T, I, 16>);
          if (need <= 20) return launch(fwd_grad_vec_kernel<T, I, 20>);
          if (need <= 24) return launch(fwd_grad_vec_kernel<T, I, 24>);
          return launch(fwd_grad_vec_kernel<T, I, 28>);
        }
      }
      fwd_grad_kernel<T, I><<<rows_grid(n), kThreads, 0, stream_of(device)>>>(
          static_cast<T*>(logits), n, V, static_cast<const I*>(targets), ignore_index, loss, weight);
      COIL_CUDA_LAUNCH_CHECK();
    });
  });
}

}  // namespace coil::cuda
