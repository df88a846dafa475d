// CPU kernels of one recurrent decode step (ops/mamba_step.h): the reference
// for cuda/mamba_step.cu and the CPU backend's path. All operands contiguous
// in the compute type T (float or double):
//   conv_step: x (batch, dim), state (batch, dim, width-1) in place, w (dim,
//              width), bias (dim) or null -> out (batch, dim)
//   ssm_step : x, z (batch, dim); dt_in (batch, dt_rank) with dt_w (dim,
//              dt_rank), or dt_in (batch, dim) when dt_w is null; A (dim,
//              dstate); B, C (batch, dstate); D, dt_bias (dim) or null;
//              state (batch, dim, dstate) in place -> out (batch, dim)
// The math is the scan's and the conv's at one position; sums in double.
#pragma once
#include <cstdint>

namespace coil::cpu {

template <class T>
void conv_step(int64_t batch, int64_t dim, int64_t width, const T* x, T* state, const T* w, const T* bias, bool silu,
               T* out);

template <class T>
void ssm_step(int64_t batch, int64_t dim, int64_t dstate, int64_t dt_rank, const T* x, const T* dt_in, const T* dt_w,
              const T* A, const T* B, const T* C, const T* D, const T* z, const T* dt_bias, bool softplus, T* state,
              T* out);

}  // namespace coil::cpu
