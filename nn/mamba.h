// The Mamba-1 mixer (mamba_ssm/modules/mamba_simple.py), parameters named
// and initialised as DESIGN.md's table so checkpoints convert both ways:
//
//   in_proj.weight   (2*Di, d_model)   U(±1/sqrt(d_model))
//   conv1d.weight    (Di, 1, K)        U(±1/sqrt(K)),  conv1d.bias (Di) likewise
//   x_proj.weight    (R + 2N, Di)      U(±1/sqrt(Di))
//   dt_proj.weight   (Di, R)           U(±dt_scale/sqrt(R))
//   dt_proj.bias     (Di)              softplus^-1(dt), dt log-uniform in [dt_min, dt_max], >= dt_init_floor
//   A_log            (Di, N)           log(1..N) per row        (no weight decay)
//   D                (Di)              1                        (no weight decay)
//   out_proj.weight  (d_model, Di)     U(±1/sqrt(Di)) / sqrt(n_layer)
//
// Forward on h (B, L, d_model), factored into the steps a recurrent
// generation step will reuse one token at a time:
//   xz    = in_projection(h)                  (B, 2*Di, L)
//   x, z  = xz[:, :Di], xz[:, Di:]              (training: two GEMMs, one per
//                                                half of in_proj.weight, no xz)
//   x     = silu(causal_conv1d(x))             conv()
//   p     = ssm_inputs(x)                      dt = dt_proj.weight @ x_proj(x)[:R], B, C
//   y     = selective_scan(x, p.delta, A = -exp(A_log), p.B, p.C, D, z, p.delta_bias, softplus)
//   out   = out_projection(y)                  (B, L, d_model)
//
// Mixed precision: the matmul weights are cast to config.compute_dtype in
// the forward (differentiable casts: the grads land in the f32 masters) and
// the activations run in it; the conv weights, A_log, D and the dt bias
// stay in the master dtype (the kernels read them in f32, as mamba_ssm).
#pragma once
#include <memory>
#include <vector>

#include "core/rng.h"
#include "nn/conv1d.h"
#include "nn/linear.h"
#include "nn/mamba_config.h"
#include "nn/module.h"

namespace coil::nn {

// One layer's recurrent state for generation: the last d_conv-1 conv inputs
// (B, Di, d_conv-1), compute dtype, and the SSM state h (B, Di, N), f32 (f64
// for f64 params). Undefined until forward_with_state fills them.
struct MambaState {
  Tensor conv_state;
  Tensor ssm_state;
};

class Mamba : public Module {
 public:
  Mamba(const MambaConfig& cfg, int64_t layer_idx, Generator& gen, Device device = Device::cpu());

  // h (B, L, d_model), any floating dtype -> (B, L, d_model) in compute_dtype.
  Tensor forward(const Tensor& h) const;

  // The prompt: forward(h) that also stores the conv's final state and the
  // scan's last state in `state` (no grad needed; the caller holds a guard).
  Tensor forward_with_state(const Tensor& h, MambaState& state) const;
  // One token, h_t (B, 1, d_model) or (B, d_model) -> the same rank; reads
  // and advances `state` (the conv and scan run with L = 1 from the states,
  // so a step is exactly one more position of forward_with_state).
  Tensor step(const Tensor& h_t, MambaState& state) const;

  // ---- the steps of forward ----
  struct SsmInputs {
    Tensor delta;       // (B, Di, L), before bias and softplus
    Tensor dt, dt_weight;  // or its factors, delta = dt_weight (Di, R) @ dt (B, R, L)
    Tensor B, C;        // (B, N, L) selective, or (Di, N) parameters
    Tensor delta_bias;  // (Di)
  };
  void check_input(const Tensor& h) const;      // h must be (B, L, d_model)
  Tensor in_projection(const Tensor& h) const;  // (B, L, d_model) -> (B, 2*Di, L)
  Tensor conv(const Tensor& x) const;           // silu(causal_conv1d(x)), (B, Di, L)
  // From the conv output. keep_delta_low_rank: for a sequence (L > 1) with a
  // selective delta, return dt and dt_weight instead of delta (the training
  // path's scan recomputes delta in its backward).
  SsmInputs ssm_inputs(const Tensor& x, bool keep_delta_low_rank = false) const;
  Tensor A() const;                             // -exp(A_log), (Di, N), f32 (f64 params: f64)
  Tensor ssm(const Tensor& x, const Tensor& z) const;   // the gated selective scan, (B, Di, L)
  Tensor out_projection(const Tensor& y) const;          // (B, Di, L) -> (B, L, d_model)

  const MambaConfig& config() const { return cfg_; }
  int64_t layer_idx() const { return layer_idx_; }

  std::shared_ptr<Linear> in_proj;
  std::shared_ptr<CausalConv1d> conv1d;
  std::shared_ptr<Linear> x_proj;   // null when nothing is selective
  std::shared_ptr<Linear> dt_proj;  // null when delta is not selective
  std::shared_ptr<Linear> out_proj;
  Tensor A_log;
  Tensor D;
  Tensor B;        // ablation: non-selective B (Di, N), else undefined
  Tensor C;        // ablation: non-selective C (Di, N), else undefined
  Tensor dt_bias;  // ablation: non-selective delta (Di), else undefined

 private:
  MambaConfig cfg_;
  int64_t layer_idx_;
};

// The dt-bias init: softplus^-1(dt) for dt = exp(U * (ln dt_max - ln dt_min)
// + ln dt_min) floored at dt_init_floor; n draws from gen (host values).
std::vector<double> init_dt_bias(int64_t n, double dt_min, double dt_max, double floor, Generator& gen);

}  // namespace coil::nn
