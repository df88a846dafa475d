// CPU matrix products through OpenBLAS (cblas_sgemm / cblas_dgemm).
#pragma once
#include "core/tensor.h"

namespace coil::cpu {

// out[b] = a[b] @ bm[b] for 3-D views a (B,M,K), bm (B,K,N) and a contiguous
// out (B,M,N). Each matrix may be row- or column-major (a transposed view is
// passed to BLAS as a transpose flag, not copied); other layouts are copied.
// bf16/f16 operands are widened to f32 for the product. With beta != 0 the
// product is added to beta * out (GEMM's accumulate), which lets a caller sum
// several products into one buffer without a temporary. out may be the
// operands' dtype or the product's working dtype (f32; f64 for f64).
void bmm(const Tensor& a, const Tensor& bm, const Tensor& out, double beta = 0.0);

}  // namespace coil::cpu
