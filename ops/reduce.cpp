#include "ops/reduce.h"

#include <algorithm>

#include "ops/common.h"
#include "ops/cpu/reduce.h"
#include "ops/elementwise.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/reduce.h"
#endif

namespace coil {

using detail::record_op;
using detail::save;

namespace {

struct Plan {
  std::vector<bool> reduced;
  Shape kept_shape;  // keepdim shape
  Shape out_shape;   // final shape
  int64_t count = 1; // elements per output
};

Plan plan(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, const char* op) {
  Plan p;
  p.reduced.assign(size_t(x.dim()), dims.empty());
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, x.dim(), op);
    COIL_CHECK(!p.reduced[size_t(w)], op, ": dim ", w, " listed twice");
    p.reduced[size_t(w)] = true;
  }
  for (int64_t i = 0; i < x.dim(); ++i) {
    int64_t s = x.shape()[size_t(i)];
    if (p.reduced[size_t(i)]) {
      p.count *= s;
      p.kept_shape.push_back(1);
      if (keepdim) p.out_shape.push_back(1);
    } else {
      p.kept_shape.push_back(s);
      p.out_shape.push_back(s);
    }
  }
  return p;
}

// The CUDA column path: at least this many kept elements (threads), at most
// this many reduced ones per thread.
constexpr int64_t kColsMinCols = 4096, kColsMaxRows = 4096;

// Moves reduced dims last, makes that contiguous, reduces rows (on CUDA a
// leading-dims reduction of a contiguous tensor reduces columns in place).
Tensor reduce_raw(cpu::ReduceOp rop, const Tensor& x, const Plan& p, const char* op) {
  detail::check_defined(op, x, "input");
  COIL_CHECK(is_floating(x.dtype()), op, ": expected a floating tensor, got ", x.desc());
  COIL_CHECK(rop == cpu::ReduceOp::sum || p.count > 0, op, ": reduction over an empty dim of ", x.desc());
#ifdef COIL_WITH_CUDA
  // Reduced dims a leading prefix of a contiguous CUDA tensor (a sum over
  // the batch, as in a broadcast weight's gradient): reduce the columns in
  // place instead of copying the tensor transposed and reducing many short
  // rows (a block each). Only with few rows and many columns, where a thread
  // per column has enough of both.
  if (x.is_cuda() && x.is_contiguous() && p.count > 0) {
    int64_t lead = 0;
    while (lead < x.dim() && p.reduced[size_t(lead)]) ++lead;
    bool prefix = true;
    for (int64_t i = lead; i < x.dim(); ++i) prefix = prefix && !p.reduced[size_t(i)];
    const int64_t cols = shape_numel(p.kept_shape);
    if (prefix && lead > 0 && cols >= kColsMinCols && p.count <= kColsMaxRows) {
      Tensor out = Tensor::empty(p.out_shape, x.dtype(), x.device());
      cuda::reduce_cols(rop == cpu::ReduceOp::sum ? cuda::ReduceKind::sum : cuda::ReduceKind::max, x.data_ptr(),
                        x.dtype(), p.count, cols, out.data_ptr(), x.device().index);
      return out;
    }
  }
#endif
  std::vector<int64_t> order;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (!p.reduced[size_t(i)]) order.push_back(i);
  for (int64_t i = 0; i < x.dim(); ++i)
    if (p.reduced[size_t(i)]) order.push_back(i);
  Tensor xp;
  {
    NoGradGuard ng;
    xp = contiguous(permute(x.detach(), order));
  }
  int64_t rows = shape_numel(p.kept_shape);
  Tensor out = Tensor::empty(p.out_shape, x.dtype(), x.device());
  if (x.is_cpu()) {
    cpu::reduce_rows(rop, xp, rows, p.count, out);
  } else {
#ifdef COIL_WITH_CUDA
    cuda::reduce_rows(rop == cpu::ReduceOp::sum ? cuda::ReduceKind::sum : cuda::ReduceKind::max, xp.data_ptr(),
                      xp.dtype(), rows, p.count, out.data_ptr(), x.device().index);
#else
    detail::no_cuda(op);
#endif
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Plan p = plan(x, dims, keepdim, "sum");
  Tensor out = reduce_raw(cpu::ReduceOp::sum, x, p, "sum");
  Shape in_shape = x.shape(), kept = p.kept_shape;
  record_op("sum", {x}, {out}, [in_shape, kept](const std::vector<Tensor>& g, const std::vector<bool>&) {
    return std::vector<Tensor>{contiguous(expand(reshape(g[0], kept), in_shape))};
  });
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Plan p = plan(x, dims, keepdim, "mean");
  COIL_CHECK(p.count > 0, "mean: reduction over an empty dim of ", x.desc());
  return mul(sum(x, dims, keepdim), 1.0 / double(p.count));
}

Tensor amax(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Plan p = plan(x, dims, keepdim, "amax");
  Tensor out = reduce_raw(cpu::ReduceOp::max, x, p, "amax");
  Tensor xs = save(x), os = save(out);
  Shape kept = p.kept_shape;
  std::vector<int64_t> rdims;
  for (size_t i = 0; i < p.reduced.size(); ++i)
    if (p.reduced[i]) rdims.push_back(int64_t(i));
  record_op("amax", {x}, {out}, [xs, os, kept, rdims](const std::vector<Tensor>& g, const std::vector<bool>&) {
    Tensor mask = eq(xs, expand(reshape(os, kept), xs.shape()));
    Tensor count = sum(mask, rdims, true);
    return std::vector<Tensor>{mul(mask, div(reshape(g[0], kept), count))};
  });
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  int64_t lead = g.dim() - int64_t(shape.size());
  COIL_CHECK(lead >= 0, "sum_to: cannot reduce ", g.desc(), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < g.dim(); ++i) {
    if (i < lead) {
      dims.push_back(i);
    } else if (shape[size_t(i - lead)] == 1 && g.shape()[size_t(i)] != 1) {
      dims.push_back(i);
    } else {
      COIL_CHECK(shape[size_t(i - lead)] == g.shape()[size_t(i)], "sum_to: cannot reduce ", g.desc(), " to ",
                 shape_str(shape));
    }
  }
  if (dims.empty()) return reshape(g, shape);
  return reshape(sum(g, dims, true), shape);
}

}  // namespace coil
