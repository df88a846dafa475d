#include "train/dist/grad_buckets.h"

#include <cstdio>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "core/error.h"
#include "ops/ops.h"

namespace coil::dist {

GradBuckets::GradBuckets(std::vector<Tensor> params, Communicator& comm, size_t bucket_bytes)
    : params_(std::move(params)), comm_(comm) {
  COIL_CHECK(bucket_bytes > 0, "GradBuckets: bucket size must be positive");
  const size_t n = params_.size();
  bucket_of_.assign(n, 0);
  ready_.assign(n, false);
  // Reverse model order: the last layers' gradients are final first.
  for (size_t k = n; k-- > 0;) {
    const Tensor& p = params_[k];
    COIL_CHECK(p.defined() && p.is_leaf() && p.requires_grad(), "GradBuckets: parameter ", k,
               " is not a leaf that requires grad");
    COIL_CHECK(n == 0 || p.device() == params_[0].device(), "GradBuckets: parameters on ", p.device().str(),
               " and ", params_[0].device().str());
    const size_t bytes = p.nbytes();
    bool fresh = buckets_.empty() || buckets_.back().dtype != p.dtype() ||
                 (buckets_.back().numel > 0 &&
                  size_t(buckets_.back().numel) * element_size(p.dtype()) + bytes > bucket_bytes);
    if (fresh) {
      buckets_.emplace_back();
      buckets_.back().dtype = p.dtype();
    }
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
    bucket_of_[k] = buckets_.size() - 1;
  }
  for (Bucket& b : buckets_) b.pending = b.params.size();
  for (size_t k = 0; k < n; ++k)
    register_post_accumulate_grad_hook(params_[k], [this, k](const Tensor&) { on_ready(k); });
}

GradBuckets::~GradBuckets() {
  // Removes every hook of these parameters: nothing else registers any.
  for (const Tensor& p : params_) clear_post_accumulate_grad_hooks(p);
}

size_t GradBuckets::bucket_bytes(size_t b) const {
  return size_t(buckets_[b].numel) * element_size(buckets_[b].dtype);
}

void GradBuckets::arm() {
  COIL_CHECK(!armed_, "GradBuckets::arm: the previous armed pass was not finished");
  armed_ = true;
  launched_in_backward_ = 0;
}

void GradBuckets::on_ready(size_t k) {
  if (!armed_ || ready_[k]) return;
  ready_[k] = true;
  Bucket& b = buckets_[bucket_of_[k]];
  if (--b.pending == 0) launch_ready_in_order();
}

void GradBuckets::launch_ready_in_order() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    launch(next_launch_++);
    if (!in_finish_) ++launched_in_backward_;
  }
}

void GradBuckets::launch(size_t bi) {
  NoGradGuard ng;
  Bucket& b = buckets_[bi];
  const Device dev = params_[b.params[0]].device();
  if (!b.flat.defined()) b.flat = Tensor::zeros({b.numel}, b.dtype, dev);
  for (size_t j = 0; j < b.params.size(); ++j) {
    const Tensor& p = params_[b.params[j]];
    Tensor seg = b.flat.narrow(0, b.offsets[j], p.numel());
    const Tensor& g = p.grad();
    if (g.defined())
      copy_(seg, g.reshape({-1}));
    else
      copy_(seg, Tensor::zeros({1}, b.dtype, dev));
  }
  char what[96];
  std::snprintf(what, sizeof what, "all_reduce of bucket %zu (%.1f MiB)", bi, double(bucket_bytes(bi)) / (1 << 20));
  comm_.all_reduce(b.flat, ReduceOp::avg, what);
  b.launched = true;
}

void GradBuckets::finish() {
  COIL_CHECK(armed_, "GradBuckets::finish without arm()");
  in_finish_ = true;
  for (Bucket& b : buckets_) b.pending = 0;  // whatever did not arrive is final now
  launch_ready_in_order();
  in_finish_ = false;
  comm_.wait_pending();
  NoGradGuard ng;
  for (Bucket& b : buckets_) {
    for (size_t j = 0; j < b.params.size(); ++j) {
      const Tensor& p = params_[b.params[j]];
      Tensor avg = b.flat.narrow(0, b.offsets[j], p.numel()).view(p.shape());
      if (p.grad().defined())
        copy_(p.grad(), avg);
      else
        p.set_grad(avg.clone());
    }
    b.pending = b.params.size();
    b.launched = false;
  }
  ready_.assign(ready_.size(), false);
  next_launch_ = 0;
  armed_ = false;
}

}  // namespace coil::dist
