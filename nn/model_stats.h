// Sizes and costs of a MambaLM computed from its config alone (no tensors):
// the exact parameter count, FLOPs per token for MFU, and the training-memory
// estimate `coil train --dry-run` prints.
#pragma once
#include <cstdint>
#include <string>

#include "nn/mamba_config.h"

namespace coil::nn {

// Distinct parameters of MambaLM(cfg) (a tied head counted once); equals
// MambaLM(cfg).num_parameters(). 130M: 129,135,360.
int64_t count_parameters(const MambaConfig& cfg);
// Elements of the weights that go through a matmul: in_proj, x_proj,
// dt_proj.weight, out_proj per layer, plus the LM head once (the embedding
// lookup is not a matmul; a tied head is one tensor).
int64_t count_matmul_parameters(const MambaConfig& cfg);

// Training FLOPs per token (forward + backward):
//   matmul = 6 * count_matmul_parameters
//   scan   = 3 * n_layer * (9 * d_inner * d_state + 2 * d_inner)
//            (forward 9·D·N per token plus D-skip and z-gate, mamba_ssm
//            issue #110's count; backward taken as twice the forward)
//   total  = matmul + scan          (what MFU divides by)
//   conv   = 6 * n_layer * d_inner * d_conv  (reported, not in total)
struct FlopsPerToken {
  double matmul = 0;
  double scan = 0;
  double conv = 0;
  double total = 0;
};
FlopsPerToken flops_per_token(const MambaConfig& cfg);

// Training-memory estimate for one rank, in bytes. With P parameters, c the
// compute-dtype size, r the residual size (4 with residual_in_fp32, else c),
// Di = d_inner, X = x_proj rows, V = padded vocab:
//   params      = 4 P (f32 masters; 8 for f64)
//   grads       = params
//   optimizer   = 2 * 4 P (AdamW m and v, f32)
//   weight_copies = c * matmul parameters when c differs from the master
//                   dtype (the casts the matmuls save for backward)
//   per token, saved for backward (what nn/mamba.cpp keeps alive):
//     each layer: r·d + 4 (norm residual, rstd) + c·d (norm output, in_proj
//                 input) + c·2Di (xz: conv input, z) + c·Di (conv output:
//                 scan and x_proj input) + c·X (x_dbl: dt, B, C)
//                 + c·Di (delta) + c·Di (scan output, out_proj input)
//     head:       r·d + 4 (norm_f) + 4·d (the head's input gradient, f32,
//                 computed in the fused loss's forward and held until
//                 backward; the loss keeps neither its input nor logits)
//                 + 8 (loss and weight per row, f32); the (tokens, V)
//                 logits never exist (ops/linear_cross_entropy)
//   loss_buffer = c · chunk_rows · V (the one logits chunk) + 4 · V · d (the
//                 head weight's f32 gradient, held like the input's)
//   activations = per_token * tokens + loss_buffer
//                 (tokens = micro-batch × sequence length)
//   total       = params + grads + optimizer + weight_copies + activations
// Allocator slack and kernel workspaces are not included.
struct MemoryEstimate {
  int64_t params_bytes = 0;
  int64_t grads_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t weight_copies_bytes = 0;
  int64_t activation_bytes_per_token = 0;
  int64_t tokens = 0;
  int64_t loss_buffer_bytes = 0;
  int64_t activation_bytes = 0;
  int64_t total_bytes = 0;
  // Several lines: each term in GiB.
  std::string str() const;
};
MemoryEstimate estimate_training_memory(const MambaConfig& cfg, int64_t tokens_per_micro_batch);

}  // namespace coil::nn
