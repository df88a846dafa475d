// One recurrent decode step of the Mamba mixer, fused (inference only: no
// autograd is recorded, the states are updated in place). The same math as
// causal_conv1d and selective_scan run at L = 1 from their states
// (ops/causal_conv1d.h, ops/selective_scan.h), in one kernel each, so a
// decode step costs a few launches per layer instead of a dozen ops.
//
// Activations (B, n) may be column slices of a wider row-major tensor (the
// in_proj output x | z, the x_proj output dt | B | C): rows may be strided,
// columns must be adjacent (other layouts are copied first).
#pragma once
#include "core/tensor.h"

namespace coil {

// x_t (B, C) -> silu?(bias + sum_k w[:, k] * [state, x_t][k]) (B, C) in x's
// dtype; conv_state (B, C, K-1), x's dtype, contiguous: shifted left by one
// and x_t appended. weight (C, K) or (C, 1, K); bias (C) or undefined.
// `out`, when given ((B, C) contiguous in x's dtype), receives the result
// (the decoder's fixed buffers); the same for the other ops' out buffers.
Tensor causal_conv1d_step(const Tensor& x, const Tensor& conv_state, const Tensor& weight,
                          const Tensor& bias = Tensor(), bool silu = true, const Tensor& out = Tensor());

struct SsmStepInputs {
  Tensor x;          // (B, D), the conv output
  Tensor dt;         // (B, D) before bias and softplus; or (B, R) when dt_weight is given
  Tensor dt_weight;  // (D, R): dt = dt @ dt_weight^T fused into the step (dt_proj); or undefined
  Tensor A;          // (D, N), -exp(A_log)
  Tensor B, C;       // (B, N)
  Tensor D;          // (D) or undefined
  Tensor z;          // (B, D) or undefined
  Tensor dt_bias;    // (D) or undefined
  bool softplus = true;
};

// h = exp(dt A) h + dt B x;  y = C.h + D x, times silu(z) -> (B, D) in x's
// dtype. ssm_state (B, D, N), contiguous, f32 (f64 on the CPU in f64
// models), advanced in place. On CUDA, A, D and dt_bias are read in f32 and
// x, dt, dt_weight, B, C, z must share one dtype (f32, bf16 or f16).
Tensor selective_state_step(const Tensor& ssm_state, const SsmStepInputs& in, const Tensor& out = Tensor());

// The conv step (SiLU) and x_proj of a decode step: conv_out =
// causal_conv1d_step(x, conv_state, conv_w, conv_b, true) (B, C) and x_dbl =
// linear(conv_out, w_x) (B, E), both in x's dtype; conv_state advances in
// place. On CUDA one kernel does both where cuda::conv_xproj_supported holds
// (C a multiple of 8, conv width <= 4); elsewhere the two ops run. `conv_out`
// and `x_dbl`, when given, receive the results.
struct ConvXprojResult {
  Tensor conv_out, x_dbl;
};
ConvXprojResult decode_conv_xproj(const Tensor& x, const Tensor& conv_state, const Tensor& conv_w, const Tensor& conv_b,
                                  const Tensor& w_x, const Tensor& conv_out = Tensor(), const Tensor& x_dbl = Tensor());

// linear(x, w, bias) for a decode step's few rows: x (M, K), w (N, K),
// bias (N) or undefined -> (M, N) in x's dtype. On CUDA it is one GEMV
// kernel (no cuBLASLt heuristics, no split-K second kernel) that reads each
// weight row once per tile of 8 rows: right for M <= 8, and for a few tiles
// when the weights stay in L2 (x_proj, out_proj at batch 64); elsewhere it
// is linear().
Tensor decode_linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), const Tensor& out = Tensor());
// decode_linear for the decode step's larger batches (9..64 rows a tile):
// on CUDA with bf16/f16 operands, K a multiple of 32 and 16-byte aligned
// rows (cuda::mma_rows_supported) one tensor-core kernel whose blocks stage
// their weight rows before the PDL wait, so the weight stream overlaps the
// previous kernel and the step's chain of PDL launches is not broken by a
// cuBLASLt kernel; elsewhere it is linear(). For the layer projections: at
// a large N (an LM head) every block would re-read x, so it is not meant
// for those.
Tensor decode_linear_mma(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), const Tensor& out = Tensor());
// The most rows the fused GEMV kernels (norm prologue, conv epilogue) take
// (cuda::kGemvMaxRows); decode_linear tiles larger M.
constexpr int64_t kDecodeGemvMaxRows = 8;

// decode_linear with the conv step fused in (in_proj then the conv on its x
// half): y = decode_linear(x, w, bias) (M, N) and conv_out =
// causal_conv1d_step(y[:, :C], conv_state, conv_w, conv_b, silu) (M, C),
// C = conv_state.size(1). On CUDA with M <= 8 one kernel does both.
struct LinearConvResult {
  Tensor y;
  Tensor conv_out;
};
LinearConvResult decode_linear_conv(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& conv_state,
                                    const Tensor& conv_w, const Tensor& conv_b = Tensor(), bool silu = true);

// A layer's pre-norm and in_proj (+ conv) in one: the fused residual add +
// RMSNorm (ops/rms_norm.h) of x with `residual`, cast to w's dtype, then
// decode_linear_conv (conv_state defined) or decode_linear. Returns the new
// residual stream, the product and the conv output (undefined without
// conv_state). On CUDA with M <= 8 (and M*K floats fitting in shared
// memory) one kernel does all of it; elsewhere the ops run one by one.
// `out` ((M, N) in w's dtype), `residual_out` ((M, K) in the residual
// stream's dtype; not aliasing x or residual) and `conv_out` ((M, C)), when
// given, receive the results (the fused kernel writes them in place;
// otherwise they are copied there).
struct NormLinearResult {
  Tensor residual;
  Tensor y;
  Tensor conv_out;
};
NormLinearResult decode_norm_linear(const Tensor& x, const Tensor& residual, const Tensor& norm_w, double eps,
                                    bool residual_in_fp32, const Tensor& w, const Tensor& bias,
                                    const Tensor& conv_state = Tensor(), const Tensor& conv_w = Tensor(),
                                    const Tensor& conv_b = Tensor(), bool silu = true, const Tensor& out = Tensor(),
                                    const Tensor& residual_out = Tensor(), const Tensor& conv_out = Tensor());

// The residual add + RMSNorm of a decode step with its output already in
// `out_dtype` (the compute dtype): rms_norm(x, norm_w, eps, residual,
// residual_in_fp32) then to_dtype(y, out_dtype), as one kernel on CUDA (a
// block per row; rows of up to ~11k floats), the two ops elsewhere.
struct AddNormResult {
  Tensor residual;
  Tensor y;
};
AddNormResult decode_add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& norm_w, double eps,
                                  bool residual_in_fp32, DType out_dtype, const Tensor& y_out = Tensor(),
                                  const Tensor& residual_out = Tensor());

// While on, the decode kernels (conv/SSM step, GEMV, add + norm, argmax)
// launch with programmatic dependent launch on CUDA (cuda/pdl.cuh). A no-op
// without CUDA.
void set_decode_pdl(bool on);
// Drops a pending CUDA error left by a refused graph capture before the
// decoder retries it without PDL (a no-op without CUDA).
void decode_clear_launch_error();

// out[b] = argmax of logits[b, :limit] (the first of equal maxima; NaN
// counts as -inf). logits (B, V) floating, 1 <= limit <= V; out (B) i32 or
// i64 on the same device, written in place (the next step's input ids stay
// on the device: no host round trip per token).
void argmax_rows_(const Tensor& logits, int64_t limit, const Tensor& out);

}  // namespace coil
