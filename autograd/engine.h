// The backward engine: walks the graph from a root in reverse creation order,
// accumulating gradients, and frees each node's saved tensors after it ran
// (unless retain_graph). Leaf gradients accumulate across calls.
#pragma once
#include "autograd/node.h"

namespace coil {

// The two tensor operations the engine needs; installed by ops/ (which sits
// above autograd/) the first time it records a node.
struct GradOps {
  Tensor (*add)(const Tensor&, const Tensor&) = nullptr;
  Tensor (*zeros)(const Shape&, DType, Device) = nullptr;
  Tensor (*clone)(const Tensor&) = nullptr;
};
void install_grad_ops(const GradOps& ops);

// Post-accumulate-grad hooks (as torch's register_post_accumulate_grad_hook):
// `hook(leaf)` runs on the host once per backward pass that reaches `leaf`,
// after the pass has accumulated its last contribution into leaf.grad(), so
// the gradient is final for that pass (with gradient accumulation over
// several passes, it runs once per pass). Hooks run in the order backward
// finishes the leaves, i.e. roughly the reverse of the forward's use order;
// on CUDA the gradient's kernels are enqueued, not necessarily finished.
// A hook must not call backward. Leaves only (throws otherwise).
void register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor&)> hook);
void clear_post_accumulate_grad_hooks(const Tensor& leaf);

// root: a scalar (or any tensor when `grad` is given, of root's shape).
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);
// Several roots in one pass (as torch.autograd.backward(tensors, grads)):
// a node shared by the roots runs once with all their gradients.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph = false);

}  // namespace coil
