// CUDA parity of the general ops against the CPU kernels: fresh random
// inputs each run, odd sizes, outputs poisoned (NaN) before every kernel,
// forward values and gradients. Skipped where no GPU is present.
#include <random>

#include "helpers.h"
#include "nn/mamba_lm.h"
#include "optim/adamw.h"

using namespace coil;
using namespace coil::test;

namespace {

double tol(DType d) { return d == DType::bf16 ? 1e-2 : 1e-5; }

// Runs f on CPU f32 copies and on CUDA tensors of dtype dt; compares the
// output and the gradient of every input.
void parity(const char* name, std::vector<Shape> shapes, DType dt,
            const std::function<Tensor(const std::vector<Tensor>&)>& f, double lo = -1, double hi = 1) {
  CAPTURE(std::string(name));
  CAPTURE(dtype_name(dt));
  Poison poison;
  Generator g = fresh();
  std::vector<Tensor> cpu_in, gpu_in;
  for (auto& s : shapes) {
    Tensor base = rand(s, DType::f32, Device::cpu(), &g, lo, hi).to(dt).to(DType::f32);  // representable in dt
    Tensor c = base.clone().detach(), d = base.to(Device::cuda(0)).to(dt).detach();
    c.set_requires_grad(true);
    d.set_requires_grad(true);
    cpu_in.push_back(c);
    gpu_in.push_back(d);
  }
  Tensor yc = f(cpu_in), yg = f(gpu_in);
  CHECK(yg.is_cuda());
  CHECK(rel_err(yg.to(Device::cpu()).to(DType::f32), yc) < tol(dt));
  Tensor w = randn(yc.shape(), DType::f32, Device::cpu(), &g);
  backward(yc, w);
  backward(yg, w.to(Device::cuda(0)).to(yg.dtype()));
  for (size_t i = 0; i < shapes.size(); ++i) {
    CAPTURE(i);
    if (!cpu_in[i].grad().defined()) {  // an input this case does not use
      CHECK(!gpu_in[i].grad().defined());
      continue;
    }
    REQUIRE(gpu_in[i].grad().defined());
    CHECK(rel_err(gpu_in[i].grad().to(Device::cpu()).to(DType::f32), cpu_in[i].grad()) < tol(dt) * 2);
  }
}

}  // namespace

TEST_CASE("cuda parity: elementwise unary and binary with broadcasting") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    Shape s{3, 257, 7};
    parity("exp", {s}, dt, [](auto& in) { return exp(in[0]); });
    parity("silu", {s}, dt, [](auto& in) { return silu(in[0]); });
    parity("softplus", {s}, dt, [](auto& in) { return softplus(in[0] * 30.0); });
    parity("sigmoid", {s}, dt, [](auto& in) { return sigmoid(in[0]); });
    parity("tanh", {s}, dt, [](auto& in) { return tanh(in[0]); });
    parity("log sqrt rsqrt", {s}, dt, [](auto& in) { return log(in[0]) + sqrt(in[0]) * rsqrt(in[0]); }, 0.5, 2);
    parity("pow clamp", {s}, dt, [](auto& in) { return pow(in[0], 3.0) + clamp_min(in[0], 0.1); });
    parity("scalar ops", {s}, dt, [](auto& in) { return (2.0 - in[0]) * 0.5 + 1.0; });
    parity("add sub broadcast", {s, {257, 1}}, dt, [](auto& in) { return in[0] + in[1] - in[1] * 2.0; });
    parity("mul div broadcast", {s, {7}}, dt, [](auto& in) { return in[0] * in[1] / (in[1] * in[1] + 1.0); });
    parity("transposed operand", {{5, 9}, {9, 5}}, dt, [](auto& in) { return in[0] * in[1].t(); });
  }
}

TEST_CASE("cuda parity: reductions, views, copies") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    parity("sum dims", {{4, 33, 65}}, dt, [](auto& in) { return sum(in[0], {0, 2}); });
    parity("sum all", {{1000, 3}}, dt, [](auto& in) { return sum(in[0]); });
    // Rows longer than one block's slice take the two-stage path.
    parity("sum long rows", {{3, 70001}}, dt, [](auto& in) { return sum(in[0], {1}); });
    // Leading dims of a contiguous tensor: reduced as columns in place (the
    // batch sum of a broadcast weight's gradient); dims given out of order;
    // keepdim; max too (its gradient goes to the column's maximum).
    parity("sum leading dim (columns)", {{33, 4097}}, dt, [](auto& in) { return sum(in[0], {0}); });
    parity("sum leading dims (columns)", {{3, 7, 5003}}, dt, [](auto& in) { return sum(in[0], {1, 0}, true); });
    parity("amax leading dim (columns)", {{5, 4099}}, dt, [](auto& in) { return amax(in[0], {0}); });
    parity("sum all, long", {{300, 1001}}, dt, [](auto& in) { return sum(in[0]); });
    parity("amax long rows", {{2, 50001}}, dt, [](auto& in) { return amax(in[0], {1}); });
    parity("mean", {{7, 513}}, dt, [](auto& in) { return mean(in[0], {-1}, true); });
    parity("amax", {{6, 129}}, dt, [](auto& in) { return amax(in[0], {1}); });
    parity("permute contiguous", {{3, 4, 5}}, dt, [](auto& in) { return in[0].permute({2, 0, 1}).contiguous() * 1.0; });
    parity("narrow concat", {{3, 10}}, dt,
           [](auto& in) { return concat({in[0].narrow(1, 2, 5), exp(in[0].narrow(1, 0, 3))}, 1); });
    parity("expand", {{1, 7}}, dt, [](auto& in) { return in[0].expand({5, 7}) * 1.0; });
    // Rows contiguous but strided between them (the 16-byte rows path): a
    // permuted view, a slice of rows, and a row length that is not a multiple
    // of the vector (the scalar path).
    parity("strided rows", {{6, 5, 64}}, dt, [](auto& in) { return exp(in[0].permute({1, 0, 2})).contiguous(); });
    parity("sliced rows", {{6, 5, 72}}, dt, [](auto& in) { return in[0].narrow(2, 8, 64) + in[0].narrow(2, 0, 64); });
    parity("odd rows", {{6, 5, 37}}, dt, [](auto& in) { return in[0].permute({1, 0, 2}) * 2.0; });
  }
  // dtype casts on the device
  Generator g = fresh();
  Tensor x = randn({1001}, DType::f32, Device::cpu(), &g);
  for (DType dt : {DType::bf16, DType::f16, DType::f64, DType::i32}) {
    CAPTURE(dtype_name(dt));
    CHECK(x.to(Device::cuda(0)).to(dt).to(Device::cpu()).to_vector() == x.to(dt).to_vector());
  }
}

TEST_CASE("cuda parity: matmul (transposes, batches, folded), embedding") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    parity("matmul", {{37, 65}, {65, 19}}, dt, [](auto& in) { return matmul(in[0], in[1]); });
    parity("matmul transposed", {{65, 37}, {19, 65}}, dt, [](auto& in) { return matmul(in[0].t(), in[1].t()); });
    parity("matmul folded", {{3, 11, 65}, {65, 19}}, dt, [](auto& in) { return matmul(in[0], in[1]); });
    parity("bmm", {{3, 11, 65}, {3, 65, 19}}, dt, [](auto& in) { return matmul(in[0], in[1]); });
    parity("bmm broadcast", {{3, 11, 65}, {1, 65, 19}}, dt, [](auto& in) { return matmul(in[0], in[1]); });
    parity("weight over a batch", {{19, 65}, {3, 65, 37}}, dt, [](auto& in) { return matmul(in[0], in[1]); });
    parity("transposed, folded", {{3, 65, 37}, {19, 65}}, dt,
           [](auto& in) { return matmul(in[0].transpose(1, 2), in[1].t()); });
    // 64 rows or more: batched against the broadcast weight, no fold copy (out_proj, in_proj's dh)
    parity("transposed, batched", {{3, 65, 70}, {19, 65}}, dt,
           [](auto& in) { return matmul(in[0].transpose(1, 2), in[1].t()); });
    parity("weight @ transposed batch", {{19, 65}, {3, 70, 65}}, dt,
           [](auto& in) { return matmul(in[0], in[1].transpose(1, 2)); });
    parity("linear", {{2, 9, 33}, {17, 33}, {17}}, dt, [](auto& in) { return linear(in[0], in[1], in[2]); });
  }
  Generator g = fresh();
  Tensor idx = randint(0, 50, {3, 41}, DType::i64, Device::cpu(), &g);
  Tensor idx_gpu = idx.to(Device::cuda(0));
  parity("embedding", {{50, 24}}, DType::f32, [&](auto& in) {
    return embedding(in[0], in[0].is_cuda() ? idx_gpu : idx);
  });
}

TEST_CASE("cuda: the same inputs give bit-identical results") {
  if (skip_without_gpu()) return;
  Generator g = fresh();
  Tensor a = randn({300, 513}, DType::f32, Device::cuda(0), &g);
  Tensor b = randn({513, 65}, DType::f32, Device::cuda(0), &g);
  CHECK(matmul(a, b).to_vector() == matmul(a, b).to_vector());
  CHECK(sum(a, {0}).to_vector() == sum(a, {0}).to_vector());
  Tensor wide = randn({32, 9000}, DType::f32, Device::cuda(0), &g);  // the column path
  CHECK(sum(wide, {0}).to_vector() == sum(wide, {0}).to_vector());
  CHECK(sum(a).to_vector() == sum(a).to_vector());
}

TEST_CASE("cuda parity: fused add+RMSNorm (residual, fp32 residual stream)") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t cols : {3, 7, 768, 2560}) {  // (1 column is ill-conditioned: dx ~ eps)
      CAPTURE(cols);
      parity("rms_norm", {{3, 5, cols}, {cols}}, dt, [](auto& in) { return rms_norm(in[0], in[1]).y; });
      parity("rms_norm residual", {{37, cols}, {cols}, {37, cols}}, dt, [](auto& in) {
        auto o = rms_norm(in[0], in[1], 1e-5, in[2]);
        return o.y * 2.0 + o.residual.to(o.y.dtype());
      });
    }
  }
  Generator g = fresh();
  Tensor x = randn({4, 96}, DType::bf16, Device::cuda(0), &g), w = ones({96}, DType::f32, Device::cuda(0));
  auto o = rms_norm(x, w, 1e-5, Tensor(), /*residual_in_fp32=*/true);
  CHECK(o.residual.dtype() == DType::f32);
  CHECK(o.y.dtype() == DType::bf16);
}

// The backward's row kernel: a warp (cols <= 1024) or four warps per row,
// 4-wide chunks when cols % 4 == 0, scalar ones otherwise; wider rows or
// cols > 1024 without 4-wide chunks go to the block kernel. 5000 rows make
// every team walk several rows (dw held across rows, the 4-warp kernel's
// double-buffered row sums).
TEST_CASE("cuda parity: RMSNorm backward row kernel (odd widths, many rows, fp32 residual stream)") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t cols : {3, 7, 128, 130, 257, 260, 768, 1001, 1024, 1025, 1028, 2560, 3076, 4096}) {
      CAPTURE(cols);
      parity("rms_norm both outputs", {{37, cols}, {cols}, {37, cols}}, dt, [](auto& in) {
        auto o = rms_norm(in[0], in[1], 1e-5, in[2]);
        return o.y * 2.0 + o.residual.to(o.y.dtype());
      });
      // Only one output used: the other's gradient reaches the kernel as null.
      parity("rms_norm y only", {{37, cols}, {cols}, {37, cols}}, dt,
             [](auto& in) { return rms_norm(in[0], in[1], 1e-5, in[2]).y; });
      parity("rms_norm residual only", {{37, cols}, {cols}, {37, cols}}, dt,
             [](auto& in) { return rms_norm(in[0], in[1], 1e-5, in[2]).residual * 2.0; });
      // x in dt, the residual stream in f32: dres is written in f32 beside dx.
      parity("rms_norm fp32 residual", {{1, 3, cols}, {cols}, {1, 3, cols}}, dt, [](auto& in) {
        auto o = rms_norm(in[0], in[1], 1e-5, in[2].to(DType::f32), /*residual_in_fp32=*/true);
        return o.y + o.residual.to(o.y.dtype()) * 0.5;
      });
    }
    for (int64_t cols : {130, 768, 2560}) {
      CAPTURE(cols);
      parity("rms_norm many rows", {{5000, cols}, {cols}, {5000, cols}}, dt, [](auto& in) {
        auto o = rms_norm(in[0], in[1], 1e-5, in[2], true);
        return o.y + o.residual.to(o.y.dtype());
      });
    }
  }
}

TEST_CASE("cuda: RMSNorm backward gives bit-identical gradients run to run") {
  if (skip_without_gpu()) return;
  Generator g = fresh();
  for (int64_t cols : {768, 1001, 2560}) {
    CAPTURE(cols);
    Device dev = Device::cuda(0);
    Tensor x = randn({3000, cols}, DType::bf16, dev, &g), res = randn({3000, cols}, DType::f32, dev, &g);
    Tensor w = rand({cols}, DType::f32, dev, &g, 0.5, 1.5);
    Tensor gy = randn({3000, cols}, DType::bf16, dev, &g), gr = randn({3000, cols}, DType::f32, dev, &g);
    auto run = [&] {
      Tensor xl = x.detach().set_requires_grad(true), wl = w.detach().set_requires_grad(true);
      Tensor rl = res.detach().set_requires_grad(true);
      auto o = rms_norm(xl, wl, 1e-5, rl, true);
      backward({o.y, o.residual}, {gy, gr});
      return std::vector<std::vector<double>>{xl.grad().to_vector(), wl.grad().to_vector(), rl.grad().to_vector()};
    };
    auto a = run(), b = run();
    CHECK(a[0] == b[0]);
    CHECK(a[1] == b[1]);
    CHECK(a[2] == b[2]);
  }
}

TEST_CASE("cuda parity: causal conv1d (widths 2..4, silu, states, odd lengths)") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t K : {2, 3, 4}) {
      // Multiples of 8 take the vector paths (4 vectors per thread forward,
      // 2 backward): 16 to 6152 cover partly filled and several tiles per row.
      for (int64_t L : {1, 7, 8, 16, 1023, 1024, 1025, 1032, 2048, 2049, 2056, 4096, 6152}) {
        CAPTURE(K);
        CAPTURE(L);
        parity("conv", {{2, 67, L}, {67, K}, {67}}, dt,
               [](auto& in) { return causal_conv1d(in[0], in[1], in[2], true).out; });
        parity("conv states", {{2, 5, L}, {5, K}, {2, 5, K - 1}}, dt, [](auto& in) {
          auto r = causal_conv1d(in[0], in[1], Tensor(), false, in[2], true);
          return concat({r.out, r.final_state}, 2);
        });
      }
    }
  }
}

// x as a strided view (batch and channel strides, time contiguous), as the
// mixer passes a slice of in_proj's (2Di, B, L) output.
TEST_CASE("cuda parity: causal conv1d on strided views of x") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t K : {2, 4}) {
      for (int64_t L : {7, 8, 1032, 2048, 4104}) {
        CAPTURE(K);
        CAPTURE(L);
        parity("conv channel slice", {{2, 80, L}, {67, K}, {67}}, dt,
               [](auto& in) { return causal_conv1d(in[0].narrow(1, 5, 67), in[1], in[2], true).out; });
        parity("conv (dim, batch, len) view", {{67, 3, L}, {67, K}, {67}}, dt,
               [](auto& in) { return causal_conv1d(in[0].permute({1, 0, 2}), in[1], in[2], true).out; });
      }
    }
  }
}

TEST_CASE("cuda: causal conv1d gives bit-identical gradients run to run") {
  if (skip_without_gpu()) return;
  Generator g = fresh();
  Device dev = Device::cuda(0);
  Tensor x = randn({4, 96, 2056}, DType::bf16, dev, &g), w = randn({96, 4}, DType::f32, dev, &g);
  Tensor b = randn({96}, DType::f32, dev, &g), gout = randn({4, 96, 2056}, DType::bf16, dev, &g);
  auto run = [&] {
    Tensor xl = x.detach().set_requires_grad(true), wl = w.detach().set_requires_grad(true);
    Tensor bl = b.detach().set_requires_grad(true);
    Tensor out = causal_conv1d(xl, wl, bl, true).out;
    backward(out, gout);
    return std::vector<std::vector<double>>{out.to_vector(), xl.grad().to_vector(), wl.grad().to_vector(),
                                            bl.grad().to_vector()};
  };
  auto r1 = run(), r2 = run();
  for (size_t i = 0; i < r1.size(); ++i) {
    CAPTURE(i);
    CHECK(r1[i] == r2[i]);
  }
}

TEST_CASE("cuda parity: cross-entropy over a large vocabulary, ignore_index") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t V : {3, 1000, 50280}) {
      CAPTURE(V);
      Generator g = fresh();
      Tensor t = randint(0, V, {37}, DType::i64, Device::cpu(), &g);
      auto tv = t.to_vector();
      tv[3] = -100;  // one ignored row
      Tensor tc = Tensor::from_ints([&] { std::vector<int64_t> v; for (double e : tv) v.push_back(int64_t(e)); return v; }(), {37});
      Tensor tg = tc.to(Device::cuda(0));
      parity("cross_entropy", {{37, V}}, dt,
             [&](auto& in) { return cross_entropy(in[0] * 4.0, in[0].is_cuda() ? tg : tc); });
    }
  }
}

TEST_CASE("cuda parity: multi-tensor AdamW over many odd-sized tensors") {
  if (skip_without_gpu()) return;
  Generator g = fresh();
  std::vector<Tensor> pc, gc, mc, vc, pg, gg, mg, vg;
  std::vector<double> wd;
  for (int i = 0; i < 200; ++i) {  // more than one launch's table
    int64_t n = 1 + (i * 7919) % 5003;
    for (auto* v : {&pc, &gc}) v->push_back(randn({n}, DType::f32, Device::cpu(), &g));
    mc.push_back(zeros({n}));
    vc.push_back(zeros({n}));
    wd.push_back(i % 2 ? 0.1 : 0.0);
  }
  for (size_t i = 0; i < pc.size(); ++i) {
    pg.push_back(pc[i].to(Device::cuda(0)));
    gg.push_back(gc[i].to(Device::cuda(0)));
    mg.push_back(mc[i].to(Device::cuda(0)));
    vg.push_back(vc[i].to(Device::cuda(0)));
  }
  NoGradGuard ng;
  for (int64_t step = 1; step <= 3; ++step) {
    adamw_update(pc, gc, mc, vc, step, 1e-2, 0.9, 0.95, 1e-8, wd);
    adamw_update(pg, gg, mg, vg, step, 1e-2, 0.9, 0.95, 1e-8, wd);
  }
  double worst = 0;
  for (size_t i = 0; i < pc.size(); ++i) worst = std::max(worst, rel_err(pg[i].to(Device::cpu()), pc[i]));
  CHECK(worst < 1e-6);
}

TEST_CASE("cuda parity: selective scan forward and backward (odd sizes, chunk edges, variants)") {
  if (skip_without_gpu()) return;
  struct Case {
    int64_t b, d, L, n;
    bool var, z, extras;
  };
  const int64_t ch = 64;  // cuda::kScanChunk
  std::vector<Case> cases = {{2, 37, 1, 16, true, true, true},       {1, 5, 7, 1, true, false, false},
                             {2, 37, ch - 1, 16, true, true, false},  {2, 37, ch + 1, 16, true, true, true},
                             {1, 33, 2049, 16, true, true, true},     {2, 9, 300, 64, true, true, false},
                             {1, 6, 130, 256, true, false, true},     {2, 37, 200, 16, false, true, true},
                             {3, 20, 1025, 16, true, true, false}};
  for (DType dt : {DType::f32, DType::bf16}) {
    for (const Case& c : cases) {
      CAPTURE(c.b);
      CAPTURE(c.d);
      CAPTURE(c.L);
      CAPTURE(c.n);
      CAPTURE(c.var);
      Shape bc = c.var ? Shape{c.b, c.n, c.L} : Shape{c.d, c.n};
      bool z = c.z, extras = c.extras;
      parity("selective_scan",
             {{c.b, c.d, c.L}, {c.b, c.d, c.L}, {c.d, c.n}, bc, bc, {c.d}, {c.b, c.d, c.L}, {c.d}, {c.b, c.d, c.n}}, dt,
             [z, extras](auto& in) {
               // Realistic ranges: A = -exp(.) < 0, delta around softplus' knee.
               Tensor A = neg(exp(in[2].to(DType::f32)));
               Tensor bias = in[7].to(DType::f32) - 2.0;
               auto r = selective_scan(in[0], in[1], A, in[3], in[4], in[5].to(DType::f32), z ? in[6] : Tensor(),
                                       bias, true, extras ? in[8].to(DType::f32) : Tensor(), extras);
               return extras ? r.out.to(DType::f32) + sum(r.last_state) : r.out.to(DType::f32);
             });
    }
  }
}

TEST_CASE("cuda: selective scan over zero steps passes the state through, as on the CPU") {
  if (skip_without_gpu()) return;
  const int64_t b = 2, d = 5, n = 4;
  Generator g = fresh();
  Tensor A = rand({d, n}, DType::f32, Device::cpu(), &g, -2.0, -0.1);
  Tensor h0 = randn({b, d, n}, DType::f32, Device::cpu(), &g), dhT = randn({b, d, n}, DType::f32, Device::cpu(), &g);
  for (Device dev : {Device::cpu(), Device::cuda(0)}) {
    CAPTURE(dev.index);
    Tensor u = zeros({b, d, 0}, DType::f32, dev).set_requires_grad(true);
    Tensor Bm = zeros({b, n, 0}, DType::f32, dev), Cm = zeros({b, n, 0}, DType::f32, dev);
    Tensor h = h0.to(dev).detach().set_requires_grad(true);
    ScanResult r = selective_scan(u, u, A.to(dev), Bm, Cm, Tensor(), Tensor(), Tensor(), true, h, true);
    CHECK(r.out.numel() == 0);
    CHECK(r.last_state.to(Device::cpu()).to_vector() == h0.to_vector());
    backward(r.last_state, dhT.to(dev));
    CHECK(h.grad().to(Device::cpu()).to_vector() == dhT.to_vector());
  }
}

TEST_CASE("cuda parity: selective_scan_dt_proj (delta recomputed from dt_proj in the backward)") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t L : {int64_t(7), int64_t(300)}) {
      CAPTURE(L);
      const int64_t b = 2, d = 37, r = 5, n = 16;
      parity("selective_scan_dt_proj", {{b, d, L}, {b, r, L}, {d, r}, {d, n}, {b, n, L}, {b, n, L}, {d}, {b, d, L}, {d}},
             dt, [](auto& in) {
               Tensor A = neg(exp(in[3].to(DType::f32)));
               Tensor bias = in[8].to(DType::f32) - 2.0;
               return selective_scan_dt_proj(in[0], in[1], in[2], A, in[4], in[5], in[6].to(DType::f32), in[7], bias)
                   .out.to(DType::f32);
             });
    }
  }
}

TEST_CASE("cuda: a Mamba-like chain (in_proj -> conv -> scan -> out_proj) has the CPU's gradients") {
  if (skip_without_gpu()) return;
  const int64_t b = 2, L = 129, dm = 24, di = 48, n = 16, r = 2;
  parity("mamba chain", {{b, L, dm}, {2 * di, dm}, {di, 4}, {di}, {r + 2 * n, di}, {di, r}, {di}, {di, n}, {di}, {dm, di}},
         DType::f32, [=](auto& in) {
           Tensor xz = linear(in[0], in[1]).transpose(1, 2);  // (b, 2di, L)
           Tensor x = silu(causal_conv1d(xz.narrow(1, 0, di).contiguous(), in[2], in[3]).out);
           Tensor z = xz.narrow(1, di, di).contiguous();
           Tensor dbl = linear(x.transpose(1, 2), in[4]);  // (b, L, r+2n)
           Tensor dt = linear(dbl.narrow(2, 0, r), in[5]).transpose(1, 2).contiguous();
           Tensor Bm = dbl.narrow(2, r, n).transpose(1, 2).contiguous(), Cm = dbl.narrow(2, r + n, n).transpose(1, 2).contiguous();
           Tensor y = selective_scan(x, dt, neg(exp(in[7])), Bm, Cm, in[8], z, in[6], true).out;
           return linear(y.transpose(1, 2), in[9]);
         });
}

TEST_CASE("cuda: a tiny MambaLM trains on the GPU like on the CPU") {
  if (skip_without_gpu()) return;
  // Same seed -> same weights on both devices; a few AdamW steps on the same
  // batch give losses that agree to f32 rounding.
  nn::MambaConfig cfg;
  cfg.d_model = 32, cfg.n_layer = 2, cfg.vocab_size = 50;
  nn::MambaLM cpu_m(cfg, uint64_t(7)), gpu_m(cfg, uint64_t(7), Device::cuda(0));
  Generator g{3, 0};
  Tensor ids = randint(0, 50, {4, 65}, DType::i64, Device::cpu(), &g);
  Tensor x = ids.narrow(1, 0, 64).contiguous(), y = ids.narrow(1, 1, 64).contiguous();
  auto groups = [](nn::MambaLM& m) {
    return optim::group_parameters(optim::param_specs(m.parameter_infos()), optim::GroupingOptions{});
  };
  optim::AdamW oc(groups(cpu_m)), og(groups(gpu_m));
  for (int step = 0; step < 5; ++step) {
    Tensor lc = cpu_m.loss(x, y), lg = gpu_m.loss(x.to(Device::cuda(0)), y.to(Device::cuda(0)));
    CHECK(lg.item() == doctest::Approx(lc.item()).epsilon(1e-4));
    backward(lc);
    backward(lg);
    oc.step(1e-2);
    og.step(1e-2);
    oc.zero_grad();
    og.zero_grad();
  }
}

TEST_CASE("cuda: the scan's backward never holds a B x L x D x N buffer") {
  if (skip_without_gpu()) return;
  // B2 D512 L8192 N16: the full state expansion would be 512 MiB in fp32.
  const int64_t b = 2, d = 512, L = 8192, n = 16;
  const double expansion = double(b * d * L * n) * 4;
  Generator g = fresh();
  Device dev = Device::cuda(0);
  Tensor u = randn({b, d, L}, DType::bf16, dev, &g).set_requires_grad(true);
  Tensor delta = randn({b, d, L}, DType::bf16, dev, &g).set_requires_grad(true);
  Tensor z = randn({b, d, L}, DType::bf16, dev, &g).set_requires_grad(true);
  Tensor B = randn({b, n, L}, DType::bf16, dev, &g).set_requires_grad(true);
  Tensor C = randn({b, n, L}, DType::bf16, dev, &g).set_requires_grad(true);
  Tensor A = rand({d, n}, DType::f32, dev, &g, -2.0, -0.1).set_requires_grad(true);
  Tensor gout = randn({b, d, L}, DType::bf16, dev, &g);
  cuda_ctx::synchronize(0);
  const size_t before = cuda_ctx::memory_stats(0).used;
  cuda_ctx::reset_peak_memory(0);
  backward(selective_scan(u, delta, A, B, C, Tensor(), z, Tensor(), true).out, gout);
  cuda_ctx::synchronize(0);
  const double extra = double(cuda_ctx::memory_stats(0).peak_used - before);
  INFO("peak extra memory " << extra / (1 << 20) << " MiB vs expansion " << expansion / (1 << 20) << " MiB");
  CHECK(extra < expansion / 2);
}

TEST_CASE("cuda: conv and scan take strided (batch, channel) views, same bits as contiguous copies") {
  if (skip_without_gpu()) return;
  // The mixer's layout: in_proj's (2D, B, L) output viewed (B, 2D, L) and
  // split into x and z; dt_proj's (D, B, L) output viewed (B, D, L). The
  // kernels read these views through their strides; the results and the
  // gradients must equal those of the same values made contiguous first.
  const int64_t b = 3, d = 40, L = 300, n = 16;
  Device dev = Device::cuda(0);
  for (DType dt : {DType::f32, DType::bf16}) {
    CAPTURE(dtype_name(dt));
    Generator g = fresh();
    Tensor xz0 = randn({2 * d, b, L}, dt, dev, &g), dl0 = randn({d, b, L}, dt, dev, &g);
    Tensor w = randn({d, 4}, DType::f32, dev, &g), cb = randn({d}, DType::f32, dev, &g);
    Tensor A = rand({d, n}, DType::f32, dev, &g, -2.0, -0.1), Dv = randn({d}, DType::f32, dev, &g);
    Tensor Bm = randn({b, n, L}, dt, dev, &g), Cm = randn({b, n, L}, dt, dev, &g);
    Tensor bias = rand({d}, DType::f32, dev, &g, -4.0, -2.0), gout = randn({b, d, L}, dt, dev, &g);
    auto run = [&](bool strided) {
      Tensor xz_leaf = xz0.detach().clone().set_requires_grad(true), dl_leaf = dl0.detach().clone().set_requires_grad(true);
      Tensor xz = permute(xz_leaf, {1, 0, 2}), delta = permute(dl_leaf, {1, 0, 2});
      if (!strided) xz = contiguous(xz), delta = contiguous(delta);
      std::vector<Tensor> parts = split(xz, {d, d}, 1);
      Tensor x = causal_conv1d(parts[0], w, cb, true).out;
      Tensor y = selective_scan(x, delta, A, Bm, Cm, Dv, parts[1], bias, true).out;
      backward(y, gout);
      auto host = [](const Tensor& t) { return t.to(Device::cpu()).to(DType::f32); };
      return std::vector<Tensor>{host(y), host(xz_leaf.grad()), host(dl_leaf.grad())};
    };
    std::vector<Tensor> s = run(true), c = run(false);
    for (size_t i = 0; i < s.size(); ++i) {
      CAPTURE(i);
      CHECK(rel_err(s[i], c[i]) == 0.0);
    }
  }
}
