// Helpers for coil's .cu files: error checks, the device's stream, and the
// 16-byte vector type used for wide loads and stores.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_context.h"
#include "core/error.h"

namespace coil::cuda {

inline cudaStream_t stream_of(int device) { return static_cast<cudaStream_t>(cuda_ctx::stream(device)); }

// After every launch: a bad configuration shows up here, not at the next sync.
#define COIL_CUDA_LAUNCH_CHECK() COIL_CUDA_CHECK(cudaGetLastError())

// Whether p may be read or written with 16-byte vector accesses.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline unsigned grid_for(int64_t work, int threads, int64_t cap = 1 << 20) {
  int64_t g = (work + threads - 1) / threads;
  if (g < 1) g = 1;
  return unsigned(g < cap ? g : cap);
}

// Streaming multiprocessors of the current device (asked once per device).
inline int sm_count() {
  static int cached[64] = {};
  int dev = 0;
  COIL_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 64 && cached[dev] > 0) return cached[dev];
  int n = 0;
  COIL_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  if (dev < 64) cached[dev] = n;
  return n;
}

}  // namespace coil::cuda
