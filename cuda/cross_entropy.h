// CUDA cross-entropy from logits (bf16/f16/f32) over a large vocabulary: one
// block per row computes max and sum-exp in one pass (online), the backward
// writes (softmax - onehot) * dloss from the saved log-sum-exp. The softmax is
// never stored. A target outside [0, V) that is not ignore_index gives a NaN
// loss for its row (a kernel cannot raise; the trainer's NaN check reports it).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace coil::cuda {

void cross_entropy_fwd(const void* logits, DType dtype, int64_t n, int64_t V, const void* targets, DType tdtype,
                       int64_t ignore_index, float* loss, float* lse, float* weight, int device);
void cross_entropy_bwd(const void* logits, DType dtype, int64_t n, int64_t V, const void* targets, DType tdtype,
                       int64_t ignore_index, const float* lse, const float* dloss, void* dlogits, int device);

// The forward and the logits' gradient at once, for a chunked LM head: writes
// loss and weight as cross_entropy_fwd does (no lse), then overwrites logits
// in place with softmax - onehot (zero rows where ignored). The caller scales
// by dloss / count afterwards. 16-bit logits with V % 8 == 0 and V <= 57,344
// take a kernel that holds the row in registers (read once, written once).
void cross_entropy_fwd_grad(void* logits, DType dtype, int64_t n, int64_t V, const void* targets, DType tdtype,
                            int64_t ignore_index, float* loss, float* weight, int device);

}  // namespace coil::cuda
