// autograd/: the engine's contract (ordering, accumulation, retain_graph,
// NoGradGuard, detach) and an end-to-end fit with plain SGD.
#include <algorithm>

#include "autograd/profile.h"
#include "helpers.h"
#include "ops/common.h"

using namespace coil;
using namespace coil::test;

TEST_CASE("autograd: diamond graph accumulates both paths") {
  Tensor x = Tensor::from_vector({2.0}, {1}, DType::f64);
  x.set_requires_grad(true);
  Tensor y = x * x;        // 2x
  Tensor z = y * x + y;    // d/dx (x^3 + x^2) = 3x^2 + 2x
  backward(sum(z));
  CHECK(x.grad().item() == doctest::Approx(16.0));
}

TEST_CASE("autograd: gradients accumulate across backward calls") {
  Tensor w = Tensor::from_vector({1.0, 2.0}, {2}, DType::f64);
  w.set_requires_grad(true);
  backward(sum(w * 3.0));
  backward(sum(w * 3.0));
  CHECK(w.grad().to_vector() == std::vector<double>{6, 6});
}

TEST_CASE("autograd: shared gradients do not alias between leaves") {
  Tensor a = Tensor::from_vector({1.0}, {1}, DType::f64), b = Tensor::from_vector({1.0}, {1}, DType::f64);
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  backward(sum(a + b));  // add's backward hands the same tensor to both
  CHECK(a.grad().storage() != b.grad().storage());
  copy_(a.grad(), Tensor::from_vector({5.0}, {1}, DType::f64));
  CHECK(b.grad().item() == 1.0);
}

TEST_CASE("autograd: retain_graph and freed graphs") {
  Tensor x = Tensor::from_vector({3.0}, {1}, DType::f64);
  x.set_requires_grad(true);
  Tensor y = sum(exp(x));
  backward(y, Tensor(), /*retain_graph=*/true);
  backward(y);
  CHECK(x.grad().item() == doctest::Approx(2 * std::exp(3.0)));
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("a second time"), Error);
}

TEST_CASE("autograd: NoGradGuard, detach, requires_grad errors") {
  Tensor x = Tensor::from_vector({1.0, 2.0}, {2}, DType::f64);
  x.set_requires_grad(true);
  {
    NoGradGuard ng;
    Tensor y = x * 2.0;
    CHECK(!y.requires_grad());
    CHECK(!y.grad_fn());
  }
  Tensor y = x * 2.0;
  CHECK(y.requires_grad());
  CHECK(y.grad_fn()->name() == "mul_scalarBackward");
  CHECK(!y.detach().requires_grad());
  CHECK(y.detach().storage() == y.storage());
  CHECK_THROWS_WITH_AS(y.set_requires_grad(false), doctest::Contains("only leaf tensors"), Error);
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("not a scalar"), Error);
  CHECK_THROWS_WITH_AS(backward(sum(x.detach())), doctest::Contains("does not require grad"), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::i64).set_requires_grad(true),
                       doctest::Contains("only floating tensors"), Error);
  CHECK_THROWS_WITH_AS(copy_(x, y), doctest::Contains("in-place write"), Error);
}

TEST_CASE("autograd: non-scalar root with an explicit gradient") {
  Tensor x = Tensor::from_vector({1.0, 2.0, 3.0}, {3}, DType::f64);
  x.set_requires_grad(true);
  Tensor y = x * x;
  backward(y, Tensor::from_vector({1.0, 0.0, -1.0}, {3}, DType::f64));
  CHECK(x.grad().to_vector() == std::vector<double>{2, 0, -6});
  CHECK_THROWS_WITH_AS(backward(x * 1.0, Tensor::zeros({2}, DType::f64)), doctest::Contains("shape"), Error);
}

TEST_CASE("gradcheck catches a wrong gradient") {
  // A deliberately wrong backward must fail the check.
  Tensor x = leaf({4});
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor y = in[0] * 1.0;
    Tensor out = Tensor::empty(y.shape(), y.dtype());
    copy_(out, exp(y.detach()));
    out = out.detach();
    detail::record_op("wrong_exp", {in[0]}, {out}, [](const std::vector<Tensor>& g, const std::vector<bool>&) {
      return std::vector<Tensor>{g[0] * 2.0};
    });
    return std::vector<Tensor>{out};
  };
  CHECK(!gradcheck(wrong, {x}).ok);
}

TEST_CASE("end to end: a small MLP learns with plain SGD") {
  Generator g{42, 0};
  const int64_t n = 128;
  Tensor x = rand({n, 2}, DType::f32, Device::cpu(), &g, -1, 1);
  // target: x0 * x1 (not linearly separable)
  auto xv = x.to_vector();
  std::vector<double> yv(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) yv[size_t(i)] = xv[size_t(2 * i)] * xv[size_t(2 * i + 1)];
  Tensor y = Tensor::from_vector(yv, {n, 1});
  Tensor w1 = randn({16, 2}, DType::f32, Device::cpu(), &g), b1 = zeros({16});
  Tensor w2 = randn({1, 16}, DType::f32, Device::cpu(), &g) * 0.25, b2 = zeros({1});
  std::vector<Tensor*> params = {&w1, &b1, &w2, &b2};
  for (Tensor* p : params) p->set_requires_grad(true);
  double first = 0, last = 0;
  for (int step = 0; step < 1500; ++step) {
    Tensor loss = mean(pow(linear(tanh(linear(x, w1, b1)), w2, b2) - y, 2.0));
    if (step == 0) first = loss.item();
    last = loss.item();
    backward(loss);
    NoGradGuard ng;
    for (Tensor* p : params) {
      copy_(*p, *p - p->grad() * 0.2);
      p->set_grad(Tensor());
    }
  }
  INFO("first loss " << first << ", last loss " << last);
  CHECK(last < 0.002);
  CHECK(last < first / 20);
}

TEST_CASE("autograd: several roots in one backward") {
  Tensor x = leaf({2, 5}), w = leaf({5}), r = leaf({2, 5});
  auto run = [&](bool together) {
    for (Tensor t : {x, w, r}) t.set_grad(Tensor());
    auto o = rms_norm(x, w, 1e-5, r);
    Tensor gy = Tensor::from_vector(std::vector<double>(10, 0.5), {2, 5}, DType::f64);
    Tensor gr = Tensor::from_vector(std::vector<double>(10, -2.0), {2, 5}, DType::f64);
    Tensor z = o.y * 3.0;  // a root that depends on another root's node
    if (together) {
      backward({o.y, o.residual, z}, {gy, gr, gy});
    } else {
      backward(o.y, gy, true);
      backward(o.residual, gr, true);
      backward(z, gy);
    }
    return std::vector<std::vector<double>>{x.grad().to_vector(), w.grad().to_vector(), r.grad().to_vector()};
  };
  auto a = run(true), b = run(false);
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t k = 0; k < a[i].size(); ++k) CHECK(a[i][k] == doctest::Approx(b[i][k]).epsilon(1e-12));
}

TEST_CASE("autograd: post-accumulate grad hooks fire once per leaf per backward, after accumulation") {
  Tensor w = Tensor::from_vector({1.0, 2.0}, {2}, DType::f64), u = Tensor::from_vector({3.0}, {1}, DType::f64);
  w.set_requires_grad(true);
  u.set_requires_grad(true);
  Tensor unused = Tensor::from_vector({1.0}, {1}, DType::f64);
  unused.set_requires_grad(true);
  std::vector<std::string> order;
  std::vector<std::vector<double>> seen;
  register_post_accumulate_grad_hook(w, [&](const Tensor& t) {
    order.push_back("w");
    seen.push_back(t.grad().to_vector());
  });
  register_post_accumulate_grad_hook(u, [&](const Tensor& t) { order.push_back("u"); });
  int unused_calls = 0;
  register_post_accumulate_grad_hook(unused, [&](const Tensor&) { ++unused_calls; });
  // w reaches the loss through three edges (w*w uses it twice, then w*u):
  // its hook must run once, after all of them were summed.
  auto loss = [&] { return sum(w * w + w * u); };  // d/dw = 2w + u
  backward(loss());
  REQUIRE(seen.size() == 1);
  CHECK(seen[0] == std::vector<double>{5, 7});
  CHECK(std::count(order.begin(), order.end(), "u") == 1);
  // A second pass (gradient accumulation): the hook sees the running sum.
  backward(loss());
  REQUIRE(seen.size() == 2);
  CHECK(seen[1] == std::vector<double>{10, 14});
  CHECK(order.size() == 4);
  CHECK(unused_calls == 0);  // never reached by either pass
  // A leaf that is itself the root.
  Tensor s = Tensor::from_vector({1.0}, {1}, DType::f64);
  s.set_requires_grad(true);
  int root_calls = 0;
  register_post_accumulate_grad_hook(s, [&](const Tensor& t) { root_calls += t.grad().item() == 1.0; });
  backward(s);
  CHECK(root_calls == 1);
  clear_post_accumulate_grad_hooks(w);
  backward(loss());
  CHECK(seen.size() == 2);
  // Only leaves that require grad take hooks.
  Tensor y = w * 2.0;
  CHECK_THROWS_WITH_AS(register_post_accumulate_grad_hook(y, [](const Tensor&) {}),
                       doctest::Contains("is not a leaf"), Error);
}

TEST_CASE("autograd: the op profiler's rows, per op and per input shapes") {
  Tensor a = Tensor::from_vector(std::vector<double>(6, 1.0), {2, 3}, DType::f32);
  Tensor b = Tensor::from_vector(std::vector<double>(12, 0.5), {3, 4}, DType::f32);
  a.set_requires_grad(true);
  auto run = [&] {
    profile::reset();
    Tensor y = matmul(a, b);
    backward(sum(y));
    return profile::report();
  };
  profile::enable(true);
  const std::string plain = run();
  profile::enable_shapes(true);
  const std::string shaped = run();
  profile::enable_shapes(false);
  profile::enable(false);
  CHECK(plain.find("matmul fwd") != std::string::npos);
  CHECK(plain.find("matmul bwd") != std::string::npos);
  CHECK(plain.find("(2x3") == std::string::npos);
  // a (2, 3) and b (3, 4), f32; b's last two dims row-major (no "T").
  CHECK(shaped.find("matmul (2x3 f32, 3x4 f32) fwd") != std::string::npos);
  CHECK(shaped.find("matmul (2x3 f32, 3x4 f32) bwd") != std::string::npos);
  // A (3, 4) view of a contiguous (4, 3): its last two dims column-major.
  Tensor bt = b.transpose(0, 1).contiguous().transpose(0, 1);
  profile::enable(true);
  profile::enable_shapes(true);
  profile::reset();
  backward(sum(matmul(a, bt)));
  const std::string t = profile::report();
  profile::enable_shapes(false);
  profile::enable(false);
  CHECK(t.find("3x4T f32") != std::string::npos);
}

// Two gradients reaching one tensor in the same transposed layout (two
// GEMMs on a transposed input, as Mamba's in_proj halves) are summed as
// flat buffers: the values must equal the paths' gradients added.
TEST_CASE("autograd: gradients in a permuted layout accumulate correctly") {
  Generator g{21, 0};
  Tensor x = rand({2, 5, 3}, DType::f64, Device::cpu(), &g, -1, 1).set_requires_grad(true);
  Tensor w1 = rand({4, 3}, DType::f64, Device::cpu(), &g, -1, 1), w2 = rand({4, 3}, DType::f64, Device::cpu(), &g, -1, 1);
  Tensor g1 = rand({2, 4, 5}, DType::f64, Device::cpu(), &g, -1, 1), g2 = rand({2, 4, 5}, DType::f64, Device::cpu(), &g, -1, 1);
  auto path = [&](const Tensor& w, const Tensor& go) { return sum(matmul(w, transpose(x, 1, 2)) * go); };
  backward(path(w1, g1));
  Tensor only1 = x.grad().detach().to(Device::cpu());
  x.set_grad(Tensor());
  backward(path(w2, g2));
  Tensor only2 = x.grad().detach().to(Device::cpu());
  x.set_grad(Tensor());
  Tensor t = transpose(x, 1, 2);
  backward(sum(matmul(w1, t) * g1) + sum(matmul(w2, t) * g2));
  CHECK(max_abs_diff(x.grad(), only1 + only2) < 1e-12);
}
