// The forward kernel of the CUDA selective scan (device code only; the host
// launcher is cuda/selective_scan_fwd.cu). See cuda/selective_scan_common.cuh
// for the block layout.
#pragma once
#include "cuda/selective_scan_common.cuh"

namespace coil::cuda::scan {
namespace {

struct FwdArgs {
  int64_t batch, dim, len, dstate;
  int n_rounds, n_tiles;
  SegPlan seg;
  Layout dl, zl;  // delta's and z's rows
  bool has_D, has_z, has_bias, softplus, vec_io, vec_bc, prefetch;
  const void *u, *delta, *B, *C, *z;
  const float *A, *D, *bias, *h0;
  void* out;
  float *hT, *chunk_states;
  // Segment summaries (seg.n_seg > 1): per (b, d, segment) the end state from
  // zero (dstate floats) and the sum of dt; see "time segments" in the common header.
  float *seg_h, *seg_dt;
};

// Shared memory (floats): u, dt, y tiles (32 x kRow each), B, C tiles
// (kT x 16 each, time-major so a lane reads its 4 states as one float4), and
// for dstate > 16 the states of every round between tiles (n_rounds x 128 float4).
constexpr int kFwdSmemFloats = 3 * kCh * kRow + 2 * kT * kRound;

constexpr int kFwdMinBlocks = 6;  // blocks per SM (80 registers, 34 KB of shared memory)

template <class IO, class BC, bool kVarB, bool kVarC>
__global__ void __launch_bounds__(kThreads, kFwdMinBlocks) fwd_kernel(const __grid_constant__ FwdArgs a) {
  float* u_s = reinterpret_cast<float*>(dyn_smem());
  float* dt_s = u_s + kCh * kRow;
  float* y_s = dt_s + kCh * kRow;
  float* B_s = y_s + kCh * kRow;
  float* C_s = B_s + kT * kRound;
  float4* h_s = reinterpret_cast<float4*>(C_s + kT * kRound);

  constexpr int V = Vec<IO>::V, VPR = kT / V;        // io vectors per tile row
  const int tid = threadIdx.x, lane = tid & 31, g = lane & 3;
  const int c = (tid >> 5) * 8 + (lane >> 2);
  const int64_t b = blockIdx.y, d0 = int64_t(blockIdx.x) * kCh, d = d0 + c;
  const int seg = blockIdx.z;
  int k0, k1;
  seg_tiles(a.seg, a.n_tiles, seg, k0, k1);
  const int64_t L = a.len, N = a.dstate, dim = a.dim;
  const bool dok = d < dim;
  const bool multi = a.n_rounds > 1;
  const IO* u = static_cast<const IO*>(a.u);
  const IO* delta = static_cast<const IO*>(a.delta);
  const IO* z = static_cast<const IO*>(a.z);
  IO* out = static_cast<IO*>(a.out);
  const BC* Bp = static_cast<const BC*>(a.B);
  const BC* Cp = static_cast<const BC*>(a.C);

  float h[4], A2[4], Bc[4], Cc[4];
  // The lane's constants for round r: A*log2e, and B, C when they are not selective.
  auto load_round = [&](int r) {
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t n = int64_t(r) * kRound + 4 * g + s;
      const bool ok = dok && n < N;
      A2[s] = ok ? __ldg(a.A + d * N + n) * kLog2e : 0.f;
      if constexpr (!kVarB) Bc[s] = ok ? ld_f(Bp + d * N + n) : 0.f;
      if constexpr (!kVarC) Cc[s] = ok ? ld_f(Cp + d * N + n) : 0.f;
    }
  };
  // The state entering the block's first tile: h0 (or zero), carried through
  // the summaries of the earlier segments. Needs the round's A2 (load_round).
  auto init_state = [&](int r, float* hh) {
    const int64_t bd = b * dim + d;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t n = int64_t(r) * kRound + 4 * g + s;
      const bool ok = dok && n < N;
      hh[s] = (ok && a.h0) ? a.h0[bd * N + n] : 0.f;
      for (int j = 0; j < seg && ok; ++j) {
        const int64_t sj = bd * a.seg.n_seg + j;
        hh[s] = fmaf(ex2(a.seg_dt[sj] * A2[s]), hh[s], a.seg_h[sj * N + n]);
      }
    }
  };
  auto save_state = [&](float* dst, int r, const float* hh) {  // dst: (b, d, ...) row of dstate floats
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t n = int64_t(r) * kRound + 4 * g + s;
      if (n < N) dst[n] = hh[s];
    }
  };

  // The round's selective B and C for the tile at t0.
  auto stage_bc = [&](int r, int64_t t0) {
    if constexpr (kVarB) stage_states<BC>(Bp, a.vec_bc, b, N, L, r, t0, tid, B_s);
    if constexpr (kVarC) stage_states<BC>(Cp, a.vec_bc, b, N, L, r, t0, tid, C_s);
  };

  if (!multi) {
    load_round(0);
    init_state(0, h);
  } else {
    for (int r = 0; r < a.n_rounds; ++r) {
      float hh[4];
      load_round(r);
      init_state(r, hh);
      h_s[r * kThreads + tid] = make_float4(hh[0], hh[1], hh[2], hh[3]);
    }
  }
  float* cs_row = (a.chunk_states && dok) ? a.chunk_states + (b * dim + d) * a.n_tiles * N : nullptr;

  for (int k = k0; k < k1; ++k) {
    const int64_t t0 = int64_t(k) * kT;
    // The next tile's inputs into L2 while this one is staged and computed.
    if (a.prefetch && k + 1 < k1)
      prefetch_tile<IO, BC>(u, delta, a.dl, a.has_z ? z : nullptr, a.zl, nullptr, kVarB ? Bp : nullptr,
                            kVarC ? Cp : nullptr, b, d0, dim, N, L, t0 + kT, tid);
    // ---- stage u and dt (zero past len and for channels past dim: the
    // padded steps then leave the state unchanged).
    stage_u_dt<IO>(u, delta, a.dl, a.bias, a.softplus, a.vec_io, b, d0, dim, L, t0, tid, u_s, dt_s);
    if constexpr (kVarB || kVarC) stage_bc(0, t0);
    __syncthreads();

    for (int r = 0; r < a.n_rounds; ++r) {
      if (r > 0) {
        __syncthreads();
        if constexpr (kVarB || kVarC) stage_bc(r, t0);
        __syncthreads();
      }
      if (multi) {
        load_round(r);
        const float4 hv = h_s[r * kThreads + tid];
        h[0] = hv.x, h[1] = hv.y, h[2] = hv.z, h[3] = hv.w;
      }
      if (cs_row) save_state(cs_row + int64_t(k) * N, r, h);

      // ---- the recurrence over the tile, 4 steps at a time.
      const float* urow = u_s + c * kRow;
      const float* dtrow = dt_s + c * kRow;
      float* yrow = y_s + c * kRow;
#pragma unroll 2
      for (int tt = 0; tt < kT; tt += 4) {
        const float y = fwd_step4<kVarB, kVarC>(h, A2, Bc, Cc, dtrow, urow, B_s, C_s, tt, g);
        if (r == 0)
          yrow[tt + g] = y;
        else
          yrow[tt + g] += y;
      }
      if (multi) h_s[r * kThreads + tid] = make_float4(h[0], h[1], h[2], h[3]);
    }
    __syncthreads();

    // ---- out = (y + D u) * silu(z), 16-byte stores.
#pragma unroll 1
    for (int m = 0; m < kCh * VPR / kThreads; ++m) {
      const int idx = tid + kThreads * m, cc = idx / VPR, j = idx % VPR;
      const int64_t dd = d0 + cc, t = t0 + j * V;
      if (dd >= dim) continue;
      const int64_t row = (b * dim + dd) * L;
      const float Dd = a.has_D ? __ldg(a.D + dd) : 0.f;
      float o[V], zv[V];
      if (a.has_z) load_vec<IO>(z + a.zl.at(b, dd), t, L, a.vec_io, zv);
#pragma unroll
      for (int i = 0; i < V; i += 4) {
        const float4 y4 = *reinterpret_cast<const float4*>(y_s + cc * kRow + j * V + i);
        const float4 u4 = *reinterpret_cast<const float4*>(u_s + cc * kRow + j * V + i);
        o[i] = fmaf(Dd, u4.x, y4.x);
        o[i + 1] = fmaf(Dd, u4.y, y4.y);
        o[i + 2] = fmaf(Dd, u4.z, y4.z);
        o[i + 3] = fmaf(Dd, u4.w, y4.w);
      }
      if (a.has_z) {
#pragma unroll
        for (int i = 0; i < V; ++i) o[i] *= zv[i] * sigmoid_f(zv[i]);
      }
      store_vec<IO>(out + row, t, L, a.vec_io, o);
    }
    __syncthreads();
  }

  if (a.hT && dok && seg == a.seg.n_seg - 1) {
    float* dst = a.hT + (b * dim + d) * N;
    if (!multi) {
      save_state(dst, 0, h);
    } else {
      for (int r = 0; r < a.n_rounds; ++r) {
        const float4 hv = h_s[r * kThreads + tid];
        const float hh[4] = {hv.x, hv.y, hv.z, hv.w};
        save_state(dst, r, hh);
      }
    }
  }
}

// ---- host side: the kernel's arguments and shared memory --------------------------

// Segments on a GPU of `sms` SMs: enough blocks for about one wave
// (p.segments > 0 forces a count, for tests).
inline SegPlan fwd_seg_plan(const ScanParams& p, int sms) {
  return plan_segments(num_tiles(p.len), (p.dim + kCh - 1) / kCh * p.batch, int64_t(sms) * kFwdMinBlocks, p.segments);
}
// Floats of the forward's workspace (segment summaries) under plan s.
inline int64_t fwd_ws_floats(const ScanParams& p, const SegPlan& s) {
  return s.n_seg > 1 ? p.batch * p.dim * s.n_seg * (p.dstate + 1) : 0;
}
inline FwdArgs make_fwd_args(const ScanParams& p, const SegPlan& s, float* ws) {
  FwdArgs a{};
  a.seg = s;
  if (s.n_seg > 1) {
    a.seg_h = ws;
    a.seg_dt = ws + p.batch * p.dim * s.n_seg * p.dstate;
  }
  a.batch = p.batch, a.dim = p.dim, a.len = p.len, a.dstate = p.dstate;
  a.n_rounds = int((p.dstate + kRound - 1) / kRound);
  a.n_tiles = int(num_tiles(p.len));
  a.has_D = p.has_D, a.has_z = p.has_z, a.has_bias = p.has_delta_bias, a.softplus = p.softplus;
  a.prefetch = scan_prefetch_enabled();
  const int vio = int(16 / element_size(p.io)), vbc = int(16 / element_size(p.bc));
  a.dl = layout_of(p.delta_strides, p.dim, p.len), a.zl = layout_of(p.z_strides, p.dim, p.len);
  a.vec_io = p.len % vio == 0 && aligned16(p.u) && aligned16(p.delta) && aligned16(p.out) &&
             (!p.has_z || aligned16(p.z)) && vec_layout(a.dl, vio) && vec_layout(a.zl, vio);
  a.vec_bc = p.len % vbc == 0 && aligned16(p.B) && aligned16(p.C);
  a.u = p.u, a.delta = p.delta, a.B = p.B, a.C = p.C, a.z = p.has_z ? p.z : nullptr;
  a.A = p.A, a.D = p.has_D ? p.D : nullptr, a.bias = p.has_delta_bias ? p.delta_bias : nullptr, a.h0 = p.h0;
  a.out = p.out, a.hT = p.hT, a.chunk_states = p.chunk_states;
  return a;
}
// Grid: (ceil(dim / 32), batch, n_seg) blocks of kThreads.
inline size_t fwd_smem_bytes(const FwdArgs& a) {
  return kFwdSmemFloats * sizeof(float) + (a.n_rounds > 1 ? size_t(a.n_rounds) * kThreads * 16 : 0);
}

}  // namespace
}  // namespace coil::cuda::scan
