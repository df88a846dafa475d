#include "core/tensor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "core/cuda_context.h"

namespace coil {

// ---------------------------------------------------------------- helpers

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t rank, const char* op) {
  int64_t r = std::max<int64_t>(rank, 1);
  COIL_CHECK(d >= -r && d < r, op, ": dim ", d, " out of range for a tensor of rank ", rank);
  return d < 0 ? d + r : d;
}

DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32" || s == "fp32" || s == "float") return DType::f32;
  if (s == "f64" || s == "float64" || s == "fp64" || s == "double") return DType::f64;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (s == "f16" || s == "float16" || s == "fp16" || s == "half") return DType::f16;
  if (s == "i32" || s == "int32") return DType::i32;
  if (s == "i64" || s == "int64") return DType::i64;
  if (s == "u8" || s == "uint8") return DType::u8;
  fail("unknown dtype '" + s + "' (expected one of f32, f64, bf16, f16, i32, i64, u8)");
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 &&
      std::all_of(s.begin() + 5, s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return Device::cuda(std::stoi(s.substr(5)));
  fail("unknown device '" + s + "' (expected cpu, cuda or cuda:N)");
}

// ---------------------------------------------------------------- storage

namespace {
std::atomic<bool> g_poison{false};
}
void set_poison_allocations(bool on) { g_poison = on; }
bool poison_allocations() { return g_poison; }

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  if (dev.is_cpu()) {
    // 64-byte alignment: whole cache lines, and AVX-512 friendly.
    size_t padded = (std::max<size_t>(n, 1) + 63) / 64 * 64;
    data = std::aligned_alloc(64, padded);
    COIL_CHECK(data, "out of host memory allocating ", n, " bytes");
    if (g_poison) std::memset(data, 0xFF, n);
  } else {
    data = cuda_ctx::alloc(n, dev.index);
    if (g_poison) cuda_ctx::memset_bytes(data, 0xFF, n, dev.index);
  }
}

Storage::~Storage() {
  if (!data) return;
  if (device.is_cpu()) {
    std::free(data);
  } else {
    try {
      cuda_ctx::free(data, nbytes, device.index);
    } catch (...) {
      // A destructor must not throw; a failing free at exit is not actionable.
    }
  }
}

// ---------------------------------------------------------------- factories

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) COIL_CHECK(d >= 0, "empty: negative size in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * element_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device.is_cpu())
    std::memset(t.data_ptr(), 0, t.nbytes());
  else
    cuda_ctx::memset_zero(t.data_ptr(), t.nbytes(), device.index);
  return t;
}

namespace {
// Writes host doubles into a host buffer of `dtype`.
void encode(const double* in, void* out, int64_t n, DType dtype) {
  dispatch_all(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out);
    for (int64_t i = 0; i < n; ++i) o[i] = store_as<T, double>(in[i]);
  });
}
}  // namespace

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  COIL_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor host = empty(shape, dtype, Device::cpu());
  encode(values.data(), host.data_ptr(), int64_t(values.size()), dtype);
  if (device.is_cpu()) return host;
  Tensor t = empty(shape, dtype, device);
  cuda_ctx::copy_h2d(t.data_ptr(), host.data_ptr(), t.nbytes(), device.index);
  return t;
}

Tensor Tensor::from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype, Device device) {
  COIL_CHECK(int64_t(values.size()) == shape_numel(shape), "from_ints: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor host = empty(shape, dtype, Device::cpu());
  dispatch_all(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = host.data<T>();
    for (size_t i = 0; i < values.size(); ++i) {
      if constexpr (std::is_integral_v<T>)
        o[i] = T(values[i]);  // exact, also beyond 2^53
      else
        o[i] = store_as<T, double>(double(values[i]));
    }
  });
  if (device.is_cpu()) return host;
  Tensor t = empty(shape, dtype, device);
  cuda_ctx::copy_h2d(t.data_ptr(), host.data_ptr(), t.nbytes(), device.index);
  return t;
}

Tensor Tensor::scalar(double v, DType dtype, Device device) { return from_vector({v}, {}, dtype, device); }

// ---------------------------------------------------------------- metadata

static TensorImpl& need(const std::shared_ptr<TensorImpl>& p) {
  COIL_CHECK(p, "use of an undefined tensor");
  return *p;
}

const Shape& Tensor::shape() const { return need(impl_).shape; }
const Shape& Tensor::strides() const { return need(impl_).strides; }
int64_t Tensor::offset() const { return need(impl_).offset; }
int64_t Tensor::size(int64_t d) const { return shape()[size_t(wrap_dim(d, dim(), "size"))]; }
int64_t Tensor::stride(int64_t d) const { return strides()[size_t(wrap_dim(d, dim(), "stride"))]; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
DType Tensor::dtype() const { return need(impl_).dtype; }
Device Tensor::device() const { return need(impl_).storage->device; }
const std::shared_ptr<Storage>& Tensor::storage() const { return need(impl_).storage; }

bool Tensor::is_contiguous() const {
  const Shape& s = shape();
  const Shape& st = strides();
  for (int64_t d : s)
    if (d == 0) return true;  // no elements: any strides describe the same (empty) layout
  int64_t expect = 1;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] == 1) continue;
    if (st[i] != expect) return false;
    expect *= s[i];
  }
  return true;
}

std::string Tensor::desc() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " " + device().str();
}

void* Tensor::data_ptr() const {
  const TensorImpl& t = need(impl_);
  return static_cast<char*>(t.storage->data) + t.offset * int64_t(element_size(t.dtype));
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  const TensorImpl& t = need(impl_);
  COIL_CHECK(shape.size() == strides.size(), "as_strided: shape ", shape_str(shape), " and strides ",
             shape_str(strides), " differ in rank");
  // Bounds: the furthest element must lie inside the storage.
  int64_t hi = offset, lo = offset;
  bool empty = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) empty = true;
    int64_t ext = (shape[i] - 1) * strides[i];
    (ext >= 0 ? hi : lo) += ext;
  }
  int64_t cap = int64_t(t.storage->nbytes / element_size(t.dtype));
  COIL_CHECK(empty || (lo >= 0 && hi < cap), "as_strided: view ", shape_str(shape), " strides ", shape_str(strides),
             " offset ", offset, " exceeds storage of ", cap, " elements");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = t.dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::detach() const {
  const TensorImpl& t = need(impl_);
  return as_strided(t.shape, t.strides, t.offset);
}

// ---------------------------------------------------------------- autograd data

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool r) {
  TensorImpl& t = need(impl_);
  COIL_CHECK(!t.grad_fn, "set_requires_grad: only leaf tensors can be marked (this one came from ",
             t.grad_fn->name(), "); use detach() first");
  COIL_CHECK(!r || is_floating(t.dtype), "set_requires_grad: only floating tensors can require grad, got ",
             dtype_name(t.dtype));
  t.requires_grad = r;
  return *this;
}

bool Tensor::is_leaf() const { return !need(impl_).grad_fn; }
const Tensor& Tensor::grad() const { return need(impl_).grad; }
void Tensor::set_grad(const Tensor& g) const { need(impl_).grad = g; }
const std::shared_ptr<GradFn>& Tensor::grad_fn() const { return need(impl_).grad_fn; }
uint32_t Tensor::output_nr() const { return need(impl_).output_nr; }
void Tensor::set_history(std::shared_ptr<GradFn> fn, uint32_t nr) const {
  TensorImpl& t = need(impl_);
  t.grad_fn = std::move(fn);
  t.output_nr = nr;
  t.requires_grad = true;
}

// ---------------------------------------------------------------- host access

std::vector<double> Tensor::to_vector() const {
  const TensorImpl& t = need(impl_);
  const size_t es = element_size(t.dtype);
  int64_t n = numel();
  std::vector<double> out(static_cast<size_t>(n));
  if (n == 0) return out;
  // Find the element span the view touches, bring it to the host if needed.
  int64_t lo = t.offset, hi = t.offset;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    int64_t ext = (t.shape[i] - 1) * t.strides[i];
    (ext >= 0 ? hi : lo) += ext;
  }
  std::vector<char> host;
  const char* base;
  if (device().is_cpu()) {
    base = static_cast<const char*>(t.storage->data);
  } else {
    host.resize(size_t(hi - lo + 1) * es);
    cuda_ctx::copy_d2h(host.data(), static_cast<const char*>(t.storage->data) + lo * int64_t(es), host.size(),
                       device().index);
    base = host.data() - lo * int64_t(es);
  }
  dispatch_all(t.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = reinterpret_cast<const T*>(base);
    std::vector<int64_t> idx(t.shape.size(), 0);
    for (int64_t k = 0; k < n; ++k) {
      int64_t off = t.offset;
      for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * t.strides[d];
      out[size_t(k)] = load_as<double, T>(p[off]);
      for (size_t d = idx.size(); d-- > 0;) {
        if (++idx[d] < t.shape[d]) break;
        idx[d] = 0;
      }
    }
  });
  return out;
}

double Tensor::item() const {
  COIL_CHECK(numel() == 1, "item: tensor ", desc(), " has ", numel(), " elements, expected 1");
  return to_vector()[0];
}

std::string Tensor::str(int64_t max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  std::vector<double> v = to_vector();
  std::ostringstream os;
  os << "Tensor(" << desc();
  if (requires_grad()) os << ", requires_grad";
  if (grad_fn()) os << ", grad_fn=" << grad_fn()->name();
  os << ")\n";
  os << std::setprecision(6);
  const Shape& s = shape();
  if (s.empty()) {
    os << v[0];
    return os.str();
  }
  // Recursive bracketed print with the middle of long dims elided.
  std::vector<int64_t> st = contiguous_strides(s);
  auto rec = [&](auto&& self, size_t d, int64_t base) -> void {
    os << "[";
    int64_t n = s[d];
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_dim && i == max_per_dim / 2) {
        os << "..., ";
        i = n - max_per_dim / 2 - 1;
        continue;
      }
      if (d + 1 == s.size())
        os << v[size_t(base + i * st[d])];
      else
        self(self, d + 1, base + i * st[d]);
      if (i + 1 < n) os << (d + 1 == s.size() ? ", " : ",\n");
    }
    os << "]";
  };
  rec(rec, 0, 0);
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace coil
