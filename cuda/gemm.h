// Matrix products through cuBLASLt: f32 (exact fp32, no TF32), f64, bf16 and
// f16 operands with fp32 accumulation; row- or column-major operands are
// passed as transpose flags; strided batches (batch stride 0 broadcasts).
// One handle and one 32 MiB workspace per device, created on first use.
#pragma once
#include "cuda/strided.h"

namespace coil::cuda {

// True when a 3-D view (batch, rows, cols) can go to cuBLASLt as it is.
inline bool gemm_layout_ok(const Strided& t) {
  int64_t r = t.shape[1], c = t.shape[2], rs = t.strides[1], cs = t.strides[2];
  bool row_major = (cs == 1 || c == 1) && rs >= (c > 1 ? c : 1);
  bool col_major = (rs == 1 || r == 1) && cs >= (r > 1 ? r : 1);
  return t.rank == 3 && (row_major || col_major);
}

// out (B, M, N) contiguous = a (B, M, K) @ b (B, K, N) + beta * out.
// out has a's dtype, or f32 for bf16/f16 operands (the products are summed in
// f32 either way; an f32 out keeps the sum there, e.g. to accumulate several
// products with beta = 1 into one f32 gradient).
void bmm(const Strided& a, const Strided& b, const Strided& out, int device, float beta = 0.f);

}  // namespace coil::cuda
