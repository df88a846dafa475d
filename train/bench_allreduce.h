// `coil bench allreduce`: NCCL all-reduce bandwidth through coil's
// communicator, run under coil-run (one process per GPU). Rank 0 prints, per
// message size, the median time, the algorithm bandwidth (bytes / time) and
// the bus bandwidth (algbw * 2 (n - 1) / n, nccl-tests' definition, so the
// figures compare with all_reduce_perf's "busbw" for the same bytes).
#pragma once

namespace coil::train {

struct AllreduceBenchOptions {
  int iters = 20;
  int warmup = 5;
  double bucket_mb = 25;  // the "gradient step" line: a model's gradients in buckets of this size
  double grad_mb = 0;     // its gradient bytes (0: mamba-130m's, f32)
};

int run_bench_allreduce(const AllreduceBenchOptions& opt);

}  // namespace coil::train
