// The backward kernels of the CUDA selective scan (device code only; the host
// launcher is cuda/selective_scan_bwd.cu). See cuda/selective_scan_common.cuh
// for the block layout.
#pragma once
#include "cuda/selective_scan_common.cuh"

namespace coil::cuda::scan {
namespace {

struct BwdArgs {
  int64_t batch, dim, len, dstate;
  int n_rounds, n_tiles;
  SegPlan seg;
  Layout dl, zl;  // delta's (and ddelta's) and z's rows
  bool has_D, has_z, has_bias, softplus, vec_io, vec_bc, prefetch;
  const void *u, *delta, *B, *C, *z, *dout;
  const float *A, *D, *bias, *dhT, *chunk_states;
  void *du, *ddelta, *dz;
  float* dh0;
  // workspace partials
  float *dA_part, *dD_part, *dbias_part, *dBc_part, *dCc_part, *carry_ws, *dBv_part, *dCv_part;
  // Segment summaries (seg.n_seg > 1): per (b, d, segment) dL/dh entering the
  // segment from inside it (dstate floats) and its sum of dt.
  float *seg_g, *seg_dt;
};

// Shared memory (floats): u, dt, dy (32 x kRow each); B, C tiles (kT x 16);
// the states entering sub-tiles 1..7 (float4 per thread; sub-tile 0's is the
// saved chunk state, read again from global); the per-warp dB/dC partials of
// one sub-tile (2 buffers x 4 warps x 8 steps x 32). That is 55.5 KB, so 4
// blocks fit an SM. With dstate <= 16 (one round) du and ddelta are made in
// pass 2 as each step's sums arrive and written over dy and u (no longer
// needed there); with more rounds the sums accumulate over rounds in two more
// rows (sum G B, sum A G a h) and y gets its own row.
constexpr int kBwdSmemFloats = 3 * kCh * kRow + 2 * kT * kRound + (kSub - 1) * kThreads * 4 + 2 * 4 * kTs * 32;
constexpr int kBwdMultiSmemFloats = 3 * kCh * kRow;  // sum G B, sum A G a h, y

// Occupancy and register use per variant: 4 blocks per SM (128 registers),
// the decays recomputed in the reverse loop (3 exp2 per state-step in the
// backward). Keeping the sub-tile's 8x4 decays in registers instead saves an
// exp2 but needs 168 registers and 3 blocks per SM, which measured slower:
// the kernel is latency-bound, so warps per SM count for more than
// instructions. The mixed selective-B/LTI-C variant spills at 128 and gets 2
// blocks. All are spill-free with nvcc 13.0 (-Xptxas -v); these settings sit
// close to the register cap, so recheck after edits.
template <bool kVarB, bool kVarC> constexpr int kBwdMinBlocks = (kVarB && !kVarC) ? 2 : 4;

// One step's input gradients from its sums over states, gB = sum_n G B and
// gA = sum_n A2 G a h: du = D dy + dt gB; ddelta = (gA ln2 + u gB) * softplus',
// with softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)) (identity above 20).
__device__ __forceinline__ void du_ddelta(float D, float dy, float dt, float u, float gB, float gA, bool softplus,
                                          float& du, float& ddelta) {
  du = fmaf(D, dy, dt * gB);
  ddelta = fmaf(gA, kLn2, u * gB);
  if (softplus && dt <= 20.f) ddelta *= -expm1f(-dt);
}

template <class IO, class BC, bool kVarB, bool kVarC>
__global__ void __launch_bounds__(kThreads, kBwdMinBlocks<kVarB, kVarC>) bwd_kernel(const __grid_constant__ BwdArgs a) {
  float* u_s = reinterpret_cast<float*>(dyn_smem());
  float* dt_s = u_s + kCh * kRow;
  float* dy_s = dt_s + kCh * kRow;
  float* B_s = dy_s + kCh * kRow;
  float* C_s = B_s + kT * kRound;
  float4* bnd = reinterpret_cast<float4*>(C_s + kT * kRound) - kThreads;  // bnd[j * kThreads + tid], j >= 1
  float* part = reinterpret_cast<float*>(bnd + kSub * kThreads);
  const bool multi = a.n_rounds > 1;
  // dstate > 16 only: sum G B, sum A G a h and y rows.
  float* gB_s = part + 2 * 4 * kTs * 32;
  float* gA_s = gB_s + kCh * kRow;
  float* y_s = multi ? gA_s + kCh * kRow : dy_s;

  constexpr int V = Vec<IO>::V, VPR = kT / V, MI = kCh * VPR / kThreads;
  constexpr int NV = int(kVarB) + int(kVarC);  // values per state summed over channels
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane & 3;
  const int c = w * 8 + (lane >> 2);
  const int64_t b = blockIdx.y, cg = blockIdx.x, d0 = cg * kCh, d = d0 + c;
  const int64_t L = a.len, N = a.dstate, dim = a.dim;
  const bool dok = d < dim;
  const float Dd_lane = (dok && a.has_D) ? __ldg(a.D + d) : 0.f;
  const int64_t lane_row = (b * dim + d) * N;  // (b, d, :) in state-shaped arrays
  // Time segment (grid z): tiles k0..k1-1. Per-(b, d) partials are per segment
  // too (summed with the batch in the fixed-order sums); dh0 comes from segment 0.
  const int seg = blockIdx.z;
  int k0, k1;
  seg_tiles(a.seg, a.n_tiles, seg, k0, k1);
  const int64_t seg_bdn = seg * a.batch * dim * N, seg_chan = seg * a.batch * VPR * dim;
  float* const dA_part = a.dA_part + seg_bdn;
  float* const dBc_part = a.dBc_part + seg_bdn;
  float* const dCc_part = a.dCc_part + seg_bdn;
  float* const carry_ws = a.carry_ws + seg_bdn;
  float* const dD_part = a.dD_part + seg_chan;
  float* const dbias_part = a.dbias_part + seg_chan;
  const IO* u = static_cast<const IO*>(a.u);
  const IO* delta = static_cast<const IO*>(a.delta);
  const IO* z = static_cast<const IO*>(a.z);
  const IO* dout = static_cast<const IO*>(a.dout);
  const BC* Bp = static_cast<const BC*>(a.B);
  const BC* Cp = static_cast<const BC*>(a.C);

  // Lane state: the round's constants and the running carry (dL/dh entering
  // the steps after the current one). For dstate <= 16 they stay in registers;
  // otherwise the carry of each round is parked in the workspace between tiles.
  // The per-(b, d, n) gradient sums (dA, LTI dB/dC) are added into their
  // workspace partials once per tile, by their owning lane (fixed order).
  float A2[4], Bc[4], Cc[4], carry[4];
  auto load_state = [&](int r, bool first) {
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t n = int64_t(r) * kRound + 4 * g + s;
      const bool ok = dok && n < N;
      A2[s] = ok ? __ldg(a.A + d * N + n) * kLog2e : 0.f;
      if constexpr (!kVarB) Bc[s] = ok ? ld_f(Bp + d * N + n) : 0.f;
      if constexpr (!kVarC) Cc[s] = ok ? ld_f(Cp + d * N + n) : 0.f;
      if (first) {
        // dhT carried back through the summaries of the later segments.
        carry[s] = (ok && a.dhT) ? a.dhT[lane_row + n] : 0.f;
        for (int j = a.seg.n_seg - 1; j > seg && ok; --j) {
          const int64_t sj = (b * dim + d) * a.seg.n_seg + j;
          carry[s] = fmaf(ex2(a.seg_dt[sj] * A2[s]), carry[s], a.seg_g[sj * N + n]);
        }
      } else {
        carry[s] = ok ? carry_ws[lane_row + n] : 0.f;
      }
    }
  };
  auto store_carry = [&](int r, bool last) {
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t n = int64_t(r) * kRound + 4 * g + s;
      if (!dok || n >= N) continue;
      if (multi) carry_ws[lane_row + n] = carry[s];
      if (last && seg == 0 && a.dh0) a.dh0[lane_row + n] = carry[s];
    }
  };
  // part[(b, d, n)] = (first tile ? 0 : part) + v, for the lane's states of round r.
  auto add_part = [&](float* part_arr, int r, bool first, const float* v) {
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t n = int64_t(r) * kRound + 4 * g + s;
      if (!dok || n >= N) continue;
      float* q = part_arr + lane_row + n;
      *q = first ? v[s] : *q + v[s];
    }
  };

  auto stage_bc = [&](int r, int64_t t0) {
    if constexpr (kVarB) stage_states<BC>(Bp, a.vec_bc, b, N, L, r, t0, tid, B_s);
    if constexpr (kVarC) stage_states<BC>(Cp, a.vec_bc, b, N, L, r, t0, tid, C_s);
  };

  // Per-channel sums of the cooperative phases (dD, d(delta_bias)): each thread
  // adds its tile sums into its own slot [b][j][d] of the workspace (j = its
  // vector index in the row); sum_parts_kernel sums the slots over (b, j).
  auto add_chan = [&](float* part_arr, int m, bool first, float v) {
    const int idx = tid + kThreads * m, cc = idx / VPR, j = idx % VPR;
    const int64_t dd = d0 + cc;
    if (dd >= dim) return;
    float* q = part_arr + (b * VPR + j) * dim + dd;
    *q = first ? v : *q + v;
  };

  // dy = dout * silu(z) (or dout) into dy_s; with want_dz also dz (needs the
  // tile's y in y_s, which may be dy_s itself) and the dD sums.
  auto grad_y = [&](int64_t t0, bool want_dz, bool first) {
#pragma unroll 1
    for (int m = 0; m < MI; ++m) {
      const int idx = tid + kThreads * m, cc = idx / VPR, j = idx % VPR;
      const int64_t dd = d0 + cc, t = t0 + j * V;
      const bool ok = dd < dim;
      const int64_t row = (b * dim + dd) * L;
      float dov[V], zv[V], yv[V], uv[V];
      load_vec<IO>(ok ? dout + row : nullptr, t, L, a.vec_io, dov);
      if (a.has_z) load_vec<IO>(ok ? z + a.zl.at(b, dd) : nullptr, t, L, a.vec_io, zv);
      const float Dd = (ok && a.has_D) ? __ldg(a.D + dd) : 0.f;
#pragma unroll
      for (int i = 0; i < V; i += 4) {
        const float4 y4 = *reinterpret_cast<const float4*>(y_s + cc * kRow + j * V + i);
        const float4 u4 = *reinterpret_cast<const float4*>(u_s + cc * kRow + j * V + i);
        yv[i] = y4.x, yv[i + 1] = y4.y, yv[i + 2] = y4.z, yv[i + 3] = y4.w;
        uv[i] = u4.x, uv[i + 1] = u4.y, uv[i + 2] = u4.z, uv[i + 3] = u4.w;
      }
      float dyv[V], dzv[V];
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        if (a.has_z) {
          const float zz = zv[i], sg = sigmoid_f(zz);
          dyv[i] = dov[i] * zz * sg;
          const float yfull = fmaf(Dd, uv[i], yv[i]);
          dzv[i] = dov[i] * yfull * sg * fmaf(zz, 1.f - sg, 1.f);
        } else {
          dyv[i] = dov[i];
          dzv[i] = 0.f;
        }
        sum = fmaf(dyv[i], uv[i], sum);
      }
#pragma unroll
      for (int i = 0; i < V; i += 4)
        *reinterpret_cast<float4*>(dy_s + cc * kRow + j * V + i) = make_float4(dyv[i], dyv[i + 1], dyv[i + 2], dyv[i + 3]);
      if (want_dz) {
        add_chan(dD_part, m, first, sum);
        if (a.has_z && ok && a.dz) store_vec<IO>(static_cast<IO*>(a.dz) + row, t, L, a.vec_io, dzv);
      }
    }
  };

  if (!multi) load_state(0, true);

  for (int k = k1 - 1; k >= k0; --k) {
    const int64_t t0 = int64_t(k) * kT;
    const bool first = k == k1 - 1;  // first tile visited: partials start here
    // The next tile's inputs into L2 while this one is staged and computed.
    if (a.prefetch && k > k0)
      prefetch_tile<IO, BC>(u, delta, a.dl, a.has_z ? z : nullptr, a.zl, dout, kVarB ? Bp : nullptr,
                            kVarC ? Cp : nullptr, b, d0, dim, N, L, t0 - kT, tid);
    // ---- stage u, dt (and dy when dstate > 16; else it follows pass 1).
    stage_u_dt<IO>(u, delta, a.dl, a.bias, a.softplus, a.vec_io, b, d0, dim, L, t0, tid, u_s, dt_s);
    if (multi) grad_y(t0, false, first);
    if constexpr (NV > 0) stage_bc(0, t0);
    __syncthreads();

    const float* urow = u_s + c * kRow;
    const float* dtrow = dt_s + c * kRow;
    const float* dyrow = dy_s + c * kRow;
    for (int r = 0; r < a.n_rounds; ++r) {
      if (r > 0) {
        // The previous round's pass 2 ended with a barrier (selective B/C) so
        // its reads of B_s/C_s are done.
        if constexpr (NV > 0) {
          stage_bc(r, t0);
          __syncthreads();
        }
      }
      if (multi) load_state(r, first);
      // ---- pass 1: from the state entering the tile (saved by the forward),
      // the states at the sub-tile boundaries (bnd[j] enters sub-tile j), and y.
      // The state entering the tile, saved by the forward (pass 2 reads it
      // again for sub-tile 0 rather than keeping it in registers or smem).
      const float* cs = a.chunk_states + ((b * dim + d) * a.n_tiles + k) * N + int64_t(r) * kRound + 4 * g;
      const int64_t nleft = N - int64_t(r) * kRound - 4 * g;
      const int nvalid = dok ? int(nleft < 4 ? nleft : 4) : 0;
      auto load_cs = [&](float* hh) {
#pragma unroll
        for (int s = 0; s < 4; ++s) hh[s] = s < nvalid ? cs[s] : 0.f;
      };
      {
        float h[4];
        load_cs(h);
        float* yrow = y_s + c * kRow;
#pragma unroll 1
        for (int j = 0; j < kSub; ++j) {
          if (j > 0) bnd[j * kThreads + tid] = make_float4(h[0], h[1], h[2], h[3]);
#pragma unroll
          for (int q = 0; q < kTs / 4; ++q) {
            const int tt = j * kTs + q * 4;
            const float y = fwd_step4<kVarB, kVarC>(h, A2, Bc, Cc, dtrow, urow, B_s, C_s, tt, g);
            if (r == 0)
              yrow[tt + g] = y;
            else
              yrow[tt + g] += y;
          }
        }
      }
      if (!multi) {
        __syncthreads();
        grad_y(t0, true, first);  // y_s is dy_s: y in, dy out
        __syncthreads();
      }

      // ---- pass 2: sub-tiles in reverse.
      float dAt[4] = {0.f, 0.f, 0.f, 0.f}, dBt[4] = {0.f, 0.f, 0.f, 0.f}, dCt[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 1
      for (int j = kSub - 1; j >= 0; --j) {
        // The state entering the sub-tile (read again for its first step's
        // h_{t-1} rather than held in registers).
        auto load_hs0 = [&](float* hh) {
          if (j == 0) {
            load_cs(hh);
          } else {
            const float4 v = bnd[j * kThreads + tid];
            hh[0] = v.x, hh[1] = v.y, hh[2] = v.z, hh[3] = v.w;
          }
        };
        // Recompute the sub-tile's states (same arithmetic as pass 1); the
        // reverse loop recomputes their decays.
        float hr[kTs][4];
        {
          float hp[4];
          load_hs0(hp);
#pragma unroll
          for (int q = 0; q < kTs / 4; ++q) {
            const int tt = j * kTs + q * 4;
            const float4 dt4 = *reinterpret_cast<const float4*>(dtrow + tt);
            const float4 u4 = *reinterpret_cast<const float4*>(urow + tt);
            const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
            const float dtu[4] = {dt4.x * u4.x, dt4.y * u4.y, dt4.z * u4.z, dt4.w * u4.w};
#pragma unroll
            for (int ii = 0; ii < 4; ++ii) {
              float Bv[4];
              lane_bc<kVarB>(B_s, Bc, tt + ii, g, Bv);
#pragma unroll
              for (int s = 0; s < 4; ++s) {
                hp[s] = fmaf(ex2(dtv[ii] * A2[s]), hp[s], Bv[s] * dtu[ii]);
                hr[q * 4 + ii][s] = hp[s];
              }
            }
          }
        }
        // Reverse recurrence.
        float* pbuf = part + (j & 1) * (4 * kTs * 32);
#pragma unroll
        for (int q = kTs / 4 - 1; q >= 0; --q) {
          const int tt = j * kTs + q * 4;
          const float4 dy4 = *reinterpret_cast<const float4*>(dyrow + tt);
          const float4 dt4 = *reinterpret_cast<const float4*>(dtrow + tt);
          const float4 u4 = *reinterpret_cast<const float4*>(urow + tt);
          const float dyv[4] = {dy4.x, dy4.y, dy4.z, dy4.w};
          const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
          const float uv[4] = {u4.x, u4.y, u4.z, u4.w};
          float gv[8];  // (step, {sum G B, sum A2 G a h})
#pragma unroll
          for (int ii = 3; ii >= 0; --ii) {
            const int i = q * 4 + ii;
            float hs0[4];
            if (i == 0) load_hs0(hs0);
            float Bv[4], Cv[4];
            lane_bc<kVarB>(B_s, Bc, tt + ii, g, Bv);
            lane_bc<kVarC>(C_s, Cc, tt + ii, g, Cv);
            const float dtu = dtv[ii] * uv[ii];
            float GB = 0.f, GA = 0.f, vb[4], vc[4];
#pragma unroll
            for (int s = 0; s < 4; ++s) {
              const float G = fmaf(dyv[ii], Cv[s], carry[s]);
              const float hprev = i > 0 ? hr[i - 1][s] : hs0[s];
              const float da = ex2(dtv[ii] * A2[s]);
              const float Gah = G * (da * hprev);
              dAt[s] = fmaf(dtv[ii], Gah, dAt[s]);
              GB = fmaf(G, Bv[s], GB);
              GA = fmaf(A2[s], Gah, GA);
              carry[s] = da * G;
              vb[s] = dtu * G;
              vc[s] = dyv[ii] * hr[i][s];
              if constexpr (!kVarB) dBt[s] += vb[s];
              if constexpr (!kVarC) dCt[s] += vc[s];
            }
            gv[ii * 2] = GB;
            gv[ii * 2 + 1] = GA;
            if constexpr (NV == 2) {
              // v[s*2 + {B, C}] over the warp's 8 channels (lane bits 2-4):
              // lane (g, cl) ends with the sum for s = cl/2, {B, C}[cl%2].
              float v[8];
#pragma unroll
              for (int s = 0; s < 4; ++s) v[2 * s] = vb[s], v[2 * s + 1] = vc[s];
              rs_step<4>(v, 16, (lane & 16) != 0);
              rs_step<2>(v, 8, (lane & 8) != 0);
              rs_step<1>(v, 4, (lane & 4) != 0);
              pbuf[(w * kTs + i) * 32 + lane] = v[0];
            } else if constexpr (NV == 1) {
              // lane (g, bits 3-4) ends with the sum for s = (lane>>3)&3.
              float v[4];
#pragma unroll
              for (int s = 0; s < 4; ++s) v[s] = kVarB ? vb[s] : vc[s];
              rs_step<2>(v, 16, (lane & 16) != 0);
              rs_step<1>(v, 8, (lane & 8) != 0);
              v[0] += __shfl_xor_sync(0xffffffffu, v[0], 4);
              pbuf[(w * kTs + i) * 32 + lane] = v[0];
            }
          }
          // Sum over the channel's 4 lanes: lane g gets step tt+g.
          rs_step<4>(gv, 2, (g & 2) != 0);
          rs_step<2>(gv, 1, (g & 1) != 0);
          const int o = c * kRow + tt + g;
          if (!multi) {
            // du = D dy + dt sum_n G B;  ddelta = (sum_n A G a h + u sum_n G B) * softplus',
            // written over dy and u: the channel's 4 lanes have read this
            // q-block's dy and u (the warp syncs before the writes), and no
            // later step of the pass reads them.
            float du, gd;
            du_ddelta(Dd_lane, dy_s[o], dt_s[o], u_s[o], gv[0], gv[1], a.softplus, du, gd);
            __syncwarp();
            dy_s[o] = du;
            u_s[o] = gd;
          } else if (r == 0) {
            gB_s[o] = gv[0];
            gA_s[o] = gv[1];
          } else {
            gB_s[o] += gv[0];
            gA_s[o] += gv[1];
          }
        }
        if constexpr (NV > 0) {
          // The 4 warps' partials, in order, to the workspace (32-byte runs over time).
          __syncthreads();
          constexpr int kOut = NV == 2 ? 32 : 16;  // (state, B/C) sums per step
#pragma unroll
          for (int m = 0; m < kTs * kOut / kThreads; ++m) {
            const int item = tid + kThreads * m, i = item % kTs, o = item / kTs;
            int src, nl, which;
            if constexpr (NV == 2) {
              src = o, nl = 4 * (o & 3) + (o >> 3), which = (o >> 2) & 1;
            } else {
              src = (o & 3) | ((o >> 2) << 3), nl = 4 * (o & 3) + (o >> 2), which = kVarB ? 0 : 1;
            }
            float v = 0.f;
#pragma unroll
            for (int ww = 0; ww < 4; ++ww) v += pbuf[(ww * kTs + i) * 32 + src];
            const int64_t n = int64_t(r) * kRound + nl, t = t0 + j * kTs + i;
            if (n < N && t < L) {
              float* dst = which == 0 ? a.dBv_part : a.dCv_part;
              dst[((cg * a.batch + b) * N + n) * L + t] = v;
            }
          }
        }
      }
      add_part(dA_part, r, first, dAt);
      if constexpr (!kVarB) add_part(dBc_part, r, first, dBt);
      if constexpr (!kVarC) add_part(dCc_part, r, first, dCt);
      if (multi) store_carry(r, k == k0);
    }
    if (multi) {
      __syncthreads();
      grad_y(t0, true, first);  // y_s is its own tile here
    }
    __syncthreads();

    // ---- du = D dy + dt sum_n G B;  ddelta = (sum_n A G a h + u sum_n G B) * softplus'.
#pragma unroll 1
    for (int m = 0; m < MI; ++m) {
      const int idx = tid + kThreads * m, cc = idx / VPR, j = idx % VPR;
      const int64_t dd = d0 + cc, t = t0 + j * V;
      const bool ok = dd < dim;
      const float Dd = (ok && a.has_D) ? __ldg(a.D + dd) : 0.f;
      float duv[V], ddv[V], sum = 0.f;
#pragma unroll
      for (int i0 = 0; i0 < V; i0 += 4) {
        const int o = cc * kRow + j * V + i0;
        if (!multi) {  // made in pass 2, over dy and u
          const float4 du4 = *reinterpret_cast<const float4*>(dy_s + o);
          const float4 dd4 = *reinterpret_cast<const float4*>(u_s + o);
          const float duq[4] = {du4.x, du4.y, du4.z, du4.w}, ddq[4] = {dd4.x, dd4.y, dd4.z, dd4.w};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            duv[i0 + i] = duq[i];
            ddv[i0 + i] = ddq[i];
            if (t + i0 + i < L) sum += ddq[i];
          }
          continue;
        }
        const float4 dy4 = *reinterpret_cast<const float4*>(dy_s + o);
        const float4 dt4 = *reinterpret_cast<const float4*>(dt_s + o);
        const float4 u4 = *reinterpret_cast<const float4*>(u_s + o);
        const float4 gb4 = *reinterpret_cast<const float4*>(gB_s + o);
        const float4 ga4 = *reinterpret_cast<const float4*>(gA_s + o);
        const float dyv[4] = {dy4.x, dy4.y, dy4.z, dy4.w}, dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
        const float uv[4] = {u4.x, u4.y, u4.z, u4.w}, gbv[4] = {gb4.x, gb4.y, gb4.z, gb4.w};
        const float gav[4] = {ga4.x, ga4.y, ga4.z, ga4.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float gd;
          du_ddelta(Dd, dyv[i], dtv[i], uv[i], gbv[i], gav[i], a.softplus, duv[i0 + i], gd);
          ddv[i0 + i] = gd;
          if (t + i0 + i < L) sum += gd;
        }
      }
      add_chan(dbias_part, m, first, sum);
      if (ok) {
        const int64_t row = (b * dim + dd) * L;
        store_vec<IO>(static_cast<IO*>(a.du) + row, t, L, a.vec_io, duv);
        store_vec<IO>(static_cast<IO*>(a.ddelta) + a.dl.at(b, dd), t, L, a.vec_io, ddv);
      }
    }
    __syncthreads();
  }

  if (!multi) store_carry(0, true);
}

// ---- fixed-order sums of the partials ------------------------------------------

struct SumJob {
  const float* in;  // parts x stride floats
  void* out;        // count values, f32 or bf16
  int64_t count, stride;
  int parts;
  bool out_bf16;
};
struct SumJobs {
  SumJob job[7];
};

// out[i] = sum_k in[k * stride + i] for k = 0..parts-1 in order (double accumulator).
__global__ void __launch_bounds__(256) sum_parts_kernel(const __grid_constant__ SumJobs js) {
  const SumJob& jb = js.job[blockIdx.y];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < jb.count; i += int64_t(gridDim.x) * blockDim.x) {
    double acc = 0.0;
#pragma unroll 4
    for (int k = 0; k < jb.parts; ++k) acc += double(__ldg(jb.in + k * jb.stride + i));
    if (jb.out_bf16)
      static_cast<coil::bf16*>(jb.out)[i] = coil::to_bf16(float(acc));
    else
      static_cast<float*>(jb.out)[i] = float(acc);
  }
}

// ---- host side: workspace layout, the kernels' arguments ---------------------------

// Workspace, in floats, each region rounded up to 64 floats (256 bytes);
// S = the number of time segments:
//   dA, LTI dB, LTI dC  [S][B][D][N]   per-(segment, b, d, n) sums over time
//   dD, d(delta_bias)   [S][B][VPR][D] per-(segment, b, thread slot j, d) sums over time
//   carry               [S][B][D][N]   dL/dh between tiles, dstate > 16 only
//   selective dB, dC    [n_cg][B][N][L] per-channel-group sums over channels
//   segment summaries   [B][D][S][N] and [B][D][S], S > 1 only
constexpr int kMaxVPR = kT / 4;
struct WsLayout {
  int64_t dA, dD, dbias, dBc, dCc, carry, dBv, dCv, seg_g, seg_dt, total;
};
inline WsLayout ws_layout(const ScanParams& p, int n_seg) {
  const int64_t S = n_seg;
  const int64_t BD = p.batch * p.dim, BDN = BD * p.dstate * S, n_cg = (p.dim + kCh - 1) / kCh;
  const int64_t var_bc = n_cg * p.batch * p.dstate * p.len;
  auto up = [](int64_t n) { return (n + 63) / 64 * 64; };
  WsLayout w{};
  int64_t off = 0;
  auto take = [&](int64_t n) {
    const int64_t at = off;
    off += up(n);
    return at;
  };
  w.dA = take(BDN);
  w.dD = take(BD * kMaxVPR * S);
  w.dbias = take(BD * kMaxVPR * S);
  w.dBc = take(p.var_B ? 0 : BDN);
  w.dCc = take(p.var_C ? 0 : BDN);
  w.carry = take(p.dstate > kRound ? BDN : 0);
  w.dBv = take(p.var_B ? var_bc : 0);
  w.dCv = take(p.var_C ? var_bc : 0);
  w.seg_g = take(S > 1 ? BDN : 0);
  w.seg_dt = take(S > 1 ? BD * S : 0);
  w.total = off;
  return w;
}

// Segments on a GPU of `sms` SMs. With fewer blocks than a wave, enough for
// about two waves of the backward kernel (the summary pass is cheap next to
// it). With a wave or more, segments only to fill the last wave: B16 x D1536
// is 768 blocks on 528 slots (4 per SM on 132 SMs), 1.45 waves; cut in two
// segments they are 3 waves of half-length blocks (+ one summary pass).
// Measured on an H100 that gains only ~2% (2.34 -> 2.30 ms): an SM left with
// fewer blocks in the last wave runs them faster, so a partial wave costs
// less than a full one. p.segments > 0 forces a count (tests).
inline SegPlan bwd_seg_plan(const ScanParams& p, int sms) {
  if (p.batch <= 0 || p.dim <= 0 || p.len <= 0) return SegPlan{};
  const int per_sm = (p.var_B && !p.var_C) ? kBwdMinBlocks<true, false> : kBwdMinBlocks<true, true>;
  const int64_t base = (p.dim + kCh - 1) / kCh * p.batch, wave = int64_t(sms) * per_sm;
  const int64_t n_tiles = num_tiles(p.len);
  if (p.segments > 0 || base < wave) return plan_segments(n_tiles, base, 2 * wave, p.segments);
  // Cost in full-length block times: waves / segments, plus ~0.1 for the summary.
  int best = 1;
  double best_cost = double((base + wave - 1) / wave);
  for (int n = 2; n <= 4 && n * kMinSegTiles <= n_tiles; ++n) {
    const double cost = double((base * n + wave - 1) / wave) / n + 0.1;
    if (cost < best_cost - 1e-9) best = n, best_cost = cost;
  }
  return plan_segments(n_tiles, base, 2 * wave, best);
}

// Grid: (ceil(dim / 32), batch, n_seg) blocks of kThreads; needs batch, dim, len > 0.
inline BwdArgs make_bwd_args(const ScanParams& p, const ScanGrads& gr, const SegPlan& s) {
  const WsLayout wl = ws_layout(p, s.n_seg);
  float* ws = static_cast<float*>(gr.workspace);
  BwdArgs a{};
  a.seg = s;
  a.seg_g = ws + wl.seg_g, a.seg_dt = ws + wl.seg_dt;
  a.batch = p.batch, a.dim = p.dim, a.len = p.len, a.dstate = p.dstate;
  a.n_rounds = int((p.dstate + kRound - 1) / kRound);
  a.n_tiles = int(num_tiles(p.len));
  a.has_D = p.has_D, a.has_z = p.has_z, a.has_bias = p.has_delta_bias, a.softplus = p.softplus;
  a.prefetch = scan_prefetch_enabled();
  const int vio = int(16 / element_size(p.io)), vbc = int(16 / element_size(p.bc));
  a.dl = layout_of(p.delta_strides, p.dim, p.len), a.zl = layout_of(p.z_strides, p.dim, p.len);
  a.vec_io = p.len % vio == 0 && aligned16(p.u) && aligned16(p.delta) && aligned16(gr.dout) && aligned16(gr.du) &&
             aligned16(gr.ddelta) && (!p.has_z || (aligned16(p.z) && aligned16(gr.dz))) && vec_layout(a.dl, vio) &&
             vec_layout(a.zl, vio);
  a.vec_bc = p.len % vbc == 0 && aligned16(p.B) && aligned16(p.C);
  a.u = p.u, a.delta = p.delta, a.B = p.B, a.C = p.C, a.z = p.has_z ? p.z : nullptr, a.dout = gr.dout;
  a.A = p.A, a.D = p.has_D ? p.D : nullptr, a.bias = p.has_delta_bias ? p.delta_bias : nullptr;
  a.dhT = gr.dhT, a.chunk_states = p.chunk_states;
  a.du = gr.du, a.ddelta = gr.ddelta, a.dz = p.has_z ? gr.dz : nullptr, a.dh0 = gr.dh0;
  a.dA_part = ws + wl.dA, a.dD_part = ws + wl.dD, a.dbias_part = ws + wl.dbias;
  a.dBc_part = ws + wl.dBc, a.dCc_part = ws + wl.dCc, a.carry_ws = ws + wl.carry;
  a.dBv_part = ws + wl.dBv, a.dCv_part = ws + wl.dCv;
  return a;
}
inline size_t bwd_smem_bytes(const BwdArgs& a) {
  return size_t(kBwdSmemFloats + (a.n_rounds > 1 ? kBwdMultiSmemFloats : 0)) * sizeof(float);
}

// The fixed-order sums that turn the partials into the gradients; `ran` says
// whether bwd_kernel ran (else every sum is over nothing: zeros). Returns the
// number of jobs; sum_parts_kernel runs on grid (sum_grid_x, jobs) x 256.
inline int make_sum_jobs(const ScanParams& p, const ScanGrads& gr, bool ran, int n_seg, SumJobs& js) {
  const WsLayout wl = ws_layout(p, n_seg);
  const float* ws = static_cast<const float*>(gr.workspace);
  const int64_t B = p.batch, Dm = p.dim, N = p.dstate, L = p.len;
  const int64_t DN = Dm * N, n_cg = (Dm + kCh - 1) / kCh;
  const int parts_b = ran ? int(n_seg * B) : 0;                                          // (segment, b)
  const int parts_bj = ran ? int(n_seg * B * (kT / int(16 / element_size(p.io)))) : 0;  // (segment, b, j)
  int nj = 0;
  auto add = [&](const float* in, void* out, int64_t count, int64_t stride, int parts, bool bf) {
    if (out && count > 0) js.job[nj++] = SumJob{in, out, count, stride, parts, bf};
  };
  add(ws + wl.dA, gr.dA, DN, DN, parts_b, false);
  add(ws + wl.dD, gr.dD, Dm, Dm, parts_bj, false);
  add(ws + wl.dbias, gr.ddelta_bias, Dm, Dm, parts_bj, false);
  const bool bc_bf16 = p.bc == DType::bf16;
  if (p.var_B) add(ws + wl.dBv, gr.dB, B * N * L, B * N * L, ran ? int(n_cg) : 0, bc_bf16);
  else add(ws + wl.dBc, gr.dB, DN, DN, parts_b, false);
  if (p.var_C) add(ws + wl.dCv, gr.dC, B * N * L, B * N * L, ran ? int(n_cg) : 0, bc_bf16);
  else add(ws + wl.dCc, gr.dC, DN, DN, parts_b, false);
  return nj;
}
inline unsigned sum_grid_x(const SumJobs& js, int nj) {
  int64_t maxc = 0;
  for (int i = 0; i < nj; ++i) maxc = maxc > js.job[i].count ? maxc : js.job[i].count;
  const int64_t g = (maxc + 255) / 256;
  return unsigned(g < 132 * 16 ? g : 132 * 16);
}

}  // namespace
}  // namespace coil::cuda::scan
