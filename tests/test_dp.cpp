// train/: data-parallel training on the CPU communicator. A tiny
// selective-copying run as one process and as 2 forked ranks (global batch 8
// either way) must log the same losses and end with the same weights, up to
// float sums taken in a different order.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "train/checkpoint.h"
#include "train/dist/store.h"
#include "train/trainer.h"

using namespace coil;
namespace fs = std::filesystem;

namespace {

fs::path dp_temp_dir() {
  fs::path p = fs::temp_directory_path() / ("coil-test-dp-" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

fs::path write_config(const fs::path& dir, const std::string& name, const fs::path& run_dir,
                      const std::string& extra = "", int64_t max_steps = 20) {
  fs::path p = dir / name;
  std::ofstream(p) << "run_dir: " + run_dir.string() + R"(
model: {d_model: 16, n_layer: 2, vocab_size: 8}
data: {kind: selective_copying, seq_len: 16, n_tokens: 3}
optim: {lr: 3e-3, weight_decay: 0.1, grad_clip: 1.0}
schedule: {kind: constant, max_steps: )" + std::to_string(max_steps) + R"(, warmup_steps: 0}
batch: {sequences_per_step: 8, micro_batch: 4}
log: {every: 1, progress: false}
eval: {every: 10, batches: 1, batch_size: 8}
checkpoint: {every: 0, keep_last: 1}
)" + extra;
  return p;
}

std::vector<double> logged_losses(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::vector<double> out;
  for (std::string l; std::getline(in, l);) {
    auto k = l.find("\"loss\": ");
    if (k != std::string::npos) out.push_back(std::stod(l.substr(k + 8)));
  }
  return out;
}

// Runs the config in a forked child with the given distributed environment;
// returns the exit code (a hung child is killed by alarm after 60 s).
pid_t spawn(const fs::path& cfg, int rank, int world, int port, int64_t stop_after = 0,
            const std::string& resume = "") {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(60);
    int code = 1;
    try {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      train::TrainOptions o;
      o.config_path = cfg.string();
      o.device = "cpu";
      o.stop_after = stop_after;
      o.resume = resume;
      code = train::run_train(o);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
      code = 2;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  return pid;
}

int wait_code(pid_t p) {
  int st = 0;
  ::waitpid(p, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

TEST_CASE("data parallel: 2 CPU ranks match one process on the same global batch") {
  fs::path dir = dp_temp_dir();
  fs::path cfg1 = write_config(dir, "single.yaml", dir / "single");
  fs::path cfg2 = write_config(dir, "dp.yaml", dir / "dp");

  // One process, no distributed variables (world 1: the unchanged path).
  // Micro-batch 4 of a global 8: two accumulated micro-batches per step.
  {
    train::TrainOptions o;
    o.config_path = cfg1.string();
    o.device = "cpu";
    REQUIRE(train::run_train(o) == 0);
  }
  // Two ranks sharing one run_dir (only rank 0 writes): 4 sequences each.
  const int port = dist::find_free_port();
  pid_t r0 = spawn(cfg2, 0, 2, port), r1 = spawn(cfg2, 1, 2, port);
  const int c0 = wait_code(r0), c1 = wait_code(r1);
  REQUIRE(c0 == 0);
  REQUIRE(c1 == 0);

  // Tolerance: the same arithmetic up to summation order (the per-rank
  // gradients are summed across ranks instead of accumulated in one
  // process), so 1e-5 relative on every logged loss over 20 steps, and on
  // every final weight |a - b| <= 1e-5 * (1 + |a|) (seen: ~1e-7): Adam's g / sqrt(v) turns
  // last-bit gradient differences on near-zero gradients into lr-sized
  // steps, so weights near zero need the absolute part.
  auto l1 = logged_losses(dir / "single" / "metrics.jsonl");
  auto l2 = logged_losses(dir / "dp" / "metrics.jsonl");
  REQUIRE(l1.size() == 20);
  REQUIRE(l2.size() == 20);
  for (size_t i = 0; i < l1.size(); ++i) {
    INFO("step " << i + 1 << ": single " << l1[i] << ", 2 ranks " << l2[i]);
    CHECK(std::abs(l1[i] - l2[i]) <= 1e-5 * std::abs(l1[i]));
  }
  CHECK(l1.back() < l1.front());  // it trained

  fs::path ck1 = train::latest_checkpoint(dir / "single"), ck2 = train::latest_checkpoint(dir / "dp");
  REQUIRE(!ck1.empty());
  REQUIRE(!ck2.empty());
  train::Checkpoint a = train::load_checkpoint(ck1), b = train::load_checkpoint(ck2);
  CHECK(a.trainer.world_size == 1);
  CHECK(b.trainer.world_size == 2);
  CHECK(a.trainer.step == 20);
  CHECK(b.trainer.step == 20);
  REQUIRE(a.model.size() == b.model.size());
  double worst = 0;
  for (const auto& [name, t] : a.model) {
    REQUIRE(b.model.count(name) == 1);
    auto va = t.to_vector(), vb = b.model.at(name).to_vector();
    REQUIRE(va.size() == vb.size());
    for (size_t i = 0; i < va.size(); ++i) {
      double err = std::abs(va[i] - vb[i]) / (1.0 + std::abs(va[i]));
      worst = std::max(worst, err);
    }
  }
  INFO("worst weight difference |a - b| / (1 + |a|): " << worst);
  CHECK(worst <= 1e-5);
  fs::remove_all(dir);
}

TEST_CASE("data parallel: a global batch the ranks cannot share fails before any rendezvous") {
  fs::path dir = dp_temp_dir();
  fs::path cfg = dir / "c.yaml";
  std::ofstream(cfg) << "run_dir: " + (dir / "run").string() + R"(
model: {d_model: 16, n_layer: 1, vocab_size: 8}
data: {kind: selective_copying, seq_len: 16, n_tokens: 3}
schedule: {kind: constant, max_steps: 1, warmup_steps: 0}
batch: {sequences_per_step: 7}
log: {progress: false}
)";
  const int port = dist::find_free_port();
  // Both ranks fail on the config before any rendezvous, so neither hangs.
  pid_t r0 = spawn(cfg, 0, 2, port), r1 = spawn(cfg, 1, 2, port);
  CHECK(wait_code(r0) == 2);
  CHECK(wait_code(r1) == 2);
  fs::remove_all(dir);
}

namespace {

// Final weights of two runs: the worst |a - b| / (1 + |a|).
double worst_weight_difference(const fs::path& run_a, const fs::path& run_b) {
  fs::path ca = train::latest_checkpoint(run_a), cb = train::latest_checkpoint(run_b);
  REQUIRE(!ca.empty());
  REQUIRE(!cb.empty());
  train::Checkpoint a = train::load_checkpoint(ca), b = train::load_checkpoint(cb);
  REQUIRE(a.model.size() == b.model.size());
  double worst = 0;
  for (const auto& [name, t] : a.model) {
    REQUIRE(b.model.count(name) == 1);
    auto va = t.to_vector(), vb = b.model.at(name).to_vector();
    REQUIRE(va.size() == vb.size());
    for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]) / (1.0 + std::abs(va[i])));
  }
  return worst;
}

void run_single(const fs::path& cfg, int64_t stop_after = 0, const std::string& resume = "") {
  train::TrainOptions o;
  o.config_path = cfg.string();
  o.device = "cpu";
  o.stop_after = stop_after;
  o.resume = resume;
  REQUIRE(train::run_train(o) == 0);
}

void run_two_ranks(const fs::path& cfg, int64_t stop_after = 0, const std::string& resume = "") {
  const int port = dist::find_free_port();
  pid_t r0 = spawn(cfg, 0, 2, port, stop_after, resume), r1 = spawn(cfg, 1, 2, port, stop_after, resume);
  const int c0 = wait_code(r0), c1 = wait_code(r1);
  REQUIRE(c0 == 0);
  REQUIRE(c1 == 0);
}

}  // namespace

TEST_CASE("data parallel: bucketed all-reduce gives the same result for every bucket size") {
  fs::path dir = dp_temp_dir();
  run_single(write_config(dir, "single.yaml", dir / "single"));
  // 104 bytes is smaller than most single gradients (one bucket each);
  // 2 KiB groups several; 25 MiB is one bucket for the whole model.
  const std::vector<std::string> sizes = {"0.0001", "0.002", "25"};
  for (const std::string& mb : sizes) {
    const std::string name = "dp-" + mb;
    run_two_ranks(write_config(dir, name + ".yaml", dir / name, "dist: {bucket_mb: " + mb + ", timeout_s: 60}\n"));
    auto l1 = logged_losses(dir / "single" / "metrics.jsonl"), l2 = logged_losses(dir / name / "metrics.jsonl");
    REQUIRE(l2.size() == l1.size());
    for (size_t i = 0; i < l1.size(); ++i) {
      INFO("bucket_mb " << mb << ", step " << i + 1 << ": single " << l1[i] << ", 2 ranks " << l2[i]);
      CHECK(std::abs(l1[i] - l2[i]) <= 1e-5 * std::abs(l1[i]));
    }
    const double worst = worst_weight_difference(dir / "single", dir / name);
    INFO("bucket_mb " << mb << ": worst weight difference to one process " << worst);
    CHECK(worst <= 1e-5);
  }
#ifdef COIL_WITH_GLOO
  // Gloo's ring all-reduce over the same buckets (not rank order: same tolerance).
  run_two_ranks(write_config(dir, "gloo.yaml", dir / "gloo", "dist: {backend: gloo, bucket_mb: 0.0001, timeout_s: 60}\n"));
  CHECK(worst_weight_difference(dir / "single", dir / "gloo") <= 1e-5);
#endif
  // The store communicator sums every element in rank order whatever the
  // bucketing, so the bucket size changes nothing, bit for bit.
  CHECK(worst_weight_difference(dir / "dp-0.0001", dir / "dp-25") == 0.0);
  CHECK(worst_weight_difference(dir / "dp-0.002", dir / "dp-25") == 0.0);
  fs::remove_all(dir);
}

TEST_CASE("data parallel: resume with another world size continues the same run") {
  fs::path dir = dp_temp_dir();
  // Reference: one process, 20 uninterrupted steps.
  run_single(write_config(dir, "single.yaml", dir / "single"));
  // 2 ranks stop after 10 steps; one process resumes the same run_dir.
  fs::path cfg = write_config(dir, "mixed.yaml", dir / "mixed", "dist: {timeout_s: 60}\n");
  run_two_ranks(cfg, 10);
  {
    train::Checkpoint ck = train::load_checkpoint(train::latest_checkpoint(dir / "mixed"));
    CHECK(ck.trainer.step == 10);
    CHECK(ck.trainer.world_size == 2);
  }
  run_single(write_config(dir, "mixed-1.yaml", dir / "mixed"), 0, "auto");
  auto l1 = logged_losses(dir / "single" / "metrics.jsonl"), l2 = logged_losses(dir / "mixed" / "metrics.jsonl");
  REQUIRE(l1.size() == 20);
  REQUIRE(l2.size() == 20);
  for (size_t i = 0; i < l1.size(); ++i) {
    INFO("step " << i + 1 << ": uninterrupted " << l1[i] << ", 2 ranks then 1 " << l2[i]);
    CHECK(std::abs(l1[i] - l2[i]) <= 1e-5 * std::abs(l1[i]));
  }
  const double worst = worst_weight_difference(dir / "single", dir / "mixed");
  INFO("worst weight difference " << worst);
  CHECK(worst <= 1e-5);
  // And back: 1 process -> 2 ranks from step 10.
  run_single(write_config(dir, "back-1.yaml", dir / "back"), 10);
  run_two_ranks(write_config(dir, "back-2.yaml", dir / "back", "dist: {timeout_s: 60}\n"), 0, "auto");
  CHECK(worst_weight_difference(dir / "single", dir / "back") <= 1e-5);
  fs::remove_all(dir);
}

TEST_CASE("data parallel: SIGTERM to one rank stops both at the same step, with a checkpoint") {
  fs::path dir = dp_temp_dir();
  // Long enough that it is still running when the signal comes; log.every 3
  // puts the agreement points every 3 steps.
  fs::path cfg = write_config(dir, "sig.yaml", dir / "sig", "dist: {timeout_s: 60}\n", 1000000);
  {
    std::ifstream in(cfg);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.replace(text.find("log: {every: 1"), 14, "log: {every: 3");
    std::ofstream(cfg) << text;
  }
  const int port = dist::find_free_port();
  pid_t r0 = spawn(cfg, 0, 2, port), r1 = spawn(cfg, 1, 2, port);
  // Both ranks are in the loop once rank 0 has logged.
  for (int i = 0; i < 3000 && logged_losses(dir / "sig" / "metrics.jsonl").size() < 2; ++i) ::usleep(10000);
  REQUIRE(logged_losses(dir / "sig" / "metrics.jsonl").size() >= 2);
  ::kill(r1, SIGTERM);  // rank 1 only
  const int c0 = wait_code(r0), c1 = wait_code(r1);
  CHECK(c0 == 0);
  CHECK(c1 == 0);
  fs::path ck = train::latest_checkpoint(dir / "sig");
  REQUIRE(!ck.empty());
  train::Checkpoint c = train::load_checkpoint(ck);
  CHECK(c.trainer.step % 3 == 0);  // an agreement point
  CHECK(c.trainer.step < 1000000);
  fs::remove_all(dir);
}

TEST_CASE("data parallel: one rank through the store backend equals the plain run, bit for bit") {
  fs::path dir = dp_temp_dir();
  run_single(write_config(dir, "plain.yaml", dir / "plain"));
  // Forked so the distributed variables stay out of this process.
  fs::path cfg = write_config(dir, "one.yaml", dir / "one", "dist: {backend: store, bucket_mb: 0.001, timeout_s: 60}\n");
  pid_t r0 = spawn(cfg, 0, 1, dist::find_free_port());
  REQUIRE(wait_code(r0) == 0);
  CHECK(worst_weight_difference(dir / "plain", dir / "one") == 0.0);
  fs::remove_all(dir);
}
