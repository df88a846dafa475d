// Collectives for data parallelism. Communicator is the interface the
// trainer will use; StoreCommunicator is the CPU backend, built on the
// rendezvous store (store.h) so data-parallel logic runs in CI without GPUs.
// Its all_reduce_sum is deterministic: every rank gathers every rank's
// buffer and sums them in rank order (0, 1, ..., world-1), so the result is
// the same bits on every rank and independent of arrival order. All traffic
// goes through rank 0's store: fine for tests and small buffers, not fast.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/tensor.h"
#include "train/dist/store.h"
#include "train/launcher/env.h"

namespace coil::dist {

enum class ReduceOp { sum, avg };  // avg = sum / world

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual const char* backend() const = 0;
  // ---- host buffers (blocking) ----
  // In place: data[i] = sum over ranks of data[i] (StoreCommunicator: summed
  // in rank order).
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  // In place: every rank gets root's bytes.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // ---- tensors (contiguous; on the backend's device) ----
  // CPU backends (these defaults) take f32 CPU tensors and run at once.
  // NcclCommunicator takes CUDA f32/bf16 tensors and only enqueues: the
  // collective runs on its own stream after the work already queued on the
  // device's compute stream; wait_pending() orders later compute-stream work
  // after every collective issued so far. `what` names the operation in
  // errors ("all_reduce of bucket 3 (25.0 MiB)"). Every rank must issue the
  // same collectives in the same order.
  virtual void all_reduce(const Tensor& t, ReduceOp op, const std::string& what);
  virtual void broadcast_tensor(const Tensor& t, int root, const std::string& what);
  virtual void wait_pending() {}
};

class StoreCommunicator final : public Communicator {
 public:
  explicit StoreCommunicator(std::shared_ptr<Store> store);
  int rank() const override { return store_->rank(); }
  int world() const override { return store_->world(); }
  const char* backend() const override { return "store"; }
  void all_reduce_sum(float* data, size_t n) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;
  Store& store() { return *store_; }

 private:
  std::string key(const char* op, uint64_t seq, int rank) const;
  std::shared_ptr<Store> store_;
  uint64_t seq_ = 0;          // collectives issued so far (same on every rank)
  uint64_t last_reduce_ = 0;  // seq of the previous all-reduce, 0 = none
};

// Store (from the WorkerEnv's master addr/port, rank, world) + CPU backend.
std::unique_ptr<Communicator> make_cpu_communicator(const launcher::WorkerEnv& env,
                                                    std::chrono::milliseconds timeout);

}  // namespace coil::dist
