// CUDA selective scan (Mamba-1 S6), forward and backward: the same semantics
// and layout as the CPU reference in ops/cpu/selective_scan.h.
//
//   u, delta, z, out : (batch, dim, len), len fastest, io dtype (f32 or bf16)
//   A                : (dim, dstate) f32
//   B, C             : var  -> (batch, dstate, len) in bc dtype (selective, one group)
//                      const -> (dim, dstate) in bc dtype (LTI ablation)
//   D, delta_bias    : (dim) f32 or null;  h0, hT : (batch, dim, dstate) f32 or null
//
//   dt_t = delta_t + delta_bias, then softplus (PyTorch's: x > 20 passes through)
//   h_t  = exp(dt_t A) h_{t-1} + dt_t B_t u_t;   y_t = <C_t, h_t> + D u_t
//   out  = y * silu(z) when has_z.
//
// The hardware-aware algorithm of the paper: the state lives in fp32 registers;
// time is walked in chunks of kScanChunk steps with the state carried between
// them; the forward saves only the state entering each chunk (chunk_states,
// (batch, dim, n_chunks, dstate) f32, about dstate/16 bytes per (b, d, t):
// 1 byte at N=16, half of a bf16 activation; mamba_ssm instead keeps the
// ungated output, 2 bytes). The backward walks the chunks in reverse, recomputes
// each chunk's states from its saved boundary state, and runs the reverse
// recurrence for dh. No (batch, len, dim, dstate) buffer ever exists.
//
// Deterministic: no floating-point atomics. Sums over channels (selective
// dB/dC), batch (dA, dD, d(delta_bias), LTI dB/dC) and time go through
// per-block partials in the workspace that a second kernel reduces in a fixed
// order, so outputs and gradients are bit-identical run to run.
//
// Sizes: any len >= 0, any dim, dstate 1..256 (16 is the fast path; dstate > 16
// runs in rounds of 16 states, correct but slower). Streams are cudaStream_t
// passed as void*. All pointers are device pointers; every buffer is contiguous
// except delta, z (and ddelta) when given strides (see ScanParams).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace coil::cuda {

struct ScanParams {
  int64_t batch = 0, dim = 0, len = 0, dstate = 0;  // dstate 1..256
  bool var_B = true, var_C = true, has_D = false, has_z = false, has_delta_bias = false, softplus = false;
  DType io = DType::f32;  // u, delta, z, out (and dout, du, ddelta, dz): f32 or bf16
  DType bc = DType::f32;  // B, C (and var dB, dC): f32 or bf16
  const void *u = nullptr, *delta = nullptr, *B = nullptr, *C = nullptr, *z = nullptr;
  const float *A = nullptr, *D = nullptr, *delta_bias = nullptr, *h0 = nullptr;  // h0 null = zeros
  void* out = nullptr;
  float* hT = nullptr;            // final state h_{len-1}, or null
  float* chunk_states = nullptr;  // filled by the fwd for the bwd, or null (inference)
  // Time segments (small batches, see selective_scan_common.cuh): 0 lets the
  // launchers choose from the GPU's size; > 0 forces that many (tests).
  int segments = 0;
  void* fwd_workspace = nullptr;  // scan_fwd_workspace_bytes(p) bytes, 16-byte aligned
  // delta and z may be strided views: (batch, channel) strides in elements,
  // time contiguous (a GEMM's (dim, batch, len) output viewed as (batch, dim,
  // len) needs no copy). {0, 0} means contiguous. The backward writes ddelta
  // with delta's strides, so its gradient goes back through the view as a view.
  int64_t delta_strides[2] = {0, 0}, z_strides[2] = {0, 0};
};

// Steps per chunk: the forward saves the state entering each chunk.
constexpr int64_t kScanChunk = 64;
// Chunks for a sequence of `len` steps: chunk_states holds batch*dim*n*dstate floats.
int64_t scan_num_chunks(int64_t len);

// Scratch of the forward (segment summaries; 0 when the current device runs
// the scan unsegmented).
size_t scan_fwd_workspace_bytes(const ScanParams& p);

// Launches on `stream`; returns without synchronising.
void selective_scan_fwd(const ScanParams& p, void* stream);

struct ScanGrads {
  const void* dout = nullptr;  // (batch, dim, len) io dtype
  const float* dhT = nullptr;  // (batch, dim, dstate) or null (= zero)
  void *du = nullptr, *ddelta = nullptr, *dz = nullptr;  // io dtype; dz only with has_z (nullable)
  float* dA = nullptr;                                   // (dim, dstate), required
  float *dD = nullptr, *ddelta_bias = nullptr, *dh0 = nullptr;  // nullable
  void *dB = nullptr, *dC = nullptr;  // B's / C's shape: var in bc dtype, const in f32; required
  void* workspace = nullptr;          // scan_bwd_workspace_bytes(p) bytes, 256-byte aligned
  size_t workspace_bytes = 0;
};

// Workspace for the per-block partials of the backward (fp32):
//   batch*dim*dstate*(1 + !var_B + !var_C + (dstate > 16)) + 2*batch*dim
//   + ceil(dim/32)*batch*dstate*len*(var_B + var_C)
// (at B16 D1536 L2048 N16 with var B and C: about 200 MB).
size_t scan_bwd_workspace_bytes(const ScanParams& p);

// Reads p.chunk_states written by selective_scan_fwd with the same inputs;
// p.out and p.hT are not touched. Overwrites every gradient it is given.
void selective_scan_bwd(const ScanParams& p, const ScanGrads& g, void* stream);

}  // namespace coil::cuda
