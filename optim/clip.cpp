#include "optim/clip.h"

#include "autograd/grad_mode.h"
#include "ops/clip_grad_norm.h"
#include "ops/creation.h"

namespace coil::optim {

Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard ng;
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
  // clip_grad_norm_ checks the gradients (floating, one device).
  if (grads.empty()) return zeros({}, DType::f32, Device::cpu());
  return clip_grad_norm_(grads, max_norm);
}

double scalar_value(const Tensor& t) { return t.item(); }

}  // namespace coil::optim
