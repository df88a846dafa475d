// Device helpers shared by the decode-step kernels (cuda/mamba_step.cu,
// cuda/conv_xproj.cu): activation dispatch, the step's math (SiLU,
// softplus) and the lane-group sums and loads of the SSM step.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/half.h"

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

// An L2 load (ld.global.cg) of a buffer the step rewrites, for reads issued
// before the PDL wait: L1 is not coherent, L2 is.
template <class T> __device__ __forceinline__ T ld_cg(const T* p) {
  T t;
  if constexpr (sizeof(T) == 4) {
    const float v = __ldcg(reinterpret_cast<const float*>(p));
    memcpy(&t, &v, 4);
  } else {
    const unsigned short v = __ldcg(reinterpret_cast<const unsigned short*>(p));
    memcpy(&t, &v, 2);
  }
  return t;
}

// softplus with PyTorch's threshold 20 (the scan kernels' choice too);
// accurate expf/log1pf: dt feeds an exponent.
__device__ __forceinline__ float step_softplus(float x) { return x <= 20.f ? log1pf(expf(x)) : x; }

// G lanes (a power of two <= 32, within one warp) per (b, d): lane j owns
// states j, j+G, ... of h (adjacent lanes read adjacent f32 words of a
// state row: coalesced) and the dt_proj terms j, j+G, ...; shuffles within
// the group sum the dt dot and C.h. At batch 1 (d_inner 1536, G 16) that is
// 24k threads instead of the 1536 of a thread per channel looping over all
// states, so the step's exp/FMA chains and loads spread over all SMs.
// The group sums go through a fixed butterfly: deterministic run to run.
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, G);
  return v;
}

// Four values of T from 4*sizeof(T) aligned bytes (one 16- or 8-byte load).
template <class T> __device__ __forceinline__ void load4(const T* p, float* v) {
  if constexpr (sizeof(T) == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
    union {
      uint2 u;
      T e[4];
    } q;
    q.u = *reinterpret_cast<const uint2*>(p);
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = load_as<float, T>(q.e[i]);
  }
}

}  // namespace
}  // namespace coil::cuda
