#include "optim/clip.h"

#include "autograd/grad_mode.h"
#include "ops/clip_grad_norm.h"
#include "ops/creation.h"

namespace coil::optim {

Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard ng;
  std::vector<Tensor> grads;
  bool f64 = false;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    const Tensor& g = p.grad();
    COIL_CHECK(is_floating(g.dtype()), "clip_grad_norm: gradient of ", p.desc(), " is not floating");
    if (!grads.empty())
      COIL_CHECK(g.device() == grads[0].device(), "clip_grad_norm: gradients on different devices: ",
                 grads[0].desc(), " and ", g.desc());
    f64 = f64 || g.dtype() == DType::f64;
    grads.push_back(g);
  }
  if (grads.empty()) return zeros({}, f64 ? DType::f64 : DType::f32, Device::cpu());
  return clip_grad_norm_(grads, max_norm);
}

double scalar_value(const Tensor& t) { return t.item(); }

}  // namespace coil::optim
