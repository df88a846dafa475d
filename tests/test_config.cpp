// train/config: strict schema, file:line errors, --set overrides, round trip.
#include <doctest/doctest.h>

#include "core/error.h"
#include "train/config.h"

using namespace coil;
using namespace coil::train;

namespace {
const char* kGood = R"(run_dir: runs/x
seed: 3
model:
  d_model: 32
  n_layer: 2
  dt_rank: auto
data:
  kind: selective_copying
  seq_len: 128
optim:
  lr: 3e-3
schedule:
  kind: constant
  max_steps: 1e3
batch:
  sequences_per_step: 16
  micro_batch: 8
)";
}

TEST_CASE("config: parse, defaults, numbers in any YAML spelling") {
  Config c = parse_config(kGood, "good.yaml");
  CHECK(c.seed == 3);
  CHECK(c.model.d_model == 32);
  CHECK(c.model.dt_rank == 0);
  CHECK(c.model.d_state == 16);
  CHECK(c.optim.lr == doctest::Approx(3e-3));
  CHECK(c.schedule.max_steps == 1000);
  CHECK(c.optim.beta2 == doctest::Approx(0.95));
}

TEST_CASE("config: errors name file, line and key") {
  auto err = [](const std::string& text, std::vector<std::string> ov = {}) {
    try {
      parse_config(text, "cfg.yaml", ov);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err("model:\n  d_modle: 3\n") == "cfg.yaml:2: model.d_modle: unknown key (did you mean 'd_model'?)");
  CHECK(err("model:\n  d_model: abc\n") == "cfg.yaml:2: model.d_model: expected an integer, got 'abc'");
  CHECK(err("model:\n  d_model: 2.5\n") == "cfg.yaml:2: model.d_model: expected an integer, got '2.5'");
  CHECK(err("model:\n  d_state: 300\n").find("cfg.yaml:2: model.d_state: value 300 is out of range [1, 256]") == 0);
  CHECK(err("precision: fp8\n") == "cfg.yaml:1: precision: 'fp8' is not one of: fp32, bf16");
  CHECK(err("data:\n  kind: tokens\n").find("data.path: required") != std::string::npos);
  CHECK(err("model: [1, 2]\n").find("model: expected a mapping") != std::string::npos);
  CHECK(err("a: [\n").find("cfg.yaml:") == 0);
  CHECK(err("data:\n  kind: induction_heads\nbatch:\n  sequences_per_step: 10\n  micro_batch: 3\n")
            .find("cfg.yaml:5: batch.micro_batch: must divide") == 0);
  CHECK(err(kGood, {"model.nope=1"}) == "--set model.nope=1: model.nope: unknown key");
  CHECK(err(kGood, {"optim.lr=fast"}) == "--set optim.lr=fast: optim.lr: expected a number, got 'fast'");
  CHECK(err(kGood, {"novalue"}).find("expected key=value") != std::string::npos);
  CHECK(err("model:\n  tie_embeddings: maybe\n").find("expected true or false") != std::string::npos);
}

TEST_CASE("config: --set overrides and the resolved YAML round trip") {
  Config c = parse_config(kGood, "good.yaml", {"model.d_model=48", "optim.lr=1e-4", "eval.every=7"});
  CHECK(c.model.d_model == 48);
  CHECK(c.optim.lr == doctest::Approx(1e-4));
  CHECK(c.eval.every == 7);
  std::string y = to_yaml(c);
  Config d = parse_config(y, "resolved.yaml");
  CHECK(to_yaml(d) == y);
  CHECK(d.model.dt_rank == 0);
  CHECK(d.schedule.max_steps == 1000);
}

TEST_CASE("config: dist section") {
  Config d = parse_config(kGood, "good.yaml");
  CHECK(d.dist.backend == "auto");
  CHECK(d.dist.bucket_mb == doctest::Approx(25));
  CHECK(d.dist.timeout_s == doctest::Approx(600));
  CHECK(!d.dist.log_all_ranks);
  Config c = parse_config(std::string(kGood) + "dist:\n  backend: nccl\n  bucket_mb: 0.5\n  timeout_s: 30\n", "d.yaml");
  CHECK(c.dist.backend == "nccl");
  CHECK(c.dist.bucket_mb == doctest::Approx(0.5));
  CHECK(parse_config(to_yaml(c), "round trip").dist.timeout_s == doctest::Approx(30));
  auto err = [](const std::string& text) {
    try {
      parse_config(text, "cfg.yaml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err("dist:\n  backend: mpi\n") == "cfg.yaml:2: dist.backend: 'mpi' is not one of: auto, nccl, store, gloo");
  CHECK(err("dist:\n  bucket_mb: 0\n").find("cfg.yaml:2: dist.bucket_mb: value 0 is out of range") == 0);
  CHECK(err("dist:\n  timeout_s: -1\n").find("cfg.yaml:2: dist.timeout_s: value -1 is out of range") == 0);
  CHECK(err("dist:\n  bucket_size: 3\n").find("cfg.yaml:2: dist.bucket_size: unknown key") == 0);
}
