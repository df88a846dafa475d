// The fused decode step (ops/mamba_step.h, nn::Decoder) against the op path:
// causal_conv1d and selective_scan run at L = 1 from their states, and
// MambaLM::step. CPU cases run everywhere (the CPU kernels are the reference
// for the CUDA ones); GPU cases use fresh random inputs, odd sizes and
// NaN-poisoned outputs, and skip without a GPU.
#include <random>

#include "helpers.h"
#include "nn/decoder.h"
#include "nn/mamba_lm.h"
#include "ops/mamba_step.h"

using namespace coil;
using namespace coil::test;

namespace {

double tol(DType d) { return d == DType::f64 ? 1e-12 : d == DType::f32 ? 1e-5 : 1e-2; }

// Values representable in dt, as an f32 (f64) tensor on `dev` in dtype dt.
Tensor input(const Shape& s, DType dt, Device dev, Generator& g, double lo = -1, double hi = 1) {
  DType host = dt == DType::f64 ? DType::f64 : DType::f32;
  return rand(s, host, Device::cpu(), &g, lo, hi).to(dt).to(dev).detach();
}

// Reference in the wide type (f32, f64 for f64) on the same device.
Tensor wide(const Tensor& t) {
  if (!t.defined()) return t;
  return t.to(t.dtype() == DType::f64 ? DType::f64 : DType::f32).detach();
}

void conv_case(Device dev, DType dt, int64_t b, int64_t c, int64_t k, bool bias) {
  CAPTURE(dev.str());
  CAPTURE(dtype_name(dt));
  CAPTURE(b);
  CAPTURE(c);
  CAPTURE(k);
  CAPTURE(bias);
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Generator g{seed, 0};
  NoGradGuard ng;
  Poison poison;
  const DType pdt = dt == DType::f64 ? DType::f64 : DType::f32;
  Tensor xz = input({b, 2 * c + 3}, dt, dev, g);  // x is a column slice: strided rows
  Tensor x = narrow(xz, 1, 1, c);
  Tensor state = input({b, c, k - 1}, dt, dev, g);
  Tensor w = input({c, 1, k}, pdt, dev, g), bb = bias ? input({c}, pdt, dev, g) : Tensor();
  // The op path: the conv at L = 1 from the state, in the wide type.
  ConvResult ref = causal_conv1d(unsqueeze(wide(x), 2), w, bb, true, wide(state), true);
  Tensor st = state.clone().detach();
  Tensor out = causal_conv1d_step(x, st, w, bb, true);
  CHECK(out.dtype() == dt);
  CHECK(out.shape() == Shape{b, c});
  CHECK(rel_err(wide(out), squeeze(ref.out, 2)) < tol(dt));
  // The new state is the shifted window: exact, whatever the dtype.
  CHECK(rel_err(wide(st), ref.final_state) == 0);
}

struct SsmCase {
  int64_t b, d, n, r;  // r = 0: dt given per channel
  bool z, D, bias;
};

void ssm_case(Device dev, DType dt, SsmCase s) {
  CAPTURE(dev.str());
  CAPTURE(dtype_name(dt));
  CAPTURE(s.b);
  CAPTURE(s.d);
  CAPTURE(s.n);
  CAPTURE(s.r);
  CAPTURE(s.z);
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Generator g{seed, 0};
  NoGradGuard ng;
  Poison poison;
  const DType pdt = dt == DType::f64 ? DType::f64 : DType::f32;
  // x | z from one (B, 2D) tensor and dt | B | C from one (B, R + 2N) or
  // (B, D + 2N) tensor, as the decoder slices the projections.
  Tensor xz = input({s.b, 2 * s.d}, dt, dev, g);
  const int64_t dcols = s.r > 0 ? s.r : s.d;
  Tensor dbl = input({s.b, dcols + 2 * s.n}, dt, dev, g);
  SsmStepInputs in;
  in.x = narrow(xz, 1, 0, s.d);
  in.z = s.z ? narrow(xz, 1, s.d, s.d) : Tensor();
  in.dt = narrow(dbl, 1, 0, dcols);
  in.dt_weight = s.r > 0 ? input({s.d, s.r}, dt, dev, g, -0.5, 0.5) : Tensor();
  in.A = input({s.d, s.n}, pdt, dev, g, -2.0, -0.1);
  in.B = narrow(dbl, 1, dcols, s.n);
  in.C = narrow(dbl, 1, dcols + s.n, s.n);
  in.D = s.D ? input({s.d}, pdt, dev, g) : Tensor();
  in.dt_bias = s.bias ? input({s.d}, pdt, dev, g, -3.0, -1.0) : Tensor();
  Tensor h0 = input({s.b, s.d, s.n}, pdt, dev, g);

  // The op path in the wide type: delta from the dt_proj product, then the
  // scan at L = 1 from h0.
  Tensor delta = s.r > 0 ? linear(wide(in.dt), wide(in.dt_weight)) : wide(in.dt);
  auto l1 = [](const Tensor& t) { return t.defined() ? unsqueeze(wide(t), 2) : t; };
  ScanResult ref = selective_scan(l1(in.x), unsqueeze(delta, 2), in.A, l1(in.B), l1(in.C), in.D, l1(in.z), in.dt_bias,
                                  true, h0, true);
  Tensor h = h0.clone().detach();
  Tensor out = selective_state_step(h, in);
  CHECK(out.dtype() == dt);
  CHECK(out.shape() == Shape{s.b, s.d});
  CHECK(rel_err(wide(out), squeeze(ref.out, 2)) < tol(dt));
  CHECK(rel_err(h, ref.last_state) < (dt == DType::f64 ? 1e-12 : 1e-5));
}

std::vector<SsmCase> ssm_cases() {
  // d_state 16 and 32 (16 lanes per channel, one or two states each), 1
  // and 3 (fewer lanes); batch 1 at mamba-130m's width, batch 64; odd
  // channel counts leave dead lanes in the last warp. Rows whose B/C do not
  // start 4-element aligned take the GPU's scalar G-lane kernel.
  return {{3, 37, 16, 5, true, true, true},   {3, 37, 1, 0, true, true, true},  {1, 37, 16, 0, false, false, false},
          {2, 64, 16, 48, true, true, true},  {5, 9, 3, 2, false, true, true},  {1, 1536, 16, 48, true, true, true},
          {64, 37, 16, 5, true, true, false}, {3, 37, 32, 3, true, false, true}, {2, 13, 5, 7, false, true, true},
          // Rows aligned to 4 elements take the GPU's vector path (4 states a
          // lane, dstate/4 lanes a channel): dstate 4, 8, 16, 32; dead lanes
          // past 37 channels; batch 64 at mamba-130m's width.
          {4, 40, 4, 0, true, true, true},    {2, 24, 8, 8, false, true, true}, {3, 37, 32, 4, true, true, false},
          {64, 1536, 16, 48, true, true, true}};
}

// decode_conv_xproj on `dev` against causal_conv1d_step then linear on the
// CPU (the same roundings: the conv output and x_proj's output in dt).
struct ConvXprojCase {
  int64_t b, c, e, k;
  bool bias;
};
void conv_xproj_case(Device dev, DType dt, ConvXprojCase s) {
  CAPTURE(dev.str());
  CAPTURE(dtype_name(dt));
  CAPTURE(s.b);
  CAPTURE(s.c);
  CAPTURE(s.e);
  CAPTURE(s.k);
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Generator g{seed, 0};
  NoGradGuard ng;
  Poison poison;
  const DType pdt = dt == DType::f64 ? DType::f64 : DType::f32;
  const Device cpu = Device::cpu();
  Tensor xz = input({s.b, 2 * s.c + 8}, dt, cpu, g);  // x a column slice: strided rows
  Tensor w = input({s.c, 1, s.k}, pdt, cpu, g), bb = s.bias ? input({s.c}, pdt, cpu, g) : Tensor();
  Tensor wx = input({s.e, s.c}, dt, cpu, g, -0.3, 0.3), state0 = input({s.b, s.c, s.k - 1}, dt, cpu, g);
  Tensor st_ref = state0.clone().detach();
  Tensor xc_ref = causal_conv1d_step(narrow(xz, 1, 0, s.c), st_ref, w, bb, true);
  Tensor dbl_ref = linear(xc_ref, wx);

  auto on = [&](const Tensor& t) { return t.defined() ? t.to(dev).detach() : t; };
  Tensor xzd = on(xz), st = on(state0);
  Tensor xc_out = full({s.b, s.c}, NAN, dt, dev), dbl_out = full({s.b, s.e}, NAN, dt, dev);
  ConvXprojResult r = decode_conv_xproj(narrow(xzd, 1, 0, s.c), st, on(w), on(bb), on(wx), xc_out, dbl_out);
  CHECK(r.conv_out.data_ptr() == xc_out.data_ptr());
  CHECK(r.x_dbl.data_ptr() == dbl_out.data_ptr());
  const double t = dev.is_cpu() ? 0.0 : tol(dt);  // the GPU sums x_proj in another order
  CHECK(rel_err(wide(xc_out), wide(xc_ref)) <= t);
  CHECK(rel_err(wide(dbl_out), wide(dbl_ref)) <= t);
  CHECK(rel_err(wide(st), wide(st_ref)) == 0);  // the shifted window: exact
}

std::vector<ConvXprojCase> conv_xproj_cases() {
  // mamba-130m's layer at batch 64 and 65 (a cluster with one row); d_inner
  // 40 (blocks without channels), 24, 8; widths 1-4; a width of 37 channels
  // the kernel does not take (the ops run).
  return {{64, 1536, 80, 4, true}, {65, 1536, 80, 4, true}, {9, 40, 34, 4, true}, {13, 24, 10, 3, false},
          {3, 64, 7, 2, true},     {1, 8, 5, 1, true},       {17, 37, 6, 4, true}};
}

nn::MambaConfig small_lm(DType param, DType compute) {
  nn::MambaConfig c;
  c.d_model = 20;  // d_inner 40, dt_rank 2
  c.n_layer = 2;
  c.vocab_size = 37;  // padded to 40
  c.d_state = 16;
  c.param_dtype = param;
  c.compute_dtype = compute;
  c.dt_min = 0.05;  // enough state carry to matter
  c.dt_max = 0.5;
  return c;
}

std::vector<int64_t> ids_of(int64_t b, int64_t l, int64_t v, uint64_t salt) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < b * l; ++i) ids.push_back(int64_t((uint64_t(i) * 7 + 3 + salt) % uint64_t(v)));
  return ids;
}

// The decoder's logits after prefill and each of `steps` steps (fed with
// fixed ids) against MambaLM::prefill/step; returns the worst rel_err.
double decoder_vs_ops(const nn::MambaLM& m, int64_t b, int64_t prompt, int64_t steps, bool graph,
                      bool gemv = true, bool pdl = true, bool mma = true, bool conv_xproj = false) {
  const Device dev = m.backbone->embedding->weight.device();
  const int64_t v = m.config().vocab_size;
  Tensor ids = Tensor::from_ints(ids_of(b, prompt, v, 1), {b, prompt}, DType::i64, dev);
  nn::DecoderOptions o;
  o.cuda_graph = graph;
  o.gemv = gemv;
  o.pdl = pdl;
  o.mma = mma;
  o.conv_xproj = conv_xproj;
  nn::Decoder dec(m, b, o);
  if (!dev.is_cuda()) CHECK_FALSE(dec.pdl());
  CHECK(dec.graphed() == (graph && dev.is_cuda()));
  nn::MambaLM::InferenceCache cache;
  Tensor ref = m.prefill(ids, cache);
  double worst = rel_err(dec.prefill(ids), ref);
  for (int64_t t = 0; t < steps; ++t) {
    Tensor next = Tensor::from_ints(ids_of(b, 1, v, uint64_t(t) * 5 + 2), {b}, DType::i64, dev);
    ref = m.step(next, cache);
    dec.set_tokens(next);
    dec.step();
    worst = std::max(worst, rel_err(wide(dec.logits()), wide(ref)));
  }
  return worst;
}

}  // namespace

TEST_CASE("decode: fused conv step equals causal_conv1d at L = 1 (CPU)") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (int64_t k : {2, 3, 4}) conv_case(Device::cpu(), dt, 3, 37, k, k != 3);
}

TEST_CASE("decode: fused SSM step equals selective_scan at L = 1 (CPU)") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (const SsmCase& s : ssm_cases()) ssm_case(Device::cpu(), dt, s);
}

TEST_CASE("decode: decode_conv_xproj equals the conv step then x_proj (CPU)") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (const ConvXprojCase& s : conv_xproj_cases()) conv_xproj_case(Device::cpu(), dt, s);
  NoGradGuard ng;
  Tensor x = Tensor::zeros({3, 8}), cs = Tensor::zeros({3, 8, 3}), w = Tensor::zeros({8, 4});
  CHECK_THROWS_WITH_AS(decode_conv_xproj(x, Tensor::zeros({3, 8, 2}), w, Tensor(), Tensor::zeros({5, 8})),
                       doctest::Contains("conv_state"), Error);
  CHECK_THROWS_WITH_AS(decode_conv_xproj(x, cs, w, Tensor(), Tensor::zeros({5, 7})),
                       doctest::Contains("x_proj weight"), Error);
}

TEST_CASE("decode: argmax_rows_ picks the first maximum below the limit; NaN never wins") {
  Tensor x = Tensor::from_vector({0, 3, 3, 9,  //
                                  NAN, -1, -2, 0,  //
                                  -INFINITY, -INFINITY, NAN, 5},
                                 {3, 4});
  Tensor out = Tensor::zeros({3}, DType::i32);
  argmax_rows_(x, 3, out);
  CHECK(out.to_vector() == std::vector<double>{1, 1, 0});
  argmax_rows_(x, 4, out);
  CHECK(out.to_vector() == std::vector<double>{3, 3, 3});
  CHECK_THROWS_WITH_AS(argmax_rows_(x, 5, out), doctest::Contains("limit must be in [1, 4], got 5"), Error);
}

TEST_CASE("decode: bad inputs to the step ops name the operand") {
  NoGradGuard ng;
  Tensor x = Tensor::zeros({2, 5}), w = Tensor::zeros({5, 4});
  CHECK_THROWS_WITH_AS(causal_conv1d_step(x, Tensor::zeros({2, 5, 2}), w), doctest::Contains("conv_state"), Error);
  CHECK_THROWS_WITH_AS(causal_conv1d_step(x, Tensor::zeros({2, 5, 3}, DType::f64), w),
                       doctest::Contains("x's dtype"), Error);
  SsmStepInputs in;
  in.x = x;
  in.dt = x;
  in.A = Tensor::zeros({5, 4});
  in.B = Tensor::zeros({2, 4});
  in.C = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(selective_state_step(Tensor::zeros({2, 5, 4}), in), doctest::Contains("C"), Error);
}

TEST_CASE("decode: the Decoder equals MambaLM::prefill/step on the CPU (f64, f32, bf16)") {
  nn::MambaLM m64(small_lm(DType::f64, DType::f64), 3);
  CHECK(decoder_vs_ops(m64, 3, 5, 6, true) < 1e-10);
  nn::MambaLM m32(small_lm(DType::f32, DType::f32), 3);
  CHECK(decoder_vs_ops(m32, 2, 4, 5, true) < 1e-5);
  nn::MambaLM mbf(small_lm(DType::f32, DType::bf16), 3);
  CHECK(decoder_vs_ops(mbf, 2, 4, 5, true) < 1e-2);
  // Above batch 8 with the conv + x_proj option (the ops on the CPU).
  CHECK(decoder_vs_ops(m32, 9, 3, 3, true, true, true, true, /*conv_xproj=*/true) < 1e-5);
  // Both paths are the same math on the CPU (the ops one by one).
  CHECK(decoder_vs_ops(m64, 2, 3, 4, true, /*gemv=*/false) < 1e-10);
  CHECK(decoder_vs_ops(mbf, 9, 2, 3, true) < 1e-2);  // past the GEMV batch limit
}

TEST_CASE("decode: decode_add_rms_norm and decode_norm_linear into `out` on the CPU equal the ops") {
  NoGradGuard ng;
  Generator g{fresh_seed(), 0};
  Tensor x = input({3, 20}, DType::bf16, Device::cpu(), g), res = input({3, 20}, DType::f32, Device::cpu(), g);
  Tensor nw = input({20}, DType::f32, Device::cpu(), g, 0.5, 1.5), w = input({7, 20}, DType::bf16, Device::cpu(), g);
  RmsNormResult nr = rms_norm(x, nw, 1e-5, res, true);
  AddNormResult an = decode_add_rms_norm(x, res, nw, 1e-5, true, DType::f32);
  CHECK(an.y.dtype() == DType::f32);
  CHECK(rel_err(an.y, wide(nr.y)) == 0);
  CHECK(rel_err(an.residual, nr.residual) == 0);
  Tensor out = Tensor::zeros({3, 7}, DType::bf16);
  NormLinearResult nl = decode_norm_linear(x, res, nw, 1e-5, true, w, Tensor(), Tensor(), Tensor(), Tensor(), true, out);
  CHECK(nl.y.data_ptr() == out.data_ptr());
  CHECK(rel_err(wide(out), wide(linear(to_dtype(nr.y, DType::bf16), w))) == 0);
  CHECK_THROWS_WITH_AS(decode_norm_linear(x, res, nw, 1e-5, true, w, Tensor(), Tensor(), Tensor(), Tensor(), true,
                                          Tensor::zeros({3, 6}, DType::bf16)),
                       doctest::Contains("out must be contiguous"), Error);
}

TEST_CASE("decode: greedy decoding feeds the argmax back; the non-selective ablation is refused") {
  nn::MambaLM m(small_lm(DType::f64, DType::f64), 8);
  const int64_t b = 2, v = m.config().vocab_size;
  Tensor ids = Tensor::from_ints(ids_of(b, 3, v, 4), {b, 3});
  nn::DecoderOptions o;
  o.greedy = true;
  nn::Decoder dec(m, b, o);
  nn::MambaLM::InferenceCache cache;
  Tensor logits = m.prefill(ids, cache);
  dec.prefill(ids);
  for (int t = 0; t < 6; ++t) {
    // The reference picks the argmax on the host, as sample_token's greedy.
    std::vector<double> l = logits.to_vector();
    std::vector<int64_t> next;
    for (int64_t i = 0; i < b; ++i) {
      int64_t best = 0;
      for (int64_t j = 1; j < v; ++j)
        if (l[size_t(i * logits.size(1) + j)] > l[size_t(i * logits.size(1) + best)]) best = j;
      next.push_back(best);
    }
    CHECK(dec.tokens().to_vector() == std::vector<double>(next.begin(), next.end()));
    logits = m.step(Tensor::from_ints(next, {b}), cache);
    dec.step();
    CHECK(rel_err(dec.logits(), logits) < 1e-10);
  }
  nn::MambaConfig c = small_lm(DType::f64, DType::f64);
  c.selective_B = false;
  nn::MambaLM lti(c, 1);
  CHECK_THROWS_WITH_AS(nn::Decoder(lti, 1), doctest::Contains("selective"), Error);
  CHECK_THROWS_WITH_AS(nn::Decoder(m, 0), doctest::Contains("batch must be >= 1, got 0"), Error);
  CHECK_THROWS_WITH_AS(dec.prefill(Tensor::from_ints({1, 2, 3}, {3, 1})), doctest::Contains("Decoder::prefill"),
                       Error);
}

TEST_CASE("decode: fused conv step kernel on the GPU equals the op path (f32, bf16)") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t k : {2, 3, 4}) {
      conv_case(Device::cuda(), dt, 3, 37, k, k != 3);
      conv_case(Device::cuda(), dt, 1, 1536, k, true);
    }
}

TEST_CASE("decode: fused SSM step kernel on the GPU equals the op path (f32, bf16)") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16})
    for (const SsmCase& s : ssm_cases()) ssm_case(Device::cuda(), dt, s);
}

TEST_CASE("decode: decode_conv_xproj (conv + x_proj in one cluster kernel) on the GPU equals the ops") {
  if (skip_without_gpu()) return;
  for (DType dt : {DType::f32, DType::bf16})
    for (const ConvXprojCase& s : conv_xproj_cases()) conv_xproj_case(Device::cuda(), dt, s);
}

TEST_CASE("decode: argmax_rows_ on the GPU equals the CPU") {
  if (skip_without_gpu()) return;
  Generator g{fresh_seed(), 0};
  Poison poison;
  // Odd row strides take the scalar loads, strides of 16 bytes the vector
  // loads (with a tail when the limit is not a multiple of 8).
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t v : {1, 37, 50277, 50280})
      for (int64_t cols : {v + 5, (v + 7) / 8 * 8}) {
        CAPTURE(v);
        CAPTURE(cols);
        Tensor x = input({3, cols}, dt, Device::cpu(), g);  // bf16: ties are likely, the first must win
        Tensor want = Tensor::zeros({3}, DType::i64), got = Tensor::empty({3}, DType::i32, Device::cuda());
        argmax_rows_(x, v, want);
        argmax_rows_(x.to(Device::cuda()), v, got);
        CHECK(got.to_vector() == want.to_vector());
      }
  // NaN never wins; an all -inf/NaN row gives 0.
  Tensor x = Tensor::from_vector({0, 3, 3, 9, NAN, -1, -2, 0, -INFINITY, -INFINITY, NAN, 5}, {3, 4}, DType::bf16);
  Tensor out = Tensor::empty({3}, DType::i64, Device::cuda());
  argmax_rows_(x.to(Device::cuda()), 3, out);
  CHECK(out.to_vector() == std::vector<double>{1, 1, 0});
}

namespace {
// A decode linear path (`fn`: decode_linear or decode_linear_mma) on the
// GPU against linear in f32 at one shape: x a column slice of a wider
// tensor starting at column `slice_at` when s.slice, the result into a
// NaN-poisoned buffer, then again without one (the same bits).
struct LinearCase {
  int64_t m, n, k;
  bool bias, slice;
};
template <class Fn> void gpu_linear_case(Fn fn, LinearCase s, DType dt, int64_t slice_at, Generator& g) {
  CAPTURE(s.m);
  CAPTURE(s.n);
  CAPTURE(s.k);
  CAPTURE(dtype_name(dt));
  Tensor wide_x = input({s.m, s.k + (s.slice ? 2 * slice_at : 0)}, dt, Device::cuda(), g);
  Tensor x = narrow(wide_x, 1, s.slice ? slice_at : 0, s.k);
  Tensor w = input({s.n, s.k}, dt, Device::cuda(), g), b = s.bias ? input({s.n}, dt, Device::cuda(), g) : Tensor();
  Tensor want = linear(wide(x), wide(w), wide(b));
  Tensor out = Tensor::empty({s.m, s.n}, dt, Device::cuda());  // NaN-poisoned
  Tensor got = fn(x, w, b, out);
  CHECK(got.data_ptr() == out.data_ptr());
  CHECK(got.dtype() == dt);
  CHECK(rel_err(wide(got), want) < tol(dt));
  CHECK(fn(x, w, b, Tensor()).to_vector() == got.to_vector());  // deterministic
}
}  // namespace

TEST_CASE("decode: decode_linear (the small-batch GEMV) on the GPU equals linear (f32, bf16)") {
  if (skip_without_gpu()) return;
  Generator g{fresh_seed(), 0};
  NoGradGuard ng;
  Poison poison;
  // Aligned K (16-byte loads) and odd K (scalar loads); N across the
  // warps-per-row choices; x as a column slice of a wider tensor.
  // M > 8 runs as row tiles of 8 (the last one partial).
  for (LinearCase s : {LinearCase{1, 3072, 768, false, false}, LinearCase{3, 80, 1536, false, true},
                       LinearCase{8, 768, 1536, true, false}, LinearCase{5, 37, 37, true, true},
                       LinearCase{1, 50280, 768, false, false}, LinearCase{2, 513, 40, false, true},
                       LinearCase{9, 10, 16, false, false}, LinearCase{64, 80, 1536, false, true},
                       LinearCase{64, 768, 1536, true, false}, LinearCase{37, 37, 37, true, true},
                       LinearCase{17, 513, 40, false, false}})
    for (DType dt : {DType::f32, DType::bf16}) gpu_linear_case(decode_linear, s, dt, /*slice_at=*/3, g);
}

TEST_CASE("decode: decode_linear_mma equals linear on the CPU; bad operands name the operand") {
  Generator g{fresh_seed(), 0};
  NoGradGuard ng;
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor x = input({9, 64}, dt, Device::cpu(), g), w = input({48, 64}, dt, Device::cpu(), g);
    Tensor b = input({48}, dt, Device::cpu(), g);
    Tensor out = Tensor::empty({9, 48}, dt, Device::cpu());
    Tensor got = decode_linear_mma(x, w, b, out);
    CHECK(got.data_ptr() == out.data_ptr());
    CHECK(rel_err(wide(got), linear(wide(x), wide(w), wide(b))) < tol(dt));
  }
  Tensor x = input({9, 64}, DType::f32, Device::cpu(), g);
  CHECK_THROWS_WITH(decode_linear_mma(x, input({48, 63}, DType::f32, Device::cpu(), g)),
                    doctest::Contains("does not match x"));
  CHECK_THROWS_WITH(decode_linear_mma(x, input({48, 64}, DType::f32, Device::cpu(), g), input({47}, DType::f32, Device::cpu(), g)),
                    doctest::Contains("bias"));
  CHECK_THROWS_WITH(decode_linear_mma(reshape(x, {9, 8, 8}), input({48, 64}, DType::f32, Device::cpu(), g)),
                    doctest::Contains("decode_linear_mma: x must have rank 2"));
}

TEST_CASE("decode: decode_linear_mma (tensor-core rows) on the GPU equals linear (bf16, f16)") {
  if (skip_without_gpu()) return;
  Generator g{fresh_seed(), 0};
  NoGradGuard ng;
  Poison poison;
  // mamba-130m's projections at batch 64 (in_proj: 32-row blocks; x_proj,
  // out_proj: 16-row blocks), odd M and N, one and two 64-row tiles, x as a
  // column slice of a wider tensor (at column 8: rows stay 16-byte
  // aligned), K from one 32-wide block to several a warp; K = 40 takes the
  // fallback (linear).
  for (LinearCase s : {LinearCase{64, 3072, 768, false, false}, LinearCase{64, 80, 1536, false, true},
                       LinearCase{64, 768, 1536, false, false}, LinearCase{9, 37, 32, true, false},
                       LinearCase{33, 70, 96, false, true}, LinearCase{65, 16, 128, true, false},
                       LinearCase{130, 200, 256, true, false}, LinearCase{17, 24, 480, false, false},
                       LinearCase{12, 50, 40, false, false}})
    for (DType dt : {DType::bf16, DType::f16}) gpu_linear_case(decode_linear_mma, s, dt, /*slice_at=*/8, g);
}

TEST_CASE("decode: decode_linear_conv (GEMV + conv step in one kernel) on the GPU equals linear then the conv step") {
  if (skip_without_gpu()) return;
  Generator g{fresh_seed(), 0};
  NoGradGuard ng;
  Poison poison;
  struct S {
    int64_t m, c, n, k, width;
    bool bias, conv_bias;
  };
  for (S s : {S{1, 1536, 3072, 768, 4, false, true}, S{3, 37, 74, 20, 4, true, true}, S{8, 37, 80, 24, 2, false, false},
              S{5, 9, 9, 16, 3, true, false}})
    for (DType dt : {DType::f32, DType::bf16}) {
      CAPTURE(s.m);
      CAPTURE(s.c);
      CAPTURE(s.n);
      CAPTURE(s.k);
      CAPTURE(s.width);
      CAPTURE(dtype_name(dt));
      Tensor x = input({s.m, s.k}, dt, Device::cuda(), g);
      Tensor w = input({s.n, s.k}, dt, Device::cuda(), g), b = s.bias ? input({s.n}, dt, Device::cuda(), g) : Tensor();
      Tensor cw = input({s.c, 1, s.width}, DType::f32, Device::cuda(), g);
      Tensor cb = s.conv_bias ? input({s.c}, DType::f32, Device::cuda(), g) : Tensor();
      Tensor state = input({s.m, s.c, s.width - 1}, dt, Device::cuda(), g);
      Tensor ref_state = state.clone().detach();
      Tensor y = linear(x, w, b);
      Tensor ref = causal_conv1d_step(narrow(y, 1, 0, s.c), ref_state, cw, cb, true);
      LinearConvResult got = decode_linear_conv(x, w, b, state, cw, cb, true);
      CHECK(rel_err(wide(got.y), wide(y)) < tol(dt));
      CHECK(rel_err(wide(got.conv_out), wide(ref)) < tol(dt));
      // The states agree up to the one rounding of y the two paths may differ by.
      CHECK(rel_err(wide(state), wide(ref_state)) < tol(dt));
    }
}

TEST_CASE("decode: decode_norm_linear (add + RMSNorm + GEMV + conv in one kernel) on the GPU equals the ops") {
  if (skip_without_gpu()) return;
  Generator g{fresh_seed(), 0};
  NoGradGuard ng;
  Poison poison;
  struct S {
    int64_t m, k, n, c;  // c = 0: no conv
    DType x_dt, res_dt;  // res_dt f64: no residual (the first block)
    bool res32;
  };
  const DType none = DType::f64;
  for (S s : {S{1, 768, 3072, 1536, DType::f32, none, true}, S{1, 768, 3072, 1536, DType::bf16, DType::f32, true},
              S{3, 20, 80, 37, DType::bf16, DType::bf16, false}, S{8, 24, 50, 0, DType::bf16, DType::f32, true},
              S{2, 40, 513, 0, DType::f32, DType::f32, false}, S{5, 768, 40, 20, DType::bf16, none, false}})
    for (DType dt : {DType::f32, DType::bf16}) {
      CAPTURE(s.m);
      CAPTURE(s.k);
      CAPTURE(s.n);
      CAPTURE(s.c);
      CAPTURE(dtype_name(s.x_dt));
      CAPTURE(dtype_name(s.res_dt));
      CAPTURE(s.res32);
      CAPTURE(dtype_name(dt));
      const Device gpu = Device::cuda();
      Tensor x = input({s.m, s.k}, s.x_dt, gpu, g, -2, 2);
      Tensor res = s.res_dt == none ? Tensor() : input({s.m, s.k}, s.res_dt, gpu, g, -2, 2);
      Tensor nw = input({s.k}, DType::f32, gpu, g, 0.5, 1.5);
      Tensor w = input({s.n, s.k}, dt, gpu, g), b = s.n % 2 ? input({s.n}, dt, gpu, g) : Tensor();
      Tensor cw, state, ref_state;
      if (s.c > 0) {
        cw = input({s.c, 4}, DType::f32, gpu, g);
        state = input({s.m, s.c, 3}, dt, gpu, g);
        ref_state = state.clone().detach();
      }
      RmsNormResult nr = rms_norm(x, nw, 1e-5, res, s.res32);
      Tensor y = linear(to_dtype(nr.y, dt), w, b);
      NormLinearResult got = decode_norm_linear(x, res, nw, 1e-5, s.res32, w, b, state, cw, Tensor(), true);
      CHECK(got.residual.dtype() == nr.residual.dtype());
      CHECK(rel_err(wide(got.residual), wide(nr.residual)) < 1e-6);
      CHECK(rel_err(wide(got.y), wide(y)) < tol(dt));
      if (s.c > 0) {
        Tensor ref = causal_conv1d_step(narrow(y, 1, 0, s.c), ref_state, cw, Tensor(), true);
        CHECK(rel_err(wide(got.conv_out), wide(ref)) < tol(dt));
        CHECK(rel_err(wide(state), wide(ref_state)) < tol(dt));
      } else {
        CHECK_FALSE(got.conv_out.defined());
      }
    }
}

TEST_CASE("decode: graph-replayed Decoder on the GPU equals MambaLM::step (f32, bf16); graph == eager") {
  if (skip_without_gpu()) return;
  Poison poison;
  nn::MambaLM m32(small_lm(DType::f32, DType::f32), 5, Device::cuda());
  // GEMV path (batch <= 8) and cuBLASLt path, graphed and eager, with and
  // without PDL launches; batches 1, 3, 8 (fused GEMV), 9 and 64 (cuBLASLt
  // in_proj and head, the one-kernel add + norm, tiled GEMVs for x_proj and
  // out_proj), 65 (cuBLASLt only).
  CHECK(decoder_vs_ops(m32, 3, 7, 6, true) < 1e-5);
  CHECK(decoder_vs_ops(m32, 1, 1, 3, false) < 1e-5);
  CHECK(decoder_vs_ops(m32, 3, 7, 6, true, /*gemv=*/false) < 1e-5);
  CHECK(decoder_vs_ops(m32, 8, 3, 4, true, true, /*pdl=*/false) < 1e-5);
  CHECK(decoder_vs_ops(m32, 64, 3, 4, true) < 1e-5);
  nn::MambaLM mbf(small_lm(DType::f32, DType::bf16), 5, Device::cuda());
  CHECK(decoder_vs_ops(mbf, 3, 7, 6, true) < 1e-2);
  CHECK(decoder_vs_ops(mbf, 1, 5, 6, true) < 1e-2);
  CHECK(decoder_vs_ops(mbf, 3, 7, 6, true, /*gemv=*/false) < 1e-2);
  CHECK(decoder_vs_ops(mbf, 9, 4, 4, true) < 1e-2);
  CHECK(decoder_vs_ops(mbf, 64, 4, 4, true) < 1e-2);
  CHECK(decoder_vs_ops(mbf, 64, 4, 4, false, true, /*pdl=*/false) < 1e-2);
  CHECK(decoder_vs_ops(mbf, 64, 4, 4, true, /*gemv=*/false) < 1e-2);
  CHECK(decoder_vs_ops(mbf, 65, 2, 2, true) < 1e-2);  // past the tiled GEMV's batch: all cuBLASLt
  // d_model 32: every projection's K a multiple of 32, so above batch 8 the
  // projections run on the tensor-core kernel (decode_linear_mma); against
  // cuBLASLt too.
  nn::MambaConfig c32 = small_lm(DType::f32, DType::bf16);
  c32.d_model = 32;
  nn::MambaLM m32bf(c32, 5, Device::cuda());
  for (int64_t b : {9, 64, 130}) {
    CAPTURE(b);
    CHECK(decoder_vs_ops(m32bf, b, 4, 4, true) < 1e-2);
    CHECK(decoder_vs_ops(m32bf, b, 3, 3, false, true, /*pdl=*/false) < 1e-2);
    CHECK(decoder_vs_ops(m32bf, b, 3, 3, true, true, true, /*mma=*/false) < 1e-2);
    // The conv step and x_proj in one cluster kernel (decode_conv_xproj).
    CHECK(decoder_vs_ops(m32bf, b, 4, 4, true, true, true, true, /*conv_xproj=*/true) < 1e-2);
    CHECK(decoder_vs_ops(m32bf, b, 3, 3, false, true, false, false, /*conv_xproj=*/true) < 1e-2);
  }
  CHECK(decoder_vs_ops(m32, 64, 3, 4, true, true, true, true, /*conv_xproj=*/true) < 1e-5);
  // Replaying the graph runs the very launches of the eager step: identical
  // logits and greedy tokens.
  const int64_t b = 3;
  Tensor ids = Tensor::from_ints(ids_of(b, 4, 37, 9), {b, 4}, DType::i64, Device::cuda());
  nn::DecoderOptions og, oe;
  og.greedy = oe.greedy = true;
  oe.cuda_graph = false;
  nn::Decoder dg(mbf, b, og), de(mbf, b, oe);
  REQUIRE(dg.graphed());
  WARN_MESSAGE(dg.pdl(), "the decode graph was captured without PDL launches (see the warning on stderr)");
  dg.prefill(ids);
  de.prefill(ids);
  for (int t = 0; t < 8; ++t) {
    dg.step();
    de.step();
    CHECK(dg.logits().to_vector() == de.logits().to_vector());
    CHECK(dg.tokens().to_vector() == de.tokens().to_vector());
  }
}

TEST_CASE("decode: decode_add_rms_norm (one kernel, output in the compute dtype) on the GPU equals the ops") {
  if (skip_without_gpu()) return;
  Generator g{fresh_seed(), 0};
  NoGradGuard ng;
  Poison poison;
  struct S {
    int64_t m, k;
    DType x_dt, res_dt;  // res_dt f64: no residual (the first block)
    bool res32;
  };
  const DType none = DType::f64;
  for (S s : {S{1, 768, DType::bf16, DType::f32, true}, S{64, 768, DType::f32, DType::f32, true},
              S{3, 37, DType::bf16, DType::bf16, false}, S{64, 20, DType::bf16, none, true},
              S{5, 2560, DType::f32, none, false}, S{2, 1, DType::bf16, DType::f32, false}})
    for (DType out : {DType::f32, DType::bf16}) {
      CAPTURE(s.m);
      CAPTURE(s.k);
      CAPTURE(dtype_name(s.x_dt));
      CAPTURE(dtype_name(s.res_dt));
      CAPTURE(s.res32);
      CAPTURE(dtype_name(out));
      const Device gpu = Device::cuda();
      Tensor x = input({s.m, s.k}, s.x_dt, gpu, g, -2, 2);
      Tensor res = s.res_dt == none ? Tensor() : input({s.m, s.k}, s.res_dt, gpu, g, -2, 2);
      Tensor nw = input({s.k}, DType::f32, gpu, g, 0.5, 1.5);
      RmsNormResult nr = rms_norm(x, nw, 1e-5, res, s.res32);
      AddNormResult got = decode_add_rms_norm(x, res, nw, 1e-5, s.res32, out);
      CHECK(got.residual.dtype() == nr.residual.dtype());
      CHECK(got.y.dtype() == out);
      CHECK(rel_err(wide(got.residual), wide(nr.residual)) < 1e-6);
      CHECK(rel_err(wide(got.y), wide(to_dtype(nr.y, out))) < (out == DType::f32 ? 1e-5 : 1e-2));
    }
}

TEST_CASE("decode: decode_norm_linear into a given buffer; the LM head's shape (capped grid striding over rows)") {
  if (skip_without_gpu()) return;
  Generator g{fresh_seed(), 0};
  NoGradGuard ng;
  Poison poison;
  struct S {
    int64_t m, k, n;
  };
  // 50280 rows: the norm variant's grid is capped at a few blocks per SM,
  // each block striding over many 8-row groups; odd N and K take the
  // tails and the scalar loads.
  for (S s : {S{1, 768, 50280}, S{3, 768, 50277}, S{8, 24, 50280}, S{2, 37, 4099}})
    for (DType dt : {DType::f32, DType::bf16}) {
      CAPTURE(s.m);
      CAPTURE(s.k);
      CAPTURE(s.n);
      CAPTURE(dtype_name(dt));
      const Device gpu = Device::cuda();
      Tensor x = input({s.m, s.k}, DType::bf16, gpu, g, -2, 2);
      Tensor res = input({s.m, s.k}, DType::f32, gpu, g, -2, 2);
      Tensor nw = input({s.k}, DType::f32, gpu, g, 0.5, 1.5);
      Tensor w = input({s.n, s.k}, dt, gpu, g);
      Tensor out = Tensor::empty({s.m, s.n}, dt, gpu);  // NaN-poisoned
      RmsNormResult nr = rms_norm(x, nw, 1e-5, res, true);
      Tensor want = linear(wide(to_dtype(nr.y, dt)), wide(w));
      NormLinearResult got =
          decode_norm_linear(x, res, nw, 1e-5, true, w, Tensor(), Tensor(), Tensor(), Tensor(), true, out);
      CHECK(got.y.data_ptr() == out.data_ptr());
      // The normalised rows are rounded to x's bf16 on both sides, after
      // sums of squares taken in different orders (the GEMV's block vs
      // rms_norm's warp per row): a value at a rounding boundary can land
      // one bf16 ulp apart, which moves an f32 output row by ~3e-4 of its
      // norm (seen once in six runs at 8e-5). bf16 outputs keep tol(dt).
      CHECK(rel_err(wide(out), want) < (dt == DType::f32 ? 1e-3 : tol(dt)));
      CHECK(rel_err(wide(got.residual), wide(nr.residual)) < 1e-6);
    }
}
