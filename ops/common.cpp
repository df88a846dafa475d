#include "ops/common.h"

#include <algorithm>

#include "autograd/engine.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/views.h"

namespace coil::detail {

void record_op(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn,
               bool materialize_grads) {
  static const bool installed = [] {
    GradOps g;
    g.add = [](const Tensor& a, const Tensor& b) { return coil::add(a, b); };
    g.zeros = [](const Shape& s, DType d, Device dev) { return coil::zeros(s, d, dev); };
    g.clone = [](const Tensor& t) { return t.clone(); };
    install_grad_ops(g);
    return true;
  }();
  (void)installed;
  record(op, inputs, outputs, std::move(fn), materialize_grads);
}

bool needs_grad_any(const std::vector<Tensor>& inputs) { return needs_grad(inputs); }

void check_defined(const char* op, const Tensor& t, const char* name) {
  COIL_CHECK(t.defined(), op, ": ", name, " is undefined");
}

void check_same_device(const char* op, std::initializer_list<Tensor> ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!first) first = &t;
    COIL_CHECK(t.device() == first->device(), op, ": tensors on different devices: ", first->desc(), " and ",
               t.desc());
  }
}

void check_same_dtype(const char* op, std::initializer_list<Tensor> ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!first) first = &t;
    COIL_CHECK(t.dtype() == first->dtype(), op, ": dtype mismatch: ", first->desc(), " and ", t.desc(),
               " (cast explicitly with .to(dtype))");
  }
}

void check_rank(const char* op, const Tensor& t, const char* name, int64_t rank) {
  COIL_CHECK(t.dim() == rank, op, ": ", name, " must have rank ", rank, ", got ", t.desc());
}

void check_shape(const char* op, const Tensor& t, const char* name, const Shape& expect) {
  COIL_CHECK(t.shape() == expect, op, ": ", name, " must have shape ", shape_str(expect), ", got ", t.desc());
}

#ifdef COIL_WITH_CUDA
cuda::Strided strided(const Tensor& t) {
  COIL_CHECK(t.dim() <= cuda::kMaxDims, "CUDA kernels take tensors of rank <= ", cuda::kMaxDims, ", got ", t.desc());
  cuda::Strided s;
  s.data = t.data_ptr();
  s.dtype = t.dtype();
  s.rank = int(t.dim());
  for (int i = 0; i < s.rank; ++i) {
    s.shape[i] = t.shape()[size_t(i)];
    s.strides[i] = t.strides()[size_t(i)];
  }
  s.numel = t.numel();
  return s;
}
#endif

void no_cuda(const char* op) {
  fail(cat(op, ": no CUDA kernel in this build (built without CUDA, or the kernel is not implemented yet)"));
}

}  // namespace coil::detail

namespace coil::detail {

DType cpu_compute_dtype(const Tensor& t) { return t.dtype() == DType::f64 ? DType::f64 : DType::f32; }

Tensor as_compute(const Tensor& t, DType dt) {
  if (!t.defined()) return t;
  NoGradGuard ng;
  return contiguous(to_dtype(t.detach(), dt)).detach();
}

bool is_dense(const Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dims longer than 1
  for (int64_t i = 0; i < t.dim(); ++i)
    if (t.size(i) > 1) dims.emplace_back(t.stride(i), t.size(i));
  std::sort(dims.begin(), dims.end(), [](auto a, auto b) { return a.first > b.first; });
  int64_t expect = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    if (dims[i].first != expect) return false;
    expect *= dims[i].second;
  }
  return true;
}

Tensor empty_like_dense(const Tensor& t) {
  Tensor out = Tensor::empty({t.numel()}, t.dtype(), t.device());
  if (!is_dense(t)) return out.as_strided(t.shape(), contiguous_strides(t.shape()), 0);
  return out.as_strided(t.shape(), t.strides(), 0);
}

}  // namespace coil::detail
