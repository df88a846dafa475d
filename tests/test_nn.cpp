// nn/: Module bookkeeping (names, tying, state dicts), the Mamba mixer and
// MambaLM (parameter names, shapes, counts and init as mamba_ssm),
// gradchecks in float64, the ablation switches, mixed precision, and the
// FLOP / memory formulas.
#include <chrono>
#include <cmath>
#include <set>

#include "helpers.h"
#include "nn/nn.h"

using namespace coil;
using namespace coil::nn;
using namespace coil::test;

namespace {

MambaConfig tiny_config(DType dtype = DType::f64) {
  MambaConfig c;
  c.d_model = 4;
  c.n_layer = 2;
  c.vocab_size = 10;  // padded to 16
  c.d_state = 3;
  c.dt_rank = 2;
  c.param_dtype = dtype;
  c.compute_dtype = dtype;
  // Larger steps than the default [1e-3, 0.1] so every gradient (dt_proj's
  // included) is well above the gradcheck tolerance.
  c.dt_min = 0.3;
  c.dt_max = 1.5;
  return c;
}

// At init the tiny model's SSM path is weak (some gradients ~1e-5), so the
// gradchecks use a tolerance far below that: central differences in f64 with
// eps 1e-6 are good to ~1e-10 here.
const GradcheckOptions kTight{1e-6, 1e-9, 1e-6, 1234};

MambaConfig small_config() {
  MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 50;
  return c;
}

MambaConfig ladder(int64_t n_layer, int64_t d_model) {
  MambaConfig c;
  c.d_model = d_model;
  c.n_layer = n_layer;
  c.vocab_size = 50277;
  return c;
}

Tensor ids(const Shape& s, int64_t vocab, uint64_t seed) {
  Generator g{seed, 0};
  return randint(0, vocab, s, DType::i64, Device::cpu(), &g);
}

std::vector<double> values(const Tensor& t) { return t.to_vector(); }

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

}  // namespace

TEST_CASE("nn: parameter counts of the Mamba ladder") {
  CHECK(ladder(24, 768).padded_vocab_size() == 50280);
  CHECK(ladder(24, 768).resolved_dt_rank() == 48);
  CHECK(ladder(64, 2560).resolved_dt_rank() == 160);
  CHECK(count_parameters(ladder(24, 768)) == 129135360);
  auto near = [](int64_t n, double millions) { return std::fabs(double(n) / 1e6 - millions) < 0.1; };
  CHECK(near(count_parameters(ladder(48, 1024)), 371.5));
  CHECK(near(count_parameters(ladder(48, 1536)), 793.2));
  CHECK(near(count_parameters(ladder(48, 2048)), 1372.2));
  CHECK(near(count_parameters(ladder(64, 2560)), 2768.3));

  // The formula agrees with built models, across the options it covers.
  for (int variant = 0; variant < 6; ++variant) {
    MambaConfig c = small_config();
    c.bias = variant == 1;
    c.conv_bias = variant != 2;
    c.tie_embeddings = variant != 3;
    c.selective_B = variant != 4;
    c.selective_C = variant != 4;
    c.selective_delta = variant != 5;
    c.vocab_size = 51 + variant;
    MambaLM m(c, 1);
    INFO("variant " << variant);
    CHECK(m.num_parameters() == count_parameters(c));
  }
}

TEST_CASE("nn: one layer of the 130M model: names, shapes and init") {
  // The layer's shapes do not depend on n_layer or the vocabulary; out_proj's
  // scale does (1/sqrt(24) here).
  MambaConfig c = ladder(24, 768);
  Generator g{42, 0};
  Block block(c, 3, g);
  const std::vector<std::pair<std::string, Shape>> layer = {
      {"mixer.A_log", {1536, 16}},           {"mixer.D", {1536}},
      {"mixer.in_proj.weight", {3072, 768}}, {"mixer.conv1d.weight", {1536, 1, 4}},
      {"mixer.conv1d.bias", {1536}},         {"mixer.x_proj.weight", {80, 1536}},
      {"mixer.dt_proj.weight", {1536, 48}},  {"mixer.dt_proj.bias", {1536}},
      {"mixer.out_proj.weight", {768, 1536}}, {"norm.weight", {768}}};
  NamedTensors ordered = block.state_dict_ordered();
  REQUIRE(ordered.size() == layer.size());
  for (size_t k = 0; k < layer.size(); ++k) {
    CHECK(ordered[k].first == layer[k].first);
    CHECK(ordered[k].second.shape() == layer[k].second);
    CHECK(ordered[k].second.dtype() == DType::f32);
  }
  CHECK(block.num_parameters() == 3771648);

  const Mamba& mx = *block.mixer;
  std::vector<double> a = values(mx.A_log);
  for (int64_t r : {0, 700, 1535})
    for (int64_t j = 0; j < 16; ++j) CHECK(a[size_t(r * 16 + j)] == doctest::Approx(std::log(double(j + 1))));
  for (double v : values(mx.D)) REQUIRE(v == 1.0);
  for (double v : values(block.norm->weight)) REQUIRE(v == 1.0);
  {
    std::vector<double> b = values(mx.dt_proj->bias);
    int below_mid = 0;
    for (double v : b) {
      double dt = std::log1p(std::exp(v));  // softplus
      REQUIRE(dt >= 1e-3 * (1 - 1e-6));
      REQUIRE(dt <= 0.1 * (1 + 1e-6));
      below_mid += dt < std::sqrt(1e-3 * 0.1);  // log-uniform: half below the geometric mean
    }
    CHECK(double(below_mid) / double(b.size()) == doctest::Approx(0.5).epsilon(0.1));
  }
  auto bound_check = [](const Tensor& t, double bound) {
    double m = max_abs(t);
    CHECK(m <= bound);
    CHECK(m >= 0.99 * bound);
  };
  bound_check(mx.in_proj->weight, 1 / std::sqrt(768.0));
  bound_check(mx.x_proj->weight, 1 / std::sqrt(1536.0));
  bound_check(mx.dt_proj->weight, 1 / std::sqrt(48.0));
  bound_check(mx.out_proj->weight, 1 / std::sqrt(1536.0) / std::sqrt(24.0));
  bound_check(mx.conv1d->weight, 0.5);
  bound_check(mx.conv1d->bias, 0.5);

  // Kinds and no-weight-decay flags for the optimizer.
  for (const ParamInfo& p : block.parameter_infos()) {
    INFO(p.name);
    CHECK(p.no_weight_decay == (p.name == "mixer.A_log" || p.name == "mixer.D"));
    if (p.name.ends_with("proj.weight")) CHECK(p.kind == param_kind::linear_weight);
    if (p.name == "mixer.dt_proj.bias") CHECK(p.kind == param_kind::linear_bias);
    if (p.name == "norm.weight") CHECK(p.kind == param_kind::norm_weight);
    if (p.name.starts_with("mixer.conv1d")) CHECK(p.kind.starts_with("conv_"));
  }
}

TEST_CASE("nn: MambaLM names, tying and embedding init") {
  MambaConfig c = small_config();
  c.vocab_size = 4090;  // padded to 4096
  c.d_model = 256;
  c.n_layer = 1;
  MambaLM m(c, 42);
  CHECK(m.tied());
  NamedTensors named = m.named_parameters();
  CHECK(named.size() == 2 + 10);  // embedding, norm_f, 10 per layer
  CHECK(named.front().first == "backbone.embedding.weight");
  StateDict sd = m.state_dict();
  CHECK(sd.size() == named.size() + 1);  // + lm_head.weight (tied alias)
  REQUIRE(sd.count("lm_head.weight"));
  CHECK(sd.at("lm_head.weight").storage() == sd.at("backbone.embedding.weight").storage());
  CHECK(sd.at("backbone.embedding.weight").shape() == Shape({4096, 256}));
  NamedTensors ordered = m.state_dict_ordered();
  CHECK(ordered[1].first == "backbone.layers.0.mixer.A_log");
  CHECK(ordered[ordered.size() - 2].first == "backbone.norm_f.weight");
  CHECK(ordered.back().first == "lm_head.weight");
  CHECK(m.num_parameters() == count_parameters(c));

  Tensor e = m.backbone->embedding->weight;
  double mu = mean(e).item(), sd2 = mean(e * e).item();
  CHECK(std::fabs(mu) < 1e-4);
  CHECK(std::sqrt(sd2 - mu * mu) == doctest::Approx(0.02).epsilon(0.01));
}

// Building the real 130M model takes ~2 s on a 2-core CPU (the Philox fills
// of 129M values), so it is off by default: run with --no-skip. The counts
// are checked from the config above and the formula against built models.
TEST_CASE("nn: the full 130M model has 129,135,360 parameters [slow]" * doctest::skip()) {
  auto t0 = std::chrono::steady_clock::now();
  MambaLM m(ladder(24, 768), 42);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("built the 130M model on the CPU in " << secs << " s");
  CHECK(m.num_parameters() == 129135360);
  CHECK(m.tied());
  CHECK(m.named_parameters().size() == 2 + 24 * 10);
  CHECK(m.state_dict().size() == 3 + 24 * 10);
}

TEST_CASE("nn: the same seed gives the same weights; another seed does not") {
  MambaConfig c = small_config();
  MambaLM a(c, 7), b(c, 7), d(c, 8);
  for (const auto& [name, t] : a.state_dict()) {
    INFO(name);
    CHECK(max_abs_diff(t, b.state_dict().at(name)) == 0.0);
  }
  CHECK(max_abs_diff(a.state_dict().at("backbone.layers.1.mixer.in_proj.weight"),
                     d.state_dict().at("backbone.layers.1.mixer.in_proj.weight")) > 0);
  // An explicit generator advances by the draws; a fresh one repeats them.
  Generator g{7, 0};
  MambaLM e(c, g);
  CHECK(g.offset > 0);
  CHECK(max_abs_diff(e.state_dict().at("backbone.embedding.weight"), a.state_dict().at("backbone.embedding.weight")) ==
        0.0);
}

TEST_CASE("nn: state_dict round trip gives identical logits") {
  MambaConfig c = small_config();
  MambaLM a(c, 1), b(c, 2);
  Tensor x = ids({2, 9}, c.vocab_size, 3);
  Tensor la, lb;
  {
    NoGradGuard ng;
    la = a.forward(x);
    lb = b.forward(x);
  }
  CHECK(la.shape() == Shape({2, 9, 56}));
  CHECK(max_abs_diff(la, lb) > 1e-3);
  // Snapshot (state_dict values share storage with the live parameters).
  StateDict snap;
  for (const auto& [k, v] : a.state_dict()) snap[k] = v.clone();
  LoadResult r = b.load_state_dict(snap);
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  NoGradGuard ng;
  CHECK(max_abs_diff(a.forward(x), b.forward(x)) == 0.0);
  // Loading copies values in: b's tensors are still its own leaves, still tied.
  CHECK(b.tied());
  CHECK(b.backbone->embedding->weight.requires_grad());
  CHECK(b.backbone->embedding->weight.storage() != a.backbone->embedding->weight.storage());
  // A tied weight stored once (as safetensors do) is enough.
  snap.erase("lm_head.weight");
  CHECK_NOTHROW(b.load_state_dict(snap));
  // Values convert dtype on the way in.
  StateDict half;
  for (const auto& [k, v] : snap) half[k] = v.to(DType::f64);
  b.load_state_dict(half);
  CHECK(b.backbone->norm_f->weight.dtype() == DType::f32);
  CHECK(max_abs_diff(a.forward(x), b.forward(x)) == 0.0);
}

TEST_CASE("nn: load_state_dict errors name the key and the shapes") {
  MambaConfig c = small_config();
  MambaLM m(c, 1);
  StateDict sd;
  for (const auto& [k, v] : m.state_dict()) sd[k] = v.clone();

  StateDict wrong = sd;
  wrong["backbone.layers.1.mixer.D"] = zeros({63});
  CHECK_THROWS_WITH_AS(m.load_state_dict(wrong),
                       doctest::Contains("shape mismatch for backbone.layers.1.mixer.D: the state dict has [63], the "
                                         "model has [64]"),
                       Error);
  CHECK_THROWS_AS(m.load_state_dict(wrong, /*strict=*/false), Error);  // shapes are checked even when not strict

  StateDict missing = sd;
  missing.erase("backbone.layers.0.mixer.x_proj.weight");
  CHECK_THROWS_WITH_AS(m.load_state_dict(missing), doctest::Contains("missing keys: backbone.layers.0.mixer.x_proj.weight"),
                       Error);
  StateDict both = sd;
  both.erase("lm_head.weight");
  both.erase("backbone.embedding.weight");
  CHECK_THROWS_WITH_AS(m.load_state_dict(both), doctest::Contains("missing keys: backbone.embedding.weight"), Error);

  StateDict extra = sd;
  extra["backbone.layers.0.mixer.bogus"] = zeros({1});
  CHECK_THROWS_WITH_AS(m.load_state_dict(extra), doctest::Contains("unexpected keys: backbone.layers.0.mixer.bogus"),
                       Error);
  // Non-strict: reported, the rest is loaded.
  extra.erase("backbone.norm_f.weight");
  LoadResult r = m.load_state_dict(extra, /*strict=*/false);
  CHECK(r.missing_keys == std::vector<std::string>{"backbone.norm_f.weight"});
  CHECK(r.unexpected_keys == std::vector<std::string>{"backbone.layers.0.mixer.bogus"});
  // A failed strict load changes nothing.
  Tensor before = m.backbone->layers->operator[](0)->mixer->in_proj->weight.clone();
  StateDict bad = sd;
  for (auto& [k, v] : bad) v = zeros(v.shape());
  bad["backbone.layers.0.mixer.D"] = zeros({5});
  CHECK_THROWS_AS(m.load_state_dict(bad), Error);
  CHECK(max_abs_diff(before, m.backbone->layers->operator[](0)->mixer->in_proj->weight) == 0.0);
}

TEST_CASE("nn: Module bookkeeping: train flag, zero_grad, registration errors") {
  MambaConfig c = small_config();
  MambaLM m(c, 1);
  CHECK(m.is_training());
  m.eval();
  CHECK(!m.backbone->layers->operator[](1)->mixer->is_training());
  m.train();
  CHECK(m.backbone->layers->operator[](1)->mixer->is_training());
  std::vector<std::string> mods;
  for (const auto& [name, mod] : m.named_modules()) mods.push_back(name);
  CHECK(mods[0] == "");
  CHECK(std::find(mods.begin(), mods.end(), "backbone.layers.1.mixer.conv1d") != mods.end());

  Tensor x = ids({1, 5}, c.vocab_size, 4);
  backward(m.loss(x, x));
  for (const Tensor& p : m.parameters()) CHECK(p.grad().defined());
  m.zero_grad();
  for (const Tensor& p : m.parameters()) CHECK(!p.grad().defined());

  // Same-device to() is a no-op that keeps everything.
  Tensor w = m.backbone->embedding->weight;
  m.to(Device::cpu());
  CHECK(m.backbone->embedding->weight.same(w));

  struct Bad : Module {
    Tensor a, b;
    Bad() {
      register_parameter("a", a, zeros({2}));
      register_parameter("a", b, zeros({2}));
    }
  };
  CHECK_THROWS_WITH_AS(Bad(), doctest::Contains("parameter 'a' registered twice"), Error);
  struct Dotted : Module {
    Tensor a;
    Dotted() { register_parameter("x.y", a, zeros({2})); }
  };
  CHECK_THROWS_WITH_AS(Dotted(), doctest::Contains("invalid parameter name 'x.y'"), Error);
}

TEST_CASE("nn: Linear, Embedding, RMSNorm modules") {
  Generator g{5, 0};
  LinearOptions o;
  o.bias = true;
  Linear lin(10, 3, g, o);
  CHECK(lin.weight.shape() == Shape({3, 10}));
  CHECK(lin.bias.shape() == Shape({3}));
  CHECK(max_abs(lin.weight) <= 1 / std::sqrt(10.0));
  CHECK(lin.named_parameters().size() == 2);
  Tensor x = rand({4, 10}, DType::f32, Device::cpu(), &g);
  CHECK(max_abs_diff(lin.forward(x), linear(x, lin.weight, lin.bias)) < 1e-6);
  CHECK(lin.forward(x.to(DType::bf16), DType::bf16).dtype() == DType::bf16);

  Embedding emb(7, 5, g);
  Tensor i = Tensor::from_ints({1, 6, 1}, {3});
  Tensor e = emb.forward(i);
  CHECK(e.shape() == Shape({3, 5}));
  CHECK(max_abs_diff(narrow(e, 0, 0, 1), narrow(e, 0, 2, 1)) == 0.0);

  RMSNorm norm(5);
  auto [y, r] = norm.forward(e, e, /*residual_in_fp32=*/true);
  CHECK(max_abs_diff(r, e * 2.0) < 1e-6);
  Tensor ref = r * rsqrt(mean(r * r, {-1}, true) + 1e-5);
  CHECK(max_abs_diff(y, ref) < 1e-5);
}

TEST_CASE("gradcheck: tiny Mamba mixer, every parameter and the input") {
  MambaConfig c = tiny_config();
  Generator g{11, 0};
  Mamba mixer(c, 0, g);
  Tensor h = leaf({2, 5, 4});
  std::vector<Tensor> inputs{h};
  for (const Tensor& p : mixer.parameters()) inputs.push_back(p);
  CHECK(inputs.size() == 1 + 9);
  check_gradcheck([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{mixer.forward(in[0])}; }, inputs,
                  kTight);
  for (size_t i = 0; i < inputs.size(); ++i) {  // every gradient was exercised, none is trivially zero
    INFO("input " << i);
    REQUIRE(inputs[i].grad().defined());
    CHECK(max_abs(inputs[i].grad()) > 1e-6);  // >= 1000x the tolerance
  }
}

TEST_CASE("gradcheck: tiny Mamba mixer over 70 steps (in_proj, out_proj as batched GEMMs on views)") {
  // 64 rows or more per sequence: the projections read their transposed
  // inputs in place as one GEMM per sequence (see ops/matmul.cpp's fold).
  Generator g{21, 0};
  Mamba mixer(tiny_config(), 0, g);
  Tensor h = leaf({2, 70, 4});
  std::vector<Tensor> inputs{h};
  for (const Tensor& p : mixer.parameters()) inputs.push_back(p);
  check_gradcheck([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{mixer.forward(in[0])}; }, inputs,
                  kTight);
}

TEST_CASE("gradcheck: tiny Mamba mixer with biases and non-selective B, C, delta") {
  for (int variant = 0; variant < 3; ++variant) {
    MambaConfig c = tiny_config();
    c.bias = true;
    c.selective_B = variant == 1;
    c.selective_C = variant == 2;
    c.selective_delta = variant != 0;
    Generator g{12, 0};
    Mamba mixer(c, 0, g);
    Tensor h = leaf({1, 6, 4});
    std::vector<Tensor> inputs{h};
    for (const Tensor& p : mixer.parameters()) inputs.push_back(p);
    INFO("variant " << variant);
    check_gradcheck([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{mixer.forward(in[0])}; },
                    inputs, kTight);
  }
}

TEST_CASE("gradcheck: tiny MambaLM loss w.r.t. tied embedding and a few parameters") {
  MambaConfig c = tiny_config();
  MambaLM m(c, 13);
  Tensor x = ids({2, 4}, c.vocab_size, 1);
  Tensor y = ids({2, 4}, c.vocab_size, 2);
  y = Tensor::from_ints({3, -100, 1, 9, 0, 4, -100, 2}, {2, 4});  // with ignored rows
  const Mamba& l0 = *m.backbone->layers->operator[](0)->mixer;
  const Mamba& l1 = *m.backbone->layers->operator[](1)->mixer;
  std::vector<Tensor> inputs{m.backbone->embedding->weight, m.backbone->norm_f->weight,
                             m.backbone->layers->operator[](1)->norm->weight, l0.dt_proj->bias, l1.A_log, l1.D,
                             l0.conv1d->weight};
  check_gradcheck([&](const std::vector<Tensor>&) { return std::vector<Tensor>{m.loss(x, y)}; }, inputs, kTight);
}

TEST_CASE("nn: ablation switches build and run") {
  for (int variant = 0; variant < 5; ++variant) {
    MambaConfig c = small_config();
    c.selective_B = !(variant == 1 || variant == 4);
    c.selective_C = !(variant == 2 || variant == 4);
    c.selective_delta = !(variant == 3 || variant == 4);
    MambaLM m(c, 3);
    INFO("variant " << variant);
    StateDict sd = m.state_dict();
    const std::string p = "backbone.layers.0.mixer.";
    CHECK(sd.count(p + "B") == !c.selective_B);
    CHECK(sd.count(p + "C") == !c.selective_C);
    CHECK(sd.count(p + "dt_bias") == !c.selective_delta);
    CHECK(sd.count(p + "dt_proj.weight") == c.selective_delta);
    CHECK(sd.count(p + "x_proj.weight") == c.any_selective());
    if (!c.selective_B) CHECK(sd.at(p + "B").shape() == Shape({64, 16}));
    if (!c.selective_C) CHECK(sd.at(p + "C").shape() == Shape({64, 16}));
    if (!c.selective_delta) CHECK(sd.at(p + "dt_bias").shape() == Shape({64}));
    if (c.any_selective()) CHECK(sd.at(p + "x_proj.weight").shape() == Shape({c.x_proj_rows(), 64}));
    CHECK(m.num_parameters() == count_parameters(c));
    Tensor x = ids({2, 7}, c.vocab_size, 5);
    Tensor loss = m.loss(x, x);
    CHECK(std::isfinite(loss.item()));
    backward(loss);
    for (const auto& [name, t] : m.named_parameters()) {
      INFO(name);
      REQUIRE(t.grad().defined());
    }
    if (!c.selective_B) CHECK(max_abs(m.backbone->layers->operator[](0)->mixer->B.grad()) > 0);
    if (!c.selective_delta) CHECK(max_abs(m.backbone->layers->operator[](0)->mixer->dt_bias.grad()) > 0);
  }
}

TEST_CASE("nn: bf16 compute keeps f32 masters, an f32 residual stream and close logits") {
  MambaConfig c = small_config();
  MambaLM ref(c, 9);
  c.compute_dtype = DType::bf16;
  MambaLM mp(c, 9);
  Tensor x = ids({2, 16}, c.vocab_size, 6);
  Tensor l32 = ref.forward(x), l16 = mp.forward(x);
  CHECK(l16.dtype() == DType::bf16);
  double scale = max_abs(l32);
  CHECK(max_abs_diff(l32, l16) < 0.05 * scale);
  Tensor loss = mp.loss(x, x);
  CHECK(loss.dtype() == DType::f32);
  CHECK(loss.item() == doctest::Approx(ref.loss(x, x).item()).epsilon(0.02));
  backward(loss);
  for (const auto& [name, t] : mp.named_parameters()) {
    INFO(name);
    CHECK(t.dtype() == DType::f32);
    REQUIRE(t.grad().defined());
    CHECK(t.grad().dtype() == DType::f32);
  }
  // Block output: hidden in bf16, the residual stream in f32.
  Tensor h = mp.backbone->embedding->forward(x);
  Block::Output o = mp.backbone->layers->operator[](0)->forward(h);
  CHECK(o.hidden.dtype() == DType::bf16);
  CHECK(o.residual.dtype() == DType::f32);
}

TEST_CASE("nn: FLOPs per token and the training-memory estimate") {
  MambaConfig c = ladder(24, 768);
  CHECK(count_matmul_parameters(c) == 128268288);
  FlopsPerToken f = flops_per_token(c);
  CHECK(f.matmul == 6.0 * 128268288);
  CHECK(f.scan == 3.0 * 24 * (9.0 * 1536 * 16 + 2 * 1536));
  CHECK(f.total == f.matmul + f.scan);
  CHECK(f.conv == 6.0 * 24 * 1536 * 4);
  // Untying adds a lookup table, not matmul work.
  MambaConfig u = c;
  u.tie_embeddings = false;
  CHECK(count_matmul_parameters(u) == count_matmul_parameters(c));
  CHECK(count_parameters(u) == count_parameters(c) + 50280 * 768);

  c.compute_dtype = DType::bf16;
  MemoryEstimate m = estimate_training_memory(c, 8 * 2048);
  const int64_t P = 129135360;
  CHECK(m.params_bytes == 4 * P);
  CHECK(m.grads_bytes == 4 * P);
  CHECK(m.optimizer_bytes == 8 * P);
  CHECK(m.weight_copies_bytes == 2 * 128268288);
  // per layer: 4·768 + 4 + 2·(768 + 4·1536 + 80) + 1536 (chunk states: 16 f32 per 64 steps; delta is
  // recomputed); head: 4·768 + 4 + 4·768 + 8 (no logits: the loss is fused and chunked); loss buffer: one
  // bf16 chunk of 8192 rows of logits + the head's f32 gradient
  CHECK(m.activation_bytes_per_token == 24 * (3072 + 4 + 2 * (768 + 6144 + 80) + 1536) + (3072 + 4 + 3072 + 8));
  CHECK(m.loss_buffer_bytes == int64_t(2) * 8192 * 50280 + int64_t(4) * 50280 * 768);
  CHECK(m.activation_bytes == m.activation_bytes_per_token * 8 * 2048 + m.loss_buffer_bytes);
  CHECK(m.total_bytes == m.params_bytes + m.grads_bytes + m.optimizer_bytes + m.weight_copies_bytes + m.activation_bytes);
  CHECK(m.str().find("total") != std::string::npos);
}

TEST_CASE("nn: config validation") {
  MambaConfig c;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("d_model must be positive"), Error);
  c = small_config();
  c.d_conv = 9;
  CHECK_THROWS_WITH_AS(MambaLM(c, 1), doctest::Contains("d_conv must be 1..8"), Error);
  c = small_config();
  c.param_dtype = DType::bf16;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("param_dtype must be f32"), Error);
  c = small_config();
  CHECK(c.str().find("d_model=32") != std::string::npos);
  MambaLM m(c, 1);
  CHECK_THROWS_WITH_AS(m.forward(Tensor::from_ints({1, 2, 3}, {3})), doctest::Contains("input_ids must be (B, L)"),
                       Error);
}

TEST_CASE("nn: to(cuda) keeps leaves and ties [gpu]") {
  if (skip_without_gpu()) return;
  MambaLM m(small_config(), 1);
  m.to(Device::cuda(0));
  CHECK(m.tied());
  for (const auto& [name, t] : m.named_parameters()) {
    INFO(name);
    CHECK(t.is_cuda());
    CHECK(t.is_leaf());
    CHECK(t.requires_grad());
  }
  MambaLM ref(small_config(), 1);
  for (const auto& [name, t] : m.state_dict()) CHECK(max_abs_diff(t, ref.state_dict().at(name)) == 0.0);
}

TEST_CASE("nn: the same seed gives the same weights on the GPU as on the CPU [gpu]") {
  if (skip_without_gpu()) return;
  MambaConfig c = small_config();
  c.selective_C = false;  // a normal draw too (mixer.C)
  MambaLM gpu(c, 17, Device::cuda(0)), cpu(c, 17);
  CHECK(gpu.tied());
  for (const auto& [name, t] : gpu.state_dict()) {
    INFO(name);
    CHECK(t.is_cuda());
    CHECK(max_abs_diff(t, cpu.state_dict().at(name)) == 0.0);
  }
}
