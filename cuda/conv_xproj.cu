// Host launcher of the decode step's conv + x_proj cluster kernel
// (cuda/conv_xproj_kernel.cuh).
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/conv_xproj_kernel.cuh"
#include "cuda/mamba_step.h"
#include "cuda/mamba_step_common.cuh"
#include "cuda/pdl.cuh"

namespace coil::cuda {

using namespace conv_xproj_impl;

bool conv_xproj_supported(const ConvXprojArgs& a) {
  const bool act = a.dtype == DType::f32 || a.dtype == DType::bf16 || a.dtype == DType::f16;
  return act && a.batch >= 1 && (a.batch + kRows - 1) / kRows <= 65535 && a.dim >= 8 && a.dim % 8 == 0 &&
         a.width >= 1 && a.width <= kMaxWidth && a.out_dim >= 1 && a.x && a.conv_state && a.conv_w && a.w_x &&
         a.conv_out && a.x_dbl && aligned16(a.w_x) && smem_bytes(a) <= kMaxSmem;
}

void conv_xproj(const ConvXprojArgs& a, int device) {
  COIL_CHECK(conv_xproj_supported(a), "conv_xproj: unsupported sizes or layout (see conv_xproj_supported)");
  const size_t smem = smem_bytes(a);
  const int S = int(slice_of(a.dim));
  dispatch_act(a.dtype, "conv_xproj", [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto kernel = conv_xproj_impl::conv_xproj_kernel<T>;
    if (smem > 48 * 1024)
      COIL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(kCluster), unsigned((a.batch + kRows - 1) / kRows));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream_of(device);
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = kCluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = decode_pdl_enabled() ? 2 : 1;
    COIL_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, a, S));
  });
}

}  // namespace coil::cuda
