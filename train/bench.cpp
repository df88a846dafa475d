#include "train/bench.h"

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <functional>

#include "core/cuda_context.h"
#include "autograd/profile.h"
#include "nn/decoder.h"
#include "nn/mamba_lm.h"
#include "nn/model_stats.h"
#include "ops/mamba_step.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "train/config.h"
#include "train/model_config.h"
#ifdef COIL_WITH_CUDA
#include "cuda/timing.h"
#endif

namespace coil::train {

#ifndef COIL_WITH_CUDA
int run_bench(const std::vector<std::string>&, const BenchOptions&) {
  std::fprintf(stderr, "coil bench: this build has no CUDA support\n");
  return 2;
}
#else

namespace {

struct Ceilings {
  double copy_gbps = 0;    // bytes read + written per second
  double gemm_tflops = 0;  // bf16 8192^3
};

void row(const char* name, const std::string& shape, double ms, double bytes, double floor_ms, const char* target) {
  std::printf("%-22s %-34s %9.4f ms %8.1f GB/s  floor %8.4f ms  x%5.2f  %s\n", name, shape.c_str(), ms,
              bytes / (ms * 1e-3) / 1e9, floor_ms, ms / floor_ms, target);
  std::fflush(stdout);
}

// Enough independent input sets that together they exceed L2, so each run
// reads from device memory as it would in training.
int rotation(double bytes_per_set, int device) {
  double l2 = double(cuda::l2_bytes(device));
  int n = int(2.0 * l2 / std::max(bytes_per_set, 1.0)) + 1;
  return std::min(n, 8);
}

double bench_gemm(const BenchOptions& o) {
  Device dev = Device::cuda(o.device);
  const int64_t n = 8192;
  Generator g{1, 0};
  Tensor a = randn({n, n}, DType::bf16, dev, &g), b = randn({n, n}, DType::bf16, dev, &g);
  NoGradGuard ng;
  auto t = cuda::time_it([&](int) { matmul(a, b); }, 3, 20, o.device);
  double tflops = 2.0 * double(n) * n * n / (t.median_ms * 1e-3) / 1e12;
  std::printf("%-22s %-34s %9.4f ms %8.1f TFLOP/s (the GEMM ceiling)\n", "gemm bf16", "8192x8192x8192", t.median_ms,
              tflops);
  return tflops;
}

void bench_norm(const BenchOptions& o, const Ceilings& c) {
  Device dev = Device::cuda(o.device);
  for (int64_t d : {768, 1024, 1536, 2048, 2560}) {
    const int64_t rows = 32768;
    Generator g{2, 0};
    // bf16 input, fp32 residual stream, bf16 output: read x (2) + res (4) +
    // w, write y (2) + res (4) bytes per element.
    double fwd_bytes = double(rows * d) * (2 + 4 + 2 + 4);
    int nset = rotation(fwd_bytes, o.device);
    std::vector<Tensor> xs, rs;
    for (int i = 0; i < nset; ++i) {
      xs.push_back(randn({rows, d}, DType::bf16, dev, &g));
      rs.push_back(randn({rows, d}, DType::f32, dev, &g));
    }
    Tensor w = ones({d}, DType::f32, dev);
    char shape_buf[64];
    std::snprintf(shape_buf, sizeof shape_buf, "rows 32768 d %lld", (long long)d);
    std::string shape = shape_buf;
    {
      NoGradGuard ng;
      auto t = cuda::time_it([&](int i) { rms_norm(xs[i % nset], w, 1e-5, rs[i % nset], true); }, o.warmup, o.iters,
                             o.device);
      row("norm fwd", shape, t.median_ms, fwd_bytes, fwd_bytes / (c.copy_gbps * 1e9) * 1e3, "<= 1.3x floor");
    }
    // fwd+bwd: backward reads r (4), dy (2), dres (4), writes dx (2) + dres (4).
    double bwd_bytes = double(rows * d) * (4 + 2 + 4 + 2 + 4);
    std::vector<Tensor> xg;
    for (int i = 0; i < nset; ++i) xg.push_back(xs[i].detach().set_requires_grad(true));
    Tensor wg = w.detach().set_requires_grad(true);
    Tensor gy = randn({rows, d}, DType::bf16, dev, &g), gr = randn({rows, d}, DType::f32, dev, &g);
    auto t = cuda::time_it(
        [&](int i) {
          // Gradients set to none each run, as a training step does: otherwise
          // every run after the first adds its dx into x.grad (an extra
          // elementwise kernel that is not the op's).
          xg[i % nset].set_grad(Tensor());
          wg.set_grad(Tensor());
          auto out = rms_norm(xg[i % nset], wg, 1e-5, rs[i % nset], true);
          backward({out.y, out.residual}, {gy, gr});
        },
        o.warmup, o.iters, o.device);
    double b = fwd_bytes + bwd_bytes;
    row("norm fwd+bwd", shape, t.median_ms, b, b / (c.copy_gbps * 1e9) * 1e3, "<= 1.3x floor");
  }
}

void bench_conv(const BenchOptions& o, const Ceilings& c) {
  Device dev = Device::cuda(o.device);
  const int64_t B = 16, D = 1536, L = 2048, K = 4;
  Generator g{3, 0};
  double x_bytes = double(B * D * L) * 2;
  int nset = rotation(2 * x_bytes, o.device);
  std::vector<Tensor> xs;
  for (int i = 0; i < nset; ++i) xs.push_back(randn({B, D, L}, DType::bf16, dev, &g));
  Tensor w = randn({D, K}, DType::f32, dev, &g), b = randn({D}, DType::f32, dev, &g);
  std::string shape = "B16 D1536 L2048 W4 silu bf16";
  {
    NoGradGuard ng;
    auto t = cuda::time_it([&](int i) { causal_conv1d(xs[i % nset], w, b, true); }, o.warmup, o.iters, o.device);
    row("conv fwd", shape, t.median_ms, 2 * x_bytes, 2 * x_bytes / (c.copy_gbps * 1e9) * 1e3, "target <= 0.08 ms");
  }
  std::vector<Tensor> xg;
  for (auto& x : xs) xg.push_back(x.detach().set_requires_grad(true));
  Tensor wg = w.detach().set_requires_grad(true), bg = b.detach().set_requires_grad(true);
  Tensor gout = randn({B, D, L}, DType::bf16, dev, &g);
  auto t = cuda::time_it(
      [&](int i) {
        // Gradients set to none each run, as in training (see bench_norm).
        xg[i % nset].set_grad(Tensor());
        wg.set_grad(Tensor());
        bg.set_grad(Tensor());
        backward(causal_conv1d(xg[i % nset], wg, bg, true).out, gout);
      },
      o.warmup, o.iters, o.device);
  // fwd: read x, write out; bwd: read x, dout, write dx.
  double bytes = 5 * x_bytes;
  row("conv fwd+bwd", shape, t.median_ms, bytes, bytes / (c.copy_gbps * 1e9) * 1e3, "target <= 0.25 ms");
}

void bench_scan(const BenchOptions& o, const Ceilings& c) {
  Device dev = Device::cuda(o.device);
  struct S {
    int64_t B, L;
    const char* target;
  };
  for (S s : {S{16, 2048, "target <= 0.45 / 2.2 ms"}, S{4, 8192, "target <= 0.55 / 2.4 ms"},
              S{1, 65536, "target <= 1.1 / 5.0 ms"}}) {
    const int64_t D = 1536, N = 16;
    Generator g{4, 0};
    // bf16 u, delta, z, out (B*D*L each) and B, C (B*N*L each).
    double act = double(s.B * D * s.L) * 2, bc = double(s.B * N * s.L) * 2;
    double fwd_bytes = 4 * act + 2 * bc;
    // fwd+bwd: the forward, then reads u, delta, z, dout, B, C and writes
    // du, ddelta, dz, dB, dC.
    double fb_bytes = fwd_bytes + 7 * act + 4 * bc;
    Tensor u = randn({s.B, D, s.L}, DType::bf16, dev, &g), delta = randn({s.B, D, s.L}, DType::bf16, dev, &g);
    Tensor z = randn({s.B, D, s.L}, DType::bf16, dev, &g);
    Tensor Bm = randn({s.B, N, s.L}, DType::bf16, dev, &g), Cm = randn({s.B, N, s.L}, DType::bf16, dev, &g);
    Tensor A = rand({D, N}, DType::f32, dev, &g, -2.0, -0.1), Dv = ones({D}, DType::f32, dev);
    Tensor bias = rand({D}, DType::f32, dev, &g, -4.0, -2.0);
    char shape_buf[64];
    std::snprintf(shape_buf, sizeof shape_buf, "B%lld D1536 L%lld N16 z softplus", (long long)s.B, (long long)s.L);
    std::string shape = shape_buf;
    try {
      {
        NoGradGuard ng;
        auto t = cuda::time_it([&](int) { selective_scan(u, delta, A, Bm, Cm, Dv, z, bias, true); }, o.warmup,
                               o.iters, o.device);
        row("scan fwd", shape, t.median_ms, fwd_bytes, fwd_bytes / (c.copy_gbps * 1e9) * 1e3, s.target);
      }
      Tensor ug = u.detach().set_requires_grad(true), dg = delta.detach().set_requires_grad(true);
      Tensor zg = z.detach().set_requires_grad(true), Bg = Bm.detach().set_requires_grad(true);
      Tensor Cg = Cm.detach().set_requires_grad(true), Ag = A.detach().set_requires_grad(true);
      Tensor Dg = Dv.detach().set_requires_grad(true), bg = bias.detach().set_requires_grad(true);
      Tensor gout = randn({s.B, D, s.L}, DType::bf16, dev, &g);
      auto t = cuda::time_it(
          [&](int) { backward(selective_scan(ug, dg, Ag, Bg, Cg, Dg, zg, bg, true).out, gout); }, o.warmup,
          o.iters, o.device);
      row("scan fwd+bwd", shape, t.median_ms, fb_bytes, fb_bytes / (c.copy_gbps * 1e9) * 1e3, s.target);
    } catch (const Error& e) {
      std::printf("%-22s %-34s not available: %s\n", "scan", shape.c_str(), e.what());
    }
  }
}

// Embedding forward + backward at the LM's shape (B32 x 2048 tokens, vocab
// 50280, d 768, fp32 table): the gradient is a sort plus a segmented sum.
void bench_embedding(const BenchOptions& o, const Ceilings& c) {
  Device dev = Device::cuda(o.device);
  Generator g{6, 0};
  const int64_t V = 50280, D = 768, n = 32 * 2048;
  Tensor w = randn({V, D}, DType::f32, dev, &g).set_requires_grad(true);
  Tensor idx = randint(0, V, {n}, DType::i64, dev, &g);
  Tensor go = randn({n, D}, DType::f32, dev, &g);
  auto tf = cuda::time_it([&](int) { NoGradGuard ng; embedding(w, idx); }, o.warmup, o.iters, o.device);
  auto tb = cuda::time_it(
      [&](int) {
        backward(embedding(w, idx), go);
        w.set_grad(Tensor());
      },
      o.warmup, o.iters, o.device);
  double fwd_bytes = double(n * D) * 8, bwd_bytes = fwd_bytes + double(n * D) * 4 + double(V * D) * 8;
  row("embedding fwd", "65536 tokens V50280 D768 f32", tf.median_ms, fwd_bytes,
      fwd_bytes / (c.copy_gbps * 1e9) * 1e3, "");
  row("embedding fwd+bwd", "65536 tokens V50280 D768 f32", tb.median_ms, bwd_bytes,
      bwd_bytes / (c.copy_gbps * 1e9) * 1e3, "");
}

// The fused LM head + cross-entropy at mamba-130m's shape (B32 x 2048
// tokens, d 768, vocab 50280; bf16 h, f32 weight) with its gradients, which
// it makes in the forward: three GEMMs of 2*M*d*V FLOPs each (the floor,
// over the measured GEMM rate) plus the softmax passes over each logits
// chunk. One row per chunk size (rows of logits alive at a time).
void bench_lce(const BenchOptions& o, const Ceilings& c) {
  Device dev = Device::cuda(o.device);
  Generator g{7, 0};
  const int64_t M = 32 * 2048, d = 768, V = 50280;
  Tensor h = randn({M, d}, DType::bf16, dev, &g).set_requires_grad(true);
  Tensor w = mul(randn({V, d}, DType::f32, dev, &g), 0.02).detach().set_requires_grad(true);
  Tensor tgt = randint(0, V, {M}, DType::i64, dev, &g);
  const double flops = 3.0 * 2.0 * double(M) * double(d) * double(V);
  const double floor_ms = c.gemm_tflops > 0 ? flops / (c.gemm_tflops * 1e12) * 1e3 : 0;
  const int64_t def = default_lce_chunk_rows(V, DType::bf16);
  for (int64_t rows : {def, def / 2, def * 2}) {
    auto t = cuda::time_it([&](int) { linear_cross_entropy(h, w, tgt, -100, rows); }, 2, std::max(5, o.iters / 5),
                           o.device);
    char shape[80];
    std::snprintf(shape, sizeof shape, "M65536 d768 V50280, %lld-row chunks", (long long)rows);
    std::printf("%-22s %-34s %9.4f ms %8.1f TFLOP/s  floor %8.4f ms  x%5.2f\n", "lm head + CE (f+grads)", shape,
                t.median_ms, flops / (t.median_ms * 1e-3) / 1e12, floor_ms, floor_ms > 0 ? t.median_ms / floor_ms : 0);
    std::fflush(stdout);
  }
}

// Full training steps (forward, loss, backward, clip, AdamW) of the config's
// model on random tokens: tokens/s, MFU against the measured GEMM rate, and
// peak memory.
void bench_step(const BenchOptions& o, const Ceilings& c) {
  Config cfg = load_config(o.config, o.overrides);
  Device dev = Device::cuda(o.device);
  nn::MambaConfig mc = mamba_config_from(cfg);
  const int64_t B = o.micro_batch > 0 ? o.micro_batch
                                      : (cfg.batch.micro_batch > 0 ? cfg.batch.micro_batch : cfg.batch.sequences_per_step);
  const int64_t L = cfg.data.seq_len;
  nn::MambaLM model(mc, cfg.seed, dev);
  optim::AdamW opt(optim::group_parameters(optim::param_specs(model.parameter_infos()), {}));
  std::vector<Tensor> params = model.parameters();
  Generator g{5, 0};
  Tensor ids = randint(0, mc.vocab_size, {B, L + 1}, DType::i64, dev, &g);
  Tensor x = ids.narrow(1, 0, L).contiguous(), y = ids.narrow(1, 1, L).contiguous();
  cuda_ctx::synchronize(o.device);
  cuda_ctx::reset_peak_memory(o.device);
  auto step = [&](int) {
    Tensor loss = model.loss(x, y);
    backward(loss);
    optim::clip_grad_norm(params, 1.0);
    opt.step(1e-4);
    opt.zero_grad();
  };
  const int iters = std::max(5, o.iters / 5);
  auto t = cuda::time_it(step, 3, iters, o.device);
  // Where the time goes: the forward with its graph, then forward + backward.
  auto tf = cuda::time_it([&](int) { model.loss(x, y); }, 2, iters, o.device);
  auto tb = cuda::time_it(
      [&](int) {
        backward(model.loss(x, y));
        opt.zero_grad();
      },
      2, iters, o.device);
  double tps = double(B * L) / (t.median_ms * 1e-3);
  double flops = nn::flops_per_token(mc).total;
  double mfu = c.gemm_tflops > 0 ? tps * flops / (c.gemm_tflops * 1e12) : 0;
  double peak_gib = double(cuda_ctx::memory_stats(o.device).peak_used) / double(1 << 30);
  char shape[96];
  std::snprintf(shape, sizeof shape, "%s B%lld x L%lld %s", o.config.c_str(), (long long)B, (long long)L,
                cfg.precision.c_str());
  std::printf("%-22s %-34s %9.2f ms %10.0f tok/s  MFU %5.1f%% (%.0f GFLOP/token)  peak %.2f GiB (%.3f per sequence)\n",
              "train step", shape, t.median_ms, tps, mfu * 100, flops / 1e9, peak_gib, peak_gib / double(B));
  std::printf("%-22s %-34s forward %.2f ms, backward %.2f ms, clip + AdamW %.2f ms\n", "  split", "",
              tf.median_ms, tb.median_ms - tf.median_ms, t.median_ms - tb.median_ms);
  if (o.profile || o.profile_shapes) {
    // One more step with the op profiler on (it syncs around every op).
    profile::reset();
    profile::enable(true);
    profile::enable_shapes(o.profile_shapes);
    step(0);
    profile::enable(false);
    profile::enable_shapes(false);
    std::printf("per-op time of one step (device synchronised around each op):\n%s", profile::report().c_str());
  }
}

// Recurrent decoding (nn::Decoder: fused step kernels, one CUDA graph per
// token, greedy argmax on the device): random-init model in the config's
// precision, random prompts. Per batch size: prefill time, the median step
// time, tokens/s, and the floor of a step (every weight byte read once, the
// states read and written once, at the measured copy bandwidth).
// The decode step's projections at batch 64 (mamba-130m's and -370m's
// in_proj, x_proj, out_proj; bf16): the tensor-core kernel of
// decode_linear_mma against cuBLASLt (linear), each alone between events.
// The floor is the weight bytes over the copy rate; weights rotate through
// sets larger than L2, as 24-48 layers' weights do in a decode step.
void bench_proj(const BenchOptions& o, const Ceilings& c) {
  Device dev = Device::cuda(o.device);
  struct P {
    const char* name;
    int64_t k, n;
  };
  const int64_t m = 64;
  for (P p : {P{"130m in_proj", 768, 3072}, P{"130m x_proj", 1536, 80}, P{"130m out_proj", 1536, 768},
              P{"370m in_proj", 1024, 4096}, P{"370m x_proj", 2048, 96}, P{"370m out_proj", 2048, 1024}}) {
    Generator g{12, uint64_t(p.n)};
    const double wbytes = double(p.n * p.k) * 2, bytes = wbytes + double(m * (p.k + p.n)) * 2;
    const int nset = rotation(wbytes, o.device);
    std::vector<Tensor> ws;
    for (int i = 0; i < nset; ++i) ws.push_back(randn({p.n, p.k}, DType::bf16, dev, &g));
    Tensor x = randn({m, p.k}, DType::bf16, dev, &g), out = Tensor::empty({m, p.n}, DType::bf16, dev);
    NoGradGuard ng;
    auto tm = cuda::time_it([&](int i) { decode_linear_mma(x, ws[i % nset], Tensor(), out); }, o.warmup, o.iters,
                            o.device);
    auto tc = cuda::time_it([&](int i) { linear(x, ws[i % nset]); }, o.warmup, o.iters, o.device);
    char shape[96];
    std::snprintf(shape, sizeof shape, "%s M%lld K%lld N%lld", p.name, (long long)m, (long long)p.k, (long long)p.n);
    const double floor_ms = bytes / (c.copy_gbps * 1e9) * 1e3;
    row("proj mma (decode)", shape, tm.median_ms, bytes, floor_ms, "");
    row("proj cuBLASLt", shape, tc.median_ms, bytes, floor_ms, "");
  }
}

void bench_generate(const BenchOptions& o, const Ceilings& c) {
  const std::string path = o.config.empty() ? std::string("configs/mamba-130m.yaml") : o.config;
  COIL_CHECK(o.prompt_len >= 1, "--prompt-len: must be >= 1 (got ", o.prompt_len, ")");
  COIL_CHECK(o.new_tokens >= 1, "--new-tokens: must be >= 1 (got ", o.new_tokens, ")");
  COIL_CHECK(!o.gen_batches.empty(), "--batch: no batch size given");
  for (int64_t b : o.gen_batches) COIL_CHECK(b >= 1, "--batch: must be >= 1 (got ", b, ")");
  Config cfg = load_config(path, o.overrides);
  const Device dev = Device::cuda(o.device);
  const nn::MambaConfig mc = mamba_config_from(cfg);
  nn::MambaLM model(mc, cfg.seed, dev);
  model.eval();
  NoGradGuard ng;
  for (int64_t b : o.gen_batches) {
    Generator g{9, uint64_t(b)};
    Tensor ids = randint(0, mc.vocab_size, {b, o.prompt_len}, DType::i64, dev, &g);
    nn::DecoderOptions od;
    od.greedy = true;
    nn::Decoder dec(model, b, od);
    auto tp = cuda::time_it([&](int) { dec.prefill(ids); }, 1, 3, o.device);
    // Each step between its own events (the median), then the same number
    // of steps back to back with no host sync between tokens.
    dec.prefill(ids);
    auto ts = cuda::time_it([&](int) { dec.step(); }, 0, int(o.new_tokens), o.device);
    dec.prefill(ids);
    auto tl = cuda::time_it(
        [&](int) {
          for (int64_t t = 0; t < o.new_tokens; ++t) dec.step();
        },
        0, 1, o.device);
    const double loop_ms = tl.median_ms / double(o.new_tokens);
    // The op path for comparison: MambaLM::step (a dozen ops per layer, no graph).
    nn::MambaLM::InferenceCache cache;
    model.prefill(ids, cache);
    Tensor tok = dec.tokens().clone();
    auto to = cuda::time_it([&](int) { model.step(tok, cache); }, 2, 10, o.device);

    const double wb = double(dec.weight_bytes()), sb = double(dec.state_bytes());
    const double floor_ms = (wb + 2 * sb) / (c.copy_gbps * 1e9) * 1e3;
    const double tps = double(b) / (ts.median_ms * 1e-3);
    const char* target = b == 1    ? "target >= 3,000 tok/s (mamba_ssm + CUDA graphs on an H100: 1,403)"
                         : b == 64 ? "target >= 100,000 tok/s (mamba_ssm + CUDA graphs on an H100: 73,300)"
                                   : "";
    char shape[96];
    std::snprintf(shape, sizeof shape, "%s B%lld prompt %lld %s", path.c_str(), (long long)b,
                  (long long)o.prompt_len, cfg.precision.c_str());
    std::printf("%-22s %-34s prefill %9.2f ms (%.0f tok/s)\n", "generate", shape, tp.median_ms,
                double(b * o.prompt_len) / (tp.median_ms * 1e-3));
    std::printf("%-22s %-34s step %9.4f ms median of %lld (%.4f ms back to back)  %10.0f tok/s  floor %.4f ms x%.2f"
                "  %s\n",
                "  decode",
                dec.graphed() ? (dec.pdl() ? "default: graph + PDL" : "default: graph, no PDL") : "default: no graph",
                ts.median_ms,
                (long long)o.new_tokens, loop_ms, tps, floor_ms, ts.median_ms / floor_ms, target);
    std::printf("%-22s %-34s weights %.1f MB + states %.2f MB read and written, at %.0f GB/s copy\n", "  floor", "",
                wb / 1e6, sb / 1e6, c.copy_gbps);
    std::printf("%-22s %-34s step %9.4f ms  %10.0f tok/s\n", "  op path", "MambaLM::step, no graph", to.median_ms,
                double(b) / (to.median_ms * 1e-3));
    // The default step against its ablations (each its own graph, fed the
    // same greedy loop): without PDL launches, and (batch <= 64) with the
    // cuBLASLt projections instead of the GEMV kernels (batch <= 64).
    auto variant = [&](const char* name, const char* what, const nn::DecoderOptions& ov) {
      nn::Decoder dv(model, b, ov);
      dv.prefill(ids);
      auto tv = cuda::time_it([&](int) { dv.step(); }, 0, int(o.new_tokens), o.device);
      std::printf("%-22s %-34s step %9.4f ms median of %lld  %10.0f tok/s  floor %.4f ms x%.2f\n", name, what,
                  tv.median_ms, (long long)o.new_tokens, double(b) / (tv.median_ms * 1e-3), floor_ms,
                  tv.median_ms / floor_ms);
    };
    nn::DecoderOptions nopdl = od;
    nopdl.pdl = false;
    variant("  decode no PDL", "same kernels, plain launches", nopdl);
    if (b <= nn::Decoder::gemv_max_batch()) {
      nn::DecoderOptions lt = od;
      lt.gemv = false;
      variant("  decode cuBLASLt", "add+norm, cuBLASLt GEMMs, graph", lt);
      // Both paths fed the same tokens: their logits must agree to bf16 rounding.
      nn::DecoderOptions oc;
      oc.gemv = false;
      nn::Decoder ref(model, b, oc);
      nn::Decoder gv(model, b, nn::DecoderOptions{});
      ref.prefill(ids);
      gv.prefill(ids);
      double num = 0, den = 0;
      for (int t = 0; t < 8; ++t) {
        Tensor next = randint(0, mc.vocab_size, {b}, DType::i64, dev, &g);
        ref.set_tokens(next);
        gv.set_tokens(next);
        ref.step();
        gv.step();
        std::vector<double> x = gv.logits().to_vector(), y = ref.logits().to_vector();
        for (size_t i = 0; i < x.size(); ++i) {
          num += (x[i] - y[i]) * (x[i] - y[i]);
          den += y[i] * y[i];
        }
      }
      std::printf("%-22s %-34s logits rel diff %.1e (GEMV path vs cuBLASLt path, 8 steps)\n", "  check", "",
                  den > 0 ? std::sqrt(num / den) : std::sqrt(num));
    }
    std::fflush(stdout);
  }
}

}  // namespace

int run_bench(const std::vector<std::string>& what, const BenchOptions& o) {
  if (!cuda_available()) {
    std::fprintf(stderr, "coil bench: no CUDA device\n");
    return 2;
  }
  auto want = [&](const char* k) {
    for (const auto& w : what)
      if (w == k || w == "all") return true;
    return false;
  };
  Ceilings c;
  c.copy_gbps = cuda::measure_copy_gbps(size_t(1) << 30, o.device);
  std::printf("%-22s %-34s %9s    %8.1f GB/s (the bandwidth ceiling)\n", "copy d2d", "1 GiB", "", c.copy_gbps);
  if (want("gemm") || want("all")) c.gemm_tflops = bench_gemm(o);
  if (want("norm")) bench_norm(o, c);
  if (want("conv")) bench_conv(o, c);
  if (want("scan")) bench_scan(o, c);
  if (want("embedding")) bench_embedding(o, c);
  if (want("proj")) bench_proj(o, c);
  if (want("lce")) {
    if (c.gemm_tflops == 0) c.gemm_tflops = bench_gemm(o);
    bench_lce(o, c);
  }
  if (std::find(what.begin(), what.end(), "generate") != what.end()) bench_generate(o, c);
  if (std::find(what.begin(), what.end(), "step") != what.end()) {
    if (c.gemm_tflops == 0) c.gemm_tflops = bench_gemm(o);
    bench_step(o, c);
  }
  return 0;
}

#endif

}  // namespace coil::train
