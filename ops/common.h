// Shared plumbing for ops/: argument checks, recording history, and the
// CPU/CUDA split. Every op follows the same shape:
//   check arguments -> allocate outputs -> cpu:: or cuda:: kernel -> record backward.
#pragma once
#include <initializer_list>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/tensor.h"
#ifdef COIL_WITH_CUDA
#include "cuda/strided.h"
#endif

namespace coil::detail {

// Records `fn` as the backward of `outputs` (see autograd/node.h), making sure
// the engine knows how to add and create gradients.
void record_op(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn,
               bool materialize_grads = true);  // see Node::materialize_grads

void check_defined(const char* op, const Tensor& t, const char* name);
void check_same_device(const char* op, std::initializer_list<Tensor> ts);
void check_same_dtype(const char* op, std::initializer_list<Tensor> ts);
void check_rank(const char* op, const Tensor& t, const char* name, int64_t rank);
void check_shape(const char* op, const Tensor& t, const char* name, const Shape& expect);

#ifdef COIL_WITH_CUDA
// The kernel-side description of a tensor (cuda/ never sees Tensor).
cuda::Strided strided(const Tensor& t);
#endif

// For ops whose CUDA kernel is missing from this build.
[[noreturn]] void no_cuda(const char* op);

// True when grad mode is on and some input requires grad (so a forward
// must keep what its backward needs).
bool needs_grad_any(const std::vector<Tensor>& inputs);

// Saved tensors: a detached alias, or undefined when not defined.
inline Tensor save(const Tensor& t) { return t.defined() ? t.detach() : Tensor(); }

}  // namespace coil::detail

namespace coil::detail {

// The CPU backend runs fused kernels in f64 when given f64 and in f32
// otherwise (bf16/f16 storage is widened). Returns a contiguous, detached
// tensor of that type, or undefined for undefined.
DType cpu_compute_dtype(const Tensor& t);
Tensor as_compute(const Tensor& t, DType dt);

template <class T> const T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
template <class T> T* mut_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

// Dense: the elements fill exactly numel() consecutive slots in some order of
// the dims (a permutation of a contiguous layout, e.g. a transposed GEMM output).
bool is_dense(const Tensor& t);
// A new tensor of t's shape and dtype with t's strides when t is dense (so a
// gradient can share its input's layout and go back through views as a view),
// else contiguous.
Tensor empty_like_dense(const Tensor& t);

}  // namespace coil::detail
