// Runs the decode step's conv + x_proj cluster kernel
// (cuda/conv_xproj_kernel.cuh) on the CPU through the fiber emulator of
// tests/cuda/emu.h, a cluster of blocks at a time (cluster barriers and
// distributed shared memory emulated), and checks it against the conv step
// and a float64 x_proj of its rounded output. Shared memory starts as NaN,
// outputs are poisoned; each case runs twice with different warp/lane
// orders and must give the same bits. Sizes: channel slices that leave
// blocks of the cluster empty (dim 40), mamba-130m's (dim 1536, x_proj 80),
// batches that leave rows of the last cluster empty, conv widths 2-4, f32
// and bf16, with and without conv bias, x as the x half of (B, 2 dim) rows.
//
// Build from the repository root:
//   g++ -std=c++20 -O2 -I. -pthread tests/cuda/conv_xproj_emu.cpp -o /tmp/conv_xproj_emu
#include <cstdio>
#include <vector>

#include "tests/cuda/emu.h"

namespace coil::cuda {
inline float silu_f(float v) { return v / (1.f + __expf(-v)); }
}  // namespace coil::cuda

#include "cuda/conv_xproj_kernel.cuh"

namespace {

using namespace coil::cuda;

template <class T> T to_t(float v) {
  if constexpr (std::is_same_v<T, coil::bf16>) return coil::to_bf16(v);
  else return v;
}
template <class T> float to_f(T v) { return coil::load_as<float, T>(v); }

template <class T> bool run_case(int64_t B, int64_t dim, int64_t width, int64_t E, bool bias, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  const int64_t km1 = width - 1, x_row = 2 * dim;
  std::vector<T> xz(size_t(B * x_row)), state0(size_t(B * dim * km1)), wx(size_t(E * dim));
  std::vector<float> cw(static_cast<size_t>(dim * width)), cb(static_cast<size_t>(dim));
  for (auto& v : xz) v = to_t<T>(U(rng));
  for (auto& v : state0) v = to_t<T>(U(rng));
  for (auto& v : wx) v = to_t<T>(U(rng) * 0.2f);
  for (auto& v : cw) v = U(rng);
  for (auto& v : cb) v = U(rng);
  // Reference: the conv step (conv_one's order: bias, the window, then x), SiLU, rounded to T; then x_proj.
  std::vector<float> ref_y(size_t(B * dim));
  std::vector<T> ref_state(state0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < dim; ++d) {
      float acc = bias ? cb[size_t(d)] : 0.f;
      const T* s = &state0[size_t((b * dim + d) * km1)];
      for (int64_t k = 0; k < km1; ++k) acc += cw[size_t(d * width + k)] * to_f(s[k]);
      const T xt = xz[size_t(b * x_row + d)];
      acc += cw[size_t(d * width + km1)] * to_f(xt);
      ref_y[size_t(b * dim + d)] = to_f(to_t<T>(silu_f(acc)));
      T* rs = &ref_state[size_t((b * dim + d) * km1)];
      for (int64_t k = 0; k + 1 < km1; ++k) rs[k] = s[k + 1];
      if (km1 > 0) rs[km1 - 1] = xt;
    }
  ConvXprojArgs a;
  a.batch = B, a.dim = dim, a.width = width, a.out_dim = E;
  a.dtype = std::is_same_v<T, float> ? coil::DType::f32 : coil::DType::bf16;
  a.x = xz.data();
  a.x_row = x_row;
  a.conv_w = cw.data();
  a.conv_b = bias ? cb.data() : nullptr;
  a.w_x = wx.data();
  const int S = int(conv_xproj_impl::slice_of(dim));
  const size_t smem = conv_xproj_impl::smem_bytes(a);
  std::vector<std::vector<T>> outs, convs, states;
  for (int order = 0; order < 2; ++order) {
    std::vector<T> state(state0), conv_out(size_t(B * dim), to_t<T>(NAN)), x_dbl(size_t(B * E), to_t<T>(NAN));
    a.conv_state = state.data();
    a.conv_out = conv_out.data();
    a.x_dbl = x_dbl.data();
    emu::g_order_rng.seed(seed * 13 + order);
    const unsigned gy = unsigned((B + kConvXprojRows - 1) / kConvXprojRows);
    emu::g_griddim = emu::Idx{unsigned(kConvXprojCluster), gy, 1};
    for (unsigned y = 0; y < gy; ++y) {
      std::vector<emu::Idx> blocks;
      for (unsigned x = 0; x < unsigned(kConvXprojCluster); ++x) blocks.push_back(emu::Idx{x, y, 0});
      emu::run_cluster(blocks, 256, smem, [&] { conv_xproj_impl::conv_xproj_kernel<T>(a, S); });
    }
    outs.push_back(std::move(x_dbl));
    convs.push_back(std::move(conv_out));
    states.push_back(std::move(state));
  }
  double conv_err = 0, err2 = 0, ref2 = 0;
  bool nan = false;
  for (int64_t i = 0; i < B * dim; ++i) {
    const float got = to_f(convs[0][size_t(i)]);
    nan = nan || std::isnan(got);
    conv_err = std::max(conv_err, double(std::fabs(got - ref_y[size_t(i)])));
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < E; ++e) {
      double r = 0;
      for (int64_t d = 0; d < dim; ++d) r += double(ref_y[size_t(b * dim + d)]) * double(to_f(wx[size_t(e * dim + d)]));
      const float got = to_f(outs[0][size_t(b * E + e)]);
      nan = nan || std::isnan(got);
      err2 += (got - r) * (got - r);
      ref2 += r * r;
    }
  const bool state_ok = std::memcmp(states[0].data(), ref_state.data(), ref_state.size() * sizeof(T)) == 0;
  const bool same = std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(T)) == 0 &&
                    std::memcmp(convs[0].data(), convs[1].data(), convs[0].size() * sizeof(T)) == 0;
  const double rel = std::sqrt(err2 / (ref2 > 0 ? ref2 : 1)), tol = std::is_same_v<T, float> ? 1e-5 : 1e-2;
  const double conv_tol = std::is_same_v<T, float> ? 1e-5 : 1e-2;
  const bool ok = !nan && same && state_ok && rel < tol && conv_err < conv_tol;
  std::printf("%s B %lld dim %lld width %lld E %lld bias %d: x_dbl rel err %.2e, conv max err %.2e%s%s%s -> %s\n",
              std::is_same_v<T, float> ? "f32" : "bf16", (long long)B, (long long)dim, (long long)width, (long long)E,
              int(bias), rel, conv_err, nan ? " NaN" : "", same ? "" : " (orders differ)",
              state_ok ? "" : " (conv state wrong)", ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main() {
  struct Case {
    int64_t B, dim, width, E;
    bool bias;
  };
  const Case cases[] = {{9, 40, 4, 34, true}, {64, 1536, 4, 80, true}, {13, 96, 2, 5, false},
                        {1, 48, 3, 20, true},  {8, 200, 1, 7, true}};
  int passed = 0, failed = 0;
  uint64_t seed = 3;
  for (const Case& c : cases) {
    (run_case<float>(c.B, c.dim, c.width, c.E, c.bias, seed++) ? passed : failed)++;
    (run_case<coil::bf16>(c.B, c.dim, c.width, c.E, c.bias, seed++) ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
