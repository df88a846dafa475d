// Matrix products. matmul(a, b): a (..., M, K) @ b (..., K, N). When b is 2-D
// the leading dims of a fold into M (the Linear case); otherwise the batch
// dims broadcast. Transposed views go to BLAS/cuBLAS as flags, not copies.
#pragma once
#include "core/tensor.h"

namespace coil {

Tensor matmul(const Tensor& a, const Tensor& b);
// x (..., in) @ w(out, in)^T + bias(out): PyTorch's F.linear.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());
// out = x (M, K) @ w (N, K)^T written into `out` (M, N), contiguous, in x's
// dtype: one GEMM, no result buffer and no copy (an inference step's fixed
// buffers, e.g. the decode step's logits). No autograd.
void linear_into(const Tensor& x, const Tensor& w, const Tensor& out);

}  // namespace coil
