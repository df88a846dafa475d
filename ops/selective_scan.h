// The selective scan (Mamba's S6 layer), as mamba_ssm's selective_scan_fn:
//   u, delta, z : (B, D, L)      A : (D, N)      D, delta_bias : (D)
//   B, C        : (B, N, L) input-dependent (selective), or (D, N) parameters
//                 (the non-selective LTI ablation)
//   dt_t = softplus(delta_t + delta_bias) (softplus optional)
//   h_t  = exp(dt_t A) h_{t-1} + dt_t B_t u_t;   y_t = <C_t, h_t> + D u_t
//   out  = y * silu(z) when z is given.
// initial_state (B, D, N) seeds h_{-1}; the final state h_{L-1} is returned
// when asked (generation after a prompt, chunked long documents); both carry
// gradients. A, D, delta_bias and the states are f32 (f64 in gradchecks);
// u, delta, z, B, C may be bf16. No B*L*D*N buffer exists at any time: the
// backward recomputes states chunk by chunk.
#pragma once
#include "core/tensor.h"

namespace coil {

struct ScanResult {
  Tensor out;         // (B, D, L), u's dtype
  Tensor last_state;  // (B, D, N), defined when return_last_state
};

ScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                          const Tensor& D = Tensor(), const Tensor& z = Tensor(), const Tensor& delta_bias = Tensor(),
                          bool delta_softplus = true, const Tensor& initial_state = Tensor(),
                          bool return_last_state = false);

// The same with delta = dt_weight (D, R) @ dt (B, R, L), Mamba's dt_proj
// (without its bias: pass that as delta_bias). The op keeps dt and dt_weight
// rather than delta (R of D values per token, R = D/32 in the Mamba ladder)
// and recomputes delta for the backward, as mamba_ssm's checkpoint_lvl 1 does:
// 2·D bytes per token and layer less activation memory for one small GEMM.
// Gradients flow to dt and dt_weight.
ScanResult selective_scan_dt_proj(const Tensor& u, const Tensor& dt, const Tensor& dt_weight, const Tensor& A,
                                  const Tensor& B, const Tensor& C, const Tensor& D = Tensor(),
                                  const Tensor& z = Tensor(), const Tensor& delta_bias = Tensor(),
                                  bool delta_softplus = true, const Tensor& initial_state = Tensor(),
                                  bool return_last_state = false);

}  // namespace coil
