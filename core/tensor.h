// Tensor: a strided view (shape, strides, offset, dtype) of shared storage on
// one device, plus the data autograd keeps on it (requires_grad, grad, the node
// that produced it). core/ only holds that data; what it means lives in
// autograd/, and every computation (including differentiable views) in ops/.
//
// Methods marked [ops] are declared here for convenience and defined in ops/,
// where they record their backward; core itself never calls them.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"

namespace coil {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

// A block of device memory; freed (stream-ordered on CUDA) with the last view.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

// Test aid: when on, every new allocation is filled with 0xFF bytes (NaN for
// floating types) so a kernel that leaves part of its output unwritten fails
// its parity test instead of passing on stale or zeroed memory.
void set_poison_allocations(bool on);
bool poison_allocations();

// What autograd hangs on a tensor it produced. Opaque to core.
struct GradFn {
  virtual ~GradFn() = default;
  virtual std::string name() const = 0;
};

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories (uninitialised / filled) ----
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  // Copies host values (converted to dtype) to a new tensor on device.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32,
                            Device device = Device::cpu());
  static Tensor from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype = DType::i64,
                          Device device = Device::cpu());
  static Tensor scalar(double v, DType dtype = DType::f32, Device device = Device::cpu());

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return int64_t(shape().size()); }
  int64_t size(int64_t d) const;    // negative d counts from the end
  int64_t stride(int64_t d) const;  // likewise
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_cuda() const { return device().is_cuda(); }
  bool is_cpu() const { return device().is_cpu(); }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * element_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;
  // "f32[2, 3] cuda:0"
  std::string desc() const;

  void* data_ptr() const;
  template <class T> T* data() const {
    COIL_CHECK(dtype_v<T> == dtype(), "data<", dtype_name(dtype_v<T>), ">() on a ", dtype_name(dtype()), " tensor");
    return static_cast<T*>(data_ptr());
  }

  // A view with the given geometry on the same storage (no autograd, no checks
  // beyond bounds). The building block of every view op.
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;
  // Same data, no history, requires_grad false.
  Tensor detach() const;

  // ---- autograd data ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool r);  // only on leaves
  bool is_leaf() const;
  const Tensor& grad() const;  // undefined until a backward reaches it
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<GradFn>& grad_fn() const;
  uint32_t output_nr() const;
  void set_history(std::shared_ptr<GradFn> fn, uint32_t output_nr) const;

  // ---- host access (copies a CUDA tensor to the host) ----
  std::vector<double> to_vector() const;  // any dtype, logical order
  double item() const;                    // one element
  std::string str(int64_t max_per_dim = 6) const;

  // ---- [ops] differentiable conveniences ----
  Tensor view(const Shape& shape) const;     // needs compatible strides
  Tensor reshape(const Shape& shape) const;  // view if possible, else copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor expand(const Shape& shape) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<GradFn> grad_fn;
  uint32_t output_nr = 0;
  // Leaves only: run by the backward engine once a backward pass has
  // accumulated its last gradient into `grad` (autograd/engine.h).
  std::vector<std::function<void(const Tensor&)>> post_accumulate_grad_hooks;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Normalises a possibly negative dim against rank; throws naming `op`.
int64_t wrap_dim(int64_t d, int64_t rank, const char* op);

}  // namespace coil
