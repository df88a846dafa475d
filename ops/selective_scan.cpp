#include "ops/selective_scan.h"

#include "core/cuda_context.h"
#include "ops/common.h"
#include "ops/cpu/selective_scan.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/selective_scan.h"
#endif

namespace coil {

using detail::as_compute;
using detail::mut_or_null;
using detail::ptr_or_null;

namespace {

cpu::ScanDims dims_of(const Tensor& u, const Tensor& A, const Tensor& B, const Tensor& C, const Tensor& D,
                      const Tensor& z, const Tensor& delta_bias, bool softplus) {
  return {u.size(0), u.size(1), u.size(2), A.size(1), B.dim() == 3, C.dim() == 3,
          D.defined(), z.defined(), delta_bias.defined(), softplus};
}

void check_args(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                const Tensor& D, const Tensor& z, const Tensor& delta_bias, const Tensor& h0) {
  const char* op = "selective_scan";
  for (auto [t, name] : {std::pair{u, "u"}, {delta, "delta"}, {A, "A"}, {B, "B"}, {C, "C"}})
    detail::check_defined(op, t, name);
  detail::check_rank(op, u, "u", 3);
  const int64_t b = u.size(0), d = u.size(1), l = u.size(2);
  detail::check_shape(op, delta, "delta", u.shape());
  detail::check_rank(op, A, "A", 2);
  COIL_CHECK(A.size(0) == d, op, ": A must be (", d, ", N) for u ", u.desc(), ", got ", A.desc());
  const int64_t n = A.size(1);
  COIL_CHECK(n >= 1 && n <= 256, op, ": d_state must be 1..256, got ", n);
  for (auto [t, name] : {std::pair{B, "B"}, {C, "C"}}) {
    COIL_CHECK(t.shape() == Shape({b, n, l}) || t.shape() == Shape({d, n}), op, ": ", name, " must be (", b, ", ", n,
               ", ", l, ") (selective) or (", d, ", ", n, ") (non-selective), got ", t.desc());
  }
  if (D.defined()) detail::check_shape(op, D, "D", {d});
  if (z.defined()) detail::check_shape(op, z, "z", u.shape());
  if (delta_bias.defined()) detail::check_shape(op, delta_bias, "delta_bias", {d});
  if (h0.defined()) detail::check_shape(op, h0, "initial_state", {b, d, n});
  detail::check_same_device(op, {u, delta, A, B, C, D, z, delta_bias, h0});
  detail::check_same_dtype(op, {u, delta, z});
  for (auto [t, name] : {std::pair{A, "A"}, {D, "D"}, {delta_bias, "delta_bias"}, {h0, "initial_state"}})
    COIL_CHECK(!t.defined() || t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": ", name,
               " must be f32 (or f64), got ", t.desc());
}

#ifdef COIL_WITH_CUDA
// The CUDA kernels take u, delta, z in one activation dtype (f32 or bf16), B
// and C in one dtype, and A, D, delta_bias, states in f32, all contiguous.
struct CudaInputs {
  Tensor u, delta, A, B, C, D, z, bias, h0;
};

CudaInputs cuda_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                       const Tensor& D, const Tensor& z, const Tensor& bias, const Tensor& h0) {
  NoGradGuard ng;
  DType io = u.dtype() == DType::bf16 ? DType::bf16 : DType::f32;
  DType bc = B.dim() == 3 && B.dtype() == DType::bf16 ? DType::bf16 : DType::f32;
  auto as = [](const Tensor& t, DType d) { return t.defined() ? contiguous(to_dtype(t.detach(), d)).detach() : t; };
  // delta and z go in as strided views when time is contiguous (the mixer's
  // are GEMM outputs viewed (B, Di, L)): no copy. delta must also be dense
  // (a permutation of a contiguous layout), since ddelta is allocated with
  // its strides.
  auto rows = [&](const Tensor& t, bool dense) {
    if (!t.defined()) return t;
    const bool ok = t.dtype() == io && (t.stride(2) == 1 || t.size(2) <= 1) && (!dense || detail::is_dense(t));
    return ok ? t.detach() : as(t, io);
  };
  return {as(u, io), rows(delta, true), as(A, DType::f32), as(B, bc), as(C, bc), as(D, DType::f32), rows(z, false),
          as(bias, DType::f32), as(h0, DType::f32)};
}

cuda::ScanParams cuda_params(const CudaInputs& in, bool softplus) {
  cuda::ScanParams p;
  p.batch = in.u.size(0), p.dim = in.u.size(1), p.len = in.u.size(2), p.dstate = in.A.size(1);
  p.var_B = in.B.dim() == 3, p.var_C = in.C.dim() == 3;
  p.has_D = in.D.defined(), p.has_z = in.z.defined(), p.has_delta_bias = in.bias.defined(), p.softplus = softplus;
  p.io = in.u.dtype(), p.bc = in.B.dtype();
  p.u = in.u.data_ptr(), p.delta = in.delta.data_ptr(), p.B = in.B.data_ptr(), p.C = in.C.data_ptr();
  p.z = in.z.defined() ? in.z.data_ptr() : nullptr;
  p.delta_strides[0] = in.delta.stride(0), p.delta_strides[1] = in.delta.stride(1);
  if (in.z.defined()) p.z_strides[0] = in.z.stride(0), p.z_strides[1] = in.z.stride(1);
  p.A = in.A.data<float>();
  p.D = in.D.defined() ? in.D.data<float>() : nullptr;
  p.delta_bias = in.bias.defined() ? in.bias.data<float>() : nullptr;
  p.h0 = in.h0.defined() ? in.h0.data<float>() : nullptr;
  return p;
}
#endif

// delta as weight (D, R) @ dt (B, R, L) (Mamba's dt_proj): the op keeps the
// small factors instead of delta and recomputes delta in the backward.
struct LowRankDelta {
  Tensor weight, dt;
};
Tensor make_delta(const LowRankDelta& lr) {
  NoGradGuard ng;
  return matmul(lr.weight.detach(), lr.dt.detach());
}
// The factors' gradients from delta's: res[1] (ddelta) becomes d(dt) and
// d(weight) is appended (inputs: u, dt, A, B, C, D, z, delta_bias, h0, weight).
std::vector<Tensor> lowrank_grads(std::vector<Tensor> res, const LowRankDelta& lr, const std::vector<bool>& need) {
  NoGradGuard ng;
  const Tensor dd = res[1];
  res[1] = (need[1] && dd.defined()) ? matmul(transpose(lr.weight.detach(), 0, 1), dd) : Tensor();
  res.push_back((need[9] && dd.defined()) ? sum(matmul(dd, transpose(lr.dt.detach(), 1, 2)), {0}) : Tensor());
  return res;
}
// need for the 9 plain inputs, delta's set when either factor needs a gradient.
std::vector<bool> plain_need(const std::vector<bool>& need, bool lowrank) {
  std::vector<bool> n(need.begin(), need.begin() + 9);
  if (lowrank) n[1] = need[1] || need[9];
  return n;
}

ScanResult scan_impl(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                     const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool softplus, const Tensor& h0,
                     bool return_last_state, std::shared_ptr<const LowRankDelta> lr) {
  const char* op = "selective_scan";
  check_args(u, delta, A, B, C, D, z, delta_bias, h0);
  cpu::ScanDims s = dims_of(u, A, B, C, D, z, delta_bias, softplus);

  Tensor out, last;
  if (u.is_cpu()) {
    DType w = detail::cpu_compute_dtype(u);
    dispatch_float(w, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
        Tensor oc = Tensor::empty(u.shape(), w), hc;
        if (return_last_state) hc = Tensor::empty({s.batch, s.dim, s.dstate}, w);
        cpu::selective_scan_fwd<T>(s, as_compute(u, w).data<T>(), as_compute(delta, w).data<T>(),
                                   as_compute(A, w).data<T>(), as_compute(B, w).data<T>(), as_compute(C, w).data<T>(),
                                   ptr_or_null<T>(as_compute(D, w)), ptr_or_null<T>(as_compute(z, w)),
                                   ptr_or_null<T>(as_compute(delta_bias, w)), ptr_or_null<T>(as_compute(h0, w)),
                                   oc.data<T>(), mut_or_null<T>(hc));
        out = to_dtype(oc, u.dtype()).detach();
        if (hc.defined()) last = to_dtype(hc, A.dtype()).detach();
      }
    });
  } else {
#ifdef COIL_WITH_CUDA
    CudaInputs in = cuda_inputs(u, delta, A, B, C, D, z, delta_bias, h0);
    cuda::ScanParams p = cuda_params(in, softplus);
    out = Tensor::empty(u.shape(), in.u.dtype(), u.device());
    p.out = out.data_ptr();
    if (return_last_state) {
      last = Tensor::empty({s.batch, s.dim, s.dstate}, DType::f32, u.device());
      p.hT = last.data<float>();
    }
    const bool train = detail::needs_grad_any({u, delta, A, B, C, D, z, delta_bias, h0}) ||
                       (lr && detail::needs_grad_any({lr->dt, lr->weight}));
    Tensor states;
    if (train) {
      states = Tensor::empty({s.batch, s.dim, cuda::scan_num_chunks(s.len), s.dstate}, DType::f32, u.device());
      p.chunk_states = states.data<float>();
    }
    Tensor fwd_work;  // segment summaries when the batch is small; freed in stream order
    if (size_t fb = cuda::scan_fwd_workspace_bytes(p)) {
      fwd_work = Tensor::empty({int64_t(fb)}, DType::u8, u.device());
      p.fwd_workspace = fwd_work.data_ptr();
    }
    cuda::selective_scan_fwd(p, cuda_ctx::stream(u.device().index));
    out = to_dtype(out, u.dtype()).detach();
    if (train) {
      std::vector<Tensor> orig{u, delta, A, B, C, D, z, delta_bias, h0};
      std::vector<DType> dts;
      for (const Tensor& t : orig) dts.push_back(t.defined() ? t.dtype() : DType::f32);
      std::vector<Tensor> outs{out};
      if (last.defined()) outs.push_back(last);
      if (lr) {
        orig[1] = lr->dt;
        orig.push_back(lr->weight);
      }
      CudaInputs kept = in;
      if (lr) kept.delta = Tensor();  // recomputed in the backward
      detail::record_op(op, orig, outs, [kept, states, softplus, dts, lr](const std::vector<Tensor>& g,
                                                                          const std::vector<bool>& need_in) {
        CudaInputs bin = kept;  // the saved inputs, delta recomputed when low-rank
        if (lr) bin.delta = make_delta(*lr);
        const std::vector<bool> need = plain_need(need_in, lr != nullptr);
        cuda::ScanParams bp = cuda_params(bin, softplus);
        bp.chunk_states = states.data<float>();
        const Device dev = bin.u.device();
        cuda::ScanGrads gr;
        Tensor dout = contiguous(to_dtype(g[0], bin.u.dtype()));
        Tensor dhT = g.size() > 1 ? contiguous(to_dtype(g[1], DType::f32)) : Tensor();
        gr.dout = dout.data_ptr();
        gr.dhT = dhT.defined() ? dhT.data<float>() : nullptr;
        std::vector<Tensor> res(9);
        // ddelta takes delta's layout (the kernel writes it with delta's strides).
        Tensor du = Tensor::empty(bin.u.shape(), bin.u.dtype(), dev), dd = detail::empty_like_dense(bin.delta);
        Tensor dA = Tensor::empty(bin.A.shape(), DType::f32, dev);
        DType bdt = bp.var_B ? bin.B.dtype() : DType::f32, cdt = bp.var_C ? bin.C.dtype() : DType::f32;
        Tensor dB = Tensor::empty(bin.B.shape(), bdt, dev), dC = Tensor::empty(bin.C.shape(), cdt, dev);
        Tensor dD = bin.D.defined() && need[5] ? Tensor::empty(bin.D.shape(), DType::f32, dev) : Tensor();
        Tensor dz = bin.z.defined() && need[6] ? Tensor::empty(bin.z.shape(), bin.z.dtype(), dev) : Tensor();
        Tensor db = bin.bias.defined() && need[7] ? Tensor::empty(bin.bias.shape(), DType::f32, dev) : Tensor();
        Tensor dh0 = bin.h0.defined() && need[8] ? Tensor::empty(bin.h0.shape(), DType::f32, dev) : Tensor();
        gr.du = du.data_ptr(), gr.ddelta = dd.data_ptr(), gr.dA = dA.data<float>();
        gr.dB = dB.data_ptr(), gr.dC = dC.data_ptr();
        gr.dD = dD.defined() ? dD.data<float>() : nullptr;
        gr.dz = dz.defined() ? dz.data_ptr() : nullptr;
        gr.ddelta_bias = db.defined() ? db.data<float>() : nullptr;
        gr.dh0 = dh0.defined() ? dh0.data<float>() : nullptr;
        size_t wbytes = cuda::scan_bwd_workspace_bytes(bp);
        Tensor work = Tensor::empty({int64_t(std::max<size_t>(wbytes, 1))}, DType::u8, dev);
        gr.workspace = work.data_ptr(), gr.workspace_bytes = wbytes;
        cuda::selective_scan_bwd(bp, gr, cuda_ctx::stream(dev.index));
        std::vector<Tensor> all{du, dd, dA, dB, dC, dD, dz, db, dh0};
        for (size_t i = 0; i < 9; ++i)
          if (need[i] && all[i].defined()) res[i] = to_dtype(all[i], dts[i]);
        return lr ? lowrank_grads(res, *lr, need_in) : res;
      });
    }
    return {out, last};
#else
    detail::no_cuda(op);
#endif
  }

  std::vector<Tensor> saved;
  for (const Tensor& t : {u, delta, A, B, C, D, z, delta_bias, h0}) saved.push_back(detail::save(t));
  if (lr) saved[1] = Tensor();  // recomputed in the backward
  std::vector<Tensor> outs{out};
  if (last.defined()) outs.push_back(last);
  std::vector<Tensor> inputs{u, delta, A, B, C, D, z, delta_bias, h0};
  if (lr) {
    inputs[1] = lr->dt;
    inputs.push_back(lr->weight);
  }
  detail::record_op(op, inputs, outs,
                    [kept = saved, s, lr](const std::vector<Tensor>& g, const std::vector<bool>& need_in) {
                      std::vector<Tensor> sv = kept;
                      if (lr) sv[1] = make_delta(*lr);
                      const std::vector<bool> need = plain_need(need_in, lr != nullptr);
                      const Tensor& u_ = sv[0];
                      DType w = detail::cpu_compute_dtype(u_);
                      std::vector<Tensor> in(sv.size()), grads(sv.size());
                      for (size_t i = 0; i < sv.size(); ++i) {
                        in[i] = as_compute(sv[i], w);
                        if (sv[i].defined() && (need[i] || i < 5)) grads[i] = Tensor::empty(sv[i].shape(), w);
                      }
                      Tensor dout = as_compute(g[0], w), dhT = g.size() > 1 ? as_compute(g[1], w) : Tensor();
                      dispatch_float(w, "selective_scan_backward", [&](auto tag) {
                        using T = typename decltype(tag)::type;
                        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
                          auto P = [&](size_t i) { return ptr_or_null<T>(in[i]); };
                          auto G = [&](size_t i) { return mut_or_null<T>(grads[i]); };
                          cpu::selective_scan_bwd<T>(s, P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7), P(8),
                                                     dout.data<T>(), ptr_or_null<T>(dhT), G(0), G(1), G(2), G(3), G(4),
                                                     G(5), G(6), G(7), G(8));
                        }
                      });
                      std::vector<Tensor> res(sv.size());
                      for (size_t i = 0; i < sv.size(); ++i)
                        if (need[i] && grads[i].defined()) res[i] = to_dtype(grads[i], sv[i].dtype());
                      return lr ? lowrank_grads(res, *lr, need_in) : res;
                    });
  return {out, last};
}

}  // namespace

ScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                          const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool softplus,
                          const Tensor& h0, bool return_last_state) {
  return scan_impl(u, delta, A, B, C, D, z, delta_bias, softplus, h0, return_last_state, nullptr);
}

ScanResult selective_scan_dt_proj(const Tensor& u, const Tensor& dt, const Tensor& dt_weight, const Tensor& A,
                                  const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                                  const Tensor& delta_bias, bool softplus, const Tensor& h0, bool return_last_state) {
  const char* op = "selective_scan_dt_proj";
  detail::check_defined(op, dt, "dt");
  detail::check_defined(op, dt_weight, "dt_weight");
  detail::check_rank(op, dt, "dt", 3);
  detail::check_rank(op, dt_weight, "dt_weight", 2);
  COIL_CHECK(dt_weight.size(1) == dt.size(1), op, ": dt_weight ", dt_weight.desc(), " does not match dt ", dt.desc());
  detail::check_same_dtype(op, {dt, dt_weight});
  auto lr = std::make_shared<LowRankDelta>(LowRankDelta{dt_weight, dt});
  // delta exists only for the forward kernel (and again in the backward).
  Tensor delta = make_delta(*lr);
  return scan_impl(u, delta, A, B, C, D, z, delta_bias, softplus, h0, return_last_state, lr);
}

}  // namespace coil
