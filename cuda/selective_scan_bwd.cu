// Selective scan backward: see cuda/selective_scan.h for the contract and
// cuda/selective_scan_common.cuh for the block layout.
//
// Each block (32 channels of one batch row) walks the 64-step tiles (= the
// forward's chunks) from the last to the first. Per tile and round of 16 states:
//   pass 1  from the saved chunk state, step forward through the tile keeping
//           the state at each 8-step sub-tile boundary (shared memory) and y;
//   (dz)    all threads: dy = dout * silu(z), dz = dout * (y + D u) * silu'(z);
//   pass 2  sub-tiles in reverse: recompute the sub-tile's 8 states and decays
//           into registers, then run the reverse recurrence
//             G_t = dy_t C_t + g_t,  g_{t-1} = exp(dt_t A) G_t  (g = the carry)
//           accumulating dA, sum_n G B and sum_n A G a h_{t-1} per step (for du
//           and ddelta), and dB_t = dt u G, dC_t = dy h per (step, state),
//           summed over the block's channels: a reduce-scatter over the warp's
//           8 channels, then the 4 warps' partials in shared memory, in order;
//   (out)   du, ddelta with the softplus derivative.
// Cross-block sums (over batch; over channel groups for selective dB/dC) are
// partials in the workspace, summed in a fixed order by sum_parts_kernel.
#include "cuda/common.cuh"
#include "cuda/selective_scan.h"
#include "cuda/selective_scan_bwd_kernel.cuh"
#include "cuda/selective_scan_seg_kernel.cuh"

namespace coil::cuda {
namespace scan {
namespace {

template <class IO, class BC, bool kVarB, bool kVarC>
void launch_bwd(const BwdArgs& a, dim3 grid, size_t smem, cudaStream_t st) {
  auto kern = bwd_kernel<IO, BC, kVarB, kVarC>;
  COIL_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kern<<<grid, kThreads, smem, st>>>(a);
  COIL_CUDA_LAUNCH_CHECK();
}

template <class IO, class BC>
void dispatch_bwd(const ScanParams& p, const BwdArgs& a, dim3 grid, size_t smem, cudaStream_t st) {
  if (p.var_B && p.var_C) launch_bwd<IO, BC, true, true>(a, grid, smem, st);
  else if (p.var_B) launch_bwd<IO, BC, true, false>(a, grid, smem, st);
  else if (p.var_C) launch_bwd<IO, BC, false, true>(a, grid, smem, st);
  else launch_bwd<IO, BC, false, false>(a, grid, smem, st);
}

SegPlan bwd_plan(const ScanParams& p) { return bwd_seg_plan(p, sm_count()); }

}  // namespace
}  // namespace scan

size_t scan_bwd_workspace_bytes(const ScanParams& p) {
  return size_t(scan::ws_layout(p, scan::bwd_plan(p).n_seg).total) * sizeof(float);
}

void selective_scan_bwd(const ScanParams& p, const ScanGrads& gr, void* stream) {
  using namespace scan;
  COIL_CHECK(p.batch >= 0 && p.dim >= 0 && p.len >= 0, "selective_scan_bwd: negative size");
  COIL_CHECK(p.dstate >= 1 && p.dstate <= 256, "selective_scan_bwd: dstate must be 1..256, got ", p.dstate);
  COIL_CHECK(p.io == DType::f32 || p.io == DType::bf16, "selective_scan_bwd: io dtype must be f32 or bf16");
  COIL_CHECK(p.bc == DType::f32 || p.bc == DType::bf16, "selective_scan_bwd: B/C dtype must be f32 or bf16");
  COIL_CHECK(p.batch <= 65535, "selective_scan_bwd: batch above 65535");
  const size_t need = scan_bwd_workspace_bytes(p);
  COIL_CHECK(gr.workspace_bytes >= need && (need == 0 || gr.workspace), "selective_scan_bwd: workspace too small (need ",
             need, " bytes, got ", gr.workspace_bytes, ")");
  COIL_CHECK(scan::aligned16(gr.workspace), "selective_scan_bwd: workspace must be 16-byte aligned");
  // Selective dB, dC are (batch, dstate, len): empty, and possibly null, at len 0.
  COIL_CHECK(gr.dA && (gr.dB || (p.var_B && p.len == 0)) && (gr.dC || (p.var_C && p.len == 0)),
             "selective_scan_bwd: dA, dB and dC are required");
  // With len 0 nothing is scanned: the kernel does not run, the sums below
  // write zeros and dh0 = dhT.
  const bool work = p.batch > 0 && p.dim > 0 && p.len > 0;
  COIL_CHECK(!work || (p.u && p.delta && gr.dout && gr.du && gr.ddelta && (!p.has_z || p.z) && p.chunk_states),
             "selective_scan_bwd: a required buffer is null (u, delta, z, dout, du, ddelta, chunk_states)");
  COIL_CHECK(!work || (p.A && p.B && p.C && (!p.has_D || p.D) && (!p.has_delta_bias || p.delta_bias)),
             "selective_scan_bwd: a required parameter is null");
  auto st = static_cast<cudaStream_t>(stream);
  const SegPlan plan = bwd_plan(p);

  if (work) {
    const BwdArgs a = make_bwd_args(p, gr, plan);
    const dim3 grid(unsigned((p.dim + kCh - 1) / kCh), unsigned(p.batch), unsigned(plan.n_seg));
    const size_t smem = bwd_smem_bytes(a);
    if (plan.n_seg > 1) launch_seg_summary<true>(p, make_seg_args(p, plan, true, gr.dout, a.seg_g, a.seg_dt), st);
#ifdef COIL_SCAN_DEV_IO  // resource-report experiments: compile one instantiation only, e.g.
    // -DCOIL_SCAN_DEV_IO=coil::bf16 -DCOIL_SCAN_DEV_BC=coil::bf16 -DCOIL_SCAN_DEV_VB=true -DCOIL_SCAN_DEV_VC=true
    launch_bwd<COIL_SCAN_DEV_IO, COIL_SCAN_DEV_BC, COIL_SCAN_DEV_VB, COIL_SCAN_DEV_VC>(a, grid, smem, st);
#else
    if (p.io == DType::f32) {
      if (p.bc == DType::f32) dispatch_bwd<float, float>(p, a, grid, smem, st);
      else dispatch_bwd<float, coil::bf16>(p, a, grid, smem, st);
    } else {
      if (p.bc == DType::f32) dispatch_bwd<coil::bf16, float>(p, a, grid, smem, st);
      else dispatch_bwd<coil::bf16, coil::bf16>(p, a, grid, smem, st);
    }
#endif
  }

  SumJobs js{};
  const int nj = make_sum_jobs(p, gr, work, plan.n_seg, js);
  if (nj > 0) {
    sum_parts_kernel<<<dim3(sum_grid_x(js, nj), unsigned(nj)), 256, 0, st>>>(js);
    COIL_CUDA_LAUNCH_CHECK();
  }
  if (!work && gr.dh0 && p.batch * p.dim > 0) {
    const size_t bytes = size_t(p.batch * p.dim * p.dstate) * sizeof(float);
    if (gr.dhT) COIL_CUDA_CHECK(cudaMemcpyAsync(gr.dh0, gr.dhT, bytes, cudaMemcpyDeviceToDevice, st));
    else COIL_CUDA_CHECK(cudaMemsetAsync(gr.dh0, 0, bytes, st));
  }
}

}  // namespace coil::cuda
