// Fused log-softmax + negative log-likelihood (CPU kernels).
//
// logits, dlogits: (n, v); targets, loss, lse, dloss: (n).
//   lse[i]  = log(sum_j exp(logits[i,j]))      (max-shifted, summed in double)
//   loss[i] = lse[i] - logits[i, targets[i]]
// Rows whose target equals ignore_index get loss 0 and a zero gradient. Any
// other target outside [0, v) throws coil::Error naming the row,
// the value and v, before anything is written.
// T in {float, double}; I (target type) in {int32_t, int64_t}.
#pragma once
#include <cstdint>

namespace coil::cpu {

template <class T, class I>
void cross_entropy_fwd(int64_t n, int64_t v, const T* logits, const I* targets,
                       int64_t ignore_index, T* loss, T* lse);

// dlogits[i,j] = dloss[i] * (softmax(logits[i])_j - [j == targets[i]]), using
// the forward's lse; zero rows for ignored targets.
template <class T, class I>
void cross_entropy_bwd(int64_t n, int64_t v, const T* logits, const I* targets,
                       int64_t ignore_index, const T* lse, const T* dloss, T* dlogits);

// The forward and the gradient in one pass over a chunk of rows, for a fused
// LM head whose logits live only in a chunk buffer: writes loss[i] (0 when
// ignored) and weight[i] (1, or 0 when ignored), then overwrites logits[i,j]
// in place with softmax(logits[i])_j - [j == targets[i]] (zeros on ignored
// rows). The caller applies dloss / count afterwards.
template <class T, class I>
void cross_entropy_fwd_grad(int64_t n, int64_t v, T* logits, const I* targets, int64_t ignore_index, T* loss,
                            T* weight);

}  // namespace coil::cpu
