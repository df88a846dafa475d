// Many tensors in one launch (AdamW, gradient clipping): a table of slots
// travels as the kernel parameter (no host-to-device copy, no sync); each
// slot is cut into chunks of kChunk elements, one block per chunk, and a
// block finds its slot by a linear scan of the chunk prefix sums (the table
// is small). Tables hold at most kMaxSlots; more slots take more launches.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace coil::cuda {

template <class Slot, int kMaxSlots> struct ChunkTable {
  Slot slot[kMaxSlots];
  int64_t first_block[kMaxSlots + 1];  // prefix sums of each slot's chunk count
  int n;
#if defined(__CUDACC__)
  // This block's slot, and the first element of its chunk in it.
  __device__ __forceinline__ int slot_of_block(int64_t chunk, int64_t& base) const {
    int s = 0;
    while (s + 1 < n && first_block[s + 1] <= int64_t(blockIdx.x)) ++s;
    base = (int64_t(blockIdx.x) - first_block[s]) * chunk;
    return s;
  }
#endif
};

// Calls f(table, blocks, offset) for each table of up to kMaxSlots slots
// (numel read from slot.numel), offset = the blocks of the tables before it.
// Tables with no elements are skipped (their offset still counts 0).
template <int kMaxSlots, class Slot, class F>
void for_chunk_tables(const std::vector<Slot>& slots, int64_t chunk, F&& f) {
  int64_t offset = 0;
  for (size_t first = 0; first < slots.size(); first += kMaxSlots) {
    ChunkTable<Slot, kMaxSlots> t{};
    t.n = int(std::min(slots.size() - first, size_t(kMaxSlots)));
    t.first_block[0] = 0;
    for (int i = 0; i < t.n; ++i) {
      t.slot[i] = slots[first + size_t(i)];
      t.first_block[i + 1] = t.first_block[i] + (t.slot[i].numel + chunk - 1) / chunk;
    }
    const int64_t blocks = t.first_block[t.n];
    if (blocks > 0) f(t, blocks, offset);
    offset += blocks;
  }
}

}  // namespace coil::cuda
