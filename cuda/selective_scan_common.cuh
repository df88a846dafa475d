// Shared pieces of the CUDA selective scan (selective_scan_fwd.cu,
// selective_scan_bwd.cu): the block layout, vector loads/stores, fast math and
// warp reduce-scatters.
//
// Block layout (forward and backward alike): 128 threads = 4 warps handle 32
// channels d0..d0+31 of one batch row b. Lane l of warp w owns channel
// c = 8w + l/4 and the 4 states n = 16r + 4g + s (g = l%4, s = 0..3) of round
// r; dstate <= 16 is one round, larger dstate loops over rounds of 16. Time
// is walked in tiles of kT = 64 steps (= the saved chunk): a tile of u, dt
// (and dy in the backward) is staged in shared memory as fp32 by all threads
// with 16-byte coalesced loads, then each lane runs its 4 recurrences over the
// tile from registers. Sums over a channel's states (y, du, ddelta) are warp
// reduce-scatters over its 4 lanes; sums over channels (selective dB, dC) are
// reduce-scatters over the warp's 8 channels, then over the 4 warps in shared
// memory, in a fixed order.
//
// The kernels use only plain CUDA C++ (no CUDA headers beyond the runtime), so
// tests/cuda/scan_emu.cpp can compile them for the host, with CPU stand-ins for
// the built-ins, and check their logic on a machine without a GPU.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <cstdlib>

#include "core/dtype.h"
#include "core/half.h"
#include "cuda/selective_scan.h"

namespace coil::cuda::scan {

constexpr int kT = 64;          // time steps per tile = the saved chunk
static_assert(kT == kScanChunk, "the tile is the chunk whose entering state the forward saves");
constexpr int kRow = kT + 4;    // padded shared-memory row of a per-channel tile (floats)
constexpr int kThreads = 128;   // 4 warps
constexpr int kCh = 32;         // channels per block
constexpr int kRound = 16;      // states per round (4 lanes x 4)
constexpr int kTs = 8;          // backward sub-tile: states kept in registers
constexpr int kSub = kT / kTs;  // sub-tiles per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.69314718055994531f;

// The kernel's dynamic shared memory.
#if defined(__CUDACC__)
__device__ __forceinline__ float4* dyn_smem() {
  extern __shared__ float4 dyn_smem_[];
  return dyn_smem_;
}
#else
float4* dyn_smem();  // host emulation
#endif

// Host helpers (this header also compiles without CUDA, for the emulator,
// so it keeps its own copy of cuda/common.cuh's aligned16).
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
// Whether the kernels prefetch the next tile into L2 (prefetch_tile below);
// COIL_SCAN_PREFETCH=0 in the environment turns it off (an A/B switch).
inline bool scan_prefetch_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("COIL_SCAN_PREFETCH");
    return !(e && e[0] == '0' && e[1] == 0);
  }();
  return on;
}

// Where row (b, d) of a (batch, dim, len) tensor starts: batch and channel
// strides in elements, time contiguous.
struct Layout {
  int64_t sb = 0, sd = 0;
  __device__ __forceinline__ int64_t at(int64_t b, int64_t d) const { return b * sb + d * sd; }
};
// strides {0, 0} = contiguous.
inline Layout layout_of(const int64_t* s, int64_t dim, int64_t len) {
  return (s[0] == 0 && s[1] == 0) ? Layout{dim * len, len} : Layout{s[0], s[1]};
}
// 16-byte accesses need every row start aligned: strides multiples of the vector.
inline bool vec_layout(const Layout& l, int v) { return l.sb % v == 0 && l.sd % v == 0; }
inline int64_t num_tiles(int64_t len) { return len <= 0 ? 0 : (len + kT - 1) / kT; }

// ---- element conversion ------------------------------------------------------

__device__ __forceinline__ float ld_f(const float* p) { return __ldg(p); }
__device__ __forceinline__ float ld_f(const coil::bf16* p) {
  return __uint_as_float(uint32_t(__ldg(reinterpret_cast<const unsigned short*>(p))) << 16);
}
template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ coil::bf16 from_f<coil::bf16>(float v) { return coil::to_bf16(v); }

// Two floats to packed bf16x2 (round to nearest even): lo in the low half.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return uint32_t(coil::to_bf16(lo).bits) | (uint32_t(coil::to_bf16(hi).bits) << 16);
#endif
}

// 16 bytes of T: V elements.
template <class T> struct Vec {
  static constexpr int V = 16 / int(sizeof(T));
};

template <class T> __device__ __forceinline__ void unpack(uint4 r, float* v);
template <> __device__ __forceinline__ void unpack<float>(uint4 r, float* v) {
  v[0] = __uint_as_float(r.x);
  v[1] = __uint_as_float(r.y);
  v[2] = __uint_as_float(r.z);
  v[3] = __uint_as_float(r.w);
}
template <> __device__ __forceinline__ void unpack<coil::bf16>(uint4 r, float* v) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
template <class T> __device__ __forceinline__ uint4 pack(const float* v);
template <> __device__ __forceinline__ uint4 pack<float>(const float* v) {
  return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
}
template <> __device__ __forceinline__ uint4 pack<coil::bf16>(const float* v) {
  return make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]),
                    pack_bf16x2(v[6], v[7]));
}

// Elements row[t .. t+V) as fp32; those at or past `len` read as 0, and a null
// row reads as all zeros. t is a multiple of V. `vec` says that rows are
// 16-byte aligned and len is a multiple of V (one 16-byte load then).
template <class T>
__device__ __forceinline__ void load_vec(const T* row, int64_t t, int64_t len, bool vec, float* v) {
  constexpr int V = Vec<T>::V;
  if (row != nullptr && vec) {
    if (t < len) {
      unpack<T>(__ldg(reinterpret_cast<const uint4*>(row + t)), v);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) v[i] = 0.f;
    }
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = (row != nullptr && t + i < len) ? ld_f(row + t + i) : 0.f;
  }
}

// Stores the elements of row[t .. t+V) that lie before `len`.
template <class T>
__device__ __forceinline__ void store_vec(T* row, int64_t t, int64_t len, bool vec, const float* v) {
  constexpr int V = Vec<T>::V;
  if (vec) {
    if (t < len) *reinterpret_cast<uint4*>(row + t) = pack<T>(v);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i)
      if (t + i < len) row[t + i] = from_f<T>(v[i]);
  }
}

// ---- math --------------------------------------------------------------------

// 2^x on the special-function unit (MUFU.EX2), flush-to-zero: the decay
// exp(dt*A) is computed as ex2(dt * A*log2(e)).
__device__ __forceinline__ float ex2(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
// PyTorch's softplus (threshold 20: larger inputs pass through).
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }

// ---- warp reduce-scatter -----------------------------------------------------

// One halving step over lanes that differ in `mask`: v[0..2H) -> v[0..H).
// Lanes with (lane & mask) keep the upper half, the others the lower; each
// kept value adds the partner's copy. Fixed order, so deterministic.
template <int H> __device__ __forceinline__ void rs_step(float* v, int mask, bool upper) {
#pragma unroll
  for (int i = 0; i < H; ++i) {
    const float send = upper ? v[i] : v[i + H];
    const float keep = upper ? v[i + H] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
  }
}

// Sum of v[0..4) (one value per time step t..t+3) over the 4 lanes of a
// channel (lane bits 0-1 = g): lane g returns the sum for step t+g.
__device__ __forceinline__ float rs4_over_states(float* v, int g) {
  rs_step<2>(v, 2, (g & 2) != 0);
  rs_step<1>(v, 1, (g & 1) != 0);
  return v[0];
}

// ---- time segments (small batches) ---------------------------------------------
//
// A block walks its channels' tiles one after another, so with few
// (batch, channel-group) blocks most of the GPU idles (batch 1 at D 1536 is 48
// blocks on 132 SMs). Time is then cut into n_seg segments of tps tiles, each
// its own block (grid z). The recurrence is linear in the state, so a segment's
// effect on the state is an affine map: h_end = 2^(A2 * sum dt) * h_begin +
// h_end(from zero). A summary pass (selective_scan_seg_kernel.cuh) computes
// each segment's end state from zero and its sum of dt; the main kernel's block
// for segment s starts from h0 carried through the summaries of segments
// 0..s-1 (the backward likewise carries dL/dh from dhT through the later
// segments). The summary pass repeats the exp work of the recurrence, so
// segments are used only when blocks would otherwise leave SMs idle.
struct SegPlan {
  int n_seg = 1, tps = 0;  // segments, tiles per segment (the last may be shorter)
};
constexpr int kMinSegTiles = 2;  // shortest segment the automatic plan makes
// `base` blocks without segments, `slots` blocks the GPU runs at once;
// `forced` > 0 asks for that many segments (tests), 0 chooses.
inline SegPlan plan_segments(int64_t n_tiles, int64_t base, int64_t slots, int forced) {
  SegPlan s;
  if (n_tiles <= 0) return s;
  int64_t want = forced > 0 ? forced : slots / (base > 0 ? base : 1);
  const int64_t cap = forced > 0 ? n_tiles : n_tiles / kMinSegTiles;
  want = want > cap ? cap : want;
  want = want < 1 ? 1 : want;
  s.tps = int((n_tiles + want - 1) / want);
  s.n_seg = int((n_tiles + s.tps - 1) / s.tps);  // no empty segment
  return s;
}
__device__ __forceinline__ void seg_tiles(const SegPlan& s, int n_tiles, int seg, int& k0, int& k1) {
  k0 = seg * s.tps;
  k1 = k0 + s.tps < n_tiles ? k0 + s.tps : n_tiles;
}

// ---- staging a tile ----------------------------------------------------------------

// dt = softplus(delta + bias) as the kernels use it.
__device__ __forceinline__ float dt_of(float delta, float bias, bool softplus) {
  const float x = delta + bias;
  return softplus ? softplus_f(x) : x;
}

// The tile at t0 of the block's 32 channels (d0..) into shared rows of kRow
// floats: u (when u_s is non-null) and dt. Zero past len and for channels past
// dim, so padded steps leave every state unchanged. All threads take part.
template <class IO>
__device__ __forceinline__ void stage_u_dt(const IO* u, const IO* delta, Layout dl, const float* bias, bool softplus,
                                           bool vec, int64_t b, int64_t d0, int64_t dim, int64_t L, int64_t t0,
                                           int tid, float* u_s, float* dt_s) {
  constexpr int V = Vec<IO>::V, VPR = kT / V;
#pragma unroll 1
  for (int m = 0; m < kCh * VPR / kThreads; ++m) {
    const int idx = tid + kThreads * m, cc = idx / VPR, j = idx % VPR;
    const int64_t dd = d0 + cc, t = t0 + j * V;
    const bool ok = dd < dim;
    const int64_t row = (b * dim + dd) * L;
    float uv[V] = {}, dv[V];  // uv stays unused when u_s is null
    if (u_s) load_vec<IO>(ok ? u + row : nullptr, t, L, vec, uv);
    load_vec<IO>(ok ? delta + dl.at(b, dd) : nullptr, t, L, vec, dv);
    const float bs = (ok && bias) ? __ldg(bias + dd) : 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) dv[i] = (ok && t + i < L) ? dt_of(dv[i], bs, softplus) : 0.f;
#pragma unroll
    for (int i = 0; i < V; i += 4) {
      if (u_s) *reinterpret_cast<float4*>(u_s + cc * kRow + j * V + i) = make_float4(uv[i], uv[i + 1], uv[i + 2], uv[i + 3]);
      *reinterpret_cast<float4*>(dt_s + cc * kRow + j * V + i) = make_float4(dv[i], dv[i + 1], dv[i + 2], dv[i + 3]);
    }
  }
}

// An L2 prefetch of the 128-byte line holding base[i]: a hint with no
// effect on what any load returns. (The host emulation checks that i lies
// inside the tensor that starts at base.)
#if !defined(__CUDA_ARCH__)
void prefetch_hook(const void* base, int64_t byte_offset);
#endif
template <class T> __device__ __forceinline__ void prefetch_line(const T* base, int64_t i) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(base + i));
#else
  prefetch_hook(base, i * int64_t(sizeof(T)));
#endif
}

// The rows a block reads for the tile at t0, pulled into L2 while it
// computes the tile before: its 32 channels' u, delta and z (and dout; each
// may be null) and the selective B, C rows of every state (null when not
// selective). The next staging then waits on L2 hits instead of DRAM round
// trips, at one or two instructions a thread and no registers or shared
// memory held. Each row's tile is kT elements: its first line, its last
// element's line and the lines between. Tiles at or past L are skipped.
template <class IO, class BC>
__device__ __forceinline__ void prefetch_tile(const IO* u, const IO* delta, Layout dl, const IO* z, Layout zl,
                                              const IO* dout, const BC* B, const BC* C, int64_t b, int64_t d0,
                                              int64_t dim, int64_t N, int64_t L, int64_t t0, int tid) {
  if (t0 >= L) return;
  const int64_t last = (t0 + kT < L ? t0 + kT : L) - 1;  // the tile's last element
  constexpr int kIoPer = 128 / int(sizeof(IO)), kBcPer = 128 / int(sizeof(BC));  // elements a line
  constexpr int kIoLines = kT / kIoPer + 1, kBcLines = kT / kBcPer + 1;
  const int io_items = 4 * kCh * kIoLines, bc_items = 2 * int(N) * kBcLines;
#pragma unroll 1
  for (int i = tid; i < io_items + bc_items; i += kThreads) {
    if (i < io_items) {
      const int line = i % kIoLines, row = i / kIoLines, which = row / kCh;
      const int64_t d = d0 + row % kCh;
      const IO* base = which == 0 ? u : which == 1 ? delta : which == 2 ? z : dout;
      if (base == nullptr || d >= dim) continue;
      const int64_t start = which == 1 ? dl.at(b, d) : which == 2 ? zl.at(b, d) : (b * dim + d) * L;
      const int64_t t = t0 + int64_t(line) * kIoPer;
      prefetch_line(base, start + (t < last ? t : last));
    } else {
      const int k = i - io_items, line = k % kBcLines, row = k / kBcLines;
      const BC* base = row % 2 == 0 ? B : C;
      if (base == nullptr) continue;
      const int64_t t = t0 + int64_t(line) * kBcPer;
      prefetch_line(base, (b * N + row / 2) * L + (t < last ? t : last));
    }
  }
}

// Round r's selective B (or C) of the tile at t0 into X_s (time-major, kRound
// states per step) so a lane reads its 4 states as one float4: thread ->
// (state n fastest, vector j), each state row read in 32-byte pieces.
template <class BC>
__device__ __forceinline__ void stage_states(const BC* X, bool vec, int64_t b, int64_t N, int64_t L, int r,
                                             int64_t t0, int tid, float* X_s) {
  constexpr int VB = Vec<BC>::V, VPRB = kT / VB;
#pragma unroll
  for (int m = 0; m < kRound * VPRB / kThreads; ++m) {
    const int idx = tid + kThreads * m, nl = idx % kRound, j = idx / kRound;
    const int64_t n = int64_t(r) * kRound + nl;
    float v[VB];
    load_vec<BC>(n < N ? X + (b * N + n) * L : nullptr, t0 + j * VB, L, vec, v);
#pragma unroll
    for (int i = 0; i < VB; ++i) X_s[(j * VB + i) * kRound + nl] = v[i];
  }
}

// ---- the recurrence ------------------------------------------------------------

// The lane's 4 values of B (or C) at tile step t: from the staged time-major
// tile (selective) or the lane's constants (LTI).
template <bool kVar>
__device__ __forceinline__ void lane_bc(const float* X_s, const float* Xc, int t, int g, float* x) {
  if constexpr (kVar) {
    const float4 q = *reinterpret_cast<const float4*>(X_s + t * kRound + 4 * g);
    x[0] = q.x, x[1] = q.y, x[2] = q.z, x[3] = q.w;
  } else {
#pragma unroll
    for (int s = 0; s < 4; ++s) x[s] = Xc[s];
  }
}

// Steps tt..tt+3 of the lane's 4 states h (forward and the backward's
// recompute share it, so the recomputed states equal the forward's). Returns
// y (the sum over the channel's 16 states of C h, without D u) for step tt+g.
template <bool kVarB, bool kVarC>
__device__ __forceinline__ float fwd_step4(float* h, const float* A2, const float* Bc, const float* Cc,
                                           const float* dtrow, const float* urow, const float* B_s,
                                           const float* C_s, int tt, int g) {
  const float4 dt4 = *reinterpret_cast<const float4*>(dtrow + tt);
  const float4 u4 = *reinterpret_cast<const float4*>(urow + tt);
  const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
  const float dtu[4] = {dt4.x * u4.x, dt4.y * u4.y, dt4.z * u4.z, dt4.w * u4.w};
  float yp[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float Bv[4], Cv[4];
    lane_bc<kVarB>(B_s, Bc, tt + i, g, Bv);
    lane_bc<kVarC>(C_s, Cc, tt + i, g, Cv);
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      h[s] = fmaf(ex2(dtv[i] * A2[s]), h[s], Bv[s] * dtu[i]);
      acc = fmaf(Cv[s], h[s], acc);
    }
    yp[i] = acc;
  }
  return rs4_over_states(yp, g);
}

}  // namespace coil::cuda::scan
