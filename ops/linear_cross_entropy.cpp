#include "ops/linear_cross_entropy.h"

#include <algorithm>

#include "ops/common.h"
#include "ops/creation.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cpu/matmul.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/views.h"
#ifdef COIL_WITH_CUDA
#include "cuda/cross_entropy.h"
#include "cuda/gemm.h"
#endif

namespace coil {

namespace {

constexpr const char* kOp = "linear_cross_entropy";

// out (m, n) = a (m, k) @ b (k, n) + beta * out, on 2-D views (row- or
// column-major; transposed views go to BLAS as flags). No autograd.
void gemm(const Tensor& a, const Tensor& b, const Tensor& out, double beta) {
  auto as3 = [](const Tensor& t) {
    return t.as_strided({1, t.size(0), t.size(1)}, {0, t.stride(0), t.stride(1)}, t.offset());
  };
  if (a.is_cpu()) {
    cpu::bmm(as3(a), as3(b), as3(out), beta);
    return;
  }
#ifdef COIL_WITH_CUDA
  cuda::bmm(detail::strided(as3(a)), detail::strided(as3(b)), detail::strided(as3(out)), a.device().index,
            float(beta));
#else
  detail::no_cuda(kOp);
#endif
}

Tensor t2(const Tensor& x) { return x.as_strided({x.size(1), x.size(0)}, {x.stride(1), x.stride(0)}, x.offset()); }

// Loss rows (0 where ignored) and 0/1 row weights for rows [r0, r0 + m). When
// `grad`, the chunk's logits in `buf` are replaced by softmax - onehot.
void chunk_ce(const Tensor& buf, const Tensor& tgt, int64_t ignore_index, const Tensor& loss_rows,
              const Tensor& weight_rows, bool grad) {
  const int64_t m = buf.size(0), V = buf.size(1);
  if (buf.is_cpu()) {
    dispatch_float(buf.dtype(), kOp, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
        dispatch_index(tgt.dtype(), kOp, [&](auto itag) {
          using I = typename decltype(itag)::type;
          T* lp = loss_rows.data<T>();
          T* wp = weight_rows.data<T>();
          if (grad) {
            cpu::cross_entropy_fwd_grad<T, I>(m, V, buf.data<T>(), tgt.data<I>(), ignore_index, lp, wp);
            return;
          }
          Tensor lse = Tensor::empty({m}, buf.dtype());
          cpu::cross_entropy_fwd<T, I>(m, V, buf.data<T>(), tgt.data<I>(), ignore_index, lp, lse.data<T>());
          const I* tp = tgt.data<I>();
          for (int64_t i = 0; i < m; ++i) wp[i] = tp[i] != ignore_index ? T(1) : T(0);
        });
    });
    return;
  }
#ifdef COIL_WITH_CUDA
  const int dev = buf.device().index;
  if (grad) {
    cuda::cross_entropy_fwd_grad(buf.data_ptr(), buf.dtype(), m, V, tgt.data_ptr(), tgt.dtype(), ignore_index,
                                 loss_rows.data<float>(), weight_rows.data<float>(), dev);
  } else {
    Tensor lse = Tensor::empty({m}, DType::f32, buf.device());
    cuda::cross_entropy_fwd(buf.data_ptr(), buf.dtype(), m, V, tgt.data_ptr(), tgt.dtype(), ignore_index,
                            loss_rows.data<float>(), lse.data<float>(), weight_rows.data<float>(), dev);
  }
#else
  detail::no_cuda(kOp);
#endif
}

}  // namespace

int64_t default_lce_chunk_rows(int64_t V, DType compute_dtype) {
  // Measured on an H100 at M 65536, V 50280, bf16: 5,248-row chunks 30.9 ms,
  // 8,192 29.5 ms, 16,384 30.9 ms (coil bench lce); a power of two also
  // divides the usual B x 2048 rows evenly (no small last chunk).
  const int64_t budget = int64_t(1) << 30;
  const int64_t fit = std::max<int64_t>(1, budget / (std::max<int64_t>(V, 1) * int64_t(element_size(compute_dtype))));
  int64_t rows = 1;
  while (rows * 2 <= fit) rows *= 2;
  return rows;
}

Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            int64_t chunk_rows) {
  detail::check_defined(kOp, h, "h");
  detail::check_defined(kOp, weight, "weight");
  detail::check_defined(kOp, targets, "targets");
  detail::check_same_device(kOp, {h, weight, targets});
  COIL_CHECK(h.dim() == 2, kOp, ": h must be (M, d), got ", h.desc());
  COIL_CHECK(weight.dim() == 2 && weight.size(1) == h.size(1), kOp, ": weight must be (V, ", h.size(1),
             ") to match h ", h.desc(), ", got ", weight.desc());
  COIL_CHECK(targets.shape() == Shape({h.size(0)}), kOp, ": targets must be (", h.size(0), ") to match h ",
             h.desc(), ", got ", targets.desc());
  COIL_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, kOp,
             ": targets must be i32 or i64, got ", targets.desc());
  COIL_CHECK(is_floating(h.dtype()), kOp, ": h must be floating, got ", h.desc());
  COIL_CHECK(weight.dtype() == h.dtype() || (weight.dtype() == DType::f32 && h.dtype() != DType::f64), kOp,
             ": weight must have h's dtype or be f32 (with h not f64): h ", h.desc(), ", weight ", weight.desc());
  COIL_CHECK(h.is_cpu() || h.dtype() != DType::f64, kOp, ": f64 is CPU-only, got ", h.desc());
  const int64_t M = h.size(0), d = h.size(1), V = weight.size(0);
  COIL_CHECK(V > 0 && d > 0, kOp, ": empty class or feature dim: weight ", weight.desc());

  // The dtype of the logits chunk (the GEMM's output and the softmax's input)
  // and of the sums (dh, dweight, loss): the CPU widens everything to f32/f64
  // once, the GPU runs the GEMMs in h's dtype with f32 accumulation.
  const DType acc = h.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const DType cd = h.is_cpu() ? acc : h.dtype();
  if (chunk_rows <= 0) chunk_rows = default_lce_chunk_rows(V, cd);
  const bool need_h = detail::needs_grad_any({h}), need_w = detail::needs_grad_any({weight});
  const bool grad = need_h || need_w;

  Tensor loss, count, dh, dw;
  {
    NoGradGuard no_grad;
    Tensor hc = h.dtype() == cd ? contiguous(h.detach()) : to_dtype(h.detach(), cd);
    Tensor wc = weight.dtype() == cd ? contiguous(weight.detach()) : to_dtype(weight.detach(), cd);
    Tensor tgt = contiguous(targets.detach());
    Tensor loss_rows = Tensor::empty({M}, acc, h.device()), weight_rows = Tensor::empty({M}, acc, h.device());
    if (need_h) dh = Tensor::empty({M, d}, acc, h.device());
    if (need_w) dw = M == 0 ? zeros({V, d}, acc, h.device()) : Tensor::empty({V, d}, acc, h.device());
    // One buffer for every chunk: this (rows, V) block is the only place the
    // logits ever exist.
    Tensor buf_all = Tensor::empty({std::min(chunk_rows, std::max<int64_t>(M, 1)), V}, cd, h.device());
    for (int64_t r0 = 0; r0 < M; r0 += chunk_rows) {
      const int64_t m = std::min(chunk_rows, M - r0);
      Tensor buf = buf_all.narrow(0, 0, m), hm = hc.narrow(0, r0, m);
      gemm(hm, t2(wc), buf, 0.0);  // logits = h W^T
      chunk_ce(buf, tgt.narrow(0, r0, m), ignore_index, loss_rows.narrow(0, r0, m), weight_rows.narrow(0, r0, m),
               grad);
      // buf now holds G = softmax - onehot (unscaled: 1/count and dloss are
      // applied in backward, so count never needs the host here).
      if (need_h) gemm(buf, wc, dh.narrow(0, r0, m), 0.0);          // dh rows = G W
      if (need_w) gemm(t2(buf), hm, dw, r0 == 0 ? 0.0 : 1.0);       // dW += G^T h, in order
    }
    count = clamp_min(sum(weight_rows), 1.0);
    loss = div(sum(loss_rows), count);
  }

  // Why the gradients are computed in the forward: the loss is a scalar, so
  // its backward is dloss times a fixed (M, d) and (V, d) pair. Keeping that
  // pair (f32, a few hundred MiB at most) costs less than recomputing every
  // logits chunk in backward (a third more head FLOPs) and needs neither h
  // nor the weight saved.
  const DType hdt = h.dtype(), wdt = weight.dtype();
  detail::record_op(kOp, {h, weight}, {loss},
                    [dh, dw, count, hdt, wdt](const std::vector<Tensor>& g, const std::vector<bool>& need) {
                      Tensor scale = div(g[0], count), gh, gw;
                      if (need[0]) gh = to_dtype(mul(dh, scale), hdt);
                      if (need[1]) gw = to_dtype(mul(dw, scale), wdt);
                      return std::vector<Tensor>{gh, gw};
                    });
  return loss;
}

}  // namespace coil
