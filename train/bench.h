// `coil bench`: GPU benchmarks of the kernels and of training steps. Each line
// prints the measured time next to its floor (minimum bytes over the measured
// copy bandwidth, or FLOPs over the measured GEMM rate) and the ratio.
#pragma once
#include <string>
#include <vector>

namespace coil::train {

struct BenchOptions {
  int device = 0;
  int iters = 50;
  int warmup = 10;
  std::string dtype = "bf16";
  std::string config;           // bench step: the model and batch to time
  std::vector<std::string> overrides;
  bool profile = false;         // bench step: also print a per-op breakdown
  bool profile_shapes = false;  // bench step: the breakdown per op and input shapes
  int64_t micro_batch = 0;      // bench step: sequences per step (0 = the config's)
  // bench generate: batch sizes, prompt length, decode steps (config
  // default: configs/mamba-130m.yaml)
  std::vector<int64_t> gen_batches{1, 64};
  int64_t prompt_len = 2048;
  int64_t new_tokens = 128;
};

// what: copy, gemm, scan, conv, norm, embedding, proj, lce, step (needs opt.config), generate, all (the
// kernels). Returns a process exit code.
int run_bench(const std::vector<std::string>& what, const BenchOptions& opt);

}  // namespace coil::train
