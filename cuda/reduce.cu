#include "cuda/common.cuh"
#include "cuda/reduce.h"

namespace coil::cuda {

namespace {

constexpr int kThreads = 256;

// Long rows (a whole gradient reduced to one number) are split over many
// blocks: each writes the partial of a fixed slice of its row, then one block
// per row combines the partials in order. Same bits every run.
constexpr int64_t kSlice = 16384;

template <class T, bool IsMax>
__global__ void partial_kernel(const T* x, int64_t cols, int64_t slices, acc_t<T>* part) {
  using A = acc_t<T>;
  __shared__ A sm[kThreads];
  const int64_t r = blockIdx.y, sl = blockIdx.x;
  const T* row = x + r * cols;
  const int64_t c0 = sl * kSlice, c1 = c0 + kSlice < cols ? c0 + kSlice : cols;
  A acc = IsMax ? A(-INFINITY) : A(0);
  for (int64_t c = c0 + threadIdx.x; c < c1; c += kThreads) {
    A v = load_as<A, T>(row[c]);
    if constexpr (IsMax)
      acc = (v > acc || v != v) ? v : acc;
    else
      acc += v;
  }
  sm[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      A o = sm[threadIdx.x + s];
      if constexpr (IsMax)
        sm[threadIdx.x] = (o > sm[threadIdx.x] || o != o) ? o : sm[threadIdx.x];
      else
        sm[threadIdx.x] += o;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) part[r * slices + sl] = sm[0];
}

template <class T, bool IsMax>
__global__ void combine_kernel(const acc_t<T>* part, int64_t rows, int64_t slices, T* out) {
  using A = acc_t<T>;
  int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  A acc = IsMax ? A(-INFINITY) : A(0);
  for (int64_t i = 0; i < slices; ++i) {  // fixed order
    A v = part[r * slices + i];
    if constexpr (IsMax)
      acc = (v > acc || v != v) ? v : acc;
    else
      acc += v;
  }
  out[r] = store_as<T, A>(acc);
}

template <class T, bool IsMax>
__global__ void reduce_rows_kernel(const T* x, int64_t rows, int64_t cols, T* out) {
  using A = acc_t<T>;
  __shared__ A part[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * cols;
    A acc = IsMax ? A(-INFINITY) : A(0);
    // Each thread walks a fixed strided subset; the tree below combines the
    // threads in a fixed order, so the result never changes run to run.
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      A v = load_as<A, T>(row[c]);
      if constexpr (IsMax)
        acc = (v > acc || v != v) ? v : acc;
      else
        acc += v;
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) {
        A o = part[threadIdx.x + s];
        if constexpr (IsMax)
          part[threadIdx.x] = (o > part[threadIdx.x] || o != o) ? o : part[threadIdx.x];
        else
          part[threadIdx.x] += o;
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = store_as<T, A>(part[0]);
    __syncthreads();
  }
}

// Columns: out[c] = reduce over r of x[r * cols + c] (x row-major, rows x
// cols). A thread per column walks its rows in order (adjacent threads read
// adjacent columns: coalesced), so a sum over a tensor's leading dims needs
// no transposed copy. Fixed order: deterministic.
template <class T, bool IsMax>
__global__ void reduce_cols_kernel(const T* x, int64_t rows, int64_t cols, T* out) {
  using A = acc_t<T>;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    A acc = IsMax ? A(-INFINITY) : A(0);
    for (int64_t r = 0; r < rows; ++r) {
      const A v = load_as<A, T>(x[r * cols + c]);
      if constexpr (IsMax)
        acc = (v > acc || v != v) ? v : acc;
      else
        acc += v;
    }
    out[c] = store_as<T, A>(acc);
  }
}

}  // namespace

void reduce_rows(ReduceKind kind, const void* x, DType dtype, int64_t rows, int64_t cols, void* out, int device) {
  if (rows == 0) return;
  dispatch_float(dtype, "cuda reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t slices = (cols + kSlice - 1) / kSlice;
    if (slices > 1 && rows < 1024 && slices < 65535) {
      cudaStream_t st = stream_of(device);
      const size_t bytes = size_t(rows * slices) * sizeof(A);
      A* part = static_cast<A*>(cuda_ctx::alloc(bytes, device));
      const dim3 grid1{unsigned(slices), unsigned(rows), 1u};
      if (kind == ReduceKind::sum) {
        partial_kernel<T, false><<<grid1, kThreads, 0, st>>>(static_cast<const T*>(x), cols, slices, part);
        combine_kernel<T, false><<<grid_for(rows, 128), 128, 0, st>>>(part, rows, slices, static_cast<T*>(out));
      } else {
        partial_kernel<T, true><<<grid1, kThreads, 0, st>>>(static_cast<const T*>(x), cols, slices, part);
        combine_kernel<T, true><<<grid_for(rows, 128), 128, 0, st>>>(part, rows, slices, static_cast<T*>(out));
      }
      COIL_CUDA_LAUNCH_CHECK();
      cuda_ctx::free(part, bytes, device);  // stream-ordered
      return;
    }
    unsigned grid = unsigned(rows < (1 << 20) ? rows : (1 << 20));
    if (kind == ReduceKind::sum)
      reduce_rows_kernel<T, false><<<grid, kThreads, 0, stream_of(device)>>>(static_cast<const T*>(x), rows, cols,
                                                                             static_cast<T*>(out));
    else
      reduce_rows_kernel<T, true><<<grid, kThreads, 0, stream_of(device)>>>(static_cast<const T*>(x), rows, cols,
                                                                            static_cast<T*>(out));
    COIL_CUDA_LAUNCH_CHECK();
  });
}

void reduce_cols(ReduceKind kind, const void* x, DType dtype, int64_t rows, int64_t cols, void* out, int device) {
  if (cols == 0) return;
  dispatch_float(dtype, "cuda reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const unsigned grid = grid_for(cols, kThreads);
    if (kind == ReduceKind::sum)
      reduce_cols_kernel<T, false><<<grid, kThreads, 0, stream_of(device)>>>(static_cast<const T*>(x), rows, cols,
                                                                             static_cast<T*>(out));
    else
      reduce_cols_kernel<T, true><<<grid, kThreads, 0, stream_of(device)>>>(static_cast<const T*>(x), rows, cols,
                                                                            static_cast<T*>(out));
    COIL_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace coil::cuda
