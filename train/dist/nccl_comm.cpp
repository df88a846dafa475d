#include "train/dist/nccl_comm.h"

#include <cstdio>

#include "core/error.h"

namespace coil::dist {

namespace {
std::vector<uint8_t> get_or_explain(Store& s, const std::string& key, const std::string& explain) {
  try {
    return s.get(key);
  } catch (const Error& e) {
    fail("NCCL rendezvous: " + explain + " (" + e.what() + ")");
  }
}
}  // namespace

std::vector<uint8_t> exchange_unique_id(Store& store, const std::vector<uint8_t>& id) {
  const int rank = store.rank(), world = store.world();
  char wait[32];
  std::snprintf(wait, sizeof wait, "%g s", double(store.options().timeout.count()) / 1000.0);
  if (rank == 0) {
    COIL_CHECK(!id.empty(), "exchange_unique_id: rank 0 has no id to publish");
    store.set("nccl/id", id);
    // Every rank reports in before anyone enters ncclCommInitRank, which
    // would otherwise wait forever for a rank that never came.
    for (int r = 1; r < world; ++r) {
      try {
        store.get("nccl/arrived/" + std::to_string(r));
      } catch (const Error& e) {
        std::string missing;
        int n = 0;
        for (int q = r; q < world; ++q)
          if (!store.check("nccl/arrived/" + std::to_string(q))) missing += (n++ ? ", " : "") + std::to_string(q);
        fail(std::string("NCCL rendezvous: ") + (n > 1 ? "ranks " : "rank ") + missing + " of " +
             std::to_string(world) + " never arrived (rank 0 waited " + wait + " at " + store.where() + ")");
      }
    }
    store.set("nccl/go", {1});
    return id;
  }
  std::vector<uint8_t> v = get_or_explain(
      store, "nccl/id", "rank " + std::to_string(rank) + " waited " + wait + " for the NCCL id from rank 0");
  store.set("nccl/arrived/" + std::to_string(rank), {1});
  get_or_explain(store, "nccl/go",
                 "rank " + std::to_string(rank) + " waited " + wait + " for rank 0 to see every rank arrive");
  return v;
}

}  // namespace coil::dist

#ifndef COIL_WITH_NCCL

namespace coil::dist {
bool built_with_nccl() { return false; }
std::unique_ptr<Communicator> make_nccl_communicator(const launcher::WorkerEnv&, const NcclOptions&) {
  fail("data parallel on CUDA needs NCCL, and this build of coil has none (build with CUDA and NCCL, or use "
       "device: cpu)");
}
}  // namespace coil::dist

#else

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cuda_context.h"

namespace coil::dist {

bool built_with_nccl() { return true; }

namespace {

using Clock = std::chrono::steady_clock;

double secs(std::chrono::milliseconds ms) { return double(ms.count()) / 1000.0; }

std::string fmt_secs(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%g s", s);
  return b;
}

ncclDataType_t nccl_type(DType t, const std::string& what) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::u8: return ncclUint8;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::f64: return ncclFloat64;
  }
  fail(what + ": dtype " + dtype_name(t) + " has no NCCL type");
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<Store> store, const NcclOptions& opts, const ncclUniqueId& id)
      : store_(std::move(store)), opts_(opts), rank_(store_->rank()), world_(store_->world()) {
    compute_ = static_cast<cudaStream_t>(cuda_ctx::stream(opts_.device));  // also makes the device current
    int lo = 0, hi = 0;
    COIL_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    // High priority: NCCL's kernels get SMs ahead of queued backward kernels.
    COIL_CUDA_CHECK(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, hi));
    check_nccl(ncclCommInitRank(&comm_, world_, id, rank_), "ncclCommInitRank");
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    if (comm_) {
      if (aborted_.load() || std::uncaught_exceptions() > 0) {
        if (!aborted_.exchange(true)) ncclCommAbort(comm_);
      } else if (comm_stream_drains()) {
        ncclCommDestroy(comm_);
      } else {
        std::fprintf(stderr, "NCCL: rank %d: collectives still running %g s after the end; aborting the communicator\n",
                     rank_, secs(opts_.timeout));
        ncclCommAbort(comm_);
      }
    }
    for (auto& p : inflight_)
      if (p.done) cudaEventDestroy(p.done);
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  const char* backend() const override { return "nccl"; }

  void all_reduce(const Tensor& t, ReduceOp op, const std::string& what) override {
    check_tensor(t, what);
    if (t.numel() == 0) return;
    const ncclDataType_t dt = nccl_type(t.dtype(), what);
    COIL_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16 || t.dtype() == DType::f16, what,
               ": all_reduce takes f32/bf16/f16 tensors, got ", t.desc());
    enqueue(t, what, [&] {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), dt, op == ReduceOp::avg ? ncclAvg : ncclSum,
                           comm_, comm_stream_);
    });
  }

  void broadcast_tensor(const Tensor& t, int root, const std::string& what) override {
    check_tensor(t, what);
    COIL_CHECK(root >= 0 && root < world_, what, ": root ", root, " not in world ", world_);
    if (t.numel() == 0) return;
    enqueue(t, what, [&] {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), t.nbytes(), ncclUint8, root, comm_, comm_stream_);
    });
  }

  void wait_pending() override {
    throw_if_failed();
    cudaEvent_t ev = nullptr;
    COIL_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    COIL_CUDA_CHECK(cudaEventRecord(ev, comm_stream_));
    COIL_CUDA_CHECK(cudaStreamWaitEvent(compute_, ev, 0));
    COIL_CUDA_CHECK(cudaEventDestroy(ev));  // released once it completes
    // Later frees on the compute stream are now ordered after the collectives.
    keep_alive_.clear();
  }

  // Host buffers: staged through the device; blocks until done (the watchdog
  // bounds the wait).
  void all_reduce_sum(float* data, size_t n) override {
    if (n == 0) return;
    Tensor t = Tensor::empty({int64_t(n)}, DType::f32, Device::cuda(opts_.device));
    cuda_ctx::copy_h2d(t.data_ptr(), data, n * sizeof(float), opts_.device);
    all_reduce(t, ReduceOp::sum, "all_reduce of " + std::to_string(n) + " host floats");
    wait_pending();
    cuda_ctx::copy_d2h(data, t.data_ptr(), n * sizeof(float), opts_.device);
    throw_if_failed();
  }

  void broadcast(void* data, size_t bytes, int root) override {
    if (bytes == 0) return;
    Tensor t = Tensor::empty({int64_t(bytes)}, DType::u8, Device::cuda(opts_.device));
    cuda_ctx::copy_h2d(t.data_ptr(), data, bytes, opts_.device);
    broadcast_tensor(t, root, "broadcast of " + std::to_string(bytes) + " host bytes from rank " + std::to_string(root));
    wait_pending();
    cuda_ctx::copy_d2h(data, t.data_ptr(), bytes, opts_.device);
    throw_if_failed();
  }

  void barrier() override {
    float one = 1.0f;
    all_reduce_sum(&one, 1);  // returns only when every rank has contributed
    COIL_CHECK(one == float(world_), "NCCL barrier: sum of ones is ", one, ", world is ", world_);
  }

 private:
  // At the end: waits (bounded by the timeout) for the comm stream's work;
  // false when it did not finish, so destroying could wait forever.
  bool comm_stream_drains() {
    cudaEvent_t ev = nullptr;
    if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) return false;
    cudaEventRecord(ev, comm_stream_);
    const auto deadline = Clock::now() + opts_.timeout;
    cudaError_t q;
    while ((q = cudaEventQuery(ev)) == cudaErrorNotReady && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    cudaEventDestroy(ev);
    return q == cudaSuccess;
  }

  struct Inflight {
    std::string what;
    Clock::time_point start;
    cudaEvent_t done = nullptr;  // null until the NCCL call has returned
  };

  void check_tensor(const Tensor& t, const std::string& what) const {
    COIL_CHECK(t.defined() && t.is_cuda() && t.device().index == opts_.device && t.is_contiguous(), what,
               ": the NCCL communicator takes contiguous tensors on cuda:", opts_.device, ", got ",
               t.defined() ? t.desc() : std::string("none"));
  }

  void check_nccl(ncclResult_t r, const std::string& what) {
    if (r == ncclSuccess) return;
    const char* last = comm_ ? ncclGetLastError(comm_) : nullptr;
    fail("NCCL error in " + what + " (rank " + std::to_string(rank_) + " of " + std::to_string(world_) + ", cuda:" +
         std::to_string(opts_.device) + "): " + ncclGetErrorString(r) + (last && *last ? std::string(": ") + last : ""));
  }

  void throw_if_failed() {
    if (!aborted_.load()) return;
    std::lock_guard<std::mutex> lk(mu_);
    handled_ = true;
    fail(error_);
  }

  // Orders the collective after the compute stream's queued work, registers
  // it with the watchdog before the call (the host side of an NCCL call can
  // block too, e.g. connecting to a peer that is gone), then records its
  // completion event.
  template <class Call> void enqueue(const Tensor& t, const std::string& what, Call call) {
    throw_if_failed();
    cudaEvent_t ready = nullptr;
    COIL_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    COIL_CUDA_CHECK(cudaEventRecord(ready, compute_));
    COIL_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, ready, 0));
    COIL_CUDA_CHECK(cudaEventDestroy(ready));
    Inflight* slot = nullptr;
    {
      std::lock_guard<std::mutex> lk(mu_);
      inflight_.push_back({what, Clock::now(), nullptr});
      slot = &inflight_.back();  // deque: stable while the watchdog pops only completed fronts
    }
    cv_.notify_all();
    const ncclResult_t r = call();
    throw_if_failed();
    if (r != ncclSuccess) {
      std::lock_guard<std::mutex> lk(mu_);
      inflight_.pop_back();  // ours: only this thread pushes
    }
    check_nccl(r, what);
    keep_alive_.push_back(t);
    cudaEvent_t done = nullptr;
    COIL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    COIL_CUDA_CHECK(cudaEventRecord(done, comm_stream_));
    std::lock_guard<std::mutex> lk(mu_);
    slot->done = done;
  }

  void abort_locked(const std::string& why) {
    error_ = why;
    aborted_.store(true);
    abort_time_ = Clock::now();
    std::fprintf(stderr, "%s\n", why.c_str());
    ncclCommAbort(comm_);  // ends the stuck kernels; the communicator is unusable from here on
  }

  void watch() {
    cudaSetDevice(opts_.device);
    std::unique_lock<std::mutex> lk(mu_);
    while (!stop_) {
      cv_.wait_for(lk, std::chrono::milliseconds(50));
      if (stop_) break;
      if (aborted_.load()) {
        // The main thread should have seen the error by now; if it is stuck,
        // end the process so the launcher notices.
        if (!handled_ && Clock::now() - abort_time_ > opts_.exit_grace) {
          std::fprintf(stderr, "%s (the process did not recover within %s; exiting)\n", error_.c_str(),
                       fmt_secs(secs(opts_.exit_grace)).c_str());
          std::fflush(stderr);
          std::_Exit(1);
        }
        continue;
      }
      // Completed collectives leave from the front, in issue order.
      while (!inflight_.empty() && inflight_.front().done) {
        cudaError_t q = cudaEventQuery(inflight_.front().done);
        if (q == cudaErrorNotReady) break;
        cudaEventDestroy(inflight_.front().done);
        if (q != cudaSuccess) {
          abort_locked("NCCL: " + inflight_.front().what + " failed on rank " + std::to_string(rank_) + ": " +
                       cudaGetErrorString(q));
          break;
        }
        inflight_.pop_front();
      }
      if (aborted_.load()) continue;
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        const std::string during = inflight_.empty() ? std::string("no collective in flight") : inflight_.front().what;
        abort_locked("NCCL: asynchronous error on rank " + std::to_string(rank_) + " of " + std::to_string(world_) +
                     " during " + during + ": " + ncclGetErrorString(async));
        continue;
      }
      if (!inflight_.empty() && Clock::now() - inflight_.front().start > opts_.timeout) {
        abort_locked("NCCL: " + inflight_.front().what + " timed out after " + fmt_secs(secs(opts_.timeout)) +
                     " on rank " + std::to_string(rank_) + " of " + std::to_string(world_) + " (cuda:" +
                     std::to_string(opts_.device) +
                     "; another rank is missing, stuck or slower; dist.timeout_s sets the limit)");
      }
    }
  }

  std::shared_ptr<Store> store_;  // rank 0 serves it; kept for the life of the group
  NcclOptions opts_;
  int rank_, world_;
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  std::vector<Tensor> keep_alive_;  // tensors of collectives not yet waited for

  std::mutex mu_;  // guards what follows (shared with the watchdog)
  std::condition_variable cv_;
  std::deque<Inflight> inflight_;
  std::string error_;
  Clock::time_point abort_time_;
  bool stop_ = false;
  bool handled_ = false;
  std::atomic<bool> aborted_{false};
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const launcher::WorkerEnv& env, const NcclOptions& opts) {
  COIL_CHECK(opts.device >= 0 && opts.device < cuda_device_count(), "NCCL: LOCAL_RANK ", opts.device,
             " has no GPU: ", cuda_device_count(), " CUDA devices are visible to rank ", env.rank);
  auto store = std::make_shared<Store>(store_options_from(env, opts.rendezvous_timeout));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  std::vector<uint8_t> mine;
  if (store->rank() == 0) {
    cuda_ctx::stream(opts.device);  // device current before NCCL looks at it
    ncclResult_t r = ncclGetUniqueId(&id);
    COIL_CHECK(r == ncclSuccess, "NCCL: ncclGetUniqueId failed on rank 0: ", ncclGetErrorString(r));
    mine.resize(sizeof id);
    std::memcpy(mine.data(), &id, sizeof id);
  }
  std::vector<uint8_t> v = exchange_unique_id(*store, mine);
  COIL_CHECK(v.size() == sizeof id, "NCCL rendezvous: the id from rank 0 has ", v.size(), " bytes, expected ",
             sizeof id, " (a different NCCL or coil on rank 0?)");
  std::memcpy(&id, v.data(), sizeof id);
  return std::make_unique<NcclCommunicator>(std::move(store), opts, id);
}

}  // namespace coil::dist

#endif
