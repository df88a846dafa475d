// CUDA depthwise causal conv1d, forward and backward, for x laid out
// (batch, channels, len) with len contiguous (the layout the scan reads);
// x may have any batch and channel strides.
// Widths 1..8, optional bias, fused SiLU, initial and final states for
// streaming. Weight and bias gradients are reduced from per-(batch, channel)
// partials in a fixed order (no atomics).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace coil::cuda {

struct ConvArgs {
  int64_t batch = 0, dim = 0, len = 0, width = 0;
  DType dtype = DType::f32;          // x, out, init/final states, dx: f32, bf16 or f16
  const void* x = nullptr;
  // x's (batch, channel) strides in elements with time contiguous (a strided
  // view such as a GEMM's (dim, batch, len) output needs no copy); 0, 0 =
  // contiguous. out, dout and dx are contiguous.
  int64_t x_sb = 0, x_sd = 0;
  const float* w = nullptr;          // (dim, width) f32
  const float* bias = nullptr;       // (dim) f32 or null
  const void* init_state = nullptr;  // (batch, dim, width-1) or null
  bool silu = false;
  void* out = nullptr;
  void* final_state = nullptr;       // (batch, dim, width-1) or null
};
void causal_conv1d_fwd(const ConvArgs& a, int device);

struct ConvGrads {
  const void* dout = nullptr;          // a.dtype
  const void* dfinal_state = nullptr;  // a.dtype or null
  void* dx = nullptr;                  // a.dtype
  float* dw = nullptr;                 // (dim, width)
  float* dbias = nullptr;              // (dim) or null
  void* dinit_state = nullptr;         // a.dtype or null
  float* workspace = nullptr;          // conv_bwd_workspace floats
};
size_t conv_bwd_workspace(const ConvArgs& a);  // in floats
void causal_conv1d_bwd(const ConvArgs& a, const ConvGrads& g, int device);

}  // namespace coil::cuda
