#include "ops/views.h"

#include <numeric>

#include "core/cuda_context.h"
#include "ops/common.h"
#include "ops/cpu/elementwise.h"
#include "ops/creation.h"
#include "ops/reduce.h"
#ifdef COIL_WITH_CUDA
#include "cuda/elementwise.h"
#endif

namespace coil {

using detail::record_op;

Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  COIL_CHECK(t.dim() <= int64_t(shape.size()), "cannot broadcast ", t.desc(), " to ", shape_str(shape));
  size_t lead = shape.size() - size_t(t.dim());
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < size_t(t.dim()); ++i) {
    int64_t s = t.shape()[i];
    COIL_CHECK(s == shape[lead + i] || s == 1, "cannot broadcast ", t.desc(), " to ", shape_str(shape));
    st[lead + i] = s == 1 ? 0 : t.strides()[i];
  }
  return t.as_strided(shape, st, t.offset());
}

// ------------------------------------------------------------------ copies

namespace {
// Raw strided copy with conversion on one device.
void copy_raw(const Tensor& src, const Tensor& dst) {
  if (dst.numel() == 0) return;
  if (src.is_cpu()) {
    cpu::copy(src, dst);
  } else {
#ifdef COIL_WITH_CUDA
    cuda::copy(detail::strided(src), detail::strided(dst), src.device().index);
#else
    detail::no_cuda("copy");
#endif
  }
}

Tensor copy_to_new(const Tensor& x, DType dtype) {
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  copy_raw(x, out);
  return out;
}

Tensor identity_backward_op(const char* name, const Tensor& x, Tensor out) {
  record_op(name, {x}, {out}, [](const std::vector<Tensor>& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g[0]};
  });
  return out;
}
}  // namespace

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return identity_backward_op("contiguous", x, copy_to_new(x, x.dtype()));
}

Tensor clone(const Tensor& x) { return identity_backward_op("clone", x, copy_to_new(x, x.dtype())); }

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = copy_to_new(x, dtype);
  DType from = x.dtype();
  if (is_floating(dtype) && is_floating(from))
    record_op("to_dtype", {x}, {out}, [from](const std::vector<Tensor>& g, const std::vector<bool>&) {
      return std::vector<Tensor>{to_dtype(g[0], from)};
    });
  return out;
}

Tensor to_device(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor src = contiguous(x).detach();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
  if (out.nbytes() > 0) {
    if (src.is_cpu())
      cuda_ctx::copy_h2d(out.data_ptr(), src.data_ptr(), out.nbytes(), device.index);
    else if (device.is_cpu())
      cuda_ctx::copy_d2h(out.data_ptr(), src.data_ptr(), out.nbytes(), src.device().index);
    else  // between two GPUs: through the host (peer copies are not needed yet)
      return to_device(to_device(x, Device::cpu()), device);
  }
  Device from = x.device();
  record_op("to_device", {x}, {out}, [from](const std::vector<Tensor>& g, const std::vector<bool>&) {
    return std::vector<Tensor>{to_device(g[0], from)};
  });
  return out;
}

void copy_(const Tensor& dst, const Tensor& src) {
  COIL_CHECK(!(grad_enabled() && dst.requires_grad()), "copy_: in-place write into ", dst.desc(),
             " which requires grad; wrap optimizer updates in NoGradGuard");
  Tensor s = src;
  if (s.device() != dst.device()) s = to_device(s.detach(), dst.device());
  copy_raw(broadcast_view(s, dst.shape()), dst);
}

// ------------------------------------------------------------------ views

Tensor view(const Tensor& x, Shape shape) {
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      COIL_CHECK(infer < 0, "view: only one -1 allowed in ", shape_str(shape));
      infer = int64_t(i);
    } else {
      COIL_CHECK(shape[i] >= 0, "view: invalid size in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    COIL_CHECK(known > 0 && x.numel() % known == 0, "view: cannot view ", x.desc(), " as ", shape_str(shape));
    shape[size_t(infer)] = x.numel() / known;
  }
  COIL_CHECK(shape_numel(shape) == x.numel(), "view: shape ", shape_str(shape), " does not match ", x.numel(),
             " elements of ", x.desc());
  COIL_CHECK(x.is_contiguous(), "view: ", x.desc(), " is not contiguous; use reshape()");
  Tensor out = x.as_strided(shape, contiguous_strides(shape), x.offset());
  Shape in_shape = x.shape();
  record_op("view", {x}, {out}, [in_shape](const std::vector<Tensor>& g, const std::vector<bool>&) {
    return std::vector<Tensor>{reshape(g[0], in_shape)};
  });
  return out;
}

Tensor reshape(const Tensor& x, Shape shape) { return view(contiguous(x), std::move(shape)); }

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(size_t(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[size_t(wrap_dim(d0, x.dim(), "transpose"))], dims[size_t(wrap_dim(d1, x.dim(), "transpose"))]);
  return permute(x, dims);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  COIL_CHECK(int64_t(dims.size()) == x.dim(), "permute: ", dims.size(), " dims given for ", x.desc());
  Shape shape(dims.size()), strides(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], x.dim(), "permute");
    COIL_CHECK(inverse[size_t(d)] < 0, "permute: dim ", d, " repeated");
    inverse[size_t(d)] = int64_t(i);
    shape[i] = x.shape()[size_t(d)];
    strides[i] = x.strides()[size_t(d)];
  }
  Tensor out = x.as_strided(shape, strides, x.offset());
  record_op("permute", {x}, {out}, [inverse](const std::vector<Tensor>& g, const std::vector<bool>&) {
    return std::vector<Tensor>{permute(g[0], inverse)};
  });
  return out;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  int64_t d = wrap_dim(dim, x.dim(), "narrow");
  int64_t n = x.shape()[size_t(d)];
  COIL_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: [", start, ", ", start + length,
             ") out of range for dim ", d, " of ", x.desc());
  Shape shape = x.shape();
  shape[size_t(d)] = length;
  Tensor out = x.as_strided(shape, x.strides(), x.offset() + start * x.strides()[size_t(d)]);
  Shape in_shape = x.shape();
  record_op("narrow", {x}, {out}, [in_shape, d, start, length](const std::vector<Tensor>& g, const std::vector<bool>&) {
    Tensor gx = zeros(in_shape, g[0].dtype(), g[0].device());
    copy_(narrow(gx, d, start, length), g[0]);
    return std::vector<Tensor>{gx};
  });
  return out;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor out = broadcast_view(x, shape);
  if (out.same(x)) return x;
  Shape in_shape = x.shape();
  record_op("expand", {x}, {out}, [in_shape](const std::vector<Tensor>& g, const std::vector<bool>&) {
    return std::vector<Tensor>{sum_to(g[0], in_shape)};
  });
  return out;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Shape shape = x.shape();
  shape.insert(shape.begin() + d, 1);
  return reshape(x, shape);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim(), "squeeze");
  COIL_CHECK(x.shape()[size_t(d)] == 1, "squeeze: dim ", d, " of ", x.desc(), " is not 1");
  Shape shape = x.shape();
  shape.erase(shape.begin() + d);
  return reshape(x, shape);
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  int64_t s = wrap_dim(start_dim, x.dim(), "flatten"), e = wrap_dim(end_dim, x.dim(), "flatten");
  COIL_CHECK(s <= e, "flatten: start_dim ", s, " after end_dim ", e);
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  int64_t m = 1;
  for (int64_t i = s; i <= e; ++i) m *= x.shape()[size_t(i)];
  shape.push_back(m);
  shape.insert(shape.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, shape);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    COIL_CHECK(s >= 0, "split: negative size ", s);
    total += s;
  }
  COIL_CHECK(total == x.shape()[size_t(d)], "split: sizes sum to ", total, " but dim ", d, " of ", x.desc(), " is ",
             x.shape()[size_t(d)]);
  // One node for all the pieces: its backward writes every piece's gradient
  // into one tensor (one concat), instead of a zero-filled full-size tensor
  // per piece that the engine then adds up.
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t s : sizes) {
    Shape shape = x.shape();
    shape[size_t(d)] = s;
    out.push_back(x.as_strided(shape, x.strides(), x.offset() + start * x.strides()[size_t(d)]));
    start += s;
  }
  // When x is dense (e.g. the mixer's (B, 2Di, L) view of in_proj's (2Di, B, L)
  // output), the gradient is assembled in x's own layout, so the views that
  // made x pass it back without a copy.
  const bool dense = detail::is_dense(x);
  record_op("split", {x}, out,
            [d, dense, shape = x.shape(), strides = x.strides()](const std::vector<Tensor>& g,
                                                                   const std::vector<bool>&) {
              if (!dense) return std::vector<Tensor>{concat(g, d)};
              Tensor gx = Tensor::empty({shape_numel(shape)}, g[0].dtype(), g[0].device())
                              .as_strided(shape, strides, 0);
              int64_t at = 0;
              for (const Tensor& gi : g) {
                copy_raw(gi, gx.as_strided(gi.shape(), strides, at * strides[size_t(d)]));
                at += gi.size(d);
              }
              return std::vector<Tensor>{gx};
            });
  return out;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim(), "chunk");
  COIL_CHECK(chunks > 0, "chunk: chunks must be positive");
  int64_t n = x.shape()[size_t(d)], each = (n + chunks - 1) / chunks;
  std::vector<int64_t> sizes;
  for (int64_t s = 0; s < n; s += each) sizes.push_back(std::min(each, n - s));
  return split(x, sizes, d);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  COIL_CHECK(!xs.empty(), "concat: no tensors");
  const Tensor& first = xs[0];
  int64_t d = wrap_dim(dim, first.dim(), "concat");
  Shape shape = first.shape();
  shape[size_t(d)] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    COIL_CHECK(t.dim() == first.dim() && t.dtype() == first.dtype() && t.device() == first.device(),
               "concat: tensor ", i, " (", t.desc(), ") does not match tensor 0 (", first.desc(), ")");
    for (int64_t k = 0; k < t.dim(); ++k)
      COIL_CHECK(k == d || t.shape()[size_t(k)] == first.shape()[size_t(k)], "concat: tensor ", i, " ",
                 t.desc(), " differs from tensor 0 ", first.desc(), " outside dim ", d);
    shape[size_t(d)] += t.shape()[size_t(d)];
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  std::vector<int64_t> sizes;
  int64_t start = 0;
  for (const Tensor& t : xs) {
    int64_t s = t.shape()[size_t(d)];
    copy_raw(t, out.as_strided(t.shape(), out.strides(), out.offset() + start * out.strides()[size_t(d)]));
    sizes.push_back(s);
    start += s;
  }
  record_op("concat", xs, {out}, [sizes, d](const std::vector<Tensor>& g, const std::vector<bool>& need) {
    std::vector<Tensor> gs;
    int64_t st = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      gs.push_back(need[i] ? contiguous(narrow(g[0], d, st, sizes[i])) : Tensor());
      st += sizes[i];
    }
    return gs;
  });
  return out;
}

// ------------------------------------------------------------------ Tensor methods

Tensor Tensor::view(const Shape& s) const { return coil::view(*this, s); }
Tensor Tensor::reshape(const Shape& s) const { return coil::reshape(*this, s); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return coil::transpose(*this, a, b); }
Tensor Tensor::permute(const std::vector<int64_t>& d) const { return coil::permute(*this, d); }
Tensor Tensor::narrow(int64_t d, int64_t s, int64_t l) const { return coil::narrow(*this, d, s, l); }
Tensor Tensor::expand(const Shape& s) const { return coil::expand(*this, s); }
Tensor Tensor::unsqueeze(int64_t d) const { return coil::unsqueeze(*this, d); }
Tensor Tensor::squeeze(int64_t d) const { return coil::squeeze(*this, d); }
Tensor Tensor::flatten(int64_t s, int64_t e) const { return coil::flatten(*this, s, e); }
Tensor Tensor::contiguous() const { return coil::contiguous(*this); }
Tensor Tensor::to(Device d) const { return coil::to_device(*this, d); }
Tensor Tensor::to(DType t) const { return coil::to_dtype(*this, t); }
Tensor Tensor::clone() const { return coil::clone(*this); }

}  // namespace coil
