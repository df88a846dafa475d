// Cross entropy on the CPU: one row per item, rows in parallel. Targets are
// validated serially up front so a bad one throws on the calling thread and
// leaves the outputs untouched.
#include "core/error.h"
#include "ops/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/thread_pool.h"

namespace coil::cpu {
namespace {

template <class I>
void check_targets(int64_t n, int64_t v, const I* targets, int64_t ignore_index, const char* op) {
  if (n < 0 || v < 0) throw coil::Error(std::string(op) + ": negative size");
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = targets[i];
    if (t == ignore_index || (t >= 0 && t < v)) continue;
    throw coil::Error(std::string(op) + ": row " + std::to_string(i) + " has target " +
                                std::to_string(t) + ", outside [0, v) for v = " +
                                std::to_string(v) + " (and not ignore_index " +
                                std::to_string(ignore_index) + ")");
  }
}

int64_t row_grain(int64_t v) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, v)); }

// log(sum_j exp(row[j])), shifted by the row max so exp never overflows.
template <class T>
double row_lse(const T* row, int64_t v) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < v; ++j) mx = std::max(mx, double(row[j]));
  double sum = 0;
  for (int64_t j = 0; j < v; ++j) sum += std::exp(double(row[j]) - mx);
  return mx + std::log(sum);
}

}  // namespace

template <class T, class I>
void cross_entropy_fwd(int64_t n, int64_t v, const T* logits, const I* targets,
                       int64_t ignore_index, T* loss, T* lse) {
  check_targets(n, v, targets, ignore_index, "cross_entropy_fwd");
  parallel_for(0, n, row_grain(v), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* li = logits + i * v;
      const double l = row_lse(li, v);
      lse[i] = T(l);
      const int64_t t = targets[i];
      loss[i] = t == ignore_index ? T(0) : T(l - double(li[t]));
    }
  });
}

template <class T, class I>
void cross_entropy_bwd(int64_t n, int64_t v, const T* logits, const I* targets,
                       int64_t ignore_index, const T* lse, const T* dloss, T* dlogits) {
  check_targets(n, v, targets, ignore_index, "cross_entropy_bwd");
  parallel_for(0, n, row_grain(v), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* li = logits + i * v;
      T* gi = dlogits + i * v;
      const int64_t t = targets[i];
      if (t == ignore_index) {
        std::fill(gi, gi + v, T(0));
        continue;
      }
      const double l = lse[i], g = dloss[i];
      for (int64_t j = 0; j < v; ++j) {
        const double p = std::exp(double(li[j]) - l);
        gi[j] = T(g * (j == t ? p - 1.0 : p));
      }
    }
  });
}

template <class T, class I>
void cross_entropy_fwd_grad(int64_t n, int64_t v, T* logits, const I* targets, int64_t ignore_index, T* loss,
                            T* weight) {
  check_targets(n, v, targets, ignore_index, "cross_entropy_fwd_grad");
  parallel_for(0, n, row_grain(v), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      T* li = logits + i * v;
      const int64_t t = targets[i];
      if (t == ignore_index) {
        loss[i] = T(0);
        weight[i] = T(0);
        std::fill(li, li + v, T(0));
        continue;
      }
      const double l = row_lse(li, v);
      loss[i] = T(l - double(li[t]));  // read before the row is overwritten
      weight[i] = T(1);
      for (int64_t j = 0; j < v; ++j) {
        const double p = std::exp(double(li[j]) - l);
        li[j] = T(j == t ? p - 1.0 : p);
      }
    }
  });
}

#define COIL_INSTANTIATE(T, I)                                                                \
  template void cross_entropy_fwd<T, I>(int64_t, int64_t, const T*, const I*, int64_t, T*, T*); \
  template void cross_entropy_bwd<T, I>(int64_t, int64_t, const T*, const I*, int64_t,          \
                                        const T*, const T*, T*);                             \
  template void cross_entropy_fwd_grad<T, I>(int64_t, int64_t, T*, const I*, int64_t, T*, T*);
COIL_INSTANTIATE(float, int32_t)
COIL_INSTANTIATE(float, int64_t)
COIL_INSTANTIATE(double, int32_t)
COIL_INSTANTIATE(double, int64_t)
#undef COIL_INSTANTIATE

}  // namespace coil::cpu
