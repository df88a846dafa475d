#include "ops/rms_norm.h"

#include "ops/common.h"
#include "ops/cpu/rms_norm.h"
#include "ops/creation.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/rms_norm.h"
#endif

namespace coil {

using detail::as_compute;

RmsNormResult rms_norm(const Tensor& x, const Tensor& weight, double eps, const Tensor& residual,
                       bool residual_in_fp32) {
  const char* op = "rms_norm";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, weight, "weight");
  COIL_CHECK(x.dim() >= 1, op, ": x must have rank >= 1, got ", x.desc());
  const int64_t cols = x.size(-1), rows = x.numel() / std::max<int64_t>(cols, 1);
  detail::check_shape(op, weight, "weight", {cols});
  if (residual.defined()) detail::check_shape(op, residual, "residual", x.shape());
  detail::check_same_device(op, {x, weight, residual});
  COIL_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  DType rdt = residual_in_fp32 && x.dtype() != DType::f64 ? DType::f32 : x.dtype();
  if (residual.defined() && !residual_in_fp32) rdt = residual.dtype();

  Tensor y, r, rstd;
  if (x.is_cpu()) {
    DType w = detail::cpu_compute_dtype(x);
    Tensor xc = as_compute(x, w), wc = as_compute(weight, w), rc = as_compute(residual, w);
    Tensor yc = Tensor::empty(x.shape(), w), rout = Tensor::empty(x.shape(), w);
    rstd = Tensor::empty({rows}, w);
    dispatch_float(w, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
        cpu::rms_norm_fwd<T>(rows, cols, xc.data<T>(), detail::ptr_or_null<T>(rc), wc.data<T>(), eps, yc.data<T>(),
                             rout.data<T>(), rstd.data<T>());
    });
    y = to_dtype(yc, x.dtype()).detach();
    r = to_dtype(rout, rdt).detach();
  } else {
#ifdef COIL_WITH_CUDA
    Tensor xc = contiguous(x.detach()), wc = contiguous(to_dtype(weight.detach(), DType::f32));
    Tensor rc = residual.defined() ? contiguous(residual.detach()) : Tensor();
    y = Tensor::empty(x.shape(), x.dtype(), x.device());
    r = Tensor::empty(x.shape(), rdt, x.device());
    rstd = Tensor::empty({rows}, DType::f32, x.device());
    cuda::RmsNormArgs a;
    a.rows = rows, a.cols = cols, a.eps = eps;
    a.x = xc.data_ptr(), a.x_dtype = xc.dtype();
    if (rc.defined()) a.residual = rc.data_ptr(), a.residual_dtype = rc.dtype();
    a.weight = wc.data<float>();
    a.y = y.data_ptr();
    a.residual_out = r.data_ptr(), a.residual_out_dtype = rdt;
    a.rstd = rstd.data<float>();
    cuda::rms_norm_fwd(a, x.device().index);
#else
    detail::no_cuda(op);
#endif
  }

  Tensor rs = detail::save(r), ws = detail::save(weight), rstds = rstd;
  DType xdt = x.dtype(), res_dt = residual.defined() ? residual.dtype() : x.dtype();
  bool has_res = residual.defined();
  // Recorded with materialize_grads = false: an unused residual output (the
  // final norm's) reaches the backward undefined and its term is skipped,
  // rather than the engine filling a zero tensor that the kernel then reads.
  detail::record_op(op, {x, weight, residual}, {y, r},
                    [rs, ws, rstds, rows, cols, xdt, res_dt, has_res](const std::vector<Tensor>& g_in,
                                                                     const std::vector<bool>& need) {
                      // y's gradient is needed by the kernels; only an op whose
                      // y is unused gets it as zeros here.
                      const Tensor dy_in = g_in[0].defined() ? g_in[0] : zeros(rs.shape(), xdt, rs.device());
                      const Tensor& de_in = g_in[1];  // may be undefined
                      if (rs.is_cuda()) {
#ifdef COIL_WITH_CUDA
                        Tensor wc = contiguous(to_dtype(ws, DType::f32)), dy = contiguous(to_dtype(dy_in, xdt)),
                               de = de_in.defined() ? contiguous(to_dtype(de_in, rs.dtype())) : Tensor();
                        Tensor dx = Tensor::empty(rs.shape(), xdt, rs.device()), dres;
                        if (has_res && need[2] && res_dt != xdt) dres = Tensor::empty(rs.shape(), res_dt, rs.device());
                        Tensor dw = Tensor::empty({cols}, DType::f32, rs.device());
                        Tensor work = Tensor::empty({int64_t(cuda::rms_norm_bwd_workspace(rows, cols))}, DType::f32,
                                                    rs.device());
                        cuda::RmsNormBwdArgs a;
                        a.rows = rows, a.cols = cols;
                        a.r = rs.data_ptr(), a.r_dtype = rs.dtype();
                        a.weight = wc.data<float>(), a.rstd = rstds.data<float>();
                        a.dy = dy.data_ptr(), a.dy_dtype = dy.dtype();
                        if (de.defined()) a.dr_extra = de.data_ptr(), a.dr_extra_dtype = de.dtype();
                        a.dx = dx.data_ptr(), a.dx_dtype = xdt;
                        if (dres.defined()) a.dres = dres.data_ptr(), a.dres_dtype = res_dt;
                        a.dw = dw.data<float>(), a.workspace = work.data<float>();
                        cuda::rms_norm_bwd(a, rs.device().index);
                        return std::vector<Tensor>{need[0] ? dx : Tensor(), need[1] ? to_dtype(dw, ws.dtype()) : Tensor(),
                                                   has_res && need[2] ? (dres.defined() ? dres : dx) : Tensor()};
#endif
                      }
                      DType w = rstds.dtype();
                      Tensor rc = as_compute(rs, w), wc = as_compute(ws, w);
                      Tensor dy = as_compute(dy_in, w), dr_extra = as_compute(de_in, w);
                      Tensor dr = Tensor::empty(rs.shape(), w), dw = Tensor::empty(ws.shape(), w);
                      dispatch_float(w, "rms_norm_backward", [&](auto tag) {
                        using T = typename decltype(tag)::type;
                        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
                          cpu::rms_norm_bwd<T>(rows, cols, rc.data<T>(), wc.data<T>(), rstds.data<T>(), dy.data<T>(),
                                               detail::ptr_or_null<T>(dr_extra), dr.data<T>(), dw.data<T>());
                      });
                      return std::vector<Tensor>{need[0] ? to_dtype(dr, xdt) : Tensor(),
                                                 need[1] ? to_dtype(dw, ws.dtype()) : Tensor(),
                                                 has_res && need[2] ? to_dtype(dr, res_dt) : Tensor()};
                    },
                    /*materialize_grads=*/false);
  return {y, r};
}

}  // namespace coil
