// The summary passes of the time-segmented selective scan (device code only;
// launched from cuda/selective_scan_fwd.cu and cuda/selective_scan_bwd.cu).
// See "time segments" in cuda/selective_scan_common.cuh.
//
// Forward: for segments 0..n_seg-2 (the last one's end state is not needed),
// the state at the segment's end when it starts from zero, and its sum of dt:
//   h_t = 2^(dt_t A2) h_{t-1} + dt_t B_t u_t  over the segment, from h = 0.
// Backward: for segments 1..n_seg-1, dL/dh entering the segment's first step
// from the steps inside it when nothing comes from later steps (carry 0 at its
// end), and its sum of dt:
//   G_t = dy_t C_t + g,  g <- 2^(dt_t A2) G_t  (reverse), dy = dout * silu(z).
// Same block layout as the main kernels (32 channels, 4 lanes x 4 states per
// channel, rounds of 16 states). Work is the recurrence's exp count again, but
// the segments' blocks fill GPUs that batch x channel groups leave idle.
#pragma once
#include "cuda/selective_scan_common.cuh"

namespace coil::cuda::scan {
namespace {

struct SegArgs {
  int64_t batch, dim, len, dstate;
  int n_rounds, n_tiles;
  SegPlan seg;
  Layout dl, zl;  // delta's and z's rows
  bool softplus, has_z, vec_io, vec_bc;
  const void *u, *delta, *X, *z, *dout;  // X: selective B (forward) or C (backward), (b, dstate, len)
  const void* Xc;                        // or constant B / C (dim, dstate) when X is null
  const float *A, *bias;
  float *seg_h, *seg_dt;                 // (b, d, segment, dstate), (b, d, segment)
};

// Shared memory (floats): u (or dy) and dt tiles (32 x kRow each), one state tile (kT x 16).
constexpr int kSegSmemFloats = 2 * kCh * kRow + kT * kRound;

template <class IO, class BC, bool kBwd>
__global__ void __launch_bounds__(kThreads) seg_kernel(const __grid_constant__ SegArgs a) {
  float* v_s = reinterpret_cast<float*>(dyn_smem());  // u (fwd) or dy (bwd)
  float* dt_s = v_s + kCh * kRow;
  float* X_s = dt_s + kCh * kRow;

  constexpr int V = Vec<IO>::V, VPR = kT / V;
  const int tid = threadIdx.x, lane = tid & 31, g = lane & 3;
  const int c = (tid >> 5) * 8 + (lane >> 2);
  const int64_t b = blockIdx.y, d0 = int64_t(blockIdx.x) * kCh, d = d0 + c;
  const int64_t L = a.len, N = a.dstate, dim = a.dim;
  const bool dok = d < dim;
  const int seg = int(blockIdx.z) + (kBwd ? 1 : 0);
  int k0, k1;
  seg_tiles(a.seg, a.n_tiles, seg, k0, k1);
  const IO* u = static_cast<const IO*>(a.u);
  const IO* delta = static_cast<const IO*>(a.delta);
  const IO* z = static_cast<const IO*>(a.z);
  const IO* dout = static_cast<const IO*>(a.dout);
  const BC* X = static_cast<const BC*>(a.X);
  const BC* Xcp = static_cast<const BC*>(a.Xc);
  const bool var = X != nullptr;
  const int64_t sj = (b * dim + d) * a.seg.n_seg + seg;

  float dt_sum = 0.f;
  for (int r = 0; r < a.n_rounds; ++r) {
    float A2[4], Xc[4], h[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t n = int64_t(r) * kRound + 4 * g + s;
      const bool ok = dok && n < N;
      A2[s] = ok ? __ldg(a.A + d * N + n) * kLog2e : 0.f;
      Xc[s] = (ok && !var) ? ld_f(Xcp + d * N + n) : 0.f;
    }
    for (int i = 0; i < k1 - k0; ++i) {
      const int k = kBwd ? k1 - 1 - i : k0 + i;
      const int64_t t0 = int64_t(k) * kT;
      __syncthreads();  // the previous tile's reads of the shared tiles are done
      stage_u_dt<IO>(u, delta, a.dl, a.bias, a.softplus, a.vec_io, b, d0, dim, L, t0, tid, kBwd ? nullptr : v_s, dt_s);
      if (var) stage_states<BC>(X, a.vec_bc, b, N, L, r, t0, tid, X_s);
      if constexpr (kBwd) {
        // dy = dout * silu(z) (or dout) of the block's channels.
#pragma unroll 1
        for (int m = 0; m < kCh * VPR / kThreads; ++m) {
          const int idx = tid + kThreads * m, cc = idx / VPR, j = idx % VPR;
          const int64_t dd = d0 + cc, t = t0 + j * V;
          const bool ok = dd < dim;
          const int64_t row = (b * dim + dd) * L;
          float dov[V], zv[V];
          load_vec<IO>(ok ? dout + row : nullptr, t, L, a.vec_io, dov);
          if (a.has_z) load_vec<IO>(ok ? z + a.zl.at(b, dd) : nullptr, t, L, a.vec_io, zv);
#pragma unroll
          for (int e = 0; e < V; ++e)
            if (a.has_z) dov[e] = dov[e] * zv[e] * sigmoid_f(zv[e]);
#pragma unroll
          for (int e = 0; e < V; e += 4)
            *reinterpret_cast<float4*>(v_s + cc * kRow + j * V + e) =
                make_float4(dov[e], dov[e + 1], dov[e + 2], dov[e + 3]);
        }
      }
      __syncthreads();
      const float* dtrow = dt_s + c * kRow;
      const float* vrow = v_s + c * kRow;
#pragma unroll 4
      for (int q = 0; q < kT; ++q) {
        const int t = kBwd ? kT - 1 - q : q;
        const float dt = dtrow[t], v = vrow[t];
        if (r == 0) dt_sum += dt;
        float x[4];
        if (var) {
          const float4 x4 = *reinterpret_cast<const float4*>(X_s + t * kRound + 4 * g);
          x[0] = x4.x, x[1] = x4.y, x[2] = x4.z, x[3] = x4.w;
        } else {
#pragma unroll
          for (int s = 0; s < 4; ++s) x[s] = Xc[s];
        }
        if constexpr (kBwd) {
#pragma unroll
          for (int s = 0; s < 4; ++s) h[s] = ex2(dt * A2[s]) * fmaf(v, x[s], h[s]);
        } else {
          const float dtu = dt * v;
#pragma unroll
          for (int s = 0; s < 4; ++s) h[s] = fmaf(ex2(dt * A2[s]), h[s], x[s] * dtu);
        }
      }
    }
    if (dok) {
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const int64_t n = int64_t(r) * kRound + 4 * g + s;
        if (n < N) a.seg_h[sj * N + n] = h[s];
      }
    }
  }
  if (dok && g == 0) a.seg_dt[sj] = dt_sum;
}

// ---- host side -------------------------------------------------------------------

inline size_t seg_smem_bytes() { return kSegSmemFloats * sizeof(float); }

// The summary pass of the forward (bwd = false) or the backward (bwd = true,
// with dout); grid (ceil(dim / 32), batch, n_seg - 1).
inline SegArgs make_seg_args(const ScanParams& p, const SegPlan& s, bool bwd, const void* dout, float* seg_h,
                             float* seg_dt) {
  SegArgs a{};
  a.batch = p.batch, a.dim = p.dim, a.len = p.len, a.dstate = p.dstate;
  a.n_rounds = int((p.dstate + kRound - 1) / kRound);
  a.n_tiles = int(num_tiles(p.len));
  a.seg = s;
  a.softplus = p.softplus, a.has_z = bwd && p.has_z;
  const bool var = bwd ? p.var_C : p.var_B;
  const void* x = bwd ? p.C : p.B;
  a.X = var ? x : nullptr, a.Xc = var ? nullptr : x;
  a.u = bwd ? nullptr : p.u, a.delta = p.delta, a.z = a.has_z ? p.z : nullptr, a.dout = bwd ? dout : nullptr;
  a.A = p.A, a.bias = p.has_delta_bias ? p.delta_bias : nullptr;
  a.seg_h = seg_h, a.seg_dt = seg_dt;
  const int vio = int(16 / element_size(p.io)), vbc = int(16 / element_size(p.bc));
  a.dl = layout_of(p.delta_strides, p.dim, p.len), a.zl = layout_of(p.z_strides, p.dim, p.len);
  a.vec_io = p.len % vio == 0 && aligned16(p.delta) && (bwd ? aligned16(dout) : aligned16(p.u)) &&
             (!a.has_z || aligned16(p.z)) && vec_layout(a.dl, vio) && vec_layout(a.zl, vio);
  a.vec_bc = p.len % vbc == 0 && (!var || aligned16(x));
  return a;
}

#if defined(__CUDACC__)
// Launches the summary pass for segments (forward: 0..n_seg-2, backward:
// 1..n_seg-1) in the dtypes of p.
template <bool kBwd> void launch_seg_summary(const ScanParams& p, const SegArgs& a, cudaStream_t st) {
  const dim3 grid(unsigned((a.dim + kCh - 1) / kCh), unsigned(a.batch), unsigned(a.seg.n_seg - 1));
  auto go = [&](auto kern) {
    kern<<<grid, kThreads, seg_smem_bytes(), st>>>(a);
    COIL_CUDA_LAUNCH_CHECK();
  };
  if (p.io == DType::f32) {
    if (p.bc == DType::f32) go(seg_kernel<float, float, kBwd>);
    else go(seg_kernel<float, coil::bf16, kBwd>);
  } else {
    if (p.bc == DType::f32) go(seg_kernel<coil::bf16, float, kBwd>);
    else go(seg_kernel<coil::bf16, coil::bf16, kBwd>);
  }
}
#endif

}  // namespace
}  // namespace coil::cuda::scan
