#include "cuda/common.cuh"
#include "cuda/elementwise.h"

#include <cuda_bf16.h>

namespace coil::cuda {

namespace {

constexpr int kThreads = 256;

template <int N> __device__ __forceinline__ void offsets(const Geometry<N>& g, int64_t i, int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
  for (int d = g.rank - 1; d >= 0; --d) {
    int64_t q = i / g.shape[d], r = i - q * g.shape[d];
    i = q;
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += r * g.strides[k][d];
  }
}

// How map_kernel walks the elements.
enum MapMode : int {
  kScalar = 0,  // one element at a time through the strides
  kFlat = 1,    // every operand dense in row-major order: 16-byte vectors over flat memory
  kRows = 2,    // strided, but rows (the last dim) contiguous and 16-byte aligned in every
                // operand: 16-byte vectors, the stride arithmetic once per vector
};

// out = f(in0[, in1]) elementwise; each thread moves 16 bytes of the output
// per step in the vector modes.
template <class TO, class TI, int NIn, class F>
__global__ void map_kernel(Geometry<NIn + 1> g, TO* out, const TI* in0, const TI* in1, F f, int mode) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (mode == kRows) {
    constexpr int V = 16 / sizeof(TO) > 0 ? 16 / sizeof(TO) : 1;
    union PackO { uint4 u; TO e[V]; };
    union PackI { uint4 u; TI e[V]; };
    const int64_t nv = g.numel / V;
    for (int64_t v = tid; v < nv; v += stride) {
      int64_t off[NIn + 1];
      offsets(g, v * V, off);
      PackI a, b;
      PackO o;
      a.u = *reinterpret_cast<const uint4*>(in0 + off[1]);
      if constexpr (NIn == 2) b.u = *reinterpret_cast<const uint4*>(in1 + off[2]);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if constexpr (NIn == 2)
          o.e[j] = f(a.e[j], b.e[j]);
        else
          o.e[j] = f(a.e[j]);
      }
      *reinterpret_cast<uint4*>(out + off[0]) = o.u;
    }
    return;
  }
  if (mode == kFlat) {
    constexpr int V = 16 / sizeof(TO) > 0 ? 16 / sizeof(TO) : 1;
    const int64_t nv = g.numel / V;
    union PackO { uint4 u; TO e[V]; };
    union PackI { uint4 u; TI e[V]; };
    for (int64_t v = tid; v < nv; v += stride) {
      PackI a, b;
      PackO o;
      a.u = reinterpret_cast<const uint4*>(in0)[v];
      if constexpr (NIn == 2) b.u = reinterpret_cast<const uint4*>(in1)[v];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if constexpr (NIn == 2)
          o.e[j] = f(a.e[j], b.e[j]);
        else
          o.e[j] = f(a.e[j]);
      }
      reinterpret_cast<uint4*>(out)[v] = o.u;
    }
    for (int64_t i = nv * V + tid; i < g.numel; i += stride) {
      if constexpr (NIn == 2)
        out[i] = f(in0[i], in1[i]);
      else
        out[i] = f(in0[i]);
    }
    return;
  }
  for (int64_t i = tid; i < g.numel; i += stride) {
    int64_t off[NIn + 1];
    offsets(g, i, off);
    if constexpr (NIn == 2)
      out[off[0]] = f(in0[off[1]], in1[off[2]]);
    else
      out[off[0]] = f(in0[off[1]]);
  }
}

template <UnaryOp op, class T> struct UnaryF {
  acc_t<T> a, b;
  __device__ T operator()(T x) const {
    return store_as<T, acc_t<T>>(unary_fn<op, acc_t<T>>(load_as<acc_t<T>, T>(x), a, b));
  }
};
template <BinaryOp op, class T> struct BinaryF {
  acc_t<T> a, b;
  __device__ T operator()(T x, T y) const {
    using A = acc_t<T>;
    return store_as<T, A>(binary_fn<op, A>(load_as<A, T>(x), load_as<A, T>(y), a, b));
  }
};
template <class S, class D> struct CastF {
  __device__ D operator()(S x) const {
    if constexpr (std::is_same_v<S, D>) return x;
    else if constexpr (std::is_integral_v<S> && std::is_integral_v<D>) return D(x);
    else return store_as<D, double>(load_as<double, S>(x));
  }
};
template <class T> struct ConstF {
  T v;
  __device__ T operator()(T) const { return v; }
};

template <class TO, class TI, int NIn, class F>
void launch_map(const Strided* const (&ops)[NIn + 1], F f, int device) {
  Geometry<NIn + 1> g = merge<NIn + 1>(ops);
  if (g.numel == 0) return;
  bool aligned = sizeof(TO) == sizeof(TI);
  for (int k = 0; k <= NIn; ++k) aligned = aligned && aligned16(ops[k]->data);
  // Rows: the last (merged) dim contiguous in every operand, its length and
  // every other stride a multiple of the 16-byte vector.
  constexpr int64_t V = 16 / sizeof(TO) > 0 ? 16 / sizeof(TO) : 1;
  bool rows = aligned && g.rank >= 1 && g.shape[g.rank - 1] % V == 0;
  for (int k = 0; k <= NIn && rows; ++k) {
    rows = g.strides[k][g.rank - 1] == 1;
    for (int d = 0; d + 1 < g.rank; ++d) rows = rows && g.strides[k][d] % V == 0;
  }
  const int mode = (aligned && g.all_contiguous) ? kFlat : rows ? kRows : kScalar;
  map_kernel<TO, TI, NIn, F><<<grid_for(mode != kScalar ? g.numel / 4 + 1 : g.numel, kThreads, 132 * 16), kThreads, 0,
                               stream_of(device)>>>(g, static_cast<TO*>(ops[0]->data),
                                                    static_cast<const TI*>(ops[1]->data),
                                                    NIn == 2 ? static_cast<const TI*>(ops[2]->data) : nullptr, f, mode);
  COIL_CUDA_LAUNCH_CHECK();
}

template <class Fn> void by_unary(UnaryOp op, Fn&& fn) {
  switch (op) {
#define C(name) case UnaryOp::name: return fn(std::integral_constant<UnaryOp, UnaryOp::name>{});
    C(neg) C(exp) C(log) C(sqrt) C(rsqrt) C(sigmoid) C(silu) C(softplus) C(tanh) C(pow) C(add_scalar)
    C(mul_scalar) C(rsub_scalar) C(clamp_min)
#undef C
  }
}
template <class Fn> void by_binary(BinaryOp op, Fn&& fn) {
  switch (op) {
#define C(name) case BinaryOp::name: return fn(std::integral_constant<BinaryOp, BinaryOp::name>{});
    C(add) C(sub) C(mul) C(div) C(eq) C(maximum) C(clamp_min_bwd) C(silu_bwd) C(softplus_bwd) C(sigmoid_bwd)
    C(tanh_bwd) C(pow_bwd)
#undef C
  }
}

}  // namespace

void unary(UnaryOp op, const Strided& x, const Strided& out, ScalarParams p, int device) {
  const Strided* ops[2] = {&out, &x};
  dispatch_float(x.dtype, "cuda unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    by_unary(op, [&](auto c) {
      launch_map<T, T, 1>(ops, UnaryF<decltype(c)::value, T>{acc_t<T>(p.a), acc_t<T>(p.b)}, device);
    });
  });
}

void binary(BinaryOp op, const Strided& x, const Strided& y, const Strided& out, ScalarParams p, int device) {
  const Strided* ops[3] = {&out, &x, &y};
  dispatch_float(x.dtype, "cuda binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    by_binary(op, [&](auto c) {
      launch_map<T, T, 2>(ops, BinaryF<decltype(c)::value, T>{acc_t<T>(p.a), acc_t<T>(p.b)}, device);
    });
  });
}

void copy(const Strided& src, const Strided& dst, int device) {
  const Strided* ops[2] = {&dst, &src};
  dispatch_all(src.dtype, [&](auto stag) {
    using S = typename decltype(stag)::type;
    dispatch_all(dst.dtype, [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      launch_map<D, S, 1>(ops, CastF<S, D>{}, device);
    });
  });
}

void fill(const Strided& dst, double value, int device) {
  const Strided* ops[2] = {&dst, &dst};
  dispatch_all(dst.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map<T, T, 1>(ops, ConstF<T>{store_as<T, double>(value)}, device);
  });
}

}  // namespace coil::cuda
