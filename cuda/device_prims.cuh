// The few PTX-level pieces the decode kernels share (cp.async copies to
// shared memory, thread-block-cluster barriers and distributed shared
// memory, mma.sync), behind plain functions: kernels written against them
// compile for the host too, where tests/cuda/emu.h supplies CPU versions
// (tests/cuda/mma_rows_emu.cpp, tests/cuda/conv_xproj_emu.cpp).
#pragma once
#include <type_traits>

#include "core/half.h"

#if defined(__CUDACC__)
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "cuda/pdl.cuh"
#endif

namespace coil::cuda {

#if defined(__CUDACC__)
// The kernel's dynamic shared memory, 16-byte aligned.
__device__ __forceinline__ unsigned char* dyn_smem_bytes() {
  extern __shared__ __align__(16) unsigned char coil_dyn_smem_[];
  return coil_dyn_smem_;
}
// 16 bytes global -> shared without passing through registers (sm_80+);
// complete after cp_async_wait_all().
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
// Every thread of every block of the cluster arrives before any leaves;
// shared-memory writes before it are visible to the cluster after it.
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ int cluster_rank() { return int(cooperative_groups::this_cluster().block_rank()); }
// The address of `p` (this block's shared memory) in the block of rank r.
__device__ __forceinline__ float* cluster_map(float* p, int r) {
  return cooperative_groups::this_cluster().map_shared_rank(p, r);
}
// d += A (16x16, row) * B (16x8, col), f32 accumulation: a0..a3 and b0, b1
// as the PTX ISA lays them out for m16n8k16 (two 16-bit elements a register).
template <class T>
__device__ __forceinline__ void mma16816(float* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                         unsigned b1) {
  if constexpr (std::is_same_v<T, coil::bf16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}
#else
unsigned char* dyn_smem_bytes();
void cp_async16(void* smem, const void* gmem);
void cp_async_commit();
void cp_async_wait_all();
void cluster_sync_all();
int cluster_rank();
float* cluster_map(float* p, int r);
template <class T> void mma16816(float* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1);
void pdl_wait();
void pdl_trigger();
#endif

}  // namespace coil::cuda
