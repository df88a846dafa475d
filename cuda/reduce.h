// CUDA row reductions: out[r] = sum or max of the `cols` contiguous elements
// of row r. One block per row, a fixed tree order: deterministic.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace coil::cuda {

enum class ReduceKind { sum, max };

void reduce_rows(ReduceKind kind, const void* x, DType dtype, int64_t rows, int64_t cols, void* out, int device);
// Column reductions: out[c] = sum or max over r of x[r * cols + c] for a
// row-major (rows, cols) x. A thread per column, rows in order: deterministic,
// and suited to few rows and many columns (a sum over leading dims).
void reduce_cols(ReduceKind kind, const void* x, DType dtype, int64_t rows, int64_t cols, void* out, int device);

}  // namespace coil::cuda
