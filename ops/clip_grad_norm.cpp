#include "ops/clip_grad_norm.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/common.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/clip_grad_norm.h"
#endif

namespace coil {

namespace {

constexpr const char* kOp = "clip_grad_norm_";

// The reference: one sum of squares per tensor, added in order, then a
// scale per tensor. Any device, any floating dtype.
Tensor clip_per_tensor(const std::vector<Tensor>& grads, double max_norm, DType acc) {
  Tensor total = zeros({}, acc, grads[0].device());
  for (const Tensor& g : grads) {
    Tensor ga = to_dtype(g, acc);
    total = add(total, sum(mul(ga, ga)));
  }
  Tensor norm = sqrt(total);
  if (max_norm > 0 && std::isfinite(max_norm)) {
    Tensor coef = mul(pow(add(norm, 1e-6), -1.0), max_norm);
    coef = neg(clamp_min(neg(coef), -1.0));  // min(coef, 1)
    for (const Tensor& g : grads) copy_(g, mul(g, to_dtype(coef, g.dtype())));
  }
  return norm;
}

}  // namespace

Tensor clip_grad_norm_(const std::vector<Tensor>& grads, double max_norm) {
  COIL_CHECK(!grads.empty(), kOp, ": no gradients");
  COIL_CHECK(!grad_enabled(), kOp, ": scales gradients in place; run it under NoGradGuard");
  DType acc = DType::f32;
  bool fused = grads[0].is_cuda();
  for (const Tensor& g : grads) {
    detail::check_defined(kOp, g, "gradient");
    COIL_CHECK(is_floating(g.dtype()), kOp, ": gradient ", g.desc(), " is not floating");
    COIL_CHECK(g.device() == grads[0].device(), kOp, ": gradients on different devices: ", grads[0].desc(), " and ",
               g.desc());
    if (g.dtype() == DType::f64) acc = DType::f64;
    fused = fused && g.dtype() == DType::f32 && g.is_contiguous();
  }
  if (!fused) return clip_per_tensor(grads, max_norm, acc);
#ifdef COIL_WITH_CUDA
  std::vector<cuda::GradSlot> slots;
  for (const Tensor& g : grads) slots.push_back({g.data<float>(), g.numel()});
  const Device dev = grads[0].device();
  Tensor partials = Tensor::empty({std::max<int64_t>(1, cuda::clip_grad_norm_partials(slots))}, DType::f64, dev);
  Tensor norm = Tensor::empty({}, DType::f32, dev), coef = Tensor::empty({}, DType::f32, dev);
  cuda::clip_grad_norm(slots, max_norm, partials.data<double>(), norm.data<float>(), coef.data<float>(), dev.index);
  return norm;
#else
  detail::no_cuda(kOp);
#endif
}

}  // namespace coil
