// The autograd graph. An op that runs on inputs requiring grad creates one
// Node holding what its backward needs and sets itself as grad_fn of its
// outputs. Edges point from a node to the producers of its inputs: another
// node's output, or a leaf tensor whose .grad receives the gradient.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace coil {

struct Node;

struct Edge {
  std::shared_ptr<Node> fn;         // producer node, or
  std::weak_ptr<TensorImpl> leaf;   // the leaf to accumulate into
  uint32_t input_nr = 0;            // which output of `fn`
  bool active() const { return fn != nullptr || !leaf.expired(); }
};

struct OutputMeta {
  Shape shape;
  DType dtype;
  Device device;
};

// grad_outputs has one tensor per output, a zero tensor for an output that got
// no gradient (or an undefined tensor, for a node recorded with
// materialize_grads = false); the result has one entry per input, undefined
// where needs_input_grad is false.
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs,
                                                     const std::vector<bool>& needs_input_grad)>;

struct Node : GradFn {
  std::string op;
  std::vector<Edge> next;           // one per input
  std::vector<OutputMeta> outputs;  // to build zeros for outputs that got no grad
  uint64_t sequence_nr = 0;         // creation order: later nodes run first
  BackwardFn backward;              // released after use unless retain_graph
  // False: outputs that got no gradient reach `backward` undefined instead of
  // as a zero tensor (an op that can skip the term saves a fill and a read).
  bool materialize_grads = true;

  std::string name() const override { return op + "Backward"; }
};

// Records a node for `outputs` computed from `inputs` when grad mode is on and
// some input requires grad; otherwise does nothing. Saved tensors captured by
// `fn` must be detached (saving an output with its history would form a cycle).
void record(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn,
            bool materialize_grads = true);

// True when `record` would record for these inputs.
bool needs_grad(const std::vector<Tensor>& inputs);

}  // namespace coil
