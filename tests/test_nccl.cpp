// train/dist/nccl_comm on one GPU (world 1: NCCL refuses two ranks on one
// device, so multi-GPU runs are done by hand, see README "Data parallel").
// The collectives, the host-buffer paths and the barrier run for real; a
// bucketed backward on CUDA gives the plain gradients; a 1-rank NCCL
// training run equals the non-distributed run. Skips without a GPU or NCCL.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "helpers.h"
#include "train/checkpoint.h"
#include "train/dist/grad_buckets.h"
#include "train/dist/nccl_comm.h"
#include "train/dist/store.h"
#include "train/trainer.h"

using namespace coil;
using namespace coil::test;
namespace fs = std::filesystem;

namespace {

bool skip_without_nccl() {
  if (skip_without_gpu()) return true;
  if (!dist::built_with_nccl()) {
    MESSAGE("skipped: built without NCCL");
    return true;
  }
  return false;
}

std::unique_ptr<dist::Communicator> one_rank_nccl() {
  launcher::WorkerEnv env;
  env.master_port = dist::find_free_port();
  dist::NcclOptions o;
  o.device = 0;
  o.timeout = std::chrono::seconds(60);
  o.rendezvous_timeout = std::chrono::seconds(30);
  return dist::make_nccl_communicator(env, o);
}

}  // namespace

TEST_CASE("nccl: all_reduce, broadcast and barrier on one rank") {
  if (skip_without_nccl()) return;
  auto comm = one_rank_nccl();
  CHECK(comm->rank() == 0);
  CHECK(comm->world() == 1);
  CHECK(std::string(comm->backend()) == "nccl");
  const Device dev = Device::cuda(0);
  Generator g{3, 0};
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor t = randn({1000003}, dt, dev, &g);  // odd size
    const auto before = t.to_vector();
    comm->all_reduce(t, dist::ReduceOp::sum, "test sum");
    comm->all_reduce(t, dist::ReduceOp::avg, "test avg");
    comm->wait_pending();
    CHECK(t.to_vector() == before);  // one rank: sum and average are the identity
    Tensor b = randn({4097}, dt, dev, &g);
    const auto bb = b.to_vector();
    comm->broadcast_tensor(b, 0, "test broadcast");
    comm->wait_pending();
    CHECK(b.to_vector() == bb);
  }
  float host[3] = {1, 2, 3};
  comm->all_reduce_sum(host, 3);
  CHECK(host[2] == 3.0f);
  uint8_t bytes[5] = {1, 2, 3, 4, 5};
  comm->broadcast(bytes, 5, 0);
  CHECK(bytes[4] == 5);
  comm->barrier();
  // Wrong device or layout: a one-line error naming the operation.
  Tensor cpu = Tensor::zeros({4});
  CHECK_THROWS_WITH_AS(comm->all_reduce(cpu, dist::ReduceOp::sum, "all_reduce of bucket 7 (0.0 MiB)"),
                       doctest::Contains("all_reduce of bucket 7"), Error);
}

TEST_CASE("nccl: bucketed backward on CUDA gives the plain gradients") {
  if (skip_without_nccl()) return;
  auto comm = one_rank_nccl();
  const Device dev = Device::cuda(0);
  Generator g{5, 0};
  std::vector<Tensor> ws;
  for (int i = 0; i < 6; ++i) {
    Tensor w = randn({64, 64}, DType::f32, dev, &g) * 0.1;
    w = w.detach();
    w.set_requires_grad(true);
    ws.push_back(w);
  }
  Tensor x = randn({32, 64}, DType::f32, dev, &g);
  auto loss = [&] {
    Tensor h = x;
    for (const Tensor& w : ws) h = tanh(matmul(h, w));
    return sum(h * h);
  };
  backward(loss());
  std::vector<std::vector<double>> ref;
  for (Tensor& w : ws) {
    ref.push_back(w.grad().to_vector());
    w.set_grad(Tensor());
  }
  // 20 KiB buckets: a 16 KiB gradient each, launched from inside backward.
  dist::GradBuckets b(ws, *comm, 20 << 10);
  CHECK(b.bucket_count() == 6);
  for (int step = 0; step < 2; ++step) {
    for (Tensor& w : ws) w.set_grad(Tensor());
    b.arm();
    backward(loss());
    b.finish();
    CHECK(b.launched_in_backward() == 6);
    for (size_t i = 0; i < ws.size(); ++i) CHECK(ws[i].grad().to_vector() == ref[i]);
  }
}

TEST_CASE("nccl: a 1-rank NCCL training run equals the plain run") {
  if (skip_without_nccl()) return;
  fs::path dir = fs::temp_directory_path() / ("coil-test-nccl-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& extra) {
    fs::path p = dir / (name + ".yaml");
    std::ofstream(p) << "run_dir: " + (dir / name).string() + R"(
model: {d_model: 64, n_layer: 2, vocab_size: 16}
data: {kind: selective_copying, seq_len: 64, n_tokens: 4}
optim: {lr: 3e-3}
schedule: {kind: constant, max_steps: 8, warmup_steps: 0}
batch: {sequences_per_step: 16, micro_batch: 8}
log: {every: 1, progress: false}
eval: {every: 0, batches: 1}
)" + extra;
    return p;
  };
  auto run = [&](const fs::path& cfg) {
    train::TrainOptions o;
    o.config_path = cfg.string();
    o.device = "cuda:0";
    REQUIRE(train::run_train(o) == 0);
  };
  run(write("plain", ""));
  // World 1 with the NCCL backend named: the data-parallel path on one rank.
  const char* vars[] = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
  const std::string vals[] = {"0", "0", "1", "1", "127.0.0.1", std::to_string(dist::find_free_port())};
  for (int i = 0; i < 6; ++i) ::setenv(vars[i], vals[i].c_str(), 1);
  run(write("nccl", "dist: {backend: nccl, bucket_mb: 0.01, timeout_s: 60}\n"));
  for (const char* v : vars) ::unsetenv(v);
  train::Checkpoint a = train::load_checkpoint(train::latest_checkpoint(dir / "plain"));
  train::Checkpoint b = train::load_checkpoint(train::latest_checkpoint(dir / "nccl"));
  double worst = 0;
  for (const auto& [name, t] : a.model) {
    auto va = t.to_vector(), vb = b.model.at(name).to_vector();
    for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]));
  }
  // Average over one rank is the identity and the kernels are deterministic:
  // expected bit-identical.
  INFO("worst weight difference " << worst);
  CHECK(worst == 0.0);
  fs::remove_all(dir);
}
