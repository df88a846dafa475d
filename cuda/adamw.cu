#include <cmath>

#include "cuda/adamw.h"
#include "cuda/common.cuh"
#include "cuda/multi_tensor.cuh"

namespace coil::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;   // elements per block
constexpr int kMaxSlots = 192;     // per launch: keeps the parameter block under 16 KB

using Table = ChunkTable<AdamWSlot, kMaxSlots>;

struct Hyper {
  float step_size, bc2_sqrt, one_minus_b1, b2, one_minus_b2, eps, lr;
};

__global__ void adamw_kernel(const __grid_constant__ Table t, const Hyper h) {
  int64_t base;
  const AdamWSlot& a = t.slot[t.slot_of_block(kChunk, base)];
  const int64_t end = base + kChunk < a.numel ? base + kChunk : a.numel;
  const float decay = 1.f - h.lr * a.weight_decay;
  for (int64_t i = base + threadIdx.x; i < end; i += blockDim.x) {
    const float g = a.grad[i];
    float m = a.exp_avg[i], v = a.exp_avg_sq[i], p = a.param[i];
    p *= decay;
    m += h.one_minus_b1 * (g - m);
    v = h.b2 * v + h.one_minus_b2 * g * g;
    p -= h.step_size * m / (sqrtf(v) / h.bc2_sqrt + h.eps);
    a.exp_avg[i] = m;
    a.exp_avg_sq[i] = v;
    a.param[i] = p;
  }
}

}  // namespace

void adamw_update(const std::vector<AdamWSlot>& slots, const AdamWStep& h, int device) {
  const double bc1 = 1.0 - std::pow(h.beta1, double(h.step));
  const double bc2 = 1.0 - std::pow(h.beta2, double(h.step));
  Hyper hp;
  hp.step_size = float(h.lr / bc1);
  hp.bc2_sqrt = float(std::sqrt(bc2));
  hp.one_minus_b1 = float(1.0 - h.beta1);
  hp.b2 = float(h.beta2);
  hp.one_minus_b2 = float(1.0 - h.beta2);
  hp.eps = float(h.eps);
  hp.lr = float(h.lr);
  for_chunk_tables<kMaxSlots>(slots, kChunk, [&](const Table& t, int64_t blocks, int64_t) {
    COIL_CHECK(blocks <= int64_t(INT32_MAX), "adamw_update: too many elements");
    adamw_kernel<<<unsigned(blocks), kThreads, 0, stream_of(device)>>>(t, hp);
    COIL_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace coil::cuda
