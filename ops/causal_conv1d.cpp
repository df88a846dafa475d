#include "ops/causal_conv1d.h"

#include "ops/common.h"
#include "ops/cpu/causal_conv1d.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/causal_conv1d.h"
#endif

namespace coil {

using detail::as_compute;
using detail::mut_or_null;
using detail::ptr_or_null;

#ifdef COIL_WITH_CUDA
namespace {
// Kernel arguments for CUDA tensors: activations stay in their dtype, the
// weight and bias go in as f32; the caller fills the outputs.
cuda::ConvArgs cuda_args(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& init, bool silu) {
  NoGradGuard ng;
  static thread_local std::vector<Tensor> keep;  // keeps converted copies alive until the next call
  keep.clear();
  // x may be a strided view with time contiguous (the mixer's x is a slice of
  // in_proj's (2Di, B, L) output): the kernel takes its strides, no copy.
  const bool rows_ok = x.stride(2) == 1 || x.size(2) <= 1;
  Tensor xc = rows_ok ? x.detach() : contiguous(x.detach());
  Tensor wc = contiguous(to_dtype(weight.detach(), DType::f32));
  Tensor bc = bias.defined() ? contiguous(to_dtype(bias.detach(), DType::f32)) : Tensor();
  Tensor ic = init.defined() ? contiguous(to_dtype(init.detach(), x.dtype())) : Tensor();
  keep = {xc, wc, bc, ic};
  cuda::ConvArgs a;
  a.batch = x.size(0), a.dim = x.size(1), a.len = x.size(2), a.width = wc.size(1);
  a.dtype = x.dtype();
  a.x = xc.data_ptr();
  a.x_sb = xc.stride(0), a.x_sd = xc.stride(1);
  a.w = wc.data<float>();
  a.bias = bc.defined() ? bc.data<float>() : nullptr;
  a.init_state = ic.defined() ? ic.data_ptr() : nullptr;
  a.silu = silu;
  return a;
}
}  // namespace
#endif

ConvResult causal_conv1d(const Tensor& x, const Tensor& weight_in, const Tensor& bias, bool silu,
                         const Tensor& initial_state, bool return_final_state) {
  const char* op = "causal_conv1d";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, weight_in, "weight");
  detail::check_rank(op, x, "x", 3);
  const int64_t B = x.size(0), C = x.size(1), L = x.size(2);
  Tensor weight = weight_in.dim() == 3 ? reshape(weight_in, {weight_in.size(0), weight_in.size(2)}) : weight_in;
  COIL_CHECK(weight.dim() == 2 && weight.size(0) == C && (weight_in.dim() == 2 || weight_in.size(1) == 1), op,
             ": weight must be (", C, ", K) or (", C, ", 1, K) for x ", x.desc(), ", got ", weight_in.desc());
  const int64_t K = weight.size(1);
  COIL_CHECK(K >= 1 && K <= 8, op, ": kernel width must be 1..8, got ", K);
  if (bias.defined()) detail::check_shape(op, bias, "bias", {C});
  if (initial_state.defined()) detail::check_shape(op, initial_state, "initial_state", {B, C, K - 1});
  detail::check_same_device(op, {x, weight, bias, initial_state});

  Tensor out, fstate;
  if (x.is_cpu()) {
    DType w = detail::cpu_compute_dtype(x);
    Tensor xc = as_compute(x, w), wc = as_compute(weight, w), bc = as_compute(bias, w),
           ic = as_compute(initial_state, w);
    Tensor oc = Tensor::empty(x.shape(), w), fc;
    if (return_final_state) fc = Tensor::empty({B, C, K - 1}, w);
    dispatch_float(w, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
        cpu::causal_conv1d_fwd<T>(B, C, L, K, xc.data<T>(), wc.data<T>(), ptr_or_null<T>(bc), ptr_or_null<T>(ic), silu,
                                  oc.data<T>(), mut_or_null<T>(fc));
    });
    out = to_dtype(oc, x.dtype()).detach();
    if (fc.defined()) fstate = to_dtype(fc, x.dtype()).detach();
  } else {
#ifdef COIL_WITH_CUDA
    cuda::ConvArgs a = cuda_args(x, weight, bias, initial_state, silu);
    out = Tensor::empty(x.shape(), x.dtype(), x.device());
    a.out = out.data_ptr();
    if (return_final_state) {
      fstate = Tensor::empty({B, C, K - 1}, x.dtype(), x.device());
      a.final_state = fstate.data_ptr();
    }
    cuda::causal_conv1d_fwd(a, x.device().index);
#else
    detail::no_cuda(op);
#endif
  }

  Tensor xs = detail::save(x), ws = detail::save(weight), bs = detail::save(bias), is = detail::save(initial_state);
  std::vector<Tensor> outs{out};
  if (fstate.defined()) outs.push_back(fstate);
  detail::record_op(op, {x, weight, bias, initial_state}, outs,
                    [xs, ws, bs, is, silu, B, C, L, K](const std::vector<Tensor>& g, const std::vector<bool>& need) {
                      auto back = [](const Tensor& t, const Tensor& like, bool n) {
                        return n && t.defined() ? to_dtype(t, like.dtype()) : Tensor();
                      };
                      if (xs.is_cuda()) {
#ifdef COIL_WITH_CUDA
                        cuda::ConvArgs a = cuda_args(xs, ws, bs, is, silu);
                        Tensor dout = contiguous(to_dtype(g[0], xs.dtype()));
                        Tensor dfs = g.size() > 1 ? contiguous(to_dtype(g[1], xs.dtype())) : Tensor();
                        Tensor dx = Tensor::empty(xs.shape(), xs.dtype(), xs.device());
                        Tensor dw = Tensor::empty({C, K}, DType::f32, xs.device()), db, di;
                        if (bs.defined()) db = Tensor::empty({C}, DType::f32, xs.device());
                        if (is.defined()) di = Tensor::empty(is.shape(), xs.dtype(), xs.device());
                        Tensor work = Tensor::empty({int64_t(cuda::conv_bwd_workspace(a))}, DType::f32, xs.device());
                        cuda::ConvGrads cg;
                        cg.dout = dout.data_ptr();
                        cg.dfinal_state = dfs.defined() ? dfs.data_ptr() : nullptr;
                        cg.dx = dx.data_ptr();
                        cg.dw = dw.data<float>();
                        cg.dbias = db.defined() ? db.data<float>() : nullptr;
                        cg.dinit_state = di.defined() ? di.data_ptr() : nullptr;
                        cg.workspace = work.data<float>();
                        cuda::causal_conv1d_bwd(a, cg, xs.device().index);
                        return std::vector<Tensor>{back(dx, xs, need[0]), back(dw, ws, need[1]), back(db, bs, need[2]),
                                                   back(di, is, need[3])};
#endif
                      }
                      DType w = detail::cpu_compute_dtype(xs);
                      Tensor xc = as_compute(xs, w), wc = as_compute(ws, w), bc = as_compute(bs, w),
                             ic = as_compute(is, w), dout = as_compute(g[0], w);
                      Tensor dfs = g.size() > 1 ? as_compute(g[1], w) : Tensor();
                      Tensor dx = Tensor::empty(xs.shape(), w), dw = Tensor::empty(ws.shape(), w), db, di;
                      if (bs.defined()) db = Tensor::empty(bs.shape(), w);
                      if (is.defined()) di = Tensor::empty(is.shape(), w);
                      dispatch_float(w, "causal_conv1d_backward", [&](auto tag) {
                        using T = typename decltype(tag)::type;
                        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
                          cpu::causal_conv1d_bwd<T>(B, C, L, K, xc.data<T>(), wc.data<T>(), ptr_or_null<T>(bc),
                                                    ptr_or_null<T>(ic), silu, dout.data<T>(), ptr_or_null<T>(dfs),
                                                    dx.data<T>(), dw.data<T>(), mut_or_null<T>(db), mut_or_null<T>(di));
                      });
                      return std::vector<Tensor>{back(dx, xs, need[0]), back(dw, ws, need[1]), back(db, bs, need[2]),
                                                 back(di, is, need[3])};
                    });
  return {out, fstate};
}

}  // namespace coil
