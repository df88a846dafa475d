// CUDA gradient clipping by the global L2 norm, over many f32 tensors in
// three launches whatever their number (the per-tensor version was ~2,000
// small kernels a step for mamba-130m):
//   1. each block writes the f64 sum of squares of a fixed 4096-element
//      chunk of one tensor (the tensor table travels as a kernel parameter);
//   2. one block adds the partials in a fixed order: norm = sqrt(total),
//      coef = min(1, max_norm / (norm + 1e-6)) (NaN when the norm is NaN);
//   3. when clipping, every element is multiplied by coef in place (read
//      from device memory: nothing waits on the host; skipped when coef
//      is exactly 1, which leaves the same bits).
// Deterministic: fixed chunks, fixed orders, no atomics.
#pragma once
#include <cstdint>
#include <vector>

namespace coil::cuda {

struct GradSlot {
  float* grad;
  int64_t numel;
};

// Size of the f64 workspace clip_grad_norm needs for these tensors.
int64_t clip_grad_norm_partials(const std::vector<GradSlot>& slots);

// norm (1 float) gets the norm; coef (1 float) the scale; partials has
// clip_grad_norm_partials(slots) doubles. max_norm <= 0 or infinite: no
// scaling (coef is still written).
void clip_grad_norm(const std::vector<GradSlot>& slots, double max_norm, double* partials, float* norm, float* coef,
                    int device);

}  // namespace coil::cuda
