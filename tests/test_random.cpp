// core/philox + ops/creation: reproducible draws, independent of thread
// count, with the right moments; CPU and CUDA agree (GPU case).
#include "core/philox.h"
#include "core/thread_pool.h"
#include "helpers.h"

using namespace coil;
using namespace coil::test;

TEST_CASE("random: same seed, same numbers; generator advances") {
  Generator a{123, 0}, b{123, 0};
  Tensor x = rand({1000}, DType::f32, Device::cpu(), &a);
  Tensor y = rand({1000}, DType::f32, Device::cpu(), &b);
  CHECK(x.to_vector() == y.to_vector());
  Tensor z = rand({1000}, DType::f32, Device::cpu(), &a);
  CHECK(x.to_vector() != z.to_vector());
  CHECK(a.offset == 500);  // two draws of 1000 uniforms, 4 per counter
  manual_seed(5);
  Tensor p = randn({64});
  manual_seed(5);
  CHECK(randn({64}).to_vector() == p.to_vector());
}

TEST_CASE("random: empty shapes draw nothing and leave the generator alone") {
  Generator g{7, 0};
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    CHECK(rand({3, 8, 0}, dt, Device::cpu(), &g).numel() == 0);
    CHECK(randn({0, 5}, dt, Device::cpu(), &g).numel() == 0);
  }
  CHECK(randint(0, 9, {4, 0}, DType::i64, Device::cpu(), &g).numel() == 0);
  CHECK(g.offset == 0);
  CHECK(Tensor::empty({2, 0, 3}, DType::f32, Device::cpu()).is_contiguous());
}

TEST_CASE("random: moments and ranges") {
  Generator g{7, 0};
  auto u = rand({100000}, DType::f64, Device::cpu(), &g, -2, 3).to_vector();
  auto n = randn({100000}, DType::f32, Device::cpu(), &g, 1.0, 2.0).to_vector();
  auto k = randint(-3, 5, {100000}, DType::i64, Device::cpu(), &g).to_vector();
  double su = 0, sn = 0, sn2 = 0;
  int64_t outside = 0;
  for (double v : u) {
    outside += (v < -2 || v >= 3);
    su += v;
  }
  CHECK(outside == 0);
  for (double v : n) sn += v, sn2 += v * v;
  std::vector<int> hist(8, 0);
  for (double v : k) {
    if (v < -3 || v >= 5) FAIL("randint out of range: " << v);
    hist[size_t(v + 3)]++;
  }
  double mu = sn / 1e5, var = sn2 / 1e5 - mu * mu;
  CHECK(su / 1e5 == doctest::Approx(0.5).epsilon(0.02));
  CHECK(mu == doctest::Approx(1.0).epsilon(0.02));
  CHECK(var == doctest::Approx(4.0).epsilon(0.03));
  for (int h : hist) CHECK(h == doctest::Approx(12500).epsilon(0.05));
}

TEST_CASE("random: independent of the thread count") {
  Generator a{9, 0}, b{9, 0};
  int before = num_threads();
  set_num_threads(1);
  auto x = randn({4097}, DType::f32, Device::cpu(), &a).to_vector();
  set_num_threads(2);
  auto y = randn({4097}, DType::f32, Device::cpu(), &b).to_vector();
  set_num_threads(before);
  CHECK(x == y);
}

TEST_CASE("random: bf16 draws are the rounded f32 draws") {
  Generator a{11, 0}, b{11, 0};
  Tensor x = randn({33}, DType::bf16, Device::cpu(), &a);
  Tensor y = randn({33}, DType::f32, Device::cpu(), &b).to(DType::bf16);
  CHECK(x.to_vector() == y.to_vector());
}

TEST_CASE("random [gpu]: CUDA draws equal CPU draws") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    Generator a{21, 3}, b{21, 3};
    CHECK(rand({1001}, dt, Device::cpu(), &a).to_vector() == rand({1001}, dt, Device::cuda(0), &b).to_vector());
    CHECK(max_abs_diff(randn({1001}, dt, Device::cpu(), &a), randn({1001}, dt, Device::cuda(0), &b)) < 1e-6);
  }
  Generator a{5, 0}, b{5, 0};
  CHECK(randint(0, 50280, {999}, DType::i64, Device::cpu(), &a).to_vector() ==
        randint(0, 50280, {999}, DType::i64, Device::cuda(0), &b).to_vector());
}
