// Selective scan forward: see cuda/selective_scan.h for the contract and
// cuda/selective_scan_common.cuh for the block layout.
//
// Per tile of 64 steps: all threads stage u and dt = softplus(delta + bias) of
// the block's 32 channels (and selective B, C of the round's 16 states) in
// shared memory; each lane then steps its 4 states through the tile
// (h = 2^(dt*A*log2e) h + B*dt*u; y += C*h), the 4 lanes of a channel
// reduce-scatter y so each owns one step; finally all threads apply D, the
// z gate and store the tile with 16-byte stores. The state entering each tile
// goes to chunk_states for the backward.
#include "cuda/common.cuh"
#include "cuda/selective_scan.h"
#include "cuda/selective_scan_fwd_kernel.cuh"
#include "cuda/selective_scan_seg_kernel.cuh"

namespace coil::cuda {

int64_t scan_num_chunks(int64_t len) { return scan::num_tiles(len); }

namespace scan {
namespace {

template <class IO, class BC, bool kVarB, bool kVarC>
void launch_fwd(const FwdArgs& a, dim3 grid, size_t smem, cudaStream_t st) {
  auto kern = fwd_kernel<IO, BC, kVarB, kVarC>;
  if (smem > 48 * 1024) COIL_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kern<<<grid, kThreads, smem, st>>>(a);
  COIL_CUDA_LAUNCH_CHECK();
}

template <class IO, class BC>
void dispatch_fwd(const ScanParams& p, const FwdArgs& a, dim3 grid, size_t smem, cudaStream_t st) {
  if (p.var_B && p.var_C) launch_fwd<IO, BC, true, true>(a, grid, smem, st);
  else if (p.var_B) launch_fwd<IO, BC, true, false>(a, grid, smem, st);
  else if (p.var_C) launch_fwd<IO, BC, false, true>(a, grid, smem, st);
  else launch_fwd<IO, BC, false, false>(a, grid, smem, st);
}

SegPlan fwd_plan(const ScanParams& p) { return fwd_seg_plan(p, sm_count()); }
}  // namespace
}  // namespace scan

size_t scan_fwd_workspace_bytes(const ScanParams& p) {
  if (p.batch <= 0 || p.dim <= 0 || p.len <= 0) return 0;
  return size_t(scan::fwd_ws_floats(p, scan::fwd_plan(p))) * sizeof(float);
}

void selective_scan_fwd(const ScanParams& p, void* stream) {
  using namespace scan;
  COIL_CHECK(p.batch >= 0 && p.dim >= 0 && p.len >= 0, "selective_scan_fwd: negative size");
  COIL_CHECK(p.dstate >= 1 && p.dstate <= 256, "selective_scan_fwd: dstate must be 1..256, got ", p.dstate);
  COIL_CHECK(p.io == DType::f32 || p.io == DType::bf16, "selective_scan_fwd: io dtype must be f32 or bf16");
  COIL_CHECK(p.bc == DType::f32 || p.bc == DType::bf16, "selective_scan_fwd: B/C dtype must be f32 or bf16");
  COIL_CHECK(p.batch <= 65535, "selective_scan_fwd: batch above 65535");
  if (p.batch == 0 || p.dim == 0) return;
  // With len 0 the per-step buffers (u, delta, z, out and selective B, C) are
  // empty and may be null; the kernel then only writes hT (= h0).
  COIL_CHECK((p.len == 0 || (p.u && p.delta && p.out && (!p.has_z || p.z) && p.B && p.C)) && p.A &&
                 (p.var_B || p.B) && (p.var_C || p.C) && (!p.has_D || p.D) && (!p.has_delta_bias || p.delta_bias),
             "selective_scan_fwd: a required buffer is null");
  const SegPlan plan = p.len > 0 ? fwd_plan(p) : SegPlan{};
  float* ws = static_cast<float*>(p.fwd_workspace);
  COIL_CHECK(plan.n_seg == 1 || (ws && scan::aligned16(ws)),
             "selective_scan_fwd: the workspace (scan_fwd_workspace_bytes) is missing or not 16-byte aligned");
  const FwdArgs a = make_fwd_args(p, plan, ws);
  const dim3 grid(unsigned((p.dim + kCh - 1) / kCh), unsigned(p.batch), unsigned(plan.n_seg));
  const size_t smem = fwd_smem_bytes(a);
  auto st = static_cast<cudaStream_t>(stream);
  if (plan.n_seg > 1) launch_seg_summary<false>(p, make_seg_args(p, plan, false, nullptr, a.seg_h, a.seg_dt), st);
  if (p.io == DType::f32) {
    if (p.bc == DType::f32) dispatch_fwd<float, float>(p, a, grid, smem, st);
    else dispatch_fwd<float, coil::bf16>(p, a, grid, smem, st);
  } else {
    if (p.bc == DType::f32) dispatch_fwd<coil::bf16, float>(p, a, grid, smem, st);
    else dispatch_fwd<coil::bf16, coil::bf16>(p, a, grid, smem, st);
  }
}

}  // namespace coil::cuda
