#include "ops/mamba_step.h"

#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/common.h"
#include "ops/cpu/mamba_step.h"
#include "ops/matmul.h"
#include "ops/rms_norm.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/mamba_step.h"
static_assert(coil::kDecodeGemvMaxRows == coil::cuda::kGemvMaxRows);
#endif

namespace coil {

namespace {

using detail::as_compute;

// A (B, n) operand the kernels can read in place: adjacent columns. (These
// and out_or_empty serve the CUDA paths only.)
[[maybe_unused]] Tensor rows_view(const Tensor& t) { return t.size(1) <= 1 || t.stride(1) == 1 ? t.detach() : contiguous(t.detach()); }
[[maybe_unused]] int64_t row_stride(const Tensor& t) { return t.size(0) <= 1 ? t.size(1) : t.stride(0); }

void check_2d(const char* op, const Tensor& t, const char* name, int64_t rows, int64_t cols) {
  detail::check_defined(op, t, name);
  detail::check_shape(op, t, name, {rows, cols});
}

// The state in the CPU compute type, and a write-back when it had to be converted.
struct CpuState {
  Tensor work;
  Tensor target;
  explicit CpuState(const Tensor& s, DType w) : work(s.dtype() == w ? s : as_compute(s, w)), target(s) {}
  void write_back() const {
    if (!work.same(target)) copy_(target, work);
  }
};

// Results go to the caller's buffer when one is given (the decoder's fixed
// buffers: a captured step then allocates nothing between its kernels) or
// to a fresh tensor. A buffer must have the result's shape and dtype and be
// contiguous.
void check_out(const char* op, const Tensor& out, const char* name, const Shape& s, DType dt, const Tensor& like) {
  COIL_CHECK(out.shape() == s && out.dtype() == dt && out.is_contiguous(), op, ": ", name, " must be contiguous ",
             dtype_name(dt), " of the result's shape, got ", out.desc());
  detail::check_same_device(op, {out, like});
}
[[maybe_unused]] Tensor out_or_empty(const char* op, const Tensor& out, const char* name, const Shape& s, DType dt,
                                     const Tensor& like) {
  if (!out.defined()) return Tensor::empty(s, dt, like.device());
  check_out(op, out, name, s, dt, like);
  return out.detach();
}
// A result made without the buffer, copied into it.
Tensor into(const char* op, const Tensor& out, const char* name, const Tensor& r) {
  if (!out.defined()) return r;
  check_out(op, out, name, r.shape(), r.dtype(), r);
  copy_(out, r);
  return out.detach();
}

// weight (C, K) or (C, 1, K) -> (C, K), checked.
Tensor conv_weight_2d(const char* op, const Tensor& weight_in, int64_t C, const Tensor& x) {
  detail::check_defined(op, weight_in, "weight");
  Tensor weight = weight_in.dim() == 3 ? reshape(weight_in.detach(), {weight_in.size(0), weight_in.size(2)})
                                       : weight_in.detach();
  COIL_CHECK(weight.dim() == 2 && weight.size(0) == C && (weight_in.dim() == 2 || weight_in.size(1) == 1), op,
             ": weight must be (", C, ", K) or (", C, ", 1, K) for x ", x.desc(), ", got ", weight_in.desc());
  COIL_CHECK(weight.size(1) >= 1 && weight.size(1) <= 8, op, ": kernel width must be 1..8, got ", weight.size(1));
  return weight;
}

void check_conv_state(const char* op, const Tensor& conv_state, int64_t B, int64_t C, int64_t K, DType dt) {
  detail::check_defined(op, conv_state, "conv_state");
  detail::check_shape(op, conv_state, "conv_state", {B, C, K - 1});
  COIL_CHECK(conv_state.is_contiguous() && conv_state.dtype() == dt, op,
             ": conv_state must be contiguous with x's dtype ",
             dtype_name(dt), ", got ", conv_state.desc());
}

#ifdef COIL_WITH_CUDA
// Kernel arguments of the conv step on CUDA; `keep` holds the f32 copies.
cuda::ConvStepArgs conv_args(const Tensor& conv_state, const Tensor& weight, const Tensor& bias, bool silu,
                             const Tensor& out, std::vector<Tensor>& keep) {
  Tensor w32 = contiguous(to_dtype(weight, DType::f32)).detach();
  Tensor b32 = bias.defined() ? contiguous(to_dtype(bias.detach(), DType::f32)).detach() : Tensor();
  keep = {w32, b32};
  cuda::ConvStepArgs a;
  a.batch = conv_state.size(0);
  a.dim = conv_state.size(1);
  a.width = weight.size(1);
  a.dtype = conv_state.dtype();
  a.state = conv_state.data_ptr();
  a.w = w32.data<float>();
  a.bias = b32.defined() ? b32.data<float>() : nullptr;
  a.silu = silu;
  a.out = out.data_ptr();
  return a;
}

// The fused residual add + RMSNorm prologue of decode_norm_linear and
// decode_add_rms_norm on CUDA. norm_fusable: whether the kernels take these
// operands (`smem_floats` of the rows staged in shared memory);
// norm_operands: the checks, contiguous inputs (kept alive here), the
// residual stream's output (in rms_norm's dtype) and the kernel arguments.
bool norm_fusable(const Tensor& x, const Tensor& residual, const Tensor& norm_w, int64_t smem_floats) {
  auto act = [](DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; };
  return x.is_cuda() && x.dim() == 2 && x.size(1) >= 1 && act(x.dtype()) &&
         (!residual.defined() || act(residual.dtype())) && norm_w.dtype() == DType::f32 &&
         size_t(smem_floats) * sizeof(float) <= cuda::kGemvNormMaxSmem;
}
struct NormOperands {
  Tensor x, residual, weight, residual_out;
  cuda::NormPrologue np;
};
NormOperands norm_operands(const char* op, const Tensor& x, const Tensor& residual, const Tensor& norm_w, double eps,
                           bool residual_in_fp32, const Tensor& residual_out) {
  const int64_t m = x.size(0), k = x.size(1);
  detail::check_shape(op, norm_w, "norm weight", {k});
  if (residual.defined()) detail::check_shape(op, residual, "residual", x.shape());
  COIL_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  detail::check_same_device(op, {x, residual, norm_w});
  const DType rdt = residual_in_fp32 ? DType::f32 : residual.defined() ? residual.dtype() : x.dtype();
  NormOperands o;
  o.x = contiguous(x.detach()).detach();
  o.weight = contiguous(norm_w.detach()).detach();
  o.residual = residual.defined() ? contiguous(residual.detach()).detach() : Tensor();
  o.residual_out = out_or_empty(op, residual_out, "residual_out", {m, k}, rdt, x);
  COIL_CHECK(o.residual_out.storage() != o.x.storage() &&
                 (!o.residual.defined() || o.residual_out.storage() != o.residual.storage()),
             op, ": residual_out must not alias x or residual");
  cuda::NormPrologue& np = o.np;
  np.x = o.x.data_ptr();
  np.x_dtype = o.x.dtype();
  np.residual = o.residual.defined() ? o.residual.data_ptr() : nullptr;
  np.residual_dtype = o.residual.defined() ? o.residual.dtype() : DType::f32;
  np.weight = o.weight.data<float>();
  np.eps = float(eps);
  np.residual_out = o.residual_out.data_ptr();
  np.residual_out_dtype = rdt;
  return o;
}
#endif

}  // namespace

Tensor causal_conv1d_step(const Tensor& x, const Tensor& conv_state, const Tensor& weight_in, const Tensor& bias,
                          bool silu, const Tensor& out_buf) {
  const char* op = "causal_conv1d_step";
  detail::check_defined(op, x, "x");
  detail::check_rank(op, x, "x", 2);
  const int64_t B = x.size(0), C = x.size(1);
  Tensor weight = conv_weight_2d(op, weight_in, C, x);
  const int64_t K = weight.size(1);
  check_conv_state(op, conv_state, B, C, K, x.dtype());
  if (bias.defined()) detail::check_shape(op, bias, "bias", {C});
  detail::check_same_device(op, {x, conv_state, weight, bias});

  if (x.is_cpu()) {
    const DType w = detail::cpu_compute_dtype(x);
    CpuState st(conv_state, w);
    Tensor xc = as_compute(x, w), wc = as_compute(weight, w), bc = as_compute(bias, w);
    Tensor oc = Tensor::empty({B, C}, w);
    dispatch_float(w, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
        cpu::conv_step<T>(B, C, K, xc.data<T>(), st.work.data<T>(), wc.data<T>(), detail::ptr_or_null<T>(bc), silu,
                          oc.data<T>());
    });
    st.write_back();
    return into(op, out_buf, "out", to_dtype(oc, x.dtype()).detach());
  }
#ifdef COIL_WITH_CUDA
  Tensor xv = rows_view(x);
  Tensor out = out_or_empty(op, out_buf, "out", {B, C}, x.dtype(), x);
  std::vector<Tensor> keep;
  cuda::ConvStepArgs a = conv_args(conv_state, weight, bias, silu, out, keep);
  a.x = xv.data_ptr();
  a.x_row = row_stride(xv);
  cuda::conv_step(a, x.device().index);
  return out;
#else
  detail::no_cuda(op);
#endif
}

Tensor selective_state_step(const Tensor& state, const SsmStepInputs& in, const Tensor& out_buf) {
  const char* op = "selective_state_step";
  detail::check_defined(op, in.x, "x");
  detail::check_rank(op, in.x, "x", 2);
  detail::check_defined(op, in.A, "A");
  detail::check_rank(op, in.A, "A", 2);
  const int64_t b = in.x.size(0), d = in.x.size(1), n = in.A.size(1);
  detail::check_shape(op, in.A, "A", {d, n});
  detail::check_defined(op, state, "ssm_state");
  detail::check_shape(op, state, "ssm_state", {b, d, n});
  COIL_CHECK(state.is_contiguous() && (state.dtype() == DType::f32 || state.dtype() == DType::f64), op,
             ": ssm_state must be contiguous f32 (f64 on the CPU), got ", state.desc());
  int64_t r = 0;
  if (in.dt_weight.defined()) {
    detail::check_rank(op, in.dt_weight, "dt_weight", 2);
    r = in.dt_weight.size(1);
    check_2d(op, in.dt_weight, "dt_weight", d, r);
    check_2d(op, in.dt, "dt", b, r);
  } else {
    check_2d(op, in.dt, "dt", b, d);
  }
  check_2d(op, in.B, "B", b, n);
  check_2d(op, in.C, "C", b, n);
  if (in.z.defined()) check_2d(op, in.z, "z", b, d);
  if (in.D.defined()) detail::check_shape(op, in.D, "D", {d});
  if (in.dt_bias.defined()) detail::check_shape(op, in.dt_bias, "dt_bias", {d});
  detail::check_same_device(op, {state, in.x, in.dt, in.dt_weight, in.A, in.B, in.C, in.D, in.z, in.dt_bias});

  if (in.x.is_cpu()) {
    const DType w = detail::cpu_compute_dtype(in.x);
    CpuState st(state, w);
    Tensor oc = Tensor::empty({b, d}, w);
    Tensor xc = as_compute(in.x, w), dtc = as_compute(in.dt, w), dwc = as_compute(in.dt_weight, w),
           ac = as_compute(in.A, w), bc = as_compute(in.B, w), cc = as_compute(in.C, w), Dc = as_compute(in.D, w),
           zc = as_compute(in.z, w), dbc = as_compute(in.dt_bias, w);
    dispatch_float(w, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      using detail::ptr_or_null;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
        cpu::ssm_step<T>(b, d, n, r, xc.data<T>(), dtc.data<T>(), ptr_or_null<T>(dwc), ac.data<T>(), bc.data<T>(),
                         cc.data<T>(), ptr_or_null<T>(Dc), ptr_or_null<T>(zc), ptr_or_null<T>(dbc), in.softplus,
                         st.work.data<T>(), oc.data<T>());
    });
    st.write_back();
    return into(op, out_buf, "out", to_dtype(oc, in.x.dtype()).detach());
  }
#ifdef COIL_WITH_CUDA
  const DType act = in.x.dtype();
  COIL_CHECK(state.dtype() == DType::f32, op, ": on CUDA ssm_state must be f32, got ", state.desc());
  for (auto [t, name] : {std::pair{in.dt, "dt"}, {in.dt_weight, "dt_weight"}, {in.B, "B"}, {in.C, "C"}, {in.z, "z"}})
    COIL_CHECK(!t.defined() || t.dtype() == act, op, ": ", name, " must have x's dtype ", dtype_name(act), ", got ",
               t.desc());
  auto f32 = [](const Tensor& t) { return t.defined() ? contiguous(to_dtype(t.detach(), DType::f32)).detach() : t; };
  Tensor xv = rows_view(in.x), dtv = rows_view(in.dt), Bv = rows_view(in.B), Cv = rows_view(in.C);
  Tensor zv = in.z.defined() ? rows_view(in.z) : Tensor();
  Tensor dw = in.dt_weight.defined() ? contiguous(in.dt_weight.detach()).detach() : Tensor();
  Tensor A32 = f32(in.A), D32 = f32(in.D), db32 = f32(in.dt_bias);
  Tensor out = out_or_empty(op, out_buf, "out", {b, d}, act, in.x);
  cuda::SsmStepArgs a;
  a.batch = b;
  a.dim = d;
  a.dstate = n;
  a.dt_rank = r;
  a.dtype = act;
  a.x = xv.data_ptr();
  a.x_row = row_stride(xv);
  a.dt_in = dtv.data_ptr();
  a.dt_row = row_stride(dtv);
  a.dt_w = dw.defined() ? dw.data_ptr() : nullptr;
  a.A = A32.data<float>();
  a.B = Bv.data_ptr();
  a.B_row = row_stride(Bv);
  a.C = Cv.data_ptr();
  a.C_row = row_stride(Cv);
  a.D = D32.defined() ? D32.data<float>() : nullptr;
  a.z = zv.defined() ? zv.data_ptr() : nullptr;
  a.z_row = zv.defined() ? row_stride(zv) : 0;
  a.dt_bias = db32.defined() ? db32.data<float>() : nullptr;
  a.softplus = in.softplus;
  a.state = state.data<float>();
  a.out = out.data_ptr();
  cuda::ssm_step(a, in.x.device().index);
  return out;
#else
  detail::no_cuda(op);
#endif
}

ConvXprojResult decode_conv_xproj(const Tensor& x, const Tensor& conv_state, const Tensor& conv_w, const Tensor& conv_b,
                                  const Tensor& w_x, const Tensor& conv_out, const Tensor& x_dbl) {
  const char* op = "decode_conv_xproj";
  detail::check_defined(op, x, "x");
  detail::check_rank(op, x, "x", 2);
  detail::check_defined(op, w_x, "x_proj weight");
  detail::check_rank(op, w_x, "x_proj weight", 2);
  const int64_t b = x.size(0), c = x.size(1), e = w_x.size(0);
  check_2d(op, w_x, "x_proj weight", e, c);
  Tensor weight = conv_weight_2d(op, conv_w, c, x);
  check_conv_state(op, conv_state, b, c, weight.size(1), x.dtype());
  if (conv_b.defined()) detail::check_shape(op, conv_b, "conv bias", {c});
#ifdef COIL_WITH_CUDA
  if (x.is_cuda() && w_x.dtype() == x.dtype()) {
    detail::check_same_device(op, {x, conv_state, weight, conv_b, w_x});
    Tensor xv = rows_view(x), wx = contiguous(w_x.detach()).detach();
    Tensor w32 = contiguous(to_dtype(weight, DType::f32)).detach();
    Tensor b32 = conv_b.defined() ? contiguous(to_dtype(conv_b.detach(), DType::f32)).detach() : Tensor();
    ConvXprojResult r;
    r.conv_out = out_or_empty(op, conv_out, "conv_out", {b, c}, x.dtype(), x);
    r.x_dbl = out_or_empty(op, x_dbl, "x_dbl", {b, e}, x.dtype(), x);
    cuda::ConvXprojArgs a;
    a.batch = b;
    a.dim = c;
    a.width = weight.size(1);
    a.out_dim = e;
    a.dtype = x.dtype();
    a.x = xv.data_ptr();
    a.x_row = row_stride(xv);
    a.conv_state = conv_state.data_ptr();
    a.conv_w = w32.data<float>();
    a.conv_b = b32.defined() ? b32.data<float>() : nullptr;
    a.w_x = wx.data_ptr();
    a.conv_out = r.conv_out.data_ptr();
    a.x_dbl = r.x_dbl.data_ptr();
    if (b > 0 && cuda::conv_xproj_supported(a)) {
      cuda::conv_xproj(a, x.device().index);
      return r;
    }
  }
#endif
  // The two ops: the CPU reference, and shapes the kernel does not take.
  ConvXprojResult r;
  r.conv_out = causal_conv1d_step(x, conv_state, conv_w, conv_b, /*silu=*/true, conv_out);
  r.x_dbl = into(op, x_dbl, "x_dbl", linear(r.conv_out, w_x));
  return r;
}

// linear(x, w, bias)'s operands for the decode GEMV and tensor-core paths:
// x (M, K), w (N, K), bias (N) or undefined.
static void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  detail::check_defined(op, x, "x");
  detail::check_defined(op, w, "w");
  detail::check_rank(op, x, "x", 2);
  detail::check_rank(op, w, "w", 2);
  COIL_CHECK(w.size(1) == x.size(1), op, ": w ", w.desc(), " does not match x ", x.desc());
  if (bias.defined()) detail::check_shape(op, bias, "bias", {w.size(0)});
}

Tensor decode_linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_buf) {
  const char* op = "decode_linear";
  check_linear(op, x, w, bias);
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  (void)m, (void)k;  // read by the CUDA path only
#ifdef COIL_WITH_CUDA
  const DType dt = x.dtype();
  const bool act = dt == DType::f32 || dt == DType::bf16 || dt == DType::f16;
  if (x.is_cuda() && act && m >= 1 && m <= cuda::kGemvMaxTiledRows && k >= 1 && w.dtype() == dt &&
      (!bias.defined() || bias.dtype() == dt)) {
    detail::check_same_device(op, {x, w, bias});
    Tensor xv = rows_view(x), wc = contiguous(w.detach()).detach();
    Tensor bc = bias.defined() ? contiguous(bias.detach()).detach() : Tensor();
    Tensor out = out_or_empty(op, out_buf, "out", {m, n}, dt, x);
    cuda::gemv_rows(xv.data_ptr(), row_stride(xv), wc.data_ptr(), bc.defined() ? bc.data_ptr() : nullptr,
                    out.data_ptr(), dt, m, n, k, x.device().index);
    return out;
  }
#endif
  return into(op, out_buf, "out", linear(x, w, bias));
}

Tensor decode_linear_mma(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_buf) {
  const char* op = "decode_linear_mma";
  check_linear(op, x, w, bias);
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  (void)m, (void)k;  // read by the CUDA path only
#ifdef COIL_WITH_CUDA
  const DType dt = x.dtype();
  if (x.is_cuda() && w.dtype() == dt && (!bias.defined() || bias.dtype() == dt)) {
    detail::check_same_device(op, {x, w, bias});
    Tensor xv = rows_view(x), wc = contiguous(w.detach()).detach();
    if (cuda::mma_rows_supported(dt, m, n, k, xv.data_ptr(), row_stride(xv), wc.data_ptr())) {
      Tensor bc = bias.defined() ? contiguous(bias.detach()).detach() : Tensor();
      Tensor out = out_or_empty(op, out_buf, "out", {m, n}, dt, x);
      cuda::mma_rows(xv.data_ptr(), row_stride(xv), wc.data_ptr(), bc.defined() ? bc.data_ptr() : nullptr,
                     out.data_ptr(), dt, m, n, k, x.device().index);
      return out;
    }
  }
#endif
  return into(op, out_buf, "out", linear(x, w, bias));
}

LinearConvResult decode_linear_conv(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& conv_state,
                                    const Tensor& conv_w, const Tensor& conv_b, bool silu) {
  const char* op = "decode_linear_conv";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, conv_state, "conv_state");
  detail::check_rank(op, conv_state, "conv_state", 3);
  const int64_t C = conv_state.size(1);
#ifdef COIL_WITH_CUDA
  const DType dt = x.dtype();
  const int64_t m = x.dim() == 2 ? x.size(0) : 0;
  const bool act = dt == DType::f32 || dt == DType::bf16 || dt == DType::f16;
  if (x.is_cuda() && act && m >= 1 && m <= cuda::kGemvMaxRows && w.defined() && w.dim() == 2 && w.dtype() == dt &&
      w.size(1) == x.size(1) && x.size(1) >= 1 && w.size(0) >= C && (!bias.defined() || bias.dtype() == dt)) {
    if (bias.defined()) detail::check_shape(op, bias, "bias", {w.size(0)});
    Tensor weight = conv_weight_2d(op, conv_w, C, x);
    check_conv_state(op, conv_state, m, C, weight.size(1), dt);
    if (conv_b.defined()) detail::check_shape(op, conv_b, "conv bias", {C});
    detail::check_same_device(op, {x, w, bias, conv_state, weight, conv_b});
    const int64_t n = w.size(0);
    Tensor xv = rows_view(x), wc = contiguous(w.detach()).detach();
    Tensor bc = bias.defined() ? contiguous(bias.detach()).detach() : Tensor();
    LinearConvResult r;
    r.y = Tensor::empty({m, n}, dt, x.device());
    r.conv_out = Tensor::empty({m, C}, dt, x.device());
    std::vector<Tensor> keep;
    cuda::ConvStepArgs a = conv_args(conv_state, weight, conv_b, silu, r.conv_out, keep);
    cuda::gemv_rows(xv.data_ptr(), row_stride(xv), wc.data_ptr(), bc.defined() ? bc.data_ptr() : nullptr,
                    r.y.data_ptr(), dt, m, n, x.size(1), x.device().index, &a);
    return r;
  }
#endif
  LinearConvResult r;
  r.y = decode_linear(x, w, bias);
  COIL_CHECK(r.y.size(1) >= C, op, ": the product has ", r.y.size(1), " columns, fewer than the conv's ", C);
  r.conv_out = causal_conv1d_step(narrow(r.y, 1, 0, C), conv_state, conv_w, conv_b, silu);
  return r;
}

NormLinearResult decode_norm_linear(const Tensor& x, const Tensor& residual, const Tensor& norm_w, double eps,
                                    bool residual_in_fp32, const Tensor& w, const Tensor& bias,
                                    const Tensor& conv_state, const Tensor& conv_w, const Tensor& conv_b, bool silu,
                                    const Tensor& out, const Tensor& residual_out, const Tensor& conv_out) {
  const char* op = "decode_norm_linear";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, w, "w");
  detail::check_defined(op, norm_w, "norm weight");
#ifdef COIL_WITH_CUDA
  const DType dt = w.dtype();
  const int64_t m = x.dim() == 2 ? x.size(0) : 0, k = x.size(-1);
  const bool act = dt == DType::f32 || dt == DType::bf16 || dt == DType::f16;
  if (norm_fusable(x, residual, norm_w, m * k) && w.dim() == 2 && act && m >= 1 && m <= cuda::kGemvMaxRows &&
      w.size(1) == k && (!bias.defined() || bias.dtype() == dt) &&
      (!conv_state.defined() || (conv_state.dim() == 3 && conv_state.size(1) <= w.size(0)))) {
    const int64_t n = w.size(0);
    if (bias.defined()) detail::check_shape(op, bias, "bias", {n});
    detail::check_same_device(op, {x, w, bias, conv_state});
    const NormOperands no = norm_operands(op, x, residual, norm_w, eps, residual_in_fp32, residual_out);
    Tensor wc = contiguous(w.detach()).detach(), bc = bias.defined() ? contiguous(bias.detach()).detach() : Tensor();
    NormLinearResult r;
    r.residual = no.residual_out;
    r.y = out_or_empty(op, out, "out", {m, n}, dt, x);
    std::vector<Tensor> keep;
    cuda::ConvStepArgs ca;
    if (conv_state.defined()) {
      const int64_t c = conv_state.size(1);
      Tensor weight = conv_weight_2d(op, conv_w, c, x);
      check_conv_state(op, conv_state, m, c, weight.size(1), dt);
      if (conv_b.defined()) detail::check_shape(op, conv_b, "conv bias", {c});
      detail::check_same_device(op, {x, weight, conv_b});
      r.conv_out = out_or_empty(op, conv_out, "conv_out", {m, c}, dt, x);
      ca = conv_args(conv_state, weight, conv_b, silu, r.conv_out, keep);
    }
    cuda::gemv_rows(nullptr, k, wc.data_ptr(), bc.defined() ? bc.data_ptr() : nullptr, r.y.data_ptr(), dt, m, n, k,
                    x.device().index, conv_state.defined() ? &ca : nullptr, &no.np);
    return r;
  }
#endif
  RmsNormResult nr = rms_norm(x, norm_w, eps, residual, residual_in_fp32);
  NormLinearResult r;
  r.residual = into(op, residual_out, "residual_out", nr.residual);
  Tensor h = to_dtype(nr.y, w.dtype());
  if (conv_state.defined()) {
    LinearConvResult lc = decode_linear_conv(h, w, bias, conv_state, conv_w, conv_b, silu);
    r.y = into(op, out, "out", lc.y);
    r.conv_out = into(op, conv_out, "conv_out", lc.conv_out);
  } else {
    r.y = into(op, out, "out", decode_linear(h, w, bias));
  }
  return r;
}

AddNormResult decode_add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& norm_w, double eps,
                                  bool residual_in_fp32, DType out_dtype, const Tensor& y_out,
                                  const Tensor& residual_out) {
  const char* op = "decode_add_rms_norm";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, norm_w, "norm weight");
#ifdef COIL_WITH_CUDA
  const bool act = out_dtype == DType::f32 || out_dtype == DType::bf16 || out_dtype == DType::f16;
  if (act && norm_fusable(x, residual, norm_w, x.dim() == 2 ? x.size(1) : 0)) {
    const NormOperands no = norm_operands(op, x, residual, norm_w, eps, residual_in_fp32, residual_out);
    const int64_t m = x.size(0), k = x.size(1);
    AddNormResult r;
    r.residual = no.residual_out;
    r.y = out_or_empty(op, y_out, "y_out", {m, k}, out_dtype, x);
    cuda::add_rms_norm_rows(no.np, m, k, r.y.data_ptr(), out_dtype, x.device().index);
    return r;
  }
#endif
  RmsNormResult nr = rms_norm(x, norm_w, eps, residual, residual_in_fp32);
  return {into(op, residual_out, "residual_out", nr.residual), into(op, y_out, "y_out", to_dtype(nr.y, out_dtype))};
}

void set_decode_pdl(bool on) {
#ifdef COIL_WITH_CUDA
  cuda::set_decode_pdl(on);
#else
  (void)on;
#endif
}

void decode_clear_launch_error() {
#ifdef COIL_WITH_CUDA
  cuda::clear_launch_error();
#endif
}

void argmax_rows_(const Tensor& logits, int64_t limit, const Tensor& out) {
  const char* op = "argmax_rows_";
  detail::check_defined(op, logits, "logits");
  detail::check_defined(op, out, "out");
  detail::check_rank(op, logits, "logits", 2);
  const int64_t rows = logits.size(0), v = logits.size(1);
  COIL_CHECK(is_floating(logits.dtype()), op, ": logits must be floating, got ", logits.desc());
  COIL_CHECK(limit >= 1 && limit <= v, op, ": limit must be in [1, ", v, "], got ", limit);
  detail::check_shape(op, out, "out", {rows});
  COIL_CHECK((out.dtype() == DType::i32 || out.dtype() == DType::i64) && out.is_contiguous(), op,
             ": out must be contiguous i32 or i64, got ", out.desc());
  detail::check_same_device(op, {logits, out});
  if (logits.is_cpu()) {
    std::vector<double> x = logits.to_vector();  // logical order, (rows, v)
    std::vector<int64_t> best(size_t(rows), 0);
    for (int64_t i = 0; i < rows; ++i) {
      double bv = -INFINITY;
      for (int64_t j = 0; j < limit; ++j) {
        double e = x[size_t(i * v + j)];
        if (e != e) e = -INFINITY;
        if (e > bv) {
          bv = e;
          best[size_t(i)] = j;
        }
      }
    }
    copy_(out, Tensor::from_ints(best, {rows}, out.dtype()));
    return;
  }
#ifdef COIL_WITH_CUDA
  Tensor lv = rows_view(logits);
  cuda::argmax_rows(lv.data_ptr(), lv.dtype(), rows, limit, row_stride(lv), out.data_ptr(), out.dtype(),
                    logits.device().index);
#else
  detail::no_cuda(op);
#endif
}

}  // namespace coil
