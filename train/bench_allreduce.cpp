#include "train/bench_allreduce.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "autograd/grad_mode.h"
#include "core/cuda_context.h"
#include "core/error.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "train/dist/nccl_comm.h"
#include "train/launcher/env.h"

namespace coil::train {

namespace {
using Clock = std::chrono::steady_clock;

// Median wall time of `fn` (which enqueues work) with a device sync after
// each run; the sync adds a few microseconds, small next to the sizes timed.
template <class F> double median_s(int device, int warmup, int iters, F fn) {
  for (int i = 0; i < warmup; ++i) fn();
  cuda_ctx::synchronize(device);
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    fn();
    cuda_ctx::synchronize(device);
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

int run_bench_allreduce(const AllreduceBenchOptions& opt) {
  COIL_CHECK(cuda_available(), "bench allreduce: no CUDA device");
  const launcher::WorkerEnv env = launcher::worker_env_from_environment();
  dist::NcclOptions no;
  no.device = env.local_rank;
  auto comm = dist::make_nccl_communicator(env, no);
  const int n = comm->world(), dev = env.local_rank;
  const bool out = comm->rank() == 0;
  const double bus = n > 1 ? 2.0 * (n - 1) / n : 1.0;
  NoGradGuard ng;
  Generator g{1, uint64_t(comm->rank())};
  if (out)
    std::printf("all_reduce (f32, sum) over %d ranks, median of %d\n%12s %10s %12s %12s\n", n, opt.iters, "bytes",
                "time_us", "algbw_GB/s", "busbw_GB/s");
  for (double mb : {1.0, 4.0, 16.0, 64.0, 256.0, 1024.0}) {
    const int64_t numel = int64_t(mb * (1 << 20)) / 4;
    Tensor t = randn({numel}, DType::f32, Device::cuda(dev), &g);
    double s = median_s(dev, opt.warmup, opt.iters, [&] {
      comm->all_reduce(t, dist::ReduceOp::sum, "bench all_reduce");
      comm->wait_pending();
    });
    const double bytes = double(numel) * 4;
    if (out) std::printf("%12.0f %10.1f %12.1f %12.1f\n", bytes, s * 1e6, bytes / s / 1e9, bytes / s / 1e9 * bus);
    comm->barrier();
  }
  // A training step's gradient traffic: the model's f32 gradients in buckets.
  const double grad_mb = opt.grad_mb > 0 ? opt.grad_mb : 129.1e6 * 4 / double(1 << 20);
  const int64_t bucket = int64_t(opt.bucket_mb * (1 << 20)) / 4, total = int64_t(grad_mb * (1 << 20)) / 4;
  std::vector<Tensor> buckets;
  for (int64_t off = 0; off < total; off += bucket)
    buckets.push_back(randn({std::min(bucket, total - off)}, DType::f32, Device::cuda(dev), &g));
  double s = median_s(dev, opt.warmup, opt.iters, [&] {
    for (size_t i = 0; i < buckets.size(); ++i) comm->all_reduce(buckets[i], dist::ReduceOp::avg, "bench bucket");
    comm->wait_pending();
  });
  const double bytes = double(total) * 4;
  if (out)
    std::printf("gradient step: %.0f MiB in %zu buckets of %.0f MiB: %.2f ms, busbw %.1f GB/s\n", grad_mb,
                buckets.size(), opt.bucket_mb, s * 1e3, bytes / s / 1e9 * bus);
  comm->barrier();
  return 0;
}

}  // namespace coil::train
