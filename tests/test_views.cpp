// Differentiable views, copies and casts.
#include "helpers.h"
#include "ops/common.h"

using namespace coil;
using namespace coil::test;

using Fn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

TEST_CASE("gradcheck: views") {
  Tensor x = leaf({2, 3, 4});
  std::vector<std::pair<const char*, Fn>> cases = {
      {"reshape", [](auto& in) { return std::vector<Tensor>{in[0].reshape({4, 6}) * 2.0}; }},
      {"transpose", [](auto& in) { return std::vector<Tensor>{in[0].transpose(0, 2) * in[0].transpose(0, 2)}; }},
      {"permute", [](auto& in) { return std::vector<Tensor>{exp(in[0].permute({1, 2, 0}))}; }},
      {"narrow", [](auto& in) { return std::vector<Tensor>{in[0].narrow(2, 1, 2) * 3.0}; }},
      {"expand", [](auto& in) { return std::vector<Tensor>{in[0].narrow(0, 0, 1).expand({5, 3, 4}) * 1.0}; }},
      {"squeeze", [](auto& in) { return std::vector<Tensor>{in[0].unsqueeze(1).squeeze(1) * 1.0}; }},
      {"flatten", [](auto& in) { return std::vector<Tensor>{tanh(in[0].flatten(0, 1))}; }},
      {"contiguous", [](auto& in) { return std::vector<Tensor>{in[0].t().contiguous() * 1.0}; }},
      {"split", [](auto& in) {
         auto p = split(in[0], {1, 3}, 2);
         return std::vector<Tensor>{p[0] * 2.0, exp(p[1])};
       }},
      {"split of a permuted view", [](auto& in) {
         // Dense but not contiguous: the backward assembles the gradient in
         // the input's own layout (the mixer's in_proj output).
         auto p = split(in[0].permute({1, 0, 2}), {1, 1}, 1);
         return std::vector<Tensor>{p[0] * 2.0, exp(p[1])};
       }},
      {"chunk", [](auto& in) {
         auto p = chunk(in[0], 2, 1);
         return std::vector<Tensor>{p[0] * p[0], p[1]};
       }},
      {"concat", [](auto& in) { return std::vector<Tensor>{concat({in[0], exp(in[0])}, 1)}; }},
      {"clone", [](auto& in) { return std::vector<Tensor>{in[0].clone()}; }},
      {"dtype round trip", [](auto& in) { return std::vector<Tensor>{in[0].to(DType::f32).to(DType::f64)}; }},
  };
  for (auto& [name, f] : cases) {
    std::string n = name;
    CAPTURE(n);
    bool lossy = n == "dtype round trip";  // f32 rounding needs a larger step
    check_gradcheck(f, {x}, {.eps = lossy ? 1e-2 : 1e-6, .atol = lossy ? 1e-4 : 1e-5});
  }
}

TEST_CASE("concat: values and errors") {
  Tensor a = Tensor::from_vector({1, 2}, {1, 2}), b = Tensor::from_vector({3, 4, 5, 6}, {2, 2});
  CHECK(concat({a, b}, 0).to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(concat({b, b}, 1).shape() == Shape{2, 4});
  CHECK_THROWS_WITH_AS(concat({a, b}, 1), doctest::Contains("outside dim 1"), Error);
}

TEST_CASE("is_dense / empty_like_dense") {
  Tensor x = zeros({2, 3, 4});
  CHECK(detail::is_dense(x));
  CHECK(detail::is_dense(x.permute({1, 0, 2})));
  CHECK(detail::is_dense(x.transpose(0, 2)));
  CHECK_FALSE(detail::is_dense(x.narrow(1, 0, 2)));  // gaps between rows
  CHECK(detail::is_dense(x.narrow(0, 1, 1)));        // one whole block
  Tensor p = x.permute({1, 0, 2});
  Tensor e = detail::empty_like_dense(p);
  CHECK(e.shape() == p.shape());
  CHECK(e.strides() == p.strides());
  Tensor n = detail::empty_like_dense(x.narrow(1, 0, 2));
  CHECK(n.is_contiguous());
}
