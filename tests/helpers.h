// Shared test helpers: float64 leaves for gradchecks, closeness checks, and
// the GPU skip.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "core/cuda_context.h"
#include "ops/ops.h"

namespace coil::test {

// A float64 CPU leaf requiring grad, uniform in [lo, hi).
inline Tensor leaf(const Shape& s, double lo = -1.0, double hi = 1.0, uint64_t seed = 7) {
  static uint64_t bump = 0;
  Generator g{seed, (bump++) << 20};
  Tensor t = rand(s, DType::f64, Device::cpu(), &g, lo, hi);
  t.set_requires_grad(true);
  return t;
}

// Allocation poisoning for a parity test's scope: new buffers start as NaN /
// garbage, so an output a kernel forgets to write fails the comparison.
struct Poison {
  Poison() { set_poison_allocations(true); }
  ~Poison() { set_poison_allocations(false); }
};

// A new seed on every call (random device + a counter): parity tests draw
// fresh inputs each run; a failure's CAPTUREd values say what was drawn.
inline uint64_t fresh_seed() {
  static uint64_t n = 0;
  return uint64_t(std::random_device{}()) << 20 | n++;
}
inline Generator fresh() { return Generator{fresh_seed(), 0}; }

// ||a - b|| / ||b|| over all elements (any device and dtype); NaN anywhere fails.
inline double rel_err(const Tensor& a, const Tensor& b) {
  auto x = a.to(Device::cpu()).to_vector(), y = b.to(Device::cpu()).to_vector();
  REQUIRE(x.size() == y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) return INFINITY;
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double d = std::fabs(x[i] - y[i]);
    if (d != d) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

inline void check_gradcheck(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f,
                            const std::vector<Tensor>& inputs, GradcheckOptions opt = {}) {
  GradcheckResult r = gradcheck(f, inputs, opt);
  INFO(r.message);
  CHECK(r.ok);
}

// Inside a GPU test case: returns true (and reports the skip) without a GPU.
inline bool skip_without_gpu() {
  if (cuda_available()) return false;
  MESSAGE("skipped: no CUDA device");
  return true;
}

}  // namespace coil::test
