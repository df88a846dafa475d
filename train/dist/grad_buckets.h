// Bucketed gradient all-reduce, overlapped with backward (as PyTorch DDP).
//
// Parameters are grouped, in reverse order (the order backward finishes
// their gradients), into buckets of about `bucket_bytes` (one dtype per
// bucket; a parameter larger than the bucket size gets a bucket of its own).
// A post-accumulate-grad hook on every parameter (autograd/engine.h) counts
// the bucket's gradients; when the last one is final the bucket's gradients
// are copied into its flat buffer and the buffer is all-reduced (averaged).
// With NCCL that only enqueues the collective on the communication stream,
// so it runs while backward goes on computing the earlier layers.
//
// Why a copy into a flat buffer instead of gradients living as views of it:
// the engine hands each leaf a fresh gradient tensor (or adds into a new one)
// and the optimizer and clipping treat .grad as an owned tensor; making them
// views would need in-place accumulation in autograd. The copy costs two
// passes over the gradient bytes per step (~1 GB for mamba-130m, under a
// millisecond on an H100), small next to the step.
//
// Buckets are launched strictly in bucket order, whatever order their hooks
// complete in, so every rank issues the same collectives in the same order
// (NCCL requires it). Only an armed pass all-reduces: with gradient
// accumulation, arm() before the last micro-batch's backward only.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "train/dist/comm.h"

namespace coil::dist {

class GradBuckets {
 public:
  // params: the model's parameters (leaves that require grad), in model
  // order. The hooks stay registered until destruction.
  GradBuckets(std::vector<Tensor> params, Communicator& comm, size_t bucket_bytes);
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  // The next backward pass all-reduces its buckets as they complete.
  void arm();
  // After the armed backward: launches the buckets whose hooks did not all
  // fire (a parameter no backward reached takes part with zeros), waits for
  // the collectives (on CUDA: orders the compute stream after them) and
  // writes the averaged gradients back into every parameter's .grad.
  void finish();

  size_t bucket_count() const { return buckets_.size(); }
  // Parameter indices (into params) of bucket b, in the order they were added.
  const std::vector<size_t>& bucket_params(size_t b) const { return buckets_[b].params; }
  size_t bucket_bytes(size_t b) const;
  // Buckets launched from inside backward during the last armed pass (the
  // rest were launched by finish()); tests and logs.
  size_t launched_in_backward() const { return launched_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // element offset of each param in flat
    int64_t numel = 0;
    DType dtype = DType::f32;
    Tensor flat;
    size_t pending = 0;  // gradients not yet final in this pass
    bool launched = false;
  };
  void on_ready(size_t param);
  void launch_ready_in_order();
  void launch(size_t b);

  std::vector<Tensor> params_;
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param index -> bucket
  std::vector<bool> ready_;        // param index -> grad final in this pass
  size_t next_launch_ = 0;
  bool armed_ = false;
  bool in_finish_ = false;
  size_t launched_in_backward_ = 0;
};

}  // namespace coil::dist
