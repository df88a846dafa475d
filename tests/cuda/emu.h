// A CPU emulator for CUDA kernels written in plain CUDA C++ (device code in
// headers that compile for the host too), for machines without a GPU: each
// CUDA thread is a fiber (ucontext); __syncthreads, warp shuffles and warp
// collectives (emu::warp_collective: an mma.sync stand-in, for instance) are
// the scheduling points. Between two barriers the warps run one after another
// in a random order, each as far as it can, with its lanes resumed in a random
// order between shuffles; so a read of data another warp or lane writes
// without a barrier in between sees stale or NaN values in some orders.
// Shared memory starts as NaN. Used by tests/cuda/scan_emu.cpp and
// tests/cuda/mma_rows_emu.cpp.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "core/half.h"

// ---- CUDA stand-ins --------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }

namespace emu {
struct Idx {
  unsigned x = 0, y = 0, z = 0;
};
enum State { kRunnable, kAtBarrier, kAtCluster, kAtShfl, kAtColl, kDone };
// A warp collective: called once with the 32 lanes' data when all have arrived.
using CollFn = void (*)(void* const* lanes);
struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  Idx tidx, bidx;
  int rank = 0;  // the block's rank in its cluster
  State state = kRunnable;
  float shfl_val = 0, shfl_res = 0;
  int shfl_mask = 0;
  void* coll_data = nullptr;
  CollFn coll_fn = nullptr;
};
inline Idx g_block, g_blockdim, g_griddim;
inline Fiber* g_cur = nullptr;
inline ucontext_t g_sched;
inline std::vector<std::vector<float4>> g_smems;  // per block of the running cluster
inline std::mt19937_64 g_order_rng(1);
inline const std::function<void()>* g_body = nullptr;

// The running fiber's block's dynamic shared memory.
inline float4* smem() { return g_smems[size_t(g_cur->rank)].data(); }
inline float4* smem_of_rank(int r) { return g_smems[size_t(r)].data(); }

inline void yield() { swapcontext(&g_cur->ctx, &g_sched); }

inline void trampoline() {
  (*g_body)();
  g_cur->state = kDone;  // uc_link returns to the scheduler
}

// Out of line: getcontext returns twice, which the compiler warns about
// for the locals of the function that calls it.
[[gnu::noinline]] inline void init_fiber(ucontext_t& ctx, char* stack, size_t size) {
  getcontext(&ctx);
  ctx.uc_stack.ss_sp = stack;
  ctx.uc_stack.ss_size = size;
  ctx.uc_link = &g_sched;
  makecontext(&ctx, trampoline, 0);
}

// Runs the blocks of one cluster (blocks[r] is rank r's blockIdx), each of
// `nthreads` fibers, to completion. Each warp in turn (random order over the
// cluster) runs as far as it can: lanes resumed in random order, shuffles and
// warp collectives resolved as soon as all 32 lanes wait in one, until every
// lane waits at a barrier or has finished. A block's __syncthreads releases
// when all its threads wait there; a cluster barrier when every thread of the
// cluster does. Warps thus drift apart as far as the barriers allow, so a
// read of another warp's data without a barrier in between sees stale or
// NaN values in some orders.
inline void run_cluster(const std::vector<Idx>& blocks, int nthreads, size_t smem_bytes,
                        const std::function<void()>& body) {
  constexpr size_t kStack = 256 * 1024;
  const int nb = int(blocks.size());
  g_smems.assign(size_t(nb), std::vector<float4>((smem_bytes + 15) / 16 + 1, float4{NAN, NAN, NAN, NAN}));
  g_blockdim = Idx{unsigned(nthreads), 1, 1};
  g_body = &body;
  const int total = nb * nthreads;
  std::vector<Fiber> f(static_cast<size_t>(total));
  for (int i = 0; i < total; ++i) {
    f[i].stack.reset(new char[kStack]);
    f[i].tidx = Idx{unsigned(i % nthreads), 0, 0};
    f[i].rank = i / nthreads;
    f[i].bidx = blocks[size_t(i / nthreads)];
    init_fiber(f[i].ctx, f[i].stack.get(), kStack);
  }
  const int wpb = (nthreads + 31) / 32, nwarps = nb * wpb;
  std::vector<int> worder(nwarps), lorder(32);
  for (int i = 0; i < nwarps; ++i) worder[i] = i;
  for (int i = 0; i < 32; ++i) lorder[i] = i;
  auto die = [](const char* what) {
    std::fprintf(stderr, "emu: %s\n", what);
    std::exit(3);
  };
  for (;;) {
    std::shuffle(worder.begin(), worder.end(), g_order_rng);
    for (int w : worder) {
      const int w0 = (w / wpb) * nthreads + (w % wpb) * 32, nl = std::min(32, nthreads - (w % wpb) * 32);
      for (;;) {
        std::shuffle(lorder.begin(), lorder.end(), g_order_rng);
        bool resumed = false;
        for (int l : lorder) {
          if (l >= nl || f[w0 + l].state != kRunnable) continue;
          g_cur = &f[w0 + l];
          swapcontext(&g_sched, &f[w0 + l].ctx);
          resumed = true;
        }
        int at_shfl = 0, at_coll = 0;
        for (int l = 0; l < nl; ++l) at_shfl += f[w0 + l].state == kAtShfl, at_coll += f[w0 + l].state == kAtColl;
        if (at_shfl == 32) {
          for (int l = 0; l < 32; ++l) {
            if (f[w0 + l].shfl_mask != f[w0].shfl_mask) die("lanes of a warp shuffle with different masks");
            f[w0 + l].shfl_res = f[w0 + (l ^ f[w0 + l].shfl_mask)].shfl_val;
          }
          for (int l = 0; l < 32; ++l) f[w0 + l].state = kRunnable;
          continue;
        }
        if (at_coll == 32) {
          void* lanes[32];
          for (int l = 0; l < 32; ++l) {
            if (f[w0 + l].coll_fn != f[w0].coll_fn) die("lanes of a warp in different collectives");
            lanes[l] = f[w0 + l].coll_data;
          }
          f[w0].coll_fn(lanes);
          for (int l = 0; l < 32; ++l) f[w0 + l].state = kRunnable;
          continue;
        }
        if (at_shfl > 0 || at_coll > 0) die("divergent shuffle (lanes of a warp at different sync points)");
        if (!resumed) break;
      }
    }
    // Every fiber now waits at a barrier or is done.
    int done = 0, at_cluster = 0;
    for (auto& x : f) done += x.state == kDone, at_cluster += x.state == kAtCluster;
    if (done == total) break;
    if (done) die("deadlock, or a barrier with exited threads");
    if (at_cluster == total) {
      for (auto& x : f) x.state = kRunnable;
      continue;
    }
    bool released = false;
    for (int r = 0; r < nb; ++r) {
      bool all = true;
      for (int t = 0; t < nthreads; ++t) all = all && f[size_t(r * nthreads + t)].state == kAtBarrier;
      if (!all) continue;
      for (int t = 0; t < nthreads; ++t) f[size_t(r * nthreads + t)].state = kRunnable;
      released = true;
    }
    if (!released) die("deadlock: a block's threads wait at different barriers");
  }
}

// One block (blockIdx = g_block).
inline void run_block(int nthreads, size_t smem_bytes, const std::function<void()>& body) {
  run_cluster({g_block}, nthreads, smem_bytes, body);
}
}  // namespace emu

#define threadIdx (emu::g_cur->tidx)
#define blockIdx (emu::g_cur->bidx)
#define blockDim (emu::g_blockdim)
#define gridDim (emu::g_griddim)
inline void __syncthreads() {
  emu::g_cur->state = emu::kAtBarrier;
  emu::yield();
}
inline float __shfl_xor_sync(unsigned, float v, int mask) {
  emu::g_cur->state = emu::kAtShfl;
  emu::g_cur->shfl_val = v;
  emu::g_cur->shfl_mask = mask;
  emu::yield();
  return emu::g_cur->shfl_res;
}
namespace emu {
// The calling lane joins warp collective fn with its data (a pointer to
// something on its stack); returns once fn has run for the whole warp.
inline void warp_collective(CollFn fn, void* data) {
  g_cur->state = kAtColl;
  g_cur->coll_fn = fn;
  g_cur->coll_data = data;
  yield();
}
}  // namespace emu
// ---- host versions of cuda/device_prims.cuh ---------------------------------
namespace coil::cuda {
inline unsigned char* dyn_smem_bytes() { return reinterpret_cast<unsigned char*>(emu::smem()); }
inline void cp_async16(void* smem, const void* gmem) { std::memcpy(smem, gmem, 16); }
inline void cp_async_commit() {}
inline void cp_async_wait_all() {}
inline void cluster_sync_all() {
  emu::g_cur->state = emu::kAtCluster;
  emu::yield();
}
inline int cluster_rank() { return emu::g_cur->rank; }
inline float* cluster_map(float* p, int r) {
  const auto off = reinterpret_cast<unsigned char*>(p) - reinterpret_cast<unsigned char*>(emu::smem());
  return reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(emu::smem_of_rank(r)) + off);
}
inline void pdl_wait() {}
inline void pdl_trigger() {}
}  // namespace coil::cuda

// A warp-wide meeting point: every lane of the warp arrives before any leaves
// (a shuffle whose value nobody uses).
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)__shfl_xor_sync(mask, 0.f, 0); }

// mma.sync m16n8k16 as a warp collective (cuda/device_prims.cuh).
namespace coil::cuda {
namespace emu_mma {
struct MmaLane {
  float* d;
  unsigned a[4], b[2];
};
template <class T> float half_at(unsigned reg, int which) {
  T t;
  t.bits = uint16_t(which ? reg >> 16 : reg & 0xffffu);
  return load_as<float, T>(t);
}
// m16n8k16 as the PTX ISA documents it: lane = 4 g + t. A element (row,
// col): register 0 (g, 2t..2t+1), 1 (g+8, 2t..), 2 (g, 2t+8..), 3 (g+8,
// 2t+8..), the lower column in the low half. B (k, n): register 0 (2t..2t+1,
// g), 1 (2t+8.., g). C/D: d0, d1 (g, 2t..2t+1), d2, d3 (g+8, 2t..2t+1).
template <class T> void mma_all(void* const* lanes) {
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const MmaLane& m = *static_cast<const MmaLane*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = half_at<T>(m.a[0], h);
      A[g + 8][2 * t + h] = half_at<T>(m.a[1], h);
      A[g][2 * t + 8 + h] = half_at<T>(m.a[2], h);
      A[g + 8][2 * t + 8 + h] = half_at<T>(m.a[3], h);
      B[2 * t + h][g] = half_at<T>(m.b[0], h);
      B[2 * t + 8 + h][g] = half_at<T>(m.b[1], h);
      C[g][2 * t + h] = m.d[h];
      C[g + 8][2 * t + h] = m.d[2 + h];
    }
  }
  for (int l = 0; l < 32; ++l) {
    const MmaLane& m = *static_cast<const MmaLane*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int h = 0; h < 2; ++h)
      for (int r = 0; r < 2; ++r) {
        const int row = g + 8 * r, col = 2 * t + h;
        float s = C[row][col];
        for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
        m.d[2 * r + h] = s;
      }
  }
}
}  // namespace emu_mma

template <class T> inline void mma16816(float* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  emu_mma::MmaLane m{d, {a0, a1, a2, a3}, {b0, b1}};
  emu::warp_collective(&emu_mma::mma_all<T>, &m);
}

}  // namespace coil::cuda
