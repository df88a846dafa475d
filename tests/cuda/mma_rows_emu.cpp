// Runs the decode step's tensor-core projection (cuda/mma_rows_kernel.cuh) on
// the CPU through the fiber emulator of tests/cuda/emu.h and checks it
// against a float64 product of the same bf16/f16 operands. mma.sync is a warp
// collective here that reads each lane's fragment registers as the PTX ISA
// lays out m16n8k16 (A row-major 16x16, B column-major 16x8, C/D 16x8), so a
// wrong fragment index in the kernel gives a wrong product. Shared memory
// starts as NaN and y is poisoned; each case runs twice with different
// warp/lane orders and must give the same bits. Sizes: odd M (one and two
// 64-row tiles), N not a multiple of the block's 16 or 32 rows, K from one
// 32-wide block to several per warp, with and without bias.
//
// Build from the repository root:
//   g++ -std=c++20 -O2 -I. -pthread tests/cuda/mma_rows_emu.cpp -o /tmp/mma_rows_emu
#include <cstdio>
#include <vector>

#include "tests/cuda/emu.h"

#include "cuda/mma_rows_kernel.cuh"

namespace {

using namespace coil::cuda::mma_kernel;

template <class T> T to_t(float v) {
  if constexpr (std::is_same_v<T, coil::bf16>) return coil::to_bf16(v);
  else return coil::to_f16(v);
}

template <class T> bool run_case(int M, int N, int K, int MT, bool with_bias, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  const int64_t x_row = K + 8 * (M % 2);  // odd M: a padded row stride
  std::vector<T> x(size_t(M) * x_row), w(size_t(N) * K), bias(N);
  for (auto& v : x) v = to_t<T>(U(rng));
  for (auto& v : w) v = to_t<T>(U(rng));
  for (auto& v : bias) v = to_t<T>(U(rng));
  Args a;
  a.x = x.data();
  a.x_row = x_row;
  a.w = w.data();
  a.bias = with_bias ? bias.data() : nullptr;
  a.M = M, a.N = N, a.K = K;
  a.w_row_bytes = w_row_bytes(K);
  std::vector<std::vector<T>> outs;
  for (int order = 0; order < 2; ++order) {
    std::vector<T> y(size_t(M) * N, to_t<T>(NAN));
    a.y = y.data();
    emu::g_order_rng.seed(seed * 7 + order);
    const unsigned gx = unsigned((N + 16 * MT - 1) / (16 * MT)), gy = unsigned((M + kTileRows - 1) / kTileRows);
    emu::g_griddim = emu::Idx{gx, gy, 1};
    for (unsigned by = 0; by < gy; ++by)
      for (unsigned bx = 0; bx < gx; ++bx) {
        emu::g_block = emu::Idx{bx, by, 0};
        emu::run_block(kThreads, smem_bytes(K, MT), [&] {
          if (MT == 2) mma_rows_kernel<T, 2>(a);
          else mma_rows_kernel<T, 1>(a);
        });
      }
    outs.push_back(std::move(y));
  }
  double err2 = 0, ref2 = 0;
  bool nan = false;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double r = with_bias ? double(coil::load_as<float, T>(bias[n])) : 0.0;
      for (int k = 0; k < K; ++k)
        r += double(coil::load_as<float, T>(x[size_t(m) * x_row + k])) * double(coil::load_as<float, T>(w[size_t(n) * K + k]));
      const float got = coil::load_as<float, T>(outs[0][size_t(m) * N + n]);
      if (std::isnan(got)) nan = true;
      err2 += (got - r) * (got - r);
      ref2 += r * r;
    }
  const bool same = std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(T)) == 0;
  const double rel = std::sqrt(err2 / (ref2 > 0 ? ref2 : 1));
  const bool ok = !nan && same && rel < 1e-2;
  std::printf("%s M %d N %d K %d MT %d bias %d: rel err %.2e%s%s -> %s\n",
              std::is_same_v<T, coil::bf16> ? "bf16" : "f16", M, N, K, MT, int(with_bias), rel, nan ? " NaN" : "",
              same ? "" : " (orders differ)", ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main() {
  int failed = 0, passed = 0;
  struct Case {
    int M, N, K, MT;
    bool bias;
  };
  const Case cases[] = {
      {64, 48, 64, 1, false},  {9, 37, 32, 1, true},  {33, 70, 96, 2, false}, {64, 32, 768, 2, false},
      {65, 16, 128, 1, true}, {17, 24, 480, 2, true}, {1, 16, 256, 1, false},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    for (int t = 0; t < 2; ++t) {
      const bool ok = t == 0 ? run_case<coil::bf16>(c.M, c.N, c.K, c.MT, c.bias, seed++)
                             : run_case<coil::f16>(c.M, c.N, c.K, c.MT, c.bias, seed++);
      (ok ? passed : failed)++;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
