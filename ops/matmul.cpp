#include "ops/matmul.h"

#include <algorithm>
#include <cstdlib>

#include "ops/common.h"
#include "ops/creation.h"
#include "ops/cpu/matmul.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/gemm.h"
#endif

namespace coil {

using detail::record_op;
using detail::save;

namespace {

// out (B,M,N) = a (B,M,K) @ b (B,K,N) + beta * out on 3-D views, out
// contiguous; no autograd.
void bmm_into(const Tensor& a, const Tensor& b, const Tensor& out, double beta) {
  if (a.is_cpu()) {
    cpu::bmm(a, b, out, beta);
  } else {
#ifdef COIL_WITH_CUDA
    Tensor aa = cuda::gemm_layout_ok(detail::strided(a)) ? a : contiguous(a);
    Tensor bb = cuda::gemm_layout_ok(detail::strided(b)) ? b : contiguous(b);
    cuda::bmm(detail::strided(aa), detail::strided(bb), detail::strided(out), a.device().index, float(beta));
#else
    detail::no_cuda("matmul");
#endif
  }
}

Tensor bmm_raw(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty({a.size(0), a.size(1), b.size(2)}, a.dtype(), a.device());
  bmm_into(a, b, out, 0.0);
  return out;
}

// The last two dims swapped, as a view.
Tensor t_last(const Tensor& t) { return t.dim() < 2 ? t : t.transpose(-1, -2); }

// The largest (nb, M, N) partial-products buffer bmm_sum's batched path may
// allocate; COIL_BMM_SUM_BATCHED_MB overrides it (an A/B switch for benchmarks).
// 256 MiB: mamba-130m's out_proj weight gradient at B32 (151 MiB of f32
// parts) is faster batched (13.2 against 15.4 ms a step on an H100: 32
// GEMMs of 768 x 1536 outputs are about one wave of tiles each), the
// 302 MiB of a whole in_proj was not (25.1 against 24.5 ms).
int64_t bmm_sum_batched_limit() {
  static const int64_t limit = [] {
    const char* e = std::getenv("COIL_BMM_SUM_BATCHED_MB");
    return (e && *e ? std::max<int64_t>(0, std::atoll(e)) : int64_t(256)) << 20;
  }();
  return limit;
}

// sum over i of x[i] @ y[i] for 3-D views x (B,M,K), y (B,K,N), as one (M, N)
// tensor of dtype dt, summed in f32 (f64 for f64) and rounded once, in a
// fixed order (deterministic): the gradient of a weight broadcast over a
// batch. A (B, M, N) f32 product up to bmm_sum_batched_limit() is one
// batched GEMM and one column reduction; a larger one is one GEMM per batch
// entry accumulating in place (beta = 1), with no temporary.
Tensor bmm_sum(const Tensor& x, const Tensor& y, DType dt) {
  const int64_t nb = x.size(0), M = x.size(1), K = x.size(2), N = y.size(2);
  const DType acc = dt == DType::f64 ? DType::f64 : DType::f32;
  if (K == 0 || M == 0 || N == 0 || nb == 0) return zeros({M, N}, dt, x.device());
  if (nb > 1 && nb * M * N * int64_t(element_size(acc)) <= bmm_sum_batched_limit()) {
    Tensor parts = Tensor::empty({nb, M, N}, acc, x.device());
    bmm_into(x, y, parts, 0.0);
    return to_dtype(sum(parts, {0}), dt);
  }
  Tensor out = Tensor::empty({1, M, N}, acc, x.device());
  for (int64_t i = 0; i < nb; ++i) bmm_into(x.narrow(0, i, 1), y.narrow(0, i, 1), out, i == 0 ? 0.0 : 1.0);
  return to_dtype(out.as_strided({M, N}, {N, 1}, 0), dt);
}

Tensor as3d(const Tensor& t, int64_t batch) {
  // Leading dims (already broadcast) collapse into one batch dim when the
  // strides allow it; otherwise a copy.
  int64_t r = t.dim();
  if (r == 2) return t.as_strided({1, t.size(0), t.size(1)}, {0, t.stride(0), t.stride(1)}, t.offset());
  bool collapsible = true;
  for (int64_t i = 0; i + 3 < r; ++i)
    if (t.size(i) != 1 && t.stride(i) != t.stride(i + 1) * t.size(i + 1)) collapsible = false;
  Tensor u = collapsible ? t : contiguous(t.detach());
  return u.as_strided({batch, u.size(r - 2), u.size(r - 1)}, {u.stride(r - 3), u.stride(r - 2), u.stride(r - 1)},
                      u.offset());
}

// True when the last two dims of t are column-major: t is a transposed view
// of a row-major matrix (W^T in linear, h^T in Mamba's in_proj, y^T before
// out_proj). Its gradient is then computed as the transpose of the swapped
// product (dX^T = B G^T instead of dX = G B^T: same GEMM cost) and returned
// as a transposed view, so the gradient has t's layout: the transpose's own
// backward then hands a contiguous tensor up the graph, and the reshape or
// elementwise op behind it needs no copy.
bool col_major(const Tensor& t) {
  const int64_t r = t.size(-2), c = t.size(-1);
  return r > 1 && c > 1 && t.stride(-2) == 1 && t.stride(-1) >= r;
}

// Whether a (..., M, K) @ b (K, N) folds a's leading dims into M (one GEMM).
// A non-contiguous a (a transposed (B, L, D) view, as before out_proj) would
// need a copy to fold; with enough rows per matrix it runs instead as one
// batched GEMM against a broadcast b, reading a where it is.
bool fold(const Tensor& a) { return a.dim() == 2 || a.is_contiguous() || a.size(-2) < 64; }

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const char* op = "matmul";
  detail::check_defined(op, a, "a");
  detail::check_defined(op, b, "b");
  detail::check_same_device(op, {a, b});
  detail::check_same_dtype(op, {a, b});
  COIL_CHECK(is_floating(a.dtype()), op, ": expected floating tensors, got ", a.desc());
  COIL_CHECK(a.dim() >= 2 && b.dim() >= 2, op, ": operands must have rank >= 2, got ", a.desc(), " and ", b.desc());
  COIL_CHECK(a.size(-1) == b.size(-2), op, ": inner dims differ: ", a.desc(), " @ ", b.desc());
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);

  Tensor out;
  if (b.dim() == 2 && fold(a)) {
    // Fold a's leading dims into M: one large GEMM.
    Shape out_shape(a.shape().begin(), a.shape().end() - 1);
    out_shape.push_back(N);
    int64_t rows = a.numel() / std::max<int64_t>(K, 1);
    Tensor a2 = a.dim() == 2 ? a.detach() : (a.is_contiguous() ? a.detach() : contiguous(a.detach()));
    if (a.dim() != 2) a2 = a2.as_strided({rows, K}, {K, 1}, a2.offset());
    if (K == 0) a2 = a2.as_strided({rows, K}, {1, 1}, a2.offset());
    Tensor o = bmm_raw(as3d(a2, 1), as3d(b.detach(), 1));
    out = o.as_strided(out_shape, contiguous_strides(out_shape), 0);
  } else {
    Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
    Shape batch = broadcast_shapes(ba, bb);
    Shape sa = batch, sb = batch;
    sa.insert(sa.end(), {M, K});
    sb.insert(sb.end(), {K, N});
    int64_t nb = shape_numel(batch);
    Tensor o = bmm_raw(as3d(broadcast_view(a.detach(), sa), nb), as3d(broadcast_view(b.detach(), sb), nb));
    Shape out_shape = batch;
    out_shape.insert(out_shape.end(), {M, N});
    out = o.as_strided(out_shape, contiguous_strides(out_shape), 0);
  }

  Tensor as = save(a), bs = save(b);
  record_op(op, {a, b}, {out}, [as, bs](const std::vector<Tensor>& g, const std::vector<bool>& need) {
    Tensor ga, gb;
    if (need[0] && as.dim() == 2 && bs.dim() > 2) {
      // a weight broadcast over b's batch: dA = sum_i G_i B_i^T, accumulated
      Shape sb(g[0].shape().begin(), g[0].shape().end() - 2);
      const int64_t nb = shape_numel(sb);
      sb.insert(sb.end(), {bs.size(-2), bs.size(-1)});
      ga = bmm_sum(as3d(g[0].detach(), nb), t_last(as3d(broadcast_view(bs, sb), nb)), as.dtype());
    } else if (need[0]) {
      ga = col_major(as) ? transpose(matmul(bs, transpose(g[0], -1, -2)), -1, -2)
                         : matmul(g[0], transpose(bs, -1, -2));
      ga = sum_to(ga, as.shape());
    }
    if (need[1]) {
      if (bs.dim() == 2 && fold(as)) {  // folded: dB = A_flat^T @ G_flat
        Tensor a2 = reshape(as, {-1, as.size(-1)}), g2 = reshape(g[0], {-1, g[0].size(-1)});
        gb = col_major(bs) ? transpose(matmul(transpose(g2, 0, 1), a2), 0, 1) : matmul(transpose(a2, 0, 1), g2);
      } else if (bs.dim() == 2) {  // batched against a broadcast b: dB = sum_i A_i^T G_i, a read in place
        const int64_t nb = shape_numel(Shape(as.shape().begin(), as.shape().end() - 2));
        Tensor a3 = as3d(as, nb), g3 = as3d(g[0].detach(), nb);
        gb = col_major(bs) ? transpose(bmm_sum(t_last(g3), a3, bs.dtype()), 0, 1)
                           : bmm_sum(t_last(a3), g3, bs.dtype());
      } else {
        gb = col_major(bs) ? transpose(matmul(transpose(g[0], -1, -2), as), -1, -2)
                           : matmul(transpose(as, -1, -2), g[0]);
        gb = sum_to(gb, bs.shape());
      }
    }
    return std::vector<Tensor>{ga, gb};
  });
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  COIL_CHECK(w.dim() == 2, "linear: weight must be 2-D (out, in), got ", w.desc());
  COIL_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", x.desc(), " does not match weight ",
             w.desc());
  Tensor y = matmul(x.dim() == 1 ? unsqueeze(x, 0) : x, transpose(w, 0, 1));
  if (x.dim() == 1) y = squeeze(y, 0);
  return bias.defined() ? add(y, bias) : y;
}

void linear_into(const Tensor& x, const Tensor& w, const Tensor& out) {
  const char* op = "linear_into";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, w, "w");
  detail::check_defined(op, out, "out");
  detail::check_rank(op, x, "x", 2);
  detail::check_rank(op, w, "w", 2);
  detail::check_same_device(op, {x, w, out});
  detail::check_same_dtype(op, {x, w, out});
  COIL_CHECK(is_floating(x.dtype()), op, ": expected floating tensors, got ", x.desc());
  COIL_CHECK(w.size(1) == x.size(1), op, ": w ", w.desc(), " does not match x ", x.desc());
  detail::check_shape(op, out, "out", {x.size(0), w.size(0)});
  COIL_CHECK(out.is_contiguous(), op, ": out must be contiguous, got strides of ", out.desc());
  Tensor o = out.detach();
  const int64_t m = x.size(0), n = w.size(0);
  bmm_into(as3d(x.detach(), 1), as3d(t_last(w.detach()), 1), o.as_strided({1, m, n}, {m * n, n, 1}, o.offset()), 0.0);
}

}  // namespace coil
