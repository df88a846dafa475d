#include "autograd/engine.h"

#include <algorithm>
#include <queue>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/profile.h"

namespace coil {

namespace {
GradOps g_ops;
std::atomic<uint64_t> g_sequence{0};

// Whether t covers numel consecutive elements from its offset, in some
// order of its dims (a permuted contiguous tensor: no gaps, no overlaps).
bool dense_permuted(const Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of the dims larger than 1
  for (int64_t i = 0; i < t.dim(); ++i)
    if (t.size(i) != 1) dims.emplace_back(t.stride(i), t.size(i));
  std::sort(dims.begin(), dims.end());
  int64_t expect = 1;
  for (const auto& [stride, size] : dims) {
    if (stride != expect) return false;
    expect *= size;
  }
  return true;
}

Tensor accumulate(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  COIL_CHECK(g_ops.add, "autograd: no gradient ops installed");
  // Two gradients in the same permuted layout (a transposed view each, as
  // two GEMMs hand back for a transposed input) are added as flat buffers
  // and the sum keeps their layout: an elementwise add would write it
  // contiguous in the logical order, a transposing pass the consumer then
  // undoes with another.
  if (a.shape() == b.shape() && a.strides() == b.strides() && a.dtype() == b.dtype() && !a.is_contiguous() &&
      a.numel() > 1 && dense_permuted(a)) {
    const int64_t n = a.numel();
    Tensor sum = g_ops.add(a.as_strided({n}, {1}, a.offset()), b.as_strided({n}, {1}, b.offset()));
    return sum.as_strided(a.shape(), a.strides(), 0);
  }
  return g_ops.add(a, b);
}

// A leaf's .grad must own its memory: optimizers and clipping modify it in
// place, and a gradient passed through unchanged (add's backward returns the
// same tensor for both inputs) may be shared with another leaf.
Tensor accumulate_leaf(const Tensor& a, Tensor b) {
  if (a.defined()) return accumulate(a, b);
  if (b.impl_ptr().use_count() > 1 || b.storage().use_count() > 1 || !b.is_contiguous()) return g_ops.clone(b);
  return b;
}

void check_grad_matches(const Tensor& g, const Shape& shape, DType dtype, const std::string& who) {
  COIL_CHECK(g.shape() == shape, "autograd: ", who, " produced a gradient of shape ", shape_str(g.shape()),
             " for a tensor of shape ", shape_str(shape));
  COIL_CHECK(g.dtype() == dtype, "autograd: ", who, " produced a ", dtype_name(g.dtype()),
             " gradient for a ", dtype_name(dtype), " tensor");
}
}  // namespace

void install_grad_ops(const GradOps& ops) { g_ops = ops; }

void register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor&)> hook) {
  COIL_CHECK(leaf.defined() && leaf.is_leaf() && leaf.requires_grad(),
             "register_post_accumulate_grad_hook: ", leaf.defined() ? leaf.desc() : std::string("undefined tensor"),
             " is not a leaf that requires grad");
  COIL_CHECK(hook, "register_post_accumulate_grad_hook: empty hook");
  leaf.impl()->post_accumulate_grad_hooks.push_back(std::move(hook));
}

void clear_post_accumulate_grad_hooks(const Tensor& leaf) {
  if (leaf.defined()) leaf.impl()->post_accumulate_grad_hooks.clear();
}

namespace {
void run_post_accumulate_hooks(const std::shared_ptr<TensorImpl>& leaf) {
  if (leaf->post_accumulate_grad_hooks.empty()) return;
  Tensor t(leaf);
  for (const auto& h : leaf->post_accumulate_grad_hooks) h(t);
}
}  // namespace

namespace {
// "(32x80x1536 bf16, 80x1536T bf16)": the profiler's per-shape row label.
std::string shape_signature(const std::vector<Tensor>& inputs) {
  std::string s = "(";
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (i > 0) s += ", ";
    if (!t.defined()) {
      s += "-";
      continue;
    }
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (d > 0) s += 'x';
      s += std::to_string(t.size(d));
    }
    if (t.dim() >= 2 && t.stride(-2) == 1 && t.size(-2) > 1 && t.size(-1) > 1) s += "T";
    s += std::string(" ") + dtype_name(t.dtype());
  }
  return s + ")";
}
}  // namespace

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn,
            bool materialize_grads) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->op = op;
  if (profile::enabled() && profile::shapes()) {
    node->op += ' ';
    node->op += shape_signature(inputs);
  }
  if (profile::enabled() && !outputs.empty()) profile::forward_mark(node->op.c_str(), outputs[0].device());
  node->sequence_nr = g_sequence.fetch_add(1);
  node->backward = std::move(fn);
  node->materialize_grads = materialize_grads;
  node->next.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    if (t.grad_fn()) {
      node->next[i].fn = std::static_pointer_cast<Node>(t.grad_fn());
      node->next[i].input_nr = t.output_nr();
    } else {
      node->next[i].leaf = t.impl_ptr();
    }
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    node->outputs.push_back({outputs[k].shape(), outputs[k].dtype(), outputs[k].device()});
    outputs[k].set_history(node, uint32_t(k));
  }
}

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  backward(std::vector<Tensor>{root}, std::vector<Tensor>{grad}, retain_graph);
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  COIL_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ", grads.size(), " gradients");
  std::vector<Tensor> g0s(roots.size());
  for (size_t r = 0; r < roots.size(); ++r) {
    const Tensor& root = roots[r];
    COIL_CHECK(root.defined(), "backward: undefined root tensor");
    COIL_CHECK(root.requires_grad(), "backward: the tensor ", root.desc(),
               " does not require grad (no input of the computation requires grad, or it ran under NoGradGuard)");
    Tensor g0 = grads[r];
    if (!g0.defined()) {
      COIL_CHECK(root.numel() == 1, "backward: root ", root.desc(),
                 " is not a scalar; pass a gradient of the same shape");
      COIL_CHECK(g_ops.zeros && g_ops.add, "autograd: no gradient ops installed");
      g0 = Tensor::from_vector({1.0}, root.shape(), root.dtype(), root.device());
    } else {
      check_grad_matches(g0, root.shape(), root.dtype(), "backward's grad argument");
    }
    g0s[r] = g0;
  }
  NoGradGuard no_grad;

  std::vector<Node*> starts;
  for (size_t r = 0; r < roots.size(); ++r) {
    if (!roots[r].grad_fn()) {  // a leaf
      roots[r].set_grad(accumulate_leaf(roots[r].grad(), g0s[r]));
      run_post_accumulate_hooks(roots[r].impl_ptr());
    } else {
      starts.push_back(static_cast<Node*>(roots[r].grad_fn().get()));
    }
  }
  if (starts.empty()) return;

  // Count, for every node reachable from the root, how many edges lead to it;
  // likewise for leaves with post-accumulate hooks, whose gradient is final
  // once every edge into them has been processed.
  std::unordered_map<Node*, int> deps;
  struct LeafPending {
    int edges = 0;
    bool reached = false;  // some edge delivered a gradient in this pass
  };
  std::unordered_map<TensorImpl*, LeafPending> hooked;
  {
    std::vector<Node*> stack = starts;
    std::unordered_set<Node*> seen(starts.begin(), starts.end());
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (const Edge& e : n->next) {
        if (!e.fn) {
          if (auto leaf = e.leaf.lock(); leaf && !leaf->post_accumulate_grad_hooks.empty()) hooked[leaf.get()].edges++;
          continue;
        }
        deps[e.fn.get()]++;
        if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
      }
    }
  }

  // Ready nodes run latest-created first, which is a valid reverse
  // topological order and keeps memory low (grads are consumed early).
  auto later = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence_nr < b->sequence_nr;
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(later)> ready(later);
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<Node*> queued;

  for (size_t r = 0; r < roots.size(); ++r) {
    if (!roots[r].grad_fn()) continue;
    auto node = std::static_pointer_cast<Node>(roots[r].grad_fn());
    auto& buf = buffers[node.get()];
    buf.resize(node->outputs.size());
    buf[roots[r].output_nr()] = accumulate(buf[roots[r].output_nr()], g0s[r]);
    // A root reached from another root waits for that one's gradient.
    if (deps[node.get()] == 0 && std::find(queued.begin(), queued.end(), node.get()) == queued.end()) {
      ready.push(node);
      queued.push_back(node.get());
    }
  }

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    std::vector<Tensor> gouts = std::move(buffers[node.get()]);
    buffers.erase(node.get());
    gouts.resize(node->outputs.size());
    for (size_t k = 0; k < gouts.size(); ++k)
      if (!gouts[k].defined() && node->materialize_grads) {
        const OutputMeta& m = node->outputs[k];
        gouts[k] = g_ops.zeros(m.shape, m.dtype, m.device);
      }

    COIL_CHECK(node->backward, "backward: trying to run ", node->name(),
               " a second time; its saved tensors were freed (pass retain_graph=true to the first backward)");
    std::vector<bool> needs(node->next.size());
    for (size_t i = 0; i < needs.size(); ++i) needs[i] = node->next[i].active();
    const Device dev = node->outputs.empty() ? Device::cpu() : node->outputs[0].device;
    profile::backward_begin(dev);
    std::vector<Tensor> gins = node->backward(gouts, needs);
    profile::backward_end(node->op, dev);
    COIL_CHECK(gins.size() == node->next.size(), "autograd: ", node->name(), " returned ", gins.size(),
               " gradients for ", node->next.size(), " inputs");
    if (!retain_graph) node->backward = nullptr;  // frees the saved tensors now

    for (size_t i = 0; i < gins.size(); ++i) {
      const Edge& e = node->next[i];
      if (e.fn) {
        if (gins[i].defined()) {
          const OutputMeta& m = e.fn->outputs[e.input_nr];
          check_grad_matches(gins[i], m.shape, m.dtype, node->name());
          auto& buf = buffers[e.fn.get()];
          buf.resize(e.fn->outputs.size());
          buf[e.input_nr] = accumulate(buf[e.input_nr], gins[i]);
        }
        if (--deps[e.fn.get()] == 0) ready.push(e.fn);
      } else if (auto leaf = e.leaf.lock()) {
        const bool got = gins[i].defined();
        if (got) {
          check_grad_matches(gins[i], leaf->shape, leaf->dtype, node->name());
          leaf->grad = accumulate_leaf(leaf->grad, std::move(gins[i]));
        }
        if (auto it = hooked.find(leaf.get()); it != hooked.end()) {
          it->second.reached |= got;
          if (--it->second.edges == 0 && it->second.reached) run_post_accumulate_hooks(leaf);
        }
      }
    }
  }
}

}  // namespace coil
