#include "ops/cpu/mamba_step.h"

#include <cmath>

namespace coil::cpu {

template <class T>
void conv_step(int64_t batch, int64_t dim, int64_t width, const T* x, T* state, const T* w, const T* bias, bool silu,
               T* out) {
  const int64_t km1 = width - 1;
  for (int64_t i = 0; i < batch * dim; ++i) {
    const int64_t c = i % dim;
    T* s = state + i * km1;
    const T* wc = w + c * width;
    double acc = bias ? double(bias[c]) : 0.0;
    for (int64_t k = 0; k < km1; ++k) acc += double(wc[k]) * double(s[k]);
    acc += double(wc[km1]) * double(x[i]);
    for (int64_t k = 0; k + 1 < km1; ++k) s[k] = s[k + 1];
    if (km1 > 0) s[km1 - 1] = x[i];
    out[i] = T(silu ? acc / (1.0 + std::exp(-acc)) : acc);
  }
}

template <class T>
void ssm_step(int64_t batch, int64_t dim, int64_t dstate, int64_t dt_rank, const T* x, const T* dt_in, const T* dt_w,
              const T* A, const T* B, const T* C, const T* D, const T* z, const T* dt_bias, bool softplus, T* state,
              T* out) {
  for (int64_t i = 0; i < batch * dim; ++i) {
    const int64_t b = i / dim, d = i % dim;
    const double xv = double(x[i]);
    double dt = 0;
    if (dt_w) {
      for (int64_t r = 0; r < dt_rank; ++r) dt += double(dt_w[d * dt_rank + r]) * double(dt_in[b * dt_rank + r]);
    } else {
      dt = double(dt_in[i]);
    }
    if (dt_bias) dt += double(dt_bias[d]);
    if (softplus) dt = dt <= 20.0 ? std::log1p(std::exp(dt)) : dt;
    T* h = state + i * dstate;
    double y = 0;
    for (int64_t k = 0; k < dstate; ++k) {
      const double hv = std::exp(dt * double(A[d * dstate + k])) * double(h[k]) + dt * double(B[b * dstate + k]) * xv;
      h[k] = T(hv);
      y += double(C[b * dstate + k]) * double(h[k]);
    }
    if (D) y += double(D[d]) * xv;
    if (z) {
      const double zv = double(z[i]);
      y *= zv / (1.0 + std::exp(-zv));
    }
    out[i] = T(y);
  }
}

template void conv_step<float>(int64_t, int64_t, int64_t, const float*, float*, const float*, const float*, bool,
                               float*);
template void conv_step<double>(int64_t, int64_t, int64_t, const double*, double*, const double*, const double*, bool,
                                double*);
template void ssm_step<float>(int64_t, int64_t, int64_t, int64_t, const float*, const float*, const float*,
                              const float*, const float*, const float*, const float*, const float*, const float*,
                              bool, float*, float*);
template void ssm_step<double>(int64_t, int64_t, int64_t, int64_t, const double*, const double*, const double*,
                               const double*, const double*, const double*, const double*, const double*,
                               const double*, bool, double*, double*);

}  // namespace coil::cpu
