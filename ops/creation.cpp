#include "ops/creation.h"

#include "core/cuda_context.h"
#include "core/philox.h"
#include "ops/common.h"
#include "ops/cpu/elementwise.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/elementwise.h"
#include "cuda/random.h"
#endif

namespace coil {

Tensor zeros(const Shape& shape, DType dtype, Device device) { return Tensor::zeros(shape, dtype, device); }

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  fill_(t, value);
  return t;
}

Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }

Tensor arange(int64_t start, int64_t end, DType dtype, Device device) {
  COIL_CHECK(end >= start, "arange: end ", end, " < start ", start);
  std::vector<int64_t> v(size_t(end - start));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + int64_t(i);
  return Tensor::from_ints(v, {int64_t(v.size())}, dtype, device);
}

void fill_(const Tensor& t, double value) {
  if (t.is_cpu()) {
    cpu::fill(t, value);
  } else {
#ifdef COIL_WITH_CUDA
    cuda::fill(detail::strided(t), value, t.device().index);
#else
    detail::no_cuda("fill_");
#endif
  }
}

namespace {

enum class Dist { uniform, normal, integer };

// Draws into a contiguous f32/f64/i32/i64 tensor (the native draw types),
// then converts; CPU and CUDA share the element-to-counter mapping.
void draw(const Tensor& out, Dist dist, double a, double b, Generator* gen) {
  Generator& g = gen ? *gen : default_generator();
  int64_t n = out.numel();
  if (n == 0) return;  // nothing to draw, no counters to reserve
  bool native = out.is_contiguous() &&
                (dist == Dist::integer ? (out.dtype() == DType::i64 || out.dtype() == DType::i32)
                                       : (out.dtype() == DType::f32 || out.dtype() == DType::f64));
  if (!native) {  // draw in a native type, then convert (bf16 params, strided views)
    Tensor tmp = Tensor::empty(out.shape(), dist == Dist::integer ? DType::i64 : DType::f32, out.device());
    draw(tmp, dist, a, b, &g);
    copy_(out, tmp);
    return;
  }
  uint64_t un = uint64_t(n), counters;
  if (dist == Dist::integer)
    counters = philox_counters_randint(un, int64_t(a), int64_t(b));
  else if (dist == Dist::normal)
    counters = philox_counters_normal(un);
  else
    counters = out.dtype() == DType::f64 ? philox_counters_uniform_double(un) : philox_counters_uniform(un);
  uint64_t offset = g.reserve(counters);
  if (out.is_cpu()) {
    switch (out.dtype()) {
      case DType::f32:
        dist == Dist::uniform ? fill_uniform_cpu(out.data<float>(), n, g.seed, offset, float(a), float(b))
                              : fill_normal_cpu(out.data<float>(), n, g.seed, offset, float(a), float(b));
        break;
      case DType::f64:
        dist == Dist::uniform ? fill_uniform_cpu(out.data<double>(), n, g.seed, offset, a, b)
                              : fill_normal_cpu(out.data<double>(), n, g.seed, offset, a, b);
        break;
      case DType::i64: fill_randint_cpu(out.data<int64_t>(), n, g.seed, offset, int64_t(a), int64_t(b)); break;
      case DType::i32: fill_randint_cpu(out.data<int32_t>(), n, g.seed, offset, int64_t(a), int64_t(b)); break;
      default: break;
    }
  } else {
#ifdef COIL_WITH_CUDA
    cuda::RandomKind kind = dist == Dist::uniform  ? cuda::RandomKind::uniform
                            : dist == Dist::normal ? cuda::RandomKind::normal
                                                   : cuda::RandomKind::integer;
    cuda::random_fill(kind, out.data_ptr(), out.dtype(), n, g.seed, offset, a, b, out.device().index);
#else
    detail::no_cuda("random");
#endif
  }
}

}  // namespace

Tensor rand(const Shape& shape, DType dtype, Device device, Generator* gen, double lo, double hi) {
  COIL_CHECK(is_floating(dtype), "rand: dtype must be floating, got ", dtype_name(dtype));
  Tensor t = Tensor::empty(shape, dtype, device);
  draw(t, Dist::uniform, lo, hi, gen);
  return t;
}

Tensor randn(const Shape& shape, DType dtype, Device device, Generator* gen, double mean, double std) {
  COIL_CHECK(is_floating(dtype), "randn: dtype must be floating, got ", dtype_name(dtype));
  Tensor t = Tensor::empty(shape, dtype, device);
  draw(t, Dist::normal, mean, std, gen);
  return t;
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, DType dtype, Device device, Generator* gen) {
  COIL_CHECK(high > low, "randint: empty range [", low, ", ", high, ")");
  COIL_CHECK(dtype == DType::i32 || dtype == DType::i64, "randint: dtype must be i32 or i64, got ",
             dtype_name(dtype));
  Tensor t = Tensor::empty(shape, dtype, device);
  draw(t, Dist::integer, double(low), double(high), gen);
  return t;
}

void uniform_(const Tensor& t, double lo, double hi, Generator* gen) { draw(t, Dist::uniform, lo, hi, gen); }
void normal_(const Tensor& t, double mean, double std, Generator* gen) { draw(t, Dist::normal, mean, std, gen); }

}  // namespace coil
