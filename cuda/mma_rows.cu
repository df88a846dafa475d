// Host launcher of the decode step's tensor-core projection
// (cuda/mma_rows_kernel.cuh).
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/mamba_step.h"
#include "cuda/mma_rows_kernel.cuh"
#include "cuda/pdl.cuh"

namespace coil::cuda {

namespace {

constexpr size_t kMaxSmem = 200 * 1024;

// Weight rows per block, 16 MT: 32 where that still gives about two thirds
// of a wave of blocks (mamba-130m's in_proj: 96 blocks), else 16 (out_proj:
// 48 blocks of 16 instead of 24 of 32: the weight stream needs SMs).
int pick_mt(int64_t M, int64_t N, int64_t K) {
  const int64_t tiles = (M + mma_kernel::kTileRows - 1) / mma_kernel::kTileRows;
  const bool two = (N + 31) / 32 * tiles * 3 >= int64_t(sm_count()) * 2 &&
                   mma_kernel::smem_bytes(int(K), 2) <= kMaxSmem;
  return two ? 2 : 1;
}

}  // namespace

bool mma_rows_supported(DType dtype, int64_t M, int64_t N, int64_t K, const void* x, int64_t x_row, const void* w) {
  return (dtype == DType::bf16 || dtype == DType::f16) && M >= 1 && N >= 1 && K >= mma_kernel::kKBlock &&
         K % mma_kernel::kKBlock == 0 && K <= (int64_t(1) << 20) && N <= INT32_MAX / 2 &&
         (M + mma_kernel::kTileRows - 1) / mma_kernel::kTileRows <= 65535 && M <= INT32_MAX / 2 &&
         mma_kernel::smem_bytes(int(K), 1) <= kMaxSmem && x && w && aligned16(x) && aligned16(w) &&
         (M == 1 || x_row % 8 == 0);
}

void mma_rows(const void* x, int64_t x_row, const void* w, const void* bias, void* y, DType dtype, int64_t M,
              int64_t N, int64_t K, int device) {
  COIL_CHECK(mma_rows_supported(dtype, M, N, K, x, x_row, w),
             "mma_rows: unsupported operands (dtype ", dtype_name(dtype), ", M ", M, ", N ", N, ", K ", K,
             "; see mma_rows_supported)");
  mma_kernel::Args a;
  a.x = x;
  a.x_row = x_row;
  a.w = w;
  a.bias = bias;
  a.y = y;
  a.M = int(M);
  a.N = int(N);
  a.K = int(K);
  a.w_row_bytes = mma_kernel::w_row_bytes(int(K));
  const int mt = pick_mt(M, N, K);
  const size_t smem = mma_kernel::smem_bytes(int(K), mt);
  const dim3 grid(unsigned((N + 16 * mt - 1) / (16 * mt)), unsigned((M + mma_kernel::kTileRows - 1) / mma_kernel::kTileRows));
  auto launch = [&](auto kernel) {
    if (smem > 48 * 1024)
      COIL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    launch_maybe_pdl(kernel, grid, dim3(mma_kernel::kThreads), smem, stream_of(device), a);
  };
  if (dtype == DType::bf16)
    mt == 2 ? launch(mma_kernel::mma_rows_kernel<bf16, 2>) : launch(mma_kernel::mma_rows_kernel<bf16, 1>);
  else
    mt == 2 ? launch(mma_kernel::mma_rows_kernel<f16, 2>) : launch(mma_kernel::mma_rows_kernel<f16, 1>);
}

}  // namespace coil::cuda
