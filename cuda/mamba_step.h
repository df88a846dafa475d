// Fused kernels for one recurrent decode step of the Mamba mixer (a token
// per sequence, states updated in place), and the greedy token pick that
// keeps the next input on the device. Raw pointers, sizes and the device's
// stream; the op layer (ops/mamba_step.h) checks shapes and dtypes.
//
// Layouts: a "(batch, n) with row stride s" operand has element [b, i] at
// p[b * s + i] (inner stride 1), so the column slices of the in_proj and
// x_proj outputs (x | z, dt | B | C) are read in place, without copies.
// Activations are f32, bf16 or f16 (`dtype`); the small parameters (conv
// weight and bias, A, D, dt bias) and the SSM state are f32.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace coil::cuda {

// out[b, c] = act(bias[c] + sum_{k<K-1} w[c, k] state[b, c, k] + w[c, K-1] x[b, c])
// then state[b, c, :] shifts left by one and takes x[b, c] as its last entry.
struct ConvStepArgs {
  int64_t batch = 0, dim = 0, width = 0;
  DType dtype = DType::f32;  // x, state, out
  const void* x = nullptr;
  int64_t x_row = 0;
  void* state = nullptr;        // (batch, dim, width-1) contiguous, in place
  const float* w = nullptr;     // (dim, width)
  const float* bias = nullptr;  // (dim) or null
  bool silu = true;
  void* out = nullptr;  // (batch, dim) contiguous
};
void conv_step(const ConvStepArgs& a, int device);

// dt = softplus(dt_raw + dt_bias) with dt_raw = dt_in[b, :R] . dt_w[d, :R]
// (the dt_proj product fused in) or dt_in[b, d] when dt_w is null;
// h = exp(dt A) h + dt B x;  y = C.h + D x;  out = y * silu(z).
struct SsmStepArgs {
  int64_t batch = 0, dim = 0, dstate = 0, dt_rank = 0;  // dt_rank: 0 when dt_w is null
  DType dtype = DType::f32;  // x, dt_in, dt_w, B, C, z, out
  const void* x = nullptr;
  int64_t x_row = 0;
  const void* dt_in = nullptr;
  int64_t dt_row = 0;
  const void* dt_w = nullptr;  // (dim, dt_rank) contiguous or null
  const float* A = nullptr;    // (dim, dstate)
  const void* B = nullptr;
  int64_t B_row = 0;
  const void* C = nullptr;
  int64_t C_row = 0;
  const float* D = nullptr;        // (dim) or null
  const void* z = nullptr;         // or null
  int64_t z_row = 0;
  const float* dt_bias = nullptr;  // (dim) or null
  bool softplus = true;
  float* state = nullptr;  // (batch, dim, dstate) contiguous, in place
  void* out = nullptr;     // (batch, dim) contiguous
};
void ssm_step(const SsmStepArgs& a, int device);

// The conv step and x_proj of a decode step in one kernel, for the batches
// whose projections are cuBLASLt GEMMs (> 8 rows): conv_out = the conv step
// (SiLU) of x, as conv_step computes it; x_dbl (batch, E) = conv_out @
// w_x^T, f32 sums rounded once to the dtype (a GEMM's output). Clusters of
// kConvXprojCluster blocks take kConvXprojRows batch rows, block k a slice
// of the channels: its x_proj columns are staged once (cp.async, before the
// PDL wait) for all the rows, and the blocks add their partial sums through
// distributed shared memory in rank order (deterministic).
struct ConvXprojArgs {
  int64_t batch = 0, dim = 0, width = 0, out_dim = 0;  // out_dim E: x_proj's rows
  DType dtype = DType::f32;                            // x, conv state, w_x, conv_out, x_dbl
  const void* x = nullptr;                             // (batch, dim) with row stride x_row
  int64_t x_row = 0;
  void* conv_state = nullptr;     // (batch, dim, width-1) contiguous, in place
  const float* conv_w = nullptr;  // (dim, width)
  const float* conv_b = nullptr;  // (dim) or null
  const void* w_x = nullptr;      // (out_dim, dim) contiguous
  void* conv_out = nullptr;       // (batch, dim) contiguous
  void* x_dbl = nullptr;          // (batch, out_dim) contiguous
};
constexpr int kConvXprojCluster = 8;
constexpr int kConvXprojRows = 8;
// Whether the kernel takes these sizes and alignments (dim a multiple of 8,
// width <= 4, the slice's weights in shared memory); otherwise the caller
// runs conv_step and a GEMM.
bool conv_xproj_supported(const ConvXprojArgs& a);
void conv_xproj(const ConvXprojArgs& a, int device);

// out[b] = the first index of the largest of x[b, :limit] (NaN counts as
// -inf; an all -inf/NaN row gives 0). x (rows, >= limit) with row stride
// x_row in `dtype`; out i32 or i64 (`out_dtype`) with element stride 1.
void argmax_rows(const void* x, DType dtype, int64_t rows, int64_t limit, int64_t x_row, void* out, DType out_dtype,
                 int device);

// y (M, N) = x (M, K) @ w (N, K)^T (+ bias (N)) for the few rows of a decode
// step, M <= kGemvMaxRows per tile: each weight row is read once for all
// the tile's input rows (a GEMV per row), with 16-byte loads when the rows are aligned;
// small N splits K over several warps per row. x rows have stride x_row;
// w, bias, y contiguous; one dtype (f32, bf16, f16), fp32 accumulation.
// With `conv` (batch M, dim <= N; its x and x_row unused), the conv step
// also runs on y[:, :conv.dim] as each value is made (in_proj's x half),
// saving the separate conv launch.
// With `norm`, the input rows are not read from x but made by a fused
// residual add + RMSNorm (ops/rms_norm's math and roundings, then the cast
// to dtype) of hidden (M, K) and residual (M, K) or null; the new residual
// stream (M, K) is written to residual_out (which must not alias either
// input). Every block recomputes the M norms (cheap: K values per row from
// L2), so a layer's norm costs no launch. Needs M*K*4 <= kGemvNormMaxSmem.
struct NormPrologue {
  const void* x = nullptr;  // hidden (M, K) contiguous
  DType x_dtype = DType::f32;
  const void* residual = nullptr;  // (M, K) contiguous or null
  DType residual_dtype = DType::f32;
  const float* weight = nullptr;  // (K)
  float eps = 1e-5f;
  void* residual_out = nullptr;  // (M, K) contiguous
  DType residual_out_dtype = DType::f32;
};
constexpr int64_t kGemvMaxRows = 8;
// More rows (without conv or norm) run as tiles of kGemvMaxRows along the
// grid's y: each tile re-reads the weights (from L2 when they fit), so this
// suits small weights at a few tiles (x_proj, out_proj at batch 64).
constexpr int64_t kGemvMaxTiledRows = 65535 * kGemvMaxRows;
constexpr size_t kGemvNormMaxSmem = 46 * 1024;  // dynamic; the kernel has ~0.4 KiB static
void gemv_rows(const void* x, int64_t x_row, const void* w, const void* bias, void* y, DType dtype, int64_t M,
               int64_t N, int64_t K, int device, const ConvStepArgs* conv = nullptr,
               const NormPrologue* norm = nullptr);

// y (M, N) = x (M, K) @ w^T (+ bias) on tensor cores (mma.sync, f32
// accumulation, rounded once to the dtype): the decode step's large
// projections past the GEMV's rows (cuda/mma_rows_kernel.cuh says how).
// Each block stages its weight rows in shared memory before the PDL wait;
// x is read in tiles of 64 rows. mma_rows_supported: bf16 or f16, K a
// multiple of 32 that fits the staging, 16-byte aligned x rows and w.
bool mma_rows_supported(DType dtype, int64_t M, int64_t N, int64_t K, const void* x, int64_t x_row, const void* w);
void mma_rows(const void* x, int64_t x_row, const void* w, const void* bias, void* y, DType dtype, int64_t M,
              int64_t N, int64_t K, int device);

// The decode step's fused residual add + RMSNorm for any number of rows
// (the GEMV prologue's math, one block per row): x, residual as in `p`
// (rows, K) contiguous, the residual stream to p.residual_out, and the
// normalised rows (rows, K) straight in y_dtype (the compute dtype), so no
// cast follows. Needs K*4 <= kGemvNormMaxSmem.
void add_rms_norm_rows(const NormPrologue& p, int64_t rows, int64_t K, void* y, DType y_dtype, int device);

// Launch the kernels above with programmatic dependent launch (cuda/pdl.cuh):
// each one's blocks are dispatched while the previous kernel drains and wait
// on the device for its results. Off by default; nn::Decoder turns it on
// around its step (eager and captured). Process-wide, read at each launch.
void set_decode_pdl(bool on);
// Drops the pending (non-sticky) error a refused capture or launch left in
// the runtime, so a retry without PDL does not trip over it.
void clear_launch_error();

}  // namespace coil::cuda
