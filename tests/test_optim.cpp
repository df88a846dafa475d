// optim/ and ops/adamw: the AdamW update against PyTorch's formula written
// out by hand, parameter groups, optimizer state round trips, gradient
// clipping, LR schedules, and a tiny MambaLM overfitting one batch.
#include <chrono>
#include <cmath>

#include "core/thread_pool.h"
#include "helpers.h"
#include "nn/nn.h"
#include "ops/adamw.h"
#include "optim/optim.h"

using namespace coil;
using namespace coil::test;
using coil::nn::MambaConfig;
using coil::nn::MambaLM;
using namespace coil::optim;

namespace {

Tensor param(const std::vector<double>& v, DType dt = DType::f32) {
  Tensor t = Tensor::from_vector(v, {int64_t(v.size())}, dt);
  t.set_requires_grad(true);
  return t;
}

// torch.optim.AdamW's single-tensor loop, in double, for one element.
struct RefAdamW {
  double p, m = 0, v = 0;
  int step = 0;
  void update(double g, double lr, double wd, double b1 = 0.9, double b2 = 0.95, double eps = 1e-8) {
    ++step;
    p *= 1 - lr * wd;
    m = m + (1 - b1) * (g - m);
    v = b2 * v + (1 - b2) * g * g;
    double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    p -= lr / bc1 * m / (std::sqrt(v) / std::sqrt(bc2) + eps);
  }
};

std::vector<ParamGroup> two_groups(const Tensor& decayed, const Tensor& plain, double wd) {
  std::vector<ParamSpec> specs{{"w", decayed, param_kind::linear_weight, false},
                               {"b", plain, param_kind::linear_bias, false}};
  GroupingOptions o;
  o.weight_decay = wd;
  return group_parameters(specs, o);
}

MambaConfig byte_config() {
  MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 256;
  return c;
}

}  // namespace

TEST_CASE("optim: AdamW matches PyTorch's AdamW formula for 3 steps; no decay on the excluded group") {
  const std::vector<double> p0{0.5, -1.0, 2.0, 0.0}, q0{0.25, 3.0};
  const std::vector<std::vector<double>> gw{{0.1, -0.2, 0.3, 1e-3}, {-0.4, 0.5, 0.0, 2.0}, {0.05, 0.05, -1.0, -2.0}};
  const std::vector<std::vector<double>> gb{{1.0, -1.0}, {0.5, 0.25}, {-3.0, 0.0}};
  const std::vector<double> lrs{1e-2, 5e-3, 2e-2};
  const double wd = 0.1;
  Tensor w = param(p0), b = param(q0);
  AdamW opt(two_groups(w, b, wd));
  REQUIRE(opt.param_groups()[0].names == std::vector<std::string>{"w"});
  REQUIRE(opt.param_groups()[1].names == std::vector<std::string>{"b"});
  std::vector<RefAdamW> rw, rb;
  for (double v : p0) rw.push_back({v});
  for (double v : q0) rb.push_back({v});
  for (int s = 0; s < 3; ++s) {
    w.set_grad(Tensor::from_vector(gw[size_t(s)], {4}));
    b.set_grad(Tensor::from_vector(gb[size_t(s)], {2}));
    opt.step(lrs[size_t(s)]);
    for (size_t i = 0; i < 4; ++i) rw[i].update(gw[size_t(s)][i], lrs[size_t(s)], wd);
    for (size_t i = 0; i < 2; ++i) rb[i].update(gb[size_t(s)][i], lrs[size_t(s)], 0.0);
    std::vector<double> wv = w.to_vector(), bv = b.to_vector();
    for (size_t i = 0; i < 4; ++i) CHECK(wv[i] == doctest::Approx(rw[i].p).epsilon(1e-6));
    for (size_t i = 0; i < 2; ++i) CHECK(bv[i] == doctest::Approx(rb[i].p).epsilon(1e-6));
  }
  CHECK(opt.step_count() == 3);
  // Step 1 by hand: m̂ = g, v̂ = g², so p1 = p0 (1 - lr wd) - lr g / (|g| + eps).
  Tensor x = param({1.0});
  AdamW one(two_groups(x, param({0.0}), wd));
  x.set_grad(Tensor::from_vector({-0.3}, {1}));
  one.step(0.1);
  CHECK(x.item() == doctest::Approx(1.0 * (1 - 0.1 * 0.1) + 0.1 * 0.3 / (0.3 + 1e-8)).epsilon(1e-6));
  // The moments are state: m = (1 - b1) g, v = (1 - b2) g².
  AdamWState st = one.state_dict();
  CHECK(st.step == 1);
  CHECK(st.exp_avg.at("w").item() == doctest::Approx(0.1 * -0.3));
  CHECK(st.exp_avg_sq.at("w").item() == doctest::Approx(0.05 * 0.09));
}

TEST_CASE("optim: AdamW in float64, parameters without grad, zero_grad") {
  Tensor w = param({1.0, 2.0}, DType::f64), b = param({3.0}, DType::f64);
  AdamW opt(two_groups(w, b, 0.5), AdamWOptions{0.8, 0.99, 1e-6});
  RefAdamW r0{1.0}, r1{2.0};
  w.set_grad(Tensor::from_vector({0.25, -4.0}, {2}, DType::f64));
  opt.step(0.05);  // b has no grad: untouched
  r0.update(0.25, 0.05, 0.5, 0.8, 0.99, 1e-6);
  r1.update(-4.0, 0.05, 0.5, 0.8, 0.99, 1e-6);
  CHECK(w.to_vector()[0] == doctest::Approx(r0.p).epsilon(1e-12));
  CHECK(w.to_vector()[1] == doctest::Approx(r1.p).epsilon(1e-12));
  CHECK(b.item() == 3.0);
  CHECK(opt.state_dict().exp_avg.at("b").item() == 0.0);
  opt.zero_grad();
  CHECK(!w.grad().defined());
}

TEST_CASE("optim: parameter groups follow the recipe") {
  MambaConfig c = byte_config();
  MambaLM m(c, 1);
  std::vector<ParamGroup> g = group_parameters(param_specs(m.parameter_infos()));
  REQUIRE(g.size() == 2);
  CHECK(g[0].label == "decay");
  CHECK(g[0].weight_decay == 0.1);
  CHECK(g[1].weight_decay == 0.0);
  std::vector<std::string> decay;
  for (int i = 0; i < 2; ++i)
    for (const char* w : {"dt_proj.weight", "in_proj.weight", "out_proj.weight", "x_proj.weight"})
      decay.push_back("backbone.layers." + std::to_string(i) + ".mixer." + w);
  CHECK(g[0].names == decay);  // Linear weights only, sorted
  CHECK(std::is_sorted(g[1].names.begin(), g[1].names.end()));
  CHECK(g[0].names.size() + g[1].names.size() == m.named_parameters().size());  // tied head once
  for (const auto& n : {"backbone.embedding.weight", "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.D",
                        "backbone.layers.0.mixer.dt_proj.bias", "backbone.layers.0.mixer.conv1d.weight",
                        "backbone.layers.0.mixer.conv1d.bias", "backbone.layers.1.norm.weight",
                        "backbone.norm_f.weight"})
    CHECK(std::find(g[1].names.begin(), g[1].names.end(), n) != g[1].names.end());
  std::map<std::string, Tensor> by_name;
  for (const auto& [n, t] : m.named_parameters()) by_name[n] = t;
  for (const ParamGroup& grp : g)
    for (size_t i = 0; i < grp.names.size(); ++i) CHECK(grp.params[i].same(by_name.at(grp.names[i])));

  GroupingOptions o;
  o.decay_embeddings = true;
  o.decay_conv_weights = true;
  o.weight_decay = 0.05;
  g = group_parameters(param_specs(m.parameter_infos()), o);
  CHECK(g[0].weight_decay == 0.05);
  CHECK(g[0].names.size() == decay.size() + 3);
  CHECK(std::find(g[0].names.begin(), g[0].names.end(), "backbone.embedding.weight") != g[0].names.end());
  CHECK(std::find(g[0].names.begin(), g[0].names.end(), "backbone.layers.1.mixer.conv1d.weight") != g[0].names.end());
  // A_log and D stay excluded whatever the switches say.
  o.decay_biases = o.decay_norms = true;
  g = group_parameters(param_specs(m.parameter_infos()), o);
  CHECK(g[1].names.size() == 4);
  // Two tensors under one name are an error.
  CHECK_THROWS_WITH_AS(group_parameters({{"x", param({1.0}), param_kind::linear_weight, false},
                                         {"x", param({1.0}), param_kind::linear_weight, false}}),
                       doctest::Contains("two parameters named x"), Error);
}

TEST_CASE("optim: AdamW state round trip continues identically; load errors") {
  MambaConfig c = byte_config();
  Tensor x = Tensor::from_ints({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
  auto train_steps = [&](MambaLM& m, AdamW& opt, int n) {
    for (int i = 0; i < n; ++i) {
      opt.zero_grad();
      backward(m.loss(x, x));
      clip_grad_norm(m.parameters(), 1.0);
      opt.step(1e-2);
    }
  };
  MambaLM a(c, 3);
  AdamW oa(group_parameters(param_specs(a.parameter_infos())));
  train_steps(a, oa, 2);
  // Snapshot model and optimizer (copies), then continue.
  nn::StateDict msnap;
  for (const auto& [k, v] : a.state_dict()) msnap[k] = v.clone();
  AdamWState osnap = oa.state_dict();
  for (auto* mm : {&osnap.exp_avg, &osnap.exp_avg_sq})
    for (auto& [k, v] : *mm) v = v.clone();
  train_steps(a, oa, 1);

  MambaLM b(c, 99);
  AdamW ob(group_parameters(param_specs(b.parameter_infos())));
  b.load_state_dict(msnap);
  ob.load_state_dict(osnap);
  CHECK(ob.step_count() == 2);
  train_steps(b, ob, 1);
  for (const auto& [k, v] : a.state_dict()) {
    INFO(k);
    CHECK(max_abs_diff(v, b.state_dict().at(k)) == 0.0);
  }

  AdamWState bad = osnap;
  bad.exp_avg.erase("backbone.norm_f.weight");
  CHECK_THROWS_WITH_AS(ob.load_state_dict(bad), doctest::Contains("missing key exp_avg.backbone.norm_f.weight"), Error);
  bad = osnap;
  bad.exp_avg_sq["nope"] = zeros({1});
  CHECK_THROWS_WITH_AS(ob.load_state_dict(bad), doctest::Contains("unexpected key exp_avg_sq.nope"), Error);
  bad = osnap;
  bad.exp_avg["backbone.norm_f.weight"] = zeros({3});
  CHECK_THROWS_WITH_AS(ob.load_state_dict(bad),
                       doctest::Contains("shape mismatch for exp_avg.backbone.norm_f.weight: the state has [3], the "
                                         "parameter has [32]"),
                       Error);
}

TEST_CASE("ops: adamw_update checks its arguments and is thread-count independent") {
  Tensor p = param({1.0, 2.0}), g = Tensor::from_vector({0.1, 0.2}, {2}), m = zeros({2}), v = zeros({2});
  CHECK_THROWS_WITH_AS(adamw_update({p}, {g}, {m}, {v}, 1, 0.1, 0.9, 0.95, 1e-8, {0.0}),
                       doctest::Contains("run it under NoGradGuard"), Error);
  NoGradGuard ng;
  CHECK_THROWS_WITH_AS(adamw_update({p}, {g}, {m}, {zeros({3})}, 1, 0.1, 0.9, 0.95, 1e-8, {0.0}),
                       doctest::Contains("exp_avg_sq 0 f32[3] cpu does not match param"), Error);
  CHECK_THROWS_WITH_AS(adamw_update({p}, {g}, {m}, {v}, 0, 0.1, 0.9, 0.95, 1e-8, {0.0}),
                       doctest::Contains("step must be >= 1"), Error);
  CHECK_THROWS_WITH_AS(adamw_update({p}, {g.to(DType::f64)}, {m}, {v}, 1, 0.1, 0.9, 0.95, 1e-8, {0.0}),
                       doctest::Contains("must have the params' dtype f32"), Error);
  CHECK_THROWS_WITH_AS(adamw_update({p}, {g}, {m}, {v}, 1, 0.1, 0.9, 0.95, 1e-8, {}),
                       doctest::Contains("one grad, exp_avg, exp_avg_sq and weight decay per parameter"), Error);

  // Many tensors of odd sizes, split across the pool: same bits for 1 and N threads.
  auto run = [](int threads) {
    int saved = num_threads();
    set_num_threads(threads);
    std::vector<Tensor> ps, gs, ms, vs;
    std::vector<double> wds;
    Generator gen{5, 0};
    for (int64_t n : {1, 70001, 3, 40000, 65537}) {
      ps.push_back(rand({n}, DType::f32, Device::cpu(), &gen, -1, 1));
      gs.push_back(rand({n}, DType::f32, Device::cpu(), &gen, -1, 1));
      ms.push_back(rand({n}, DType::f32, Device::cpu(), &gen, -1, 1));
      vs.push_back(rand({n}, DType::f32, Device::cpu(), &gen, 0, 1));
      wds.push_back(double(n % 3) * 0.05);
    }
    adamw_update(ps, gs, ms, vs, 7, 1e-3, 0.9, 0.95, 1e-8, wds);
    set_num_threads(saved);
    std::vector<double> out;
    for (auto* ts : {&ps, &ms, &vs})
      for (const Tensor& t : *ts) {
        auto x = t.to_vector();
        out.insert(out.end(), x.begin(), x.end());
      }
    return out;
  };
  CHECK(run(1) == run(std::max(2, num_threads())));
}

TEST_CASE("optim: clip_grad_norm") {
  Tensor a = param({0.0, 0.0}), b = param({0.0}), c = param({5.0});
  a.set_grad(Tensor::from_vector({3.0, 4.0}, {2}));
  b.set_grad(Tensor::from_vector({12.0}, {1}));
  // c has no grad: skipped
  Tensor norm = clip_grad_norm({a, b, c}, 100.0);
  CHECK(norm.dim() == 0);
  CHECK(norm.dtype() == DType::f32);
  CHECK(scalar_value(norm) == doctest::Approx(13.0));
  CHECK(a.grad().to_vector() == std::vector<double>{3.0, 4.0});  // below max_norm: unchanged
  norm = clip_grad_norm({a, b, c}, 1.0);
  CHECK(scalar_value(norm) == doctest::Approx(13.0));
  const double s = 1.0 / (13.0 + 1e-6);
  CHECK(a.grad().to_vector()[0] == doctest::Approx(3.0 * s));
  CHECK(a.grad().to_vector()[1] == doctest::Approx(4.0 * s));
  CHECK(b.grad().item() == doctest::Approx(12.0 * s));
  CHECK(scalar_value(clip_grad_norm({a, b}, 0.0)) == doctest::Approx(1.0).epsilon(1e-5));  // 0: just measure
  CHECK(scalar_value(clip_grad_norm({c}, 1.0)) == 0.0);
  Tensor d = param({1.0}, DType::f64);
  d.set_grad(Tensor::from_vector({-2.0}, {1}, DType::f64));
  CHECK(clip_grad_norm({d}, 1.0).dtype() == DType::f64);
  CHECK(d.grad().item() == doctest::Approx(-2.0 / (2.0 + 1e-6)));
}

TEST_CASE("optim: LR schedules at key steps") {
  LrSchedule s;
  s.kind = ScheduleKind::cosine;
  s.lr_max = 1e-3;
  s.lr_min = 1e-5;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.validate();
  CHECK(s.lr_at(0) == doctest::Approx(1e-4));  // (0 + 1) / 10 of the peak
  CHECK(s.lr_at(4) == doctest::Approx(5e-4));
  CHECK(s.lr_at(9) == doctest::Approx(1e-3));  // warm-up end
  CHECK(s.lr_at(10) == doctest::Approx(1e-3));
  CHECK(s.lr_at(60) == doctest::Approx((1e-3 + 1e-5) / 2));  // middle of the decay
  CHECK(s.lr_at(35) == doctest::Approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + std::cos(M_PI * 0.25))));
  CHECK(s.lr_at(110) == doctest::Approx(1e-5));  // end
  CHECK(s.lr_at(5000) == doctest::Approx(1e-5));  // floor
  for (int64_t i = 10; i < 110; ++i) CHECK(s.lr_at(i + 1) <= s.lr_at(i));

  s.kind = ScheduleKind::linear;
  CHECK(s.lr_at(9) == doctest::Approx(1e-3));
  CHECK(s.lr_at(60) == doctest::Approx((1e-3 + 1e-5) / 2));
  CHECK(s.lr_at(85) == doctest::Approx(1e-3 - (1e-3 - 1e-5) * 0.75));
  CHECK(s.lr_at(110) == doctest::Approx(1e-5));
  CHECK(s.lr_at(1000) == doctest::Approx(1e-5));

  s.kind = ScheduleKind::constant;
  s.warmup_init = 1e-6;
  CHECK(s.lr_at(0) == doctest::Approx(1e-6 + (1e-3 - 1e-6) * 0.1));
  CHECK(s.lr_at(9) == doctest::Approx(1e-3));
  CHECK(s.lr_at(100000) == doctest::Approx(1e-3));

  LrSchedule nw;  // no warm-up: the peak at step 0
  nw.total_steps = 100;
  CHECK(nw.lr_at(0) == doctest::Approx(nw.lr_max));

  CHECK(parse_schedule_kind("cosine") == ScheduleKind::cosine);
  CHECK_THROWS_WITH_AS(parse_schedule_kind("step"), doctest::Contains("unknown LR schedule 'step'"), Error);
  LrSchedule bad;
  bad.total_steps = 0;
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("needs total_steps > 0"), Error);
  bad.total_steps = 5;
  bad.warmup_steps = 6;
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("warmup_steps 6 exceeds total_steps 5"), Error);
}

TEST_CASE("optim: a tiny byte-level MambaLM overfits one batch with AdamW") {
  MambaConfig c = byte_config();
  MambaLM m(c, 2024);
  const std::string text = "the selective scan remembers what matters and forgets the rest. ";
  std::vector<int64_t> tok(text.begin(), text.end());
  const int64_t L = 32;
  std::vector<int64_t> in, tgt;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < L; ++t) {
      in.push_back(tok[size_t(b * L + t) % tok.size()]);
      tgt.push_back(tok[size_t(b * L + t + 1) % tok.size()]);
    }
  Tensor x = Tensor::from_ints(in, {2, L}), y = Tensor::from_ints(tgt, {2, L});

  AdamW opt(group_parameters(param_specs(m.parameter_infos())));
  LrSchedule sched;
  sched.lr_max = 1e-2;
  sched.lr_min = 1e-3;
  sched.warmup_steps = 10;
  sched.total_steps = 150;
  auto t0 = std::chrono::steady_clock::now();
  double first = 0, last = 0;
  for (int64_t step = 0; step < sched.total_steps; ++step) {
    opt.zero_grad();
    Tensor loss = m.loss(x, y);
    if (step == 0) first = loss.item();
    backward(loss);
    clip_grad_norm(m.parameters(), 1.0);
    opt.step(sched.lr_at(step));
    last = loss.item();
  }
  {
    NoGradGuard ng;
    last = m.loss(x, y).item();
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("overfit: loss " << first << " -> " << last << " in " << sched.total_steps << " steps, " << secs << " s");
  CHECK(first == doctest::Approx(std::log(256.0)).epsilon(0.05));
  CHECK(last < 0.1);
}

// A zero f32 parameter of n elements with a random gradient on the CPU, and
// its twin on the GPU with the same gradient.
void add_twin(int64_t n, Generator& gen, std::vector<Tensor>& cpu_p, std::vector<Tensor>& gpu_p) {
  Tensor p = param(std::vector<double>(size_t(n), 0.0));
  p.set_grad(rand({n}, DType::f32, Device::cpu(), &gen, -1, 1));
  Tensor q = zeros({n}, DType::f32, Device::cuda(0));
  q.set_requires_grad(true);
  q.set_grad(p.grad().to(Device::cuda(0)));
  cpu_p.push_back(p);
  gpu_p.push_back(q);
}

TEST_CASE("optim: clip_grad_norm on the GPU matches the CPU [gpu]") {
  if (skip_without_gpu()) return;
  Generator gen{3, 0};
  std::vector<Tensor> cpu_p, gpu_p;
  for (int64_t n : {1, 1000, 4097}) add_twin(n, gen, cpu_p, gpu_p);
  Tensor nc = clip_grad_norm(cpu_p, 1.0), ng = clip_grad_norm(gpu_p, 1.0);
  CHECK(ng.is_cuda());
  CHECK(scalar_value(ng) == doctest::Approx(scalar_value(nc)).epsilon(1e-6));
  for (size_t i = 0; i < cpu_p.size(); ++i) CHECK(max_abs_diff(cpu_p[i].grad(), gpu_p[i].grad()) < 1e-7);
  // The fused CUDA AdamW takes the same step as the CPU one.
  AdamW oc(two_groups(cpu_p[0], cpu_p[1], 0.1)), og(two_groups(gpu_p[0], gpu_p[1], 0.1));
  {
    NoGradGuard no_grad;
    copy_(gpu_p[0], cpu_p[0]);
    copy_(gpu_p[1], cpu_p[1]);
  }
  oc.step(1e-3);
  og.step(1e-3);
  CHECK(max_abs_diff(cpu_p[0], gpu_p[0]) < 1e-6);
  CHECK(max_abs_diff(cpu_p[1], gpu_p[1]) < 1e-6);
}

// The fused CUDA clip (cuda/clip_grad_norm.cu) against the per-tensor CPU
// reference: more tensors than one launch's table (320), odd sizes, one
// tensor spanning many 4096-element chunks; clipping, no clipping (the
// grads keep their bits) and measuring only (max_norm 0).
TEST_CASE("optim: fused clip_grad_norm on the GPU over many tensors [gpu]") {
  if (skip_without_gpu()) return;
  Generator gen{11, 0};
  for (double max_norm : {1.0, 1e9, 0.0}) {
    std::vector<Tensor> cpu_p, gpu_p;
    for (int i = 0; i < 333; ++i) add_twin(i == 7 ? 4096 * 9 + 5 : 1 + (i * 37) % 301, gen, cpu_p, gpu_p);
    std::vector<Tensor> before;
    for (const Tensor& q : gpu_p) before.push_back(q.grad().to(Device::cpu()));
    Tensor nc = clip_grad_norm(cpu_p, max_norm), ng = clip_grad_norm(gpu_p, max_norm);
    REQUIRE(ng.is_cuda());
    CHECK(ng.dim() == 0);
    CHECK(scalar_value(ng) == doctest::Approx(scalar_value(nc)).epsilon(1e-6));
    CHECK(scalar_value(ng) > 10.0);  // so max_norm 1 really clips
    double worst = 0;
    bool same_bits = true;
    for (size_t i = 0; i < cpu_p.size(); ++i) {
      Tensor g = gpu_p[i].grad().to(Device::cpu());
      worst = std::max(worst, max_abs_diff(cpu_p[i].grad(), g));
      same_bits = same_bits && max_abs_diff(before[i], g) == 0.0;
    }
    CHECK(worst < 1e-7);
    CHECK(same_bits == (max_norm != 1.0));
  }
  // Deterministic: the same grads give the same norm bits.
  Tensor a = rand({100003}, DType::f32, Device::cuda(0), &gen, -1, 1);
  Tensor p = zeros({100003}, DType::f32, Device::cuda(0));
  p.set_requires_grad(true);
  p.set_grad(a);
  const double n1 = scalar_value(clip_grad_norm({p}, 0.0)), n2 = scalar_value(clip_grad_norm({p}, 0.0));
  CHECK(n1 == n2);
}
