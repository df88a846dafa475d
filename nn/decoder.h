// Decoder: fast recurrent generation for a MambaLM, batch fixed at
// construction. The prompt runs through MambaLM::prefill (the parallel
// scan); each new token is one step of fused per-layer kernels
// (ops/mamba_step.h: conv step, SSM step with dt_proj fused in) between the
// GEMMs, with every buffer the step touches owned here: input ids, states,
// logits. On CUDA the whole step (embedding, all layers, norm_f, LM head and,
// when greedy, the argmax that writes the next ids) is captured once into a
// CUDA graph and replayed per token, so decoding launches one graph per
// token and never waits on the host.
//
// The matmul weights are copied once into the compute dtype (the forward
// casts them on every call); the conv weights, A = -exp(A_log), D and the dt
// bias are kept in f32 (f64 for f64 models) as the kernels read them. The
// model must outlive the decoder, and its weights must not change while the
// decoder lives (it holds copies, or aliases where the dtype already fits).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/cuda_graph.h"
#include "nn/mamba_lm.h"

namespace coil::nn {

struct DecoderOptions {
  bool greedy = false;      // the step also writes argmax(logits) into tokens() (the next input)
  int64_t vocab_limit = 0;  // the argmax looks at ids < vocab_limit (0: the config's vocab_size)
  bool cuda_graph = true;   // on CUDA: capture the step once and replay it
  // At batch <= 8 (cuda::kGemvMaxRows): the projections and the LM head
  // through GEMV kernels instead of cuBLASLt, with each block's add + norm
  // and the conv step fused into in_proj's kernel and norm_f into the LM
  // head's (decode_norm_linear): 4 kernels per layer. Larger batches run
  // the one-kernel add + norm (decode_add_rms_norm) and the projections as
  // `mma` below says.
  // (x_proj and out_proj as GEMV row tiles of 8 next to cuBLASLt's in_proj
  // and LM head measured slower at batch 64 on an H100: 2.01 vs 1.30 ms per
  // step, so above batch 8 every projection is cuBLASLt.) Off: cuBLASLt at
  // every batch (the comparison in the bench).
  // The same math either way on the CPU (the ops one by one).
  bool gemv = true;
  // Above batch 8 with bf16/f16 compute: in_proj, x_proj and out_proj
  // through the tensor-core kernel of decode_linear_mma (weights staged before
  // the PDL wait, no cuBLASLt kernel breaking the chain of PDL launches)
  // instead of cuBLASLt; the LM head stays cuBLASLt. COIL_DECODE_MMA=1 or 0
  // in the environment overrides it (the A/B comparison). Off by default
  // until its speed against cuBLASLt is measured (docs/perf.md, decode v5).
  bool mma = false;
  // Above batch 8: the conv step and x_proj in one cluster kernel
  // (decode_conv_xproj) instead of the conv kernel and a projection.
  // COIL_DECODE_CONV_XPROJ=1 or 0 overrides it. Off by default until
  // measured (docs/perf.md, decode v5).
  bool conv_xproj = false;
  // On CUDA: the decode kernels launch with programmatic dependent launch
  // (cuda/pdl.cuh), hiding most of the launch gap between them. Falls back
  // to plain launches when the graph capture refuses it, and off when the
  // environment has COIL_DECODE_PDL=0.
  bool pdl = true;
};

class Decoder {
 public:
  Decoder(const MambaLM& model, int64_t batch, const DecoderOptions& opt = {});

  // Why the fused step cannot run this model on `device` ("" when it can):
  // the non-selective ablations, f64 on CUDA.
  static std::string unsupported(const MambaConfig& cfg, Device device);

  // ids (batch, L), L >= 1: runs the prompt, loads the states, and returns
  // logits() (batch, padded_vocab) of the last position; greedy: tokens()
  // is its argmax.
  const Tensor& prefill(const Tensor& ids);
  // The next input ids (batch) or (batch, 1), any device, i32/i64.
  void set_tokens(const Tensor& ids);
  // One token: reads tokens(), advances the states, writes logits() (and,
  // greedy, tokens()). Asynchronous on CUDA.
  void step();

  const Tensor& logits() const { return logits_; }  // (batch, padded_vocab), compute dtype
  const Tensor& tokens() const { return tokens_; }  // (batch) i64
  int64_t batch() const { return batch_; }
  bool graphed() const { return graph_.ready(); }
  bool pdl() const { return pdl_; }
  static int64_t gemv_max_batch();  // the largest batch DecoderOptions::gemv changes  // PDL launches in effect (see DecoderOptions::pdl)
  // What one step reads: weights (the copies above, the embedding rows and
  // the LM head) and the states (read once and written once per step).
  size_t weight_bytes() const;
  size_t state_bytes() const;

 private:
  struct Layer {
    Tensor norm_w;
    Tensor w_in, b_in, w_x, w_dt, w_out, b_out;  // compute dtype
    Tensor conv_w, conv_b, A, D, dt_bias;        // f32 (f64)
    Tensor conv_state, ssm_state;                // (B, Di, K-1) compute dtype; (B, Di, N) f32 (f64)
    double eps = 1e-5;
  };
  void run_step();  // the step as ops (eager; what the graph captures)
  // x_proj/out_proj: the GEMV into `slot` (gemv_proj_) or cuBLASLt.
  Tensor project(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& slot) const;
  // The step's intermediates live in fixed buffers (the slots below), so a
  // captured step allocates and frees nothing between its kernels (graph
  // allocation nodes would sit between the PDL launches and serialise
  // them). The first step binds each slot to the tensor its op allocated;
  // later steps pass it as the op's `out`.
  static void bind(Tensor& slot, const Tensor& result);

  const MambaLM& model_;
  MambaConfig cfg_;
  int64_t batch_;
  DecoderOptions opt_;
  std::vector<Layer> layers_;
  Tensor norm_f_w_, head_w_;
  double norm_f_eps_ = 1e-5;
  Tensor tokens_, logits_;
  Tensor xz_, xc_, xdbl_, y_, hid_, normed_, res_[2];  // the slots (shared by the layers)
  bool gemv_ = false;       // the fused GEMV path applies at this batch
  bool gemv_proj_ = false;  // x_proj, out_proj through the GEMV kernel
  bool mma_proj_ = false;   // the projections through decode_linear_mma (batch > 8)
  bool conv_xproj_ = false;  // conv step + x_proj through decode_conv_xproj (batch > 8)
  static constexpr int64_t kGemvProjMaxBatch = 8;
  bool pdl_ = false;
  cuda_ctx::Graph graph_;
};

}  // namespace coil::nn
