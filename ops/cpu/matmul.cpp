#include "ops/cpu/matmul.h"

#include <cblas.h>

#include "core/error.h"
#include "ops/cpu/elementwise.h"

namespace coil::cpu {

namespace {

// How BLAS can read one matrix of a batched view: layout flag and leading dim.
struct MatLayout {
  bool ok = false;
  bool trans = false;
  int64_t ld = 0;
};

MatLayout layout_of(const Tensor& t) {
  int64_t rows = t.size(1), cols = t.size(2), rs = t.stride(1), cs = t.stride(2);
  if ((cs == 1 || cols == 1) && rs >= std::max<int64_t>(cols, 1)) return {true, false, rs};
  if ((rs == 1 || rows == 1) && cs >= std::max<int64_t>(rows, 1)) return {true, true, cs};
  return {};
}

Tensor dense_copy(const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt, t.device());
  copy(t, out);
  return out;
}

template <class T>
void gemm_loop(const Tensor& a, const Tensor& b, const Tensor& out, double beta) {
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  MatLayout la = layout_of(a), lb = layout_of(b);
  const T* ap = a.data<T>();
  const T* bp = b.data<T>();
  T* op = out.data<T>();
  for (int64_t i = 0; i < B; ++i) {
    const T* ai = ap + i * a.stride(0);
    const T* bi = bp + i * b.stride(0);
    T* oi = op + i * M * N;
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(CblasRowMajor, la.trans ? CblasTrans : CblasNoTrans, lb.trans ? CblasTrans : CblasNoTrans, int(M),
                  int(N), int(K), 1.0f, ai, int(la.ld), bi, int(lb.ld), float(beta), oi, int(std::max<int64_t>(N, 1)));
    else
      cblas_dgemm(CblasRowMajor, la.trans ? CblasTrans : CblasNoTrans, lb.trans ? CblasTrans : CblasNoTrans, int(M),
                  int(N), int(K), 1.0, ai, int(la.ld), bi, int(lb.ld), beta, oi, int(std::max<int64_t>(N, 1)));
  }
}

}  // namespace

void bmm(const Tensor& a, const Tensor& b, const Tensor& out, double beta) {
  if (out.numel() == 0) return;
  if (a.size(2) == 0) {  // empty inner dim: the product is zero
    if (beta == 0.0) fill(out, 0.0);
    else if (beta != 1.0) throw Error("cpu bmm: empty inner dim with beta other than 0 or 1");
    return;
  }
  DType dt = a.dtype();
  DType work = dt == DType::f64 ? DType::f64 : DType::f32;
  Tensor aa = a, bb = b;
  if (dt != work || !layout_of(a).ok) aa = dense_copy(a, work);
  if (dt != work || !layout_of(b).ok) bb = dense_copy(b, work);
  Tensor oo = out.dtype() == work ? out : Tensor::empty(out.shape(), work, out.device());
  if (beta != 0.0 && !oo.same(out)) copy(out, oo);
  if (work == DType::f32)
    gemm_loop<float>(aa, bb, oo, beta);
  else
    gemm_loop<double>(aa, bb, oo, beta);
  if (!oo.same(out)) copy(oo, out);
}

}  // namespace coil::cpu
