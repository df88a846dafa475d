#include "nn/mamba.h"

#include <cmath>

#include "nn/init.h"
#include "ops/causal_conv1d.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/selective_scan.h"
#include "ops/views.h"

namespace coil::nn {

namespace {

// w (out, in) applied along dim 1 of x (B, in, L) -> (B, out, L), contiguous.
// With L > 1, one GEMM per sequence reads x where it is (a transposed view is
// fine) and the gradients come back in the same layouts, with no copies. With
// one token per sequence (decoding) x is a plain (B, in) matrix: one GEMM over
// the batch reads w once.
Tensor project(const Tensor& w, const Tensor& x) {
  if (x.size(2) > 1) return matmul(w, x);
  return unsqueeze(matmul(reshape(x, {x.size(0), x.size(1)}), transpose(w, 0, 1)), 2);
}

// The scan reads A, D, delta_bias and non-selective B/C in f32 (f64 in checks).
Tensor scan_param(const Tensor& t) {
  return t.dtype() == DType::f32 || t.dtype() == DType::f64 ? t : to_dtype(t, DType::f32);
}

}  // namespace

std::vector<double> init_dt_bias(int64_t n, double dt_min, double dt_max, double floor, Generator& gen) {
  std::vector<double> u = rand({n}, DType::f64, Device::cpu(), &gen).to_vector();
  const double lo = std::log(dt_min), hi = std::log(dt_max);
  for (double& v : u) {
    double dt = std::max(std::exp(lo + v * (hi - lo)), floor);
    v = dt + std::log(-std::expm1(-dt));  // softplus^-1
  }
  return u;
}

Mamba::Mamba(const MambaConfig& cfg, int64_t layer_idx, Generator& gen, Device device)
    : cfg_(cfg), layer_idx_(layer_idx) {
  cfg.validate();
  const int64_t dm = cfg.d_model, di = cfg.d_inner(), n = cfg.d_state, r = cfg.resolved_dt_rank();
  const DType pd = cfg.param_dtype;

  // Own parameters first (PyTorch's state-dict order: A_log, D, then children).
  // Draw order (only shapes matter): in_proj, conv1d, x_proj, dt_proj, B, C, dt_bias, out_proj.
  Tensor w_in = uniform_init({2 * di, dm}, default_init_bound(dm), gen, pd, device);
  Tensor b_in = cfg.bias ? zeros({2 * di}, pd, device) : Tensor();
  auto conv = std::make_shared<CausalConv1d>(di, cfg.d_conv, cfg.conv_bias, gen, pd, device);
  Tensor w_x;
  if (cfg.any_selective()) w_x = uniform_init({cfg.x_proj_rows(), di}, default_init_bound(di), gen, pd, device);
  Tensor w_dt, b_dt;
  if (cfg.selective_delta) {
    w_dt = uniform_init({di, r}, cfg.dt_scale / std::sqrt(double(r)), gen, pd, device);
    b_dt = Tensor::from_vector(init_dt_bias(di, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor, gen), {di}, pd, device);
  }
  Tensor b_param, c_param, dtb_param;
  // Non-selective B, C as S4D initialises them: B = 1, C ~ N(0, 1).
  if (!cfg.selective_B) b_param = ones({di, n}, pd, device);
  if (!cfg.selective_C) c_param = normal_init({di, n}, 1.0, gen, pd, device);
  if (!cfg.selective_delta)
    dtb_param = Tensor::from_vector(init_dt_bias(di, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor, gen), {di}, pd, device);
  Tensor w_out = uniform_init({dm, di}, default_init_bound(di) / std::sqrt(double(cfg.n_layer)), gen, pd, device);
  Tensor b_out = cfg.bias ? zeros({dm}, pd, device) : Tensor();

  std::vector<double> a(size_t(di * n));
  for (int64_t i = 0; i < di; ++i)
    for (int64_t j = 0; j < n; ++j) a[size_t(i * n + j)] = std::log(double(j + 1));
  register_parameter("A_log", A_log, Tensor::from_vector(a, {di, n}, pd, device), {param_kind::ssm, true});
  register_parameter("D", D, ones({di}, pd, device), {param_kind::ssm, true});
  if (b_param.defined()) register_parameter("B", B, b_param, {param_kind::ssm, true});
  if (c_param.defined()) register_parameter("C", C, c_param, {param_kind::ssm, true});
  if (dtb_param.defined()) register_parameter("dt_bias", dt_bias, dtb_param, {param_kind::ssm, true});

  in_proj = register_module("in_proj", std::make_shared<Linear>(w_in, b_in));
  conv1d = register_module("conv1d", conv);
  if (w_x.defined()) x_proj = register_module("x_proj", std::make_shared<Linear>(w_x));
  if (w_dt.defined()) dt_proj = register_module("dt_proj", std::make_shared<Linear>(w_dt, b_dt));
  out_proj = register_module("out_proj", std::make_shared<Linear>(w_out, b_out));
}

void Mamba::check_input(const Tensor& h) const {
  COIL_CHECK(h.dim() == 3 && h.size(2) == cfg_.d_model, "Mamba: input must be (B, L, ", cfg_.d_model, "), got ",
             h.desc());
}

Tensor Mamba::in_projection(const Tensor& h) const {
  check_input(h);
  const DType c = cfg_.compute_dtype;
  // W (2Di, d) @ h^T (B, d, L) -> (B, 2Di, L): the gradient comes back from
  // the split as (B, 2Di, L) and feeds the GEMMs directly (no permuted copy).
  Tensor xz = project(to_dtype(in_proj->weight, c), transpose(to_dtype(h, c), 1, 2));
  if (in_proj->bias.defined()) xz = add(xz, unsqueeze(to_dtype(in_proj->bias, c), 1));
  return xz;
}

Tensor Mamba::conv(const Tensor& x) const { return conv1d->forward(x, /*silu=*/true); }

Tensor Mamba::A() const { return neg(exp(scan_param(A_log))); }

Mamba::SsmInputs Mamba::ssm_inputs(const Tensor& x, bool keep_delta_low_rank) const {
  const DType c = cfg_.compute_dtype;
  const int64_t b = x.size(0), di = x.size(1), l = x.size(2), n = cfg_.d_state, r = cfg_.resolved_dt_rank();
  SsmInputs p;
  // x_proj as W (rows, Di) @ x (B, Di, L), one GEMM per sequence: x is read
  // where the conv wrote it (and the scan keeps it anyway). The (B*L, Di)
  // @ W^T form needed a transposed copy of x that stayed alive until the
  // backward (c·Di bytes per token and layer). dt, B and C come out as
  // (B, *, L) with L contiguous, the scan's layout.
  Tensor x_dbl;  // (B, rows, L): [dt (R) | B (N) | C (N)], selective parts only
  if (x_proj) x_dbl = project(to_dtype(x_proj->weight, c), x);
  // One split node for the selective parts: its backward is one concat.
  std::vector<int64_t> sizes;
  if (cfg_.selective_delta) sizes.push_back(r);
  if (cfg_.selective_B) sizes.push_back(n);
  if (cfg_.selective_C) sizes.push_back(n);
  std::vector<Tensor> parts = x_proj ? split(x_dbl, sizes, 1) : std::vector<Tensor>{};
  size_t next = 0;
  if (cfg_.selective_delta) {
    // dt_proj.weight (Di, R) @ dt (B, R, L) -> (B, Di, L), contiguous; the
    // bias is added inside the scan (delta_bias, with the softplus).
    if (keep_delta_low_rank && l > 1) {
      p.dt = parts[next++];
      p.dt_weight = to_dtype(dt_proj->weight, c);
    } else {
      p.delta = project(to_dtype(dt_proj->weight, c), parts[next++]);
    }
    p.delta_bias = scan_param(dt_proj->bias);
  } else {
    p.delta = expand(zeros({1, 1, 1}, c, x.device()), {b, di, l});
    p.delta_bias = scan_param(dt_bias);
  }
  auto selective = [&](bool on, const Tensor& param) {
    if (!on) return scan_param(param);
    return parts[next++];  // (B, N, L)
  };
  p.B = selective(cfg_.selective_B, B);
  p.C = selective(cfg_.selective_C, C);
  return p;
}

Tensor Mamba::ssm(const Tensor& x, const Tensor& z) const {
  SsmInputs p = ssm_inputs(x, /*keep_delta_low_rank=*/true);
  if (p.dt.defined())  // delta = dt_proj.weight @ dt, recomputed in the scan's backward
    return selective_scan_dt_proj(x, p.dt, p.dt_weight, A(), p.B, p.C, scan_param(D), z, p.delta_bias, true).out;
  return selective_scan(x, p.delta, A(), p.B, p.C, scan_param(D), z, p.delta_bias, /*delta_softplus=*/true).out;
}

Tensor Mamba::out_projection(const Tensor& y) const {
  return out_proj->forward(transpose(y, 1, 2), cfg_.compute_dtype);
}

Tensor Mamba::forward(const Tensor& h) const {
  check_input(h);
  const int64_t di = cfg_.d_inner();
  const DType c = cfg_.compute_dtype;
  // in_proj as two GEMMs, one per half of the weight (x, then z), each
  // (Di, d) @ h^T (B, d, L) -> (B, Di, L). As one GEMM and a split, the
  // split's backward concatenated dx and dz into a (B, 2Di, L) buffer: a
  // pass over 2·c·2Di bytes per token and layer (7 ms of mamba-130m's
  // 263 ms step). Here the two GEMMs' input gradients (same layout) are
  // summed by autograd as flat buffers, a third of that traffic.
  Tensor w = to_dtype(in_proj->weight, c), ht = transpose(to_dtype(h, c), 1, 2);
  Tensor x = project(narrow(w, 0, 0, di), ht), z = project(narrow(w, 0, di, di), ht);
  if (in_proj->bias.defined()) {
    Tensor b = to_dtype(in_proj->bias, c);
    x = add(x, unsqueeze(narrow(b, 0, 0, di), 1));
    z = add(z, unsqueeze(narrow(b, 0, di, di), 1));
  }
  return out_projection(ssm(conv(x), z));
}

namespace {

// xz (B, 2Di, L) through the conv and the scan, from and into `state`.
Tensor mixer_with_state(const Mamba& m, const Tensor& xz, MambaState& state) {
  const MambaConfig& cfg = m.config();
  const int64_t di = cfg.d_inner();
  std::vector<Tensor> parts = split(xz, {di, di}, 1);
  ConvResult cr = causal_conv1d(parts[0], m.conv1d->weight, m.conv1d->bias, /*silu=*/true, state.conv_state,
                                /*return_final_state=*/true);
  const Tensor& x = cr.out;
  Mamba::SsmInputs p = m.ssm_inputs(x);
  ScanResult sr = selective_scan(x, p.delta, m.A(), p.B, p.C, scan_param(m.D), parts[1], p.delta_bias,
                                 /*delta_softplus=*/true, state.ssm_state, /*return_last_state=*/true);
  state.conv_state = cr.final_state;
  state.ssm_state = sr.last_state;
  return sr.out;
}

}  // namespace

Tensor Mamba::forward_with_state(const Tensor& h, MambaState& state) const {
  state = MambaState();  // the prompt starts from zero states
  return out_projection(mixer_with_state(*this, in_projection(h), state));
}

Tensor Mamba::step(const Tensor& h_t, MambaState& state) const {
  COIL_CHECK(h_t.dim() == 2 || (h_t.dim() == 3 && h_t.size(1) == 1),
             "Mamba::step: input must be (B, 1, d_model) or (B, d_model), got ", h_t.desc());
  COIL_CHECK(state.conv_state.defined() && state.ssm_state.defined(),
             "Mamba::step: the state is empty (run forward_with_state on the prompt first)");
  const Tensor h3 = h_t.dim() == 2 ? unsqueeze(h_t, 1) : h_t;
  Tensor out = out_projection(mixer_with_state(*this, in_projection(h3), state));
  return h_t.dim() == 2 ? squeeze(out, 1) : out;
}

}  // namespace coil::nn
