// The fused Mamba ops on the CPU: rms_norm (+ residual), causal_conv1d,
// selective_scan and cross_entropy. Float64 gradchecks of every input,
// values against plain compositions of simpler ops, and error messages.
#include "helpers.h"

using namespace coil;
using namespace coil::test;

TEST_CASE("rms_norm: values equal the composed formula") {
  Tensor x = leaf({3, 7}), w = leaf({7}), r = leaf({3, 7});
  auto [y, res] = rms_norm(x, w, 1e-5, r);
  Tensor s = x + r;
  Tensor ref = s * rsqrt(mean(s * s, {-1}, true) + 1e-5) * w;
  CHECK(max_abs_diff(y, ref) < 1e-12);
  CHECK(max_abs_diff(res, s) < 1e-15);
  auto [y2, res2] = rms_norm(x.to(DType::bf16), w.to(DType::f32), 1e-5, Tensor(), /*residual_in_fp32=*/true);
  CHECK(y2.dtype() == DType::bf16);
  CHECK(res2.dtype() == DType::f32);
}

TEST_CASE("gradcheck: rms_norm with and without residual") {
  Tensor x = leaf({4, 9}), w = leaf({9}, 0.5, 1.5), r = leaf({4, 9});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{rms_norm(in[0], in[1]).y}; }, {x, w});
  check_gradcheck([](auto& in) {
    auto o = rms_norm(in[0], in[1], 1e-5, in[2]);
    return std::vector<Tensor>{o.y, o.residual};
  }, {x, w, r});
  // One output unused: its gradient reaches the backward undefined (the node
  // is recorded with materialize_grads = false) and the term is skipped.
  check_gradcheck([](auto& in) { return std::vector<Tensor>{rms_norm(in[0], in[1], 1e-5, in[2]).y}; }, {x, w, r});
  check_gradcheck([w](auto& in) { return std::vector<Tensor>{rms_norm(in[0], w, 1e-5, in[1]).residual * 2.0}; },
                  {x, r});
  CHECK_THROWS_WITH_AS(rms_norm(x, leaf({8})), doctest::Contains("weight must have shape [9]"), Error);
}

TEST_CASE("causal_conv1d: values equal the direct sum") {
  Tensor x = leaf({2, 3, 10}), w = leaf({3, 4}), b = leaf({3});
  Tensor out = causal_conv1d(x, w, b, false).out;
  auto xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector(), ov = out.to_vector();
  double maxerr = 0;
  for (int bb = 0; bb < 2; ++bb)
    for (int c = 0; c < 3; ++c)
      for (int t = 0; t < 10; ++t) {
        double acc = bv[size_t(c)];
        for (int k = 0; k < 4; ++k) {
          int ti = t - 3 + k;
          if (ti >= 0) acc += wv[size_t(c * 4 + k)] * xv[size_t((bb * 3 + c) * 10 + ti)];
        }
        maxerr = std::max(maxerr, std::fabs(acc - ov[size_t((bb * 3 + c) * 10 + t)]));
      }
  CHECK(maxerr < 1e-14);
  CHECK(max_abs_diff(causal_conv1d(x, w, b, true).out, silu(out)) < 1e-14);
  // (C, 1, K) weights as PyTorch's Conv1d stores them.
  CHECK(max_abs_diff(causal_conv1d(x, w.reshape({3, 1, 4}), b).out, out) < 1e-15);
}

TEST_CASE("causal_conv1d: streaming in two pieces equals one pass") {
  Tensor x = leaf({2, 3, 11}), w = leaf({3, 4}), b = leaf({3});
  Tensor full = causal_conv1d(x, w, b, true).out;
  auto first = causal_conv1d(x.narrow(2, 0, 5), w, b, true, Tensor(), true);
  auto second = causal_conv1d(x.narrow(2, 5, 6), w, b, true, first.final_state);
  CHECK(max_abs_diff(concat({first.out, second.out}, 2), full) < 1e-14);
}

TEST_CASE("gradcheck: causal_conv1d (widths 2..4, silu, bias, states)") {
  for (int64_t K : {2, 3, 4}) {
    for (bool act : {false, true}) {
      CAPTURE(K);
      CAPTURE(act);
      Tensor x = leaf({2, 3, 9}), w = leaf({3, K}), b = leaf({3}), h = leaf({2, 3, K - 1});
      check_gradcheck([act](auto& in) { return std::vector<Tensor>{causal_conv1d(in[0], in[1], in[2], act).out}; },
                      {x, w, b});
      check_gradcheck([act](auto& in) {
        auto o = causal_conv1d(in[0], in[1], in[2], act, in[3], true);
        return std::vector<Tensor>{o.out, o.final_state};
      }, {x, w, b, h});
    }
  }
  Tensor x = leaf({1, 2, 2}), w = leaf({2, 4});  // L shorter than K - 1
  check_gradcheck([](auto& in) {
    auto o = causal_conv1d(in[0], in[1], Tensor(), false, Tensor(), true);
    return std::vector<Tensor>{o.out, o.final_state};
  }, {x, w});
  CHECK_THROWS_WITH_AS(causal_conv1d(leaf({2, 3, 9}), leaf({4, 4})), doctest::Contains("weight must be (3, K)"), Error);
}

namespace {
// The scan written with elementary ops, materialising every state: only
// usable at tiny sizes, but an independent check of the fused kernel.
Tensor naive_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                  const Tensor& D, const Tensor& z, const Tensor& bias) {
  const int64_t b = u.size(0), d = u.size(1), L = u.size(2), n = A.size(1);
  Tensor dt = softplus(delta + bias.reshape({1, d, 1}));
  Tensor h = zeros({b, d, n}, DType::f64);
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    Tensor dtt = dt.narrow(2, t, 1);                       // (b, d, 1)
    Tensor ut = u.narrow(2, t, 1);                         // (b, d, 1)
    Tensor Bt = B.narrow(2, t, 1).reshape({b, 1, n});      // (b, 1, n)
    Tensor Ct = C.narrow(2, t, 1).reshape({b, 1, n});
    h = exp(dtt * A.reshape({1, d, n})) * h + dtt * Bt * ut;
    ys.push_back(sum(h * Ct, {2}, true) + D.reshape({1, d, 1}) * ut);
  }
  return concat(ys, 2) * silu(z);
}
}  // namespace

TEST_CASE("selective_scan: equals the naive materialised recurrence") {
  const int64_t b = 2, d = 3, L = 9, n = 4;
  Tensor u = leaf({b, d, L}), delta = leaf({b, d, L}), A = leaf({d, n}, -2.0, -0.1), B = leaf({b, n, L}),
         C = leaf({b, n, L}), D = leaf({d}), z = leaf({b, d, L}), bias = leaf({d});
  Tensor out = selective_scan(u, delta, A, B, C, D, z, bias).out;
  CHECK(max_abs_diff(out, naive_scan(u, delta, A, B, C, D, z, bias)) < 1e-12);
}

TEST_CASE("selective_scan: two halves with carried state equal one pass") {
  const int64_t b = 2, d = 3, L = 300, n = 16;
  Tensor u = leaf({b, d, L}), delta = leaf({b, d, L}), A = leaf({d, n}, -2.0, -0.1), B = leaf({b, n, L}),
         C = leaf({b, n, L}), D = leaf({d}), bias = leaf({d});
  auto full = selective_scan(u, delta, A, B, C, D, Tensor(), bias, true, Tensor(), true);
  auto a = selective_scan(u.narrow(2, 0, 100), delta.narrow(2, 0, 100), A, B.narrow(2, 0, 100),
                          C.narrow(2, 0, 100), D, Tensor(), bias, true, Tensor(), true);
  auto c = selective_scan(u.narrow(2, 100, 200), delta.narrow(2, 100, 200), A, B.narrow(2, 100, 200),
                          C.narrow(2, 100, 200), D, Tensor(), bias, true, a.last_state, true);
  CHECK(max_abs_diff(concat({a.out, c.out}, 2), full.out) < 1e-12);
  CHECK(max_abs_diff(c.last_state, full.last_state) < 1e-12);
}

TEST_CASE("gradcheck: selective_scan, every input") {
  struct Case {
    int64_t L, n;
    bool selective, has_z, softplus;
  };
  for (Case cs : {Case{7, 4, true, true, true}, Case{1, 1, true, false, true}, Case{260, 2, true, true, false},
                  Case{5, 3, false, true, true}}) {
    CAPTURE(cs.L);
    CAPTURE(cs.n);
    CAPTURE(cs.selective);
    const int64_t b = 2, d = 3;
    Shape bc = cs.selective ? Shape{b, cs.n, cs.L} : Shape{d, cs.n};
    // delta in (0.1, 0.6) keeps dt positive when softplus is off.
    Tensor u = leaf({b, d, cs.L}), delta = leaf({b, d, cs.L}, 0.1, 0.6), A = leaf({d, cs.n}, -1.5, -0.2),
           B = leaf(bc), C = leaf(bc), D = leaf({d}), z = leaf({b, d, cs.L}), bias = leaf({d}, 0.0, 0.3),
           h0 = leaf({b, d, cs.n});
    bool has_z = cs.has_z, sp = cs.softplus;
    auto f = [has_z, sp](const std::vector<Tensor>& in) {
      auto r = selective_scan(in[0], in[1], in[2], in[3], in[4], in[5], has_z ? in[6] : Tensor(), in[7], sp, in[8],
                              true);
      return std::vector<Tensor>{r.out, r.last_state};
    };
    GradcheckOptions opt;
    opt.atol = 1e-6;
    check_gradcheck(f, {u, delta, A, B, C, D, z, bias, h0}, opt);
  }
}

TEST_CASE("gradcheck: selective_scan_dt_proj (delta = W @ dt, recomputed in the backward)") {
  const int64_t b = 2, d = 5, r = 3, L = 9, n = 4;
  Tensor u = leaf({b, d, L}), dt = leaf({b, r, L}, -0.5, 0.5), W = leaf({d, r}), A = leaf({d, n}, -1.5, -0.2),
         B = leaf({b, n, L}), C = leaf({b, n, L}), D = leaf({d}), z = leaf({b, d, L}), bias = leaf({d}, -1.0, 0.3);
  auto f = [](const std::vector<Tensor>& in) {
    auto res = selective_scan_dt_proj(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], true);
    return std::vector<Tensor>{res.out};
  };
  GradcheckOptions opt;
  opt.atol = 1e-6;
  check_gradcheck(f, {u, dt, W, A, B, C, D, z, bias}, opt);

  // Equal (values and every gradient) to the scan of an explicit matmul.
  Tensor gout = leaf({b, d, L}, -1.0, 1.0, 99).detach();
  auto grads = [&](bool fused) {
    std::vector<Tensor> in;
    for (const Tensor& t : {u, dt, W, A, B, C, D, z, bias}) in.push_back(t.detach().clone().set_requires_grad(true));
    Tensor y = fused ? selective_scan_dt_proj(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8]).out
                     : selective_scan(in[0], matmul(in[2], in[1]), in[3], in[4], in[5], in[6], in[7], in[8]).out;
    backward(y, gout);
    std::vector<Tensor> out{y.detach()};
    for (const Tensor& t : in) out.push_back(t.grad());
    return out;
  };
  std::vector<Tensor> a = grads(true), e = grads(false);
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    auto x = a[i].to_vector(), y = e[i].to_vector();
    REQUIRE(x.size() == y.size());
    for (size_t k = 0; k < x.size(); ++k) CHECK(x[k] == doctest::Approx(y[k]).epsilon(1e-12));
  }
  CHECK_THROWS_WITH_AS(selective_scan_dt_proj(u, dt, leaf({d, r + 1}), A, B, C), doctest::Contains("dt_weight"), Error);
}

TEST_CASE("selective_scan: argument errors name the tensor and shape") {
  Tensor u = leaf({2, 3, 5});
  CHECK_THROWS_WITH_AS(selective_scan(u, u, leaf({4, 2}), leaf({2, 2, 5}), leaf({2, 2, 5})),
                       doctest::Contains("A must be (3, N)"), Error);
  CHECK_THROWS_WITH_AS(selective_scan(u, u, leaf({3, 2}), leaf({2, 2, 4}), leaf({2, 2, 5})),
                       doctest::Contains("B must be (2, 2, 5) (selective) or (3, 2)"), Error);
  CHECK_THROWS_WITH_AS(selective_scan(u, leaf({2, 3, 4}), leaf({3, 2}), leaf({2, 2, 5}), leaf({2, 2, 5})),
                       doctest::Contains("delta must have shape [2, 3, 5]"), Error);
}

TEST_CASE("cross_entropy: values, ignore_index, gradient") {
  Tensor logits = leaf({5, 7}, -3, 3);
  Tensor t = Tensor::from_ints({1, 6, -100, 0, 3}, {5});
  Tensor loss = cross_entropy(logits, t);
  // Reference: mean over the 4 valid rows of logsumexp - logit[target].
  Tensor lse = log(sum(exp(logits), {1}));
  auto lv = logits.to_vector(), lsev = lse.to_vector();
  std::vector<int> tv = {1, 6, -100, 0, 3};
  double ref = 0;
  for (int i = 0; i < 5; ++i)
    if (tv[size_t(i)] >= 0) ref += lsev[size_t(i)] - lv[size_t(i * 7 + tv[size_t(i)])];
  CHECK(loss.item() == doctest::Approx(ref / 4).epsilon(1e-12));
  check_gradcheck([&](auto& in) { return std::vector<Tensor>{cross_entropy(in[0], t)}; }, {logits});
  Tensor l3 = leaf({2, 3, 50}, -3, 3);
  Tensor t3 = Tensor::from_ints({0, 49, 7, -1, 3, 3}, {2, 3}, DType::i32);
  check_gradcheck([&](auto& in) { return std::vector<Tensor>{cross_entropy(in[0], t3, -1)}; }, {l3});
  // Stable for large logits.
  Tensor big = Tensor::from_vector({1e4, 0, -1e4}, {1, 3}, DType::f32);
  CHECK(cross_entropy(big, Tensor::from_ints({0}, {1})).item() == doctest::Approx(0.0));
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_ints({1, 2, 3, 4, 7}, {5})),
                       doctest::Contains("has target 7"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_ints({1, 2}, {2})), doctest::Contains("do not match logits"),
                       Error);
}

TEST_CASE("selective_scan: the f32 CPU path (vectorised exp) agrees with f64") {
  const int64_t b = 2, d = 96, L = 300, n = 16;
  Tensor u = leaf({b, d, L}), delta = leaf({b, d, L}, -4.0, 1.0), A = leaf({d, n}, -2.0, -0.1), B = leaf({b, n, L}),
         C = leaf({b, n, L}), D = leaf({d}), z = leaf({b, d, L}), bias = leaf({d}), h0 = leaf({b, d, n});
  std::vector<Tensor> in64{u, delta, A, B, C, D, z, bias, h0}, in32;
  for (const Tensor& t : in64) in32.push_back(t.detach().to(DType::f32).set_requires_grad(true));
  auto run = [](const std::vector<Tensor>& in) {
    auto r = selective_scan(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], true, in[8], true);
    backward({r.out, r.last_state}, {ones_like(r.out), ones_like(r.last_state)});
    return r;
  };
  auto r64 = run(in64), r32 = run(in32);
  auto rel = [](const Tensor& a, const Tensor& ref) {
    auto x = a.to_vector(), y = ref.to_vector();
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); ++i) num += (x[i] - y[i]) * (x[i] - y[i]), den += y[i] * y[i];
    return std::sqrt(num / std::max(den, 1e-300));
  };
  CHECK(rel(r32.out, r64.out) < 1e-5);
  CHECK(rel(r32.last_state, r64.last_state) < 1e-5);
  for (size_t i = 0; i < in64.size(); ++i) {
    CAPTURE(i);
    CHECK(rel(in32[i].grad(), in64[i].grad()) < 1e-5);
  }
}
