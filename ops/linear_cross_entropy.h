// Fused LM head + cross-entropy: mean over rows of
//   -log softmax(h @ weight^T)[row, targets[row]]
// without ever holding the (M, V) logits. Rows are processed chunk_rows at a
// time: one chunk of logits is computed by a GEMM, turned in place into its
// gradient (softmax - onehot) by the cross-entropy kernel, and immediately
// contracted into dh (its rows) and dweight (accumulated). Peak extra memory
// is one (chunk_rows, V) buffer plus dh (M, d) and dweight (V, d) in f32.
//
// h (M, d) sets the compute dtype (bf16 on the GPU for mixed precision; the
// CPU widens bf16/f16 to f32). weight (V, d) has h's dtype or is f32 (master
// weights, cast once here); its gradient comes back in its own dtype, summed
// over chunks in f32 (f64 for f64). targets (M) are i32/i64; rows equal to
// ignore_index count neither in the sum nor in the mean's denominator (0 when
// every row is ignored). The loss is an f32 scalar (f64 for f64 inputs).
// chunk_rows <= 0 picks a default from the buffer size (see below).
#pragma once
#include "core/tensor.h"

namespace coil {

Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets,
                            int64_t ignore_index = -100, int64_t chunk_rows = 0);

// The default chunk: the largest power of two of rows whose (rows, V) buffer
// of the compute dtype fits 1 GiB (8,192 rows for V = 50,280 in bf16), at
// least 1.
int64_t default_lce_chunk_rows(int64_t V, DType compute_dtype);

}  // namespace coil
