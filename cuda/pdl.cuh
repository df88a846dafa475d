// Programmatic dependent launch (sm_90) for the decode step's kernels.
//
// A decode step is ~100 small dependent kernels; between two of them the GPU
// normally idles for the launch latency (the next grid is only dispatched
// once the previous one has fully drained). Launched with programmatic
// stream serialization, the next kernel's blocks are dispatched as soon as
// every block of the previous one has called pdl_trigger(), and they park in
// pdl_wait() until the previous grid has completed and its writes are
// visible. Stream capture turns these launches into programmatic graph
// edges, so replaying the decode graph keeps the overlap.
//
// The contract for a kernel launched through launch_maybe_pdl: it calls
// pdl_wait() before touching any memory a previous kernel may write or read
// (before it, only L2 prefetches, which are hints, and reads of what no
// kernel of the step writes: the weights), then pdl_trigger(). Every
// kernel launched with the attribute waits, so a chain of them is ordered
// transitively. Without the attribute (or before sm_90) both are no-ops.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "cuda/common.cuh"

namespace coil::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Warm the L2 with an operand (a weight row, a state row) before
// pdl_wait(): its HBM reads then overlap the previous kernel's tail.
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// Whether the decode kernels launch with the attribute (set_decode_pdl in
// cuda/mamba_step.h); read on the host at each launch.
bool decode_pdl_enabled();

template <class... Params, class... Args>
void launch_maybe_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = decode_pdl_enabled() ? 1 : 0;
  COIL_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace coil::cuda
