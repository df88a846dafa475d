// linear_cross_entropy: the fused, chunked LM head + loss against the unfused
// matmul + cross_entropy (values and gradients, ignored rows, every kind of
// chunking), a float64 gradcheck, MambaLM's loss with its tied weight, and
// CUDA parity with the CPU (skipped without a GPU).
#include <random>

#include "helpers.h"
#include "nn/mamba_lm.h"
#include "ops/linear_cross_entropy.h"

using namespace coil;
using namespace coil::test;

namespace {

// Targets in [0, V) with every third row (from `first`) set to ignore_index.
Tensor make_targets(int64_t M, int64_t V, int64_t ignore, DType dt = DType::i64, int64_t first = 1) {
  std::vector<int64_t> t(static_cast<size_t>(M));
  for (int64_t i = 0; i < M; ++i) t[size_t(i)] = (i * 7919 + 3) % V;  // spread over the row
  for (int64_t i = first; i < M; i += 3) t[size_t(i)] = ignore;
  return Tensor::from_ints(t, {M}, dt);
}

struct Result {
  Tensor loss, dh, dw;
};

// Loss and gradients for fresh copies of h0, w0 (fused or not).
Result run(const Tensor& h0, const Tensor& w0, const Tensor& t, int64_t ignore, int64_t chunk, bool fused) {
  Tensor h = h0.clone().detach(), w = w0.clone().detach();
  h.set_requires_grad(true);
  w.set_requires_grad(true);
  Tensor loss = fused ? linear_cross_entropy(h, w, t, ignore, chunk)
                      : cross_entropy(matmul(h, transpose(w, 0, 1)), t, ignore);
  backward(loss);
  return {loss.detach(), h.grad(), w.grad()};
}

}  // namespace

TEST_CASE("linear_cross_entropy: float64 gradcheck, chunked, with ignored rows") {
  Tensor h = leaf({7, 5}), w = leaf({11, 5});
  Tensor t = make_targets(7, 11, -1);
  for (int64_t chunk : {1, 3, 7, 64})
    check_gradcheck([&](auto& in) { return std::vector<Tensor>{linear_cross_entropy(in[0], in[1], t, -1, chunk)}; },
                    {h, w});
}

TEST_CASE("linear_cross_entropy: equals matmul + cross_entropy for every chunking") {
  const int64_t M = 10, d = 6, V = 13;
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    Generator g{11, 0};
    Tensor h0 = rand({M, d}, dt, Device::cpu(), &g, -2, 2), w0 = rand({V, d}, dt, Device::cpu(), &g, -2, 2);
    for (DType tdt : {DType::i64, DType::i32}) {
      Tensor t = make_targets(M, V, -100, tdt);
      Result ref = run(h0, w0, t, -100, 0, false);
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      for (int64_t chunk : {1, 3, 4, 7, 10, 100, 0}) {  // 0: the default
        CAPTURE(chunk);
        Result r = run(h0, w0, t, -100, chunk, true);
        CHECK(r.loss.dtype() == ref.loss.dtype());
        CHECK(r.loss.dim() == 0);
        CHECK(max_abs_diff(r.loss, ref.loss) < tol);
        CHECK(r.dh.dtype() == dt);
        CHECK(r.dw.dtype() == dt);
        CHECK(max_abs_diff(r.dh, ref.dh) < tol);
        CHECK(max_abs_diff(r.dw, ref.dw) < tol);
      }
    }
  }
}

TEST_CASE("linear_cross_entropy: no-grad value, all rows ignored, empty batch, dloss scaling") {
  Generator g{3, 0};
  Tensor h = rand({5, 4}, DType::f64, Device::cpu(), &g), w = rand({9, 4}, DType::f64, Device::cpu(), &g);
  Tensor t = make_targets(5, 9, -100);
  double ref = cross_entropy(matmul(h, transpose(w, 0, 1)), t).item();
  {
    NoGradGuard ng;
    CHECK(linear_cross_entropy(h, w, t, -100, 2).item() == doctest::Approx(ref).epsilon(1e-12));
  }
  // Every row ignored: loss 0, zero gradients (as cross_entropy).
  Result r = run(h, w, Tensor::from_ints({-100, -100, -100, -100, -100}, {5}), -100, 2, true);
  CHECK(r.loss.item() == 0.0);
  CHECK(max_abs_diff(r.dh, zeros({5, 4}, DType::f64)) == 0.0);
  CHECK(max_abs_diff(r.dw, zeros({9, 4}, DType::f64)) == 0.0);
  // No rows: loss 0, a zero weight gradient.
  Result e = run(Tensor::empty({0, 4}, DType::f64), w, Tensor::empty({0}, DType::i64), -100, 2, true);
  CHECK(e.loss.item() == 0.0);
  CHECK(max_abs_diff(e.dw, zeros({9, 4}, DType::f64)) == 0.0);
  // A non-unit dloss scales both gradients.
  Tensor h2 = h.clone().detach().set_requires_grad(true), w2 = w.clone().detach().set_requires_grad(true);
  backward(mul(linear_cross_entropy(h2, w2, t, -100, 2), 3.0));
  Result one = run(h, w, t, -100, 2, true);
  CHECK(max_abs_diff(h2.grad(), mul(one.dh, 3.0)) < 1e-12);
  CHECK(max_abs_diff(w2.grad(), mul(one.dw, 3.0)) < 1e-12);
}

TEST_CASE("linear_cross_entropy: bf16 h with f32 master weight on the CPU") {
  Generator g{5, 0};
  Tensor hf = rand({9, 8}, DType::f32, Device::cpu(), &g).to(DType::bf16).to(DType::f32);
  Tensor w = rand({17, 8}, DType::f32, Device::cpu(), &g);
  Tensor t = make_targets(9, 17, -100);
  Result ref = run(hf, w, t, -100, 0, false);
  Tensor hb = hf.to(DType::bf16).detach().set_requires_grad(true), wl = w.clone().detach().set_requires_grad(true);
  Tensor loss = linear_cross_entropy(hb, wl, t, -100, 4);
  CHECK(loss.dtype() == DType::f32);
  backward(loss);
  CHECK(hb.grad().dtype() == DType::bf16);
  CHECK(wl.grad().dtype() == DType::f32);
  CHECK(max_abs_diff(loss, ref.loss) < 1e-5);
  CHECK(max_abs_diff(wl.grad(), ref.dw) < 1e-5);
  CHECK(max_abs_diff(hb.grad(), ref.dh) < 1e-2);
}

TEST_CASE("linear_cross_entropy: bad arguments name the tensor at fault") {
  Tensor h = zeros({4, 3}), w = zeros({7, 3}), t = Tensor::from_ints({0, 1, 2, 3}, {4});
  CHECK_THROWS_WITH_AS(linear_cross_entropy(zeros({2, 2, 3}), w, t), doctest::Contains("h must be (M, d)"),
                       Error);
  CHECK_THROWS_WITH_AS(linear_cross_entropy(h, zeros({7, 4}), t), doctest::Contains("weight must be (V, 3)"),
                       Error);
  CHECK_THROWS_WITH_AS(linear_cross_entropy(h, w, Tensor::from_ints({0, 1}, {2})),
                       doctest::Contains("targets must be (4)"), Error);
  CHECK_THROWS_WITH_AS(linear_cross_entropy(h, w, zeros({4})), doctest::Contains("i32 or i64"), Error);
  CHECK_THROWS_WITH_AS(linear_cross_entropy(h, zeros({7, 3}, DType::f64), t),
                       doctest::Contains("weight must have h's dtype"), Error);
  CHECK_THROWS_WITH_AS(linear_cross_entropy(h, w, Tensor::from_ints({0, 1, 9, 3}, {4})),
                       doctest::Contains("target 9"), Error);
}

TEST_CASE("MambaLM::loss (fused head) matches logits + cross_entropy, tied weight gradient included") {
  nn::MambaConfig cfg;
  cfg.d_model = 16;
  cfg.n_layer = 2;
  cfg.vocab_size = 29;
  cfg.param_dtype = DType::f64;
  cfg.compute_dtype = DType::f64;
  nn::MambaLM m(cfg, 7, Device::cpu());
  Tensor x = Tensor::from_ints({1, 5, 9, 2, 28, 0, 3, 3, 7, 11}, {2, 5});
  Tensor y = Tensor::from_ints({5, 9, 2, 28, -100, 3, 3, 7, 11, 4}, {2, 5});
  std::vector<Tensor> ps = m.parameters();
  Tensor fused = m.loss(x, y);
  backward(fused);
  std::vector<Tensor> gf;
  for (auto& p : ps) gf.push_back(p.grad());
  m.zero_grad();
  Tensor logits = m.forward(x);
  Tensor ref = cross_entropy(reshape(logits, {-1, logits.size(-1)}), reshape(y, {-1}));
  backward(ref);
  CHECK(max_abs_diff(fused, ref) < 1e-12);
  for (size_t i = 0; i < ps.size(); ++i) {
    CAPTURE(i);
    REQUIRE(gf[i].defined());
    CHECK(max_abs_diff(gf[i], ps[i].grad()) < 1e-12);
  }
}

// ------------------------------------------------------------------ CUDA

TEST_CASE("cuda parity: linear_cross_entropy against the CPU (bf16, f32, f32 master weight)") {
  if (skip_without_gpu()) return;
  set_poison_allocations(true);
  struct Case {
    DType h, w;
    int64_t M, d, V, chunk;
  };
  Generator g{uint64_t(std::random_device{}()), 0};
  for (Case c : {Case{DType::f32, DType::f32, 300, 72, 1037, 128}, Case{DType::bf16, DType::bf16, 300, 72, 1037, 128},
                 Case{DType::bf16, DType::f32, 257, 64, 2053, 100}, Case{DType::bf16, DType::f32, 70, 40, 515, 0},
                 Case{DType::f32, DType::f32, 5, 16, 33, 1},
                 // Vocabularies a multiple of 8 take the 16-bit register-resident
                 // kernel: the smallest register tile, a partly filled one, the
                 // LM's 50280 (the largest tile) and one past it (the scalar kernel).
                 Case{DType::bf16, DType::bf16, 41, 24, 1040, 16}, Case{DType::bf16, DType::f32, 19, 16, 26632, 7},
                 Case{DType::bf16, DType::f32, 23, 16, 50280, 0}, Case{DType::bf16, DType::bf16, 9, 8, 57352, 4}}) {
    CAPTURE(dtype_name(c.h));
    CAPTURE(dtype_name(c.w));
    CAPTURE(c.chunk);
    const double tol = c.h == DType::bf16 ? 1e-2 : 1e-5;
    // Values representable in the GPU dtypes, so both sides see the same inputs.
    Tensor h0 = rand({c.M, c.d}, DType::f32, Device::cpu(), &g, -1, 1).to(c.h).to(DType::f32);
    Tensor w0 = rand({c.V, c.d}, DType::f32, Device::cpu(), &g, -1, 1).to(c.w).to(DType::f32);
    Tensor t = make_targets(c.M, c.V, -100, DType::i64, 2);
    Result ref = run(h0, w0, t, -100, c.chunk, true);
    Tensor hg = h0.to(Device::cuda(0)).to(c.h).detach().set_requires_grad(true);
    Tensor wg = w0.to(Device::cuda(0)).to(c.w).detach().set_requires_grad(true);
    Tensor loss = linear_cross_entropy(hg, wg, t.to(Device::cuda(0)), -100, c.chunk);
    backward(loss);
    CHECK(loss.dtype() == DType::f32);
    CHECK(rel_err(loss, ref.loss) < tol);
    REQUIRE(hg.grad().defined());
    REQUIRE(wg.grad().defined());
    CHECK(hg.grad().dtype() == c.h);
    CHECK(wg.grad().dtype() == c.w);
    CHECK(rel_err(hg.grad(), ref.dh) < tol * 2);
    CHECK(rel_err(wg.grad(), ref.dw) < tol * 2);
    // Without grad (the kernel that leaves the logits alone).
    NoGradGuard ng;
    CHECK(rel_err(linear_cross_entropy(hg, wg, t.to(Device::cuda(0)), -100, c.chunk), ref.loss) < tol);
  }
  set_poison_allocations(false);
}

TEST_CASE("cuda: linear_cross_entropy's forward + backward never hold the (M, V) logits") {
  if (skip_without_gpu()) return;
  const int64_t M = 16384, d = 256, V = 50280, chunk = 1024;
  const double logits = double(M) * double(V) * 2;  // bf16: 1.5 GiB
  Generator g{9, 0};
  Device dev = Device::cuda(0);
  Tensor h = mul(randn({M, d}, DType::f32, dev, &g), 0.1).to(DType::bf16).detach().set_requires_grad(true);
  Tensor w = mul(randn({V, d}, DType::f32, dev, &g), 0.1).detach().set_requires_grad(true);
  Tensor t = randint(0, V, {M}, DType::i64, dev, &g);
  cuda_ctx::synchronize(0);
  const size_t before = cuda_ctx::memory_stats(0).used;
  cuda_ctx::reset_peak_memory(0);
  backward(linear_cross_entropy(h, w, t, -100, chunk));
  cuda_ctx::synchronize(0);
  const double extra = double(cuda_ctx::memory_stats(0).peak_used - before);
  INFO("peak extra memory " << extra / (1 << 20) << " MiB vs logits " << logits / (1 << 20) << " MiB");
  // One bf16 chunk (98 MiB), dh and dW in f32 (16 + 49 MiB), W in bf16, the gradients.
  CHECK(extra < logits / 4);
  CHECK(std::isfinite(h.grad().to(DType::f32).to(Device::cpu()).to_vector()[0]));
}
