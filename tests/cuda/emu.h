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
enum State { kRunnable, kAtBarrier, kAtShfl, kAtColl, kDone };
// A warp collective: called once with the 32 lanes' data when all have arrived.
using CollFn = void (*)(void* const* lanes);
struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  Idx tidx;
  State state = kRunnable;
  float shfl_val = 0, shfl_res = 0;
  int shfl_mask = 0;
  void* coll_data = nullptr;
  CollFn coll_fn = nullptr;
};
inline Idx g_block, g_blockdim, g_griddim;
inline Fiber* g_cur = nullptr;
inline ucontext_t g_sched;
inline std::vector<float4> g_smem;
inline std::mt19937_64 g_order_rng(1);
inline const std::function<void()>* g_body = nullptr;

inline void yield() { swapcontext(&g_cur->ctx, &g_sched); }

inline void trampoline() {
  (*g_body)();
  g_cur->state = kDone;  // uc_link returns to the scheduler
}

// Runs one block of `nthreads` fibers to completion.
inline void run_block(int nthreads, size_t smem_bytes, const std::function<void()>& body) {
  constexpr size_t kStack = 256 * 1024;
  g_smem.assign((smem_bytes + 15) / 16 + 1, float4{NAN, NAN, NAN, NAN});
  g_blockdim = Idx{unsigned(nthreads), 1, 1};
  g_body = &body;
  std::vector<Fiber> f(nthreads);
  for (int i = 0; i < nthreads; ++i) {
    f[i].stack.reset(new char[kStack]);
    f[i].tidx = Idx{unsigned(i), 0, 0};
    getcontext(&f[i].ctx);
    f[i].ctx.uc_stack.ss_sp = f[i].stack.get();
    f[i].ctx.uc_stack.ss_size = kStack;
    f[i].ctx.uc_link = &g_sched;
    makecontext(&f[i].ctx, trampoline, 0);
  }
  // Each warp in turn (random order) runs as far as it can: lanes resumed in
  // random order, shuffles resolved as soon as all 32 lanes wait in one, until
  // every lane waits at __syncthreads or has finished. Warps thus drift apart
  // as far as the barriers allow, so a read of another warp's data without a
  // barrier in between sees stale or NaN values in some orders.
  const int nwarps = (nthreads + 31) / 32;
  std::vector<int> worder(nwarps), lorder(32);
  for (int i = 0; i < nwarps; ++i) worder[i] = i;
  for (int i = 0; i < 32; ++i) lorder[i] = i;
  for (;;) {
    std::shuffle(worder.begin(), worder.end(), g_order_rng);
    bool ran = false;
    for (int w : worder) {
      const int w0 = w * 32, nl = std::min(32, nthreads - w0);
      for (;;) {
        std::shuffle(lorder.begin(), lorder.end(), g_order_rng);
        bool resumed = false;
        for (int l : lorder) {
          if (l >= nl || f[w0 + l].state != kRunnable) continue;
          g_cur = &f[w0 + l];
          swapcontext(&g_sched, &f[w0 + l].ctx);
          resumed = ran = true;
        }
        int at_shfl = 0;
        for (int l = 0; l < nl; ++l) at_shfl += f[w0 + l].state == kAtShfl;
        if (at_shfl == 32) {
          for (int l = 0; l < 32; ++l) {
            if (f[w0 + l].shfl_mask != f[w0].shfl_mask) {
              std::fprintf(stderr, "emu: lanes of a warp shuffle with different masks\n");
              std::exit(3);
            }
            f[w0 + l].shfl_res = f[w0 + (l ^ f[w0 + l].shfl_mask)].shfl_val;
          }
          for (int l = 0; l < 32; ++l) f[w0 + l].state = kRunnable;
          continue;
        }
        int at_coll = 0;
        for (int l = 0; l < nl; ++l) at_coll += f[w0 + l].state == kAtColl;
        if (at_coll == 32) {
          void* lanes[32];
          for (int l = 0; l < 32; ++l) {
            if (f[w0 + l].coll_fn != f[w0].coll_fn) {
              std::fprintf(stderr, "emu: lanes of a warp in different collectives\n");
              std::exit(3);
            }
            lanes[l] = f[w0 + l].coll_data;
          }
          f[w0].coll_fn(lanes);
          for (int l = 0; l < 32; ++l) f[w0 + l].state = kRunnable;
          continue;
        }
        if (at_shfl > 0 || at_coll > 0) {
          std::fprintf(stderr, "emu: divergent shuffle (lanes of a warp at different sync points)\n");
          std::exit(3);
        }
        if (!resumed) break;
      }
    }
    int done = 0, barrier = 0;
    for (auto& x : f) done += x.state == kDone, barrier += x.state == kAtBarrier;
    if (done == nthreads) break;
    if (barrier + done != nthreads || done) {
      std::fprintf(stderr, "emu: deadlock or __syncthreads with exited threads\n");
      std::exit(3);
    }
    for (auto& x : f) x.state = kRunnable;
    (void)ran;
  }
}
}  // namespace emu

#define threadIdx (emu::g_cur->tidx)
#define blockIdx (emu::g_block)
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
// A warp-wide meeting point: every lane of the warp arrives before any leaves
// (a shuffle whose value nobody uses).
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)__shfl_xor_sync(mask, 0.f, 0); }

