#include <cmath>

#include "cuda/clip_grad_norm.h"
#include "cuda/common.cuh"
#include "cuda/multi_tensor.cuh"

namespace coil::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per block
constexpr int kMaxSlots = 320;    // per launch: the table stays under 8 KB

using Table = ChunkTable<GradSlot, kMaxSlots>;

__global__ void sumsq_kernel(const __grid_constant__ Table t, double* partials) {
  __shared__ double sm[kThreads];
  int64_t base;
  const GradSlot& a = t.slot[t.slot_of_block(kChunk, base)];
  const int64_t end = base + kChunk < a.numel ? base + kChunk : a.numel;
  double acc = 0;
  for (int64_t i = base + threadIdx.x; i < end; i += kThreads) {
    const double g = a.grad[i];
    acc += g * g;
  }
  sm[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) sm[threadIdx.x] += sm[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = sm[0];
}

constexpr int kFinishThreads = 1024;

__global__ void finish_kernel(const double* partials, int64_t n, float max_norm, float* norm, float* coef) {
  __shared__ double sm[kFinishThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += kFinishThreads) acc += partials[i];  // fixed order
  sm[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kFinishThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) sm[threadIdx.x] += sm[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float nv = float(sqrt(sm[0]));
    float c = 1.f;
    if (max_norm > 0.f) {
      c = max_norm / (nv + 1e-6f);
      if (c > 1.f) c = 1.f;  // NaN stays NaN, as the CPU's clamp keeps it
    }
    *norm = nv;
    *coef = c;
  }
}

__global__ void scale_kernel(const __grid_constant__ Table t, const float* coef) {
  const float c = *coef;
  if (c == 1.f) return;
  int64_t base;
  const GradSlot& a = t.slot[t.slot_of_block(kChunk, base)];
  const int64_t end = base + kChunk < a.numel ? base + kChunk : a.numel;
  for (int64_t i = base + threadIdx.x; i < end; i += kThreads) a.grad[i] *= c;
}

}  // namespace

int64_t clip_grad_norm_partials(const std::vector<GradSlot>& slots) {
  int64_t n = 0;
  for (const GradSlot& s : slots) n += (s.numel + kChunk - 1) / kChunk;
  return n;
}

void clip_grad_norm(const std::vector<GradSlot>& slots, double max_norm, double* partials, float* norm, float* coef,
                    int device) {
  cudaStream_t st = stream_of(device);
  for_chunk_tables<kMaxSlots>(slots, kChunk, [&](const Table& t, int64_t blocks, int64_t offset) {
    COIL_CHECK(blocks <= int64_t(INT32_MAX), "clip_grad_norm: too many elements");
    sumsq_kernel<<<unsigned(blocks), kThreads, 0, st>>>(t, partials + offset);
    COIL_CUDA_LAUNCH_CHECK();
  });
  const bool clip = max_norm > 0 && std::isfinite(max_norm);
  finish_kernel<<<1, kFinishThreads, 0, st>>>(partials, clip_grad_norm_partials(slots), clip ? float(max_norm) : 0.f,
                                              norm, coef);
  COIL_CUDA_LAUNCH_CHECK();
  if (!clip) return;
  for_chunk_tables<kMaxSlots>(slots, kChunk, [&](const Table& t, int64_t blocks, int64_t) {
    scale_kernel<<<unsigned(blocks), kThreads, 0, st>>>(t, coef);
    COIL_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace coil::cuda
