#include "cuda/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <mutex>

#include "core/cuda_context.h"

namespace coil::cuda {

namespace {

void check_lt(cublasStatus_t s, const char* what) {
  COIL_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt error ", int(s), " in ", what);
}

struct Lt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;
};

Lt& lt_for(int device) {
  static std::mutex mu;
  static Lt per[64];
  std::lock_guard<std::mutex> lock(mu);
  Lt& l = per[device];
  if (!l.handle) {
    check_lt(cublasLtCreate(&l.handle), "cublasLtCreate");
    l.workspace = cuda_ctx::alloc(l.workspace_bytes, device);
  }
  return l;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: fail(detail::cat("matmul on CUDA: unsupported dtype ", dtype_name(t)));
  }
}

// A row-major (rows x cols) view is, to column-major cuBLAS, its transpose.
// Returns the layout of the column-major matrix cuBLAS sees and whether it
// must be transposed to act as the row-major operand's transpose.
struct ColView {
  uint64_t rows, cols;
  int64_t ld;
  bool trans;  // apply op T to get the transpose of the row-major operand
};

ColView col_view(const Strided& t) {
  int64_t r = t.shape[1], c = t.shape[2], rs = t.strides[1], cs = t.strides[2];
  bool row_major = (cs == 1 || c == 1) && rs >= (c > 1 ? c : 1);
  if (row_major) return {uint64_t(c), uint64_t(r), rs < 1 ? 1 : rs, false};  // col-major c x r = X^T
  return {uint64_t(r), uint64_t(c), cs < 1 ? 1 : cs, true};                   // col-major r x c = X
}

struct Layout {
  cublasLtMatrixLayout_t h = nullptr;
  Layout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld, int batch, int64_t batch_stride) {
    check_lt(cublasLtMatrixLayoutCreate(&h, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
    check_lt(cublasLtMatrixLayoutSetAttribute(h, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)),
             "layout batch");
    check_lt(cublasLtMatrixLayoutSetAttribute(h, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride,
                                              sizeof(batch_stride)),
             "layout batch stride");
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(h); }
};

}  // namespace

void bmm(const Strided& a, const Strided& b, const Strided& out, int device, float beta_value) {
  COIL_CHECK(gemm_layout_ok(a) && gemm_layout_ok(b), "cuda bmm: operands need row- or column-major matrices");
  COIL_CHECK(a.dtype == b.dtype, "cuda bmm: operand dtypes differ: ", dtype_name(a.dtype), " and ",
             dtype_name(b.dtype));
  const bool half_in = a.dtype == DType::bf16 || a.dtype == DType::f16;
  COIL_CHECK(out.dtype == a.dtype || (half_in && out.dtype == DType::f32), "cuda bmm: a ", dtype_name(out.dtype),
             " output for ", dtype_name(a.dtype), " operands");
  const int batch = int(a.shape[0]);
  const int64_t M = a.shape[1], K = a.shape[2], N = b.shape[2];
  if (M == 0 || N == 0 || batch == 0) return;
  COIL_CHECK(K > 0, "cuda bmm: empty inner dimension");
  Lt& lt = lt_for(device);
  cudaDataType_t type = cuda_type(a.dtype);
  bool f64 = a.dtype == DType::f64;
  cublasComputeType_t compute = f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
  cudaDataType_t scale = f64 ? CUDA_R_64F : CUDA_R_32F;

  // Row-major out = a @ b  <=>  column-major out^T = b^T @ a^T.
  ColView vb = col_view(b), va = col_view(a);
  cublasOperation_t opA = vb.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opB = va.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  Layout la(type, vb.rows, vb.cols, vb.ld, batch, b.strides[0]);
  Layout lb(type, va.rows, va.cols, va.ld, batch, a.strides[0]);
  Layout lc(cuda_type(out.dtype), uint64_t(N), uint64_t(M), N, batch, M * N);

  cublasLtMatmulDesc_t desc;
  check_lt(cublasLtMatmulDescCreate(&desc, compute, scale), "cublasLtMatmulDescCreate");
  check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)), "transa");
  check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)), "transb");

  cublasLtMatmulPreference_t pref;
  check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference");
  check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt.workspace_bytes,
                                                sizeof(lt.workspace_bytes)),
           "preference workspace");
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  check_lt(cublasLtMatmulAlgoGetHeuristic(lt.handle, desc, la.h, lb.h, lc.h, lc.h, pref, 1, &heur, &found),
           "heuristic");
  COIL_CHECK(found > 0, "cuBLASLt found no algorithm for a ", M, "x", K, " @ ", K, "x", N, " ", dtype_name(a.dtype),
             " product");
  double one_d = 1.0, beta_d = beta_value;
  float one_f = 1.0f, beta_f = beta_value;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = f64 ? static_cast<const void*>(&beta_d) : &beta_f;
  check_lt(cublasLtMatmul(lt.handle, desc, alpha, b.data, la.h, a.data, lb.h, beta, out.data, lc.h, out.data, lc.h,
                          &heur.algo, lt.workspace, lt.workspace_bytes,
                          static_cast<cudaStream_t>(cuda_ctx::stream(device))),
           "cublasLtMatmul");
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatmulDescDestroy(desc);
}

}  // namespace coil::cuda
