// ops/matmul: values against a naive product, transposed and batched
// operands, and gradients.
#include "helpers.h"

using namespace coil;
using namespace coil::test;

namespace {
Tensor naive(const Tensor& a, const Tensor& b) {  // 2-D only
  auto x = a.to_vector(), y = b.to_vector();
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  std::vector<double> o(size_t(M * N), 0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) o[size_t(i * N + j)] += x[size_t(i * K + k)] * y[size_t(k * N + j)];
  return Tensor::from_vector(o, {M, N}, DType::f64);
}
}  // namespace

TEST_CASE("matmul: 2-D, transposed views, folded leading dims, batched") {
  Tensor a = leaf({5, 7}), b = leaf({7, 3});
  CHECK(max_abs_diff(matmul(a, b), naive(a, b)) < 1e-12);
  Tensor at = leaf({7, 5}).t(), bt = leaf({3, 7}).t();  // column-major views
  CHECK(max_abs_diff(matmul(at, bt), naive(at.contiguous(), bt.contiguous())) < 1e-12);
  Tensor x = leaf({2, 4, 7});
  Tensor y = matmul(x, b);
  CHECK(y.shape() == Shape{2, 4, 3});
  CHECK(max_abs_diff(y.narrow(0, 1, 1).reshape({4, 3}), naive(x.narrow(0, 1, 1).reshape({4, 7}), b)) < 1e-12);
  Tensor p = leaf({2, 7, 3});
  Tensor z = matmul(x, p);
  CHECK(max_abs_diff(z.narrow(0, 1, 1).reshape({4, 3}),
                     naive(x.narrow(0, 1, 1).reshape({4, 7}), p.narrow(0, 1, 1).reshape({7, 3}))) < 1e-12);
  // f32 and bf16 go through the same BLAS path.
  CHECK(max_abs_diff(matmul(a.to(DType::f32), b.to(DType::f32)), naive(a, b)) < 1e-5);
  CHECK(max_abs_diff(matmul(a.to(DType::bf16), b.to(DType::bf16)), naive(a, b)) < 5e-2);
  CHECK_THROWS_WITH_AS(matmul(a, a), doctest::Contains("inner dims differ"), Error);
}

TEST_CASE("gradcheck: matmul and linear") {
  Tensor a = leaf({4, 6}), b = leaf({6, 3}), x = leaf({2, 3, 6}), bb = leaf({2, 6, 5}), w = leaf({5, 6}),
         bias = leaf({5});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; }, {a, b});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0].t(), in[0])}; }, {a});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; }, {x, bb});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0], in[1].narrow(0, 0, 1))}; }, {x, bb});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{linear(in[0], in[1], in[2])}; }, {x, w, bias});
}

TEST_CASE("embedding: lookup, gradient, range error") {
  Tensor w = leaf({6, 3});
  Tensor idx = Tensor::from_ints({0, 5, 5, 2}, {2, 2});
  Tensor e = embedding(w, idx);
  CHECK(e.shape() == Shape{2, 2, 3});
  CHECK(e.to_vector()[3] == w.to_vector()[15]);
  check_gradcheck([&](auto& in) { return std::vector<Tensor>{embedding(in[0], idx)}; }, {w});
  check_gradcheck([&](auto& in) { return std::vector<Tensor>{embedding(in[0], idx.to(DType::i32))}; }, {w});
  CHECK_THROWS_WITH_AS(embedding(w, Tensor::from_ints({6}, {1})), doctest::Contains("index 6 at position 0"), Error);
}

TEST_CASE("matmul backward: a weight broadcast over a batch, and gradients in the layout of transposed inputs") {
  Tensor w = leaf({4, 6}), x = leaf({3, 6, 5}), x4 = leaf({2, 2, 6, 5}), y = leaf({3, 6, 5}), wt = leaf({4, 6});
  Tensor z = leaf({3, 5, 6});
  // W (4, 6) @ x (B, 6, L): W's gradient is summed over the batch (Mamba's x_proj, dt_proj).
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; }, {w, x});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; }, {w, x4});
  // A transposed 3-D input folded against a transposed weight (Mamba's out_proj).
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0].transpose(1, 2), in[1].t())}; }, {y, wt});
  // A weight against a transposed batch (both of dA's paths and dB's).
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[1], in[0].transpose(1, 2))}; }, {z, wt});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0].transpose(1, 2), in[1])}; },
                  {z, leaf({3, 5, 4})});

  // The summed weight gradient equals the sum of per-sequence products.
  Tensor g = rand({3, 4, 5}, DType::f64), w2 = leaf({4, 6});
  backward(matmul(w2, x.detach()), g);
  Tensor ref = zeros({4, 6}, DType::f64);
  for (int64_t i = 0; i < 3; ++i) ref = add(ref, matmul(g.narrow(0, i, 1).squeeze(0), x.narrow(0, i, 1).squeeze(0).t()));
  CHECK(max_abs_diff(w2.grad(), ref) < 1e-12);
  CHECK(w2.grad().is_contiguous());
  // A transposed (B, L, D) view with many rows against a 2-D (transposed) weight: a batched GEMM
  // against the broadcast weight instead of a copy to fold (Mamba's out_proj, in_proj's dh).
  Tensor yl = leaf({2, 3, 70}), wl3 = leaf({4, 3});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0].transpose(1, 2), in[1].t())}; }, {yl, wl3});
  check_gradcheck([](auto& in) { return std::vector<Tensor>{matmul(in[0].transpose(1, 2), in[1])}; },
                  {yl, leaf({3, 4})});
  // A weight gradient too large for a (B, M, K) temporary: one accumulating GEMM per batch entry.
  Tensor wb = leaf({2048, 2049}), xb = rand({2, 2049, 1}, DType::f64), gb = rand({2, 2048, 1}, DType::f64);
  backward(matmul(wb, xb), gb);
  Tensor refb = add(matmul(gb.narrow(0, 0, 1).squeeze(0), xb.narrow(0, 0, 1).squeeze(0).t()),
                    matmul(gb.narrow(0, 1, 1).squeeze(0), xb.narrow(0, 1, 1).squeeze(0).t()));
  CHECK(max_abs_diff(wb.grad(), refb) < 1e-12);

  // linear's weight enters as W^T: its gradient comes back contiguous (out, in),
  // and a transposed (B, L, D) view's gradient has the view's layout, so the
  // transpose's backward hands on a contiguous (B, D, L).
  Tensor xin = leaf({7, 6}), wl = leaf({4, 6});
  backward(sum(linear(xin, wl)));
  CHECK(wl.grad().is_contiguous());
  Tensor yb = leaf({3, 6, 5});
  backward(sum(linear(yb.transpose(1, 2), wl)));
  CHECK(yb.grad().is_contiguous());
}

TEST_CASE("linear_into: equals linear, in place of a given buffer; bad operands name the operand") {
  Generator g{fresh_seed(), 0};
  std::vector<Device> devs = {Device::cpu()};
  if (cuda_available()) devs.push_back(Device::cuda());
  for (Device dev : devs)
    for (DType dt : {DType::f32, DType::bf16}) {
      CAPTURE(dev.str());
      CAPTURE(dtype_name(dt));
      Tensor x = rand({9, 40}, DType::f32, dev, &g).to(dt), w = rand({37, 40}, DType::f32, dev, &g).to(dt);
      Tensor out = full({9, 37}, NAN, dt, dev);
      const void* p = out.data_ptr();
      linear_into(x, w, out);
      CHECK(out.data_ptr() == p);
      CHECK(rel_err(out.to(DType::f32), linear(x, w).to(DType::f32)) == 0);  // the same GEMM
    }
  Tensor x = rand({9, 40}, DType::f32, Device::cpu(), &g), w = rand({37, 40}, DType::f32, Device::cpu(), &g);
  CHECK_THROWS_WITH(linear_into(x, w, zeros({9, 36}, DType::f32)), doctest::Contains("linear_into: out"));
  CHECK_THROWS_WITH(linear_into(x, rand({37, 41}, DType::f32, Device::cpu(), &g), zeros({9, 37}, DType::f32)),
                    doctest::Contains("does not match x"));
  CHECK_THROWS_WITH(linear_into(x, w, transpose(zeros({37, 9}, DType::f32), 0, 1)),
                    doctest::Contains("out must be contiguous"));
  CHECK_THROWS(linear_into(x, w, zeros({9, 37}, DType::f64)));
}
