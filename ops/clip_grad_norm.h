// clip_grad_norm_: the global L2 norm of many gradients, and (when max_norm
// > 0 and finite) every gradient scaled in place by
// min(1, max_norm / (norm + 1e-6)). Returns the norm as a 0-d tensor on the
// gradients' device (f32; f64 when any gradient is f64); nothing waits on
// the host. Not differentiable; run under NoGradGuard.
//
// CPU: per-tensor sums of squares added in the given order. CUDA, every
// gradient f32 and contiguous: three fused multi-tensor launches
// (cuda/clip_grad_norm.h, f64 partials in a fixed order); other dtypes
// or layouts take the per-tensor path on the GPU too. Deterministic.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace coil {

Tensor clip_grad_norm_(const std::vector<Tensor>& grads, double max_norm);

}  // namespace coil
