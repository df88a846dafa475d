#include "nn/decoder.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/mamba_step.h"
#include "ops/matmul.h"
#include "ops/rms_norm.h"
#include "ops/views.h"

namespace coil::nn {

namespace {

// An A/B switch from the environment: unset or empty -> `fallback`, "0" ->
// off, anything else -> on.
bool env_switch(const char* name, bool fallback) {
  const char* e = std::getenv(name);
  if (!e || !*e) return fallback;
  return std::string(e) != "0";
}

Tensor owned(const Tensor& t, DType dt) {
  // A contiguous copy (or the tensor itself when it already fits) with no
  // history: the step must not re-cast or re-layout anything per token.
  return t.defined() ? contiguous(to_dtype(t.detach(), dt)).detach() : Tensor();
}

}  // namespace

std::string Decoder::unsupported(const MambaConfig& cfg, Device device) {
  if (!cfg.selective_delta || !cfg.selective_B || !cfg.selective_C)
    return "the fused decode step needs selective delta, B and C (the non-selective ablations use MambaLM::step)";
  if (device.is_cuda() && (cfg.compute_dtype == DType::f64 || cfg.param_dtype == DType::f64))
    return "the fused decode step on CUDA has no f64 kernels";
  return "";
}

Decoder::Decoder(const MambaLM& model, int64_t batch, const DecoderOptions& opt)
    : model_(model), cfg_(model.config()), batch_(batch), opt_(opt) {
  const Device dev = model.backbone->embedding->weight.device();
  const std::string why = unsupported(cfg_, dev);
  COIL_CHECK(why.empty(), "Decoder: ", why);
  COIL_CHECK(batch >= 1, "Decoder: batch must be >= 1, got ", batch);
  const int64_t pv = cfg_.padded_vocab_size();
  if (opt_.vocab_limit == 0) opt_.vocab_limit = cfg_.vocab_size;
  COIL_CHECK(opt_.vocab_limit >= 1 && opt_.vocab_limit <= pv, "Decoder: vocab_limit must be in [1, ", pv, "], got ",
             opt_.vocab_limit);
  NoGradGuard no_grad;
  const DType c = cfg_.compute_dtype;
  const DType small = cfg_.param_dtype == DType::f64 ? DType::f64 : DType::f32;
  const int64_t di = cfg_.d_inner(), k = cfg_.d_conv, n = cfg_.d_state;
  for (const auto& block : *model.backbone->layers) {
    const Mamba& m = *block->mixer;
    Layer l;
    l.norm_w = block->norm->weight.detach();
    l.eps = block->norm->eps();
    l.w_in = owned(m.in_proj->weight, c);
    l.b_in = owned(m.in_proj->bias, c);
    l.w_x = owned(m.x_proj->weight, c);
    l.w_dt = owned(m.dt_proj->weight, c);
    l.w_out = owned(m.out_proj->weight, c);
    l.b_out = owned(m.out_proj->bias, c);
    l.conv_w = owned(reshape(m.conv1d->weight.detach(), {di, k}), small);
    l.conv_b = owned(m.conv1d->bias, small);
    l.A = owned(m.A(), small);
    l.D = owned(m.D, small);
    l.dt_bias = owned(m.dt_proj->bias, small);
    l.conv_state = zeros({batch, di, k - 1}, c, dev);
    l.ssm_state = zeros({batch, di, n}, small, dev);
    layers_.push_back(std::move(l));
  }
  norm_f_w_ = model.backbone->norm_f->weight.detach();
  norm_f_eps_ = model.backbone->norm_f->eps();
  head_w_ = owned(model.lm_head->weight, c);
  tokens_ = zeros({batch}, DType::i64, dev);
  logits_ = zeros({batch, pv}, c, dev);

  gemv_ = opt_.gemv && batch <= kDecodeGemvMaxRows;
  // COIL_DECODE_GEMV_MAX_BATCH moves the GEMV/cuBLASLt boundary of the
  // projections (an A/B switch for benchmarks; the tiled GEMV takes any batch).
  int64_t proj_max = kGemvProjMaxBatch;
  if (const char* e = std::getenv("COIL_DECODE_GEMV_MAX_BATCH"); e && *e) proj_max = std::atoll(e);
  gemv_proj_ = opt_.gemv && batch <= proj_max;
  conv_xproj_ = !gemv_ && env_switch("COIL_DECODE_CONV_XPROJ", opt_.conv_xproj);
  mma_proj_ = dev.is_cuda() && env_switch("COIL_DECODE_MMA", opt_.mma) && !gemv_proj_ &&
              (c == DType::bf16 || c == DType::f16);
  // COIL_DECODE_PDL=0 turns PDL off without a rebuild (an A/B switch for
  // the launches, whatever the options say).
  pdl_ = dev.is_cuda() && opt_.pdl && env_switch("COIL_DECODE_PDL", true);
  if (dev.is_cuda() && opt_.cuda_graph) {
    // One eager step first: lazily created library state (the cuBLASLt
    // handle and workspace) must exist before the capture, not inside it.
    run_step();
    auto capture = [&] { graph_.capture(dev.index, [this] { run_step(); }); };
    try {
      capture();
    } catch (const Error& e) {
      decode_clear_launch_error();  // what the refused capture left pending
      bool ok = false;
      if (pdl_) {
        // A driver that cannot capture programmatic launches: plain ones.
        pdl_ = false;
        try {
          capture();
          ok = true;
          std::fprintf(stderr, "coil: warning: decode graph captured without PDL launches (%s)\n", e.what());
        } catch (const Error&) {
          decode_clear_launch_error();
        }
      }
      // Nothing ran during the failed capture: the eager step stays correct,
      // only slower. Say so instead of failing generation.
      if (!ok)
        std::fprintf(stderr,
                     "coil: warning: CUDA graph capture of the decode step failed (%s); stepping without it\n",
                     e.what());
    }
    // The warm-up advanced the states: start from zero as documented.
    for (Layer& l : layers_) {
      fill_(l.conv_state, 0.0);
      fill_(l.ssm_state, 0.0);
    }
    fill_(tokens_, 0.0);
  }
}

int64_t Decoder::gemv_max_batch() { return kGemvProjMaxBatch; }

Tensor Decoder::project(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& slot) const {
  if (!gemv_proj_ && !mma_proj_) return linear(x, w, b);
  Tensor r = gemv_proj_ ? decode_linear(x, w, b, slot) : decode_linear_mma(x, w, b, slot);
  bind(slot, r);
  return r;
}

void Decoder::bind(Tensor& slot, const Tensor& result) {
  if (!slot.defined()) slot = result;
}

namespace {
// The decode kernels launch with PDL only inside the step (other work on
// the stream keeps plain launches), and the flag drops even on a throw.
struct PdlScope {
  explicit PdlScope(bool on) : on_(on) {
    if (on_) set_decode_pdl(true);
  }
  ~PdlScope() {
    if (on_) set_decode_pdl(false);
  }
  bool on_;
};
}  // namespace

void Decoder::run_step() {
  PdlScope pdl(pdl_);
  const bool res32 = cfg_.residual_in_fp32;
  const DType c = cfg_.compute_dtype;
  const int64_t di = cfg_.d_inner(), r = cfg_.resolved_dt_rank(), n = cfg_.d_state;
  // Everything allocated here is a temporary that dies before the return:
  // inside a capture, each is an allocation node freed within the graph.
  // The embedding's output lives to the end of the step: freed earlier, it
  // would be a free node between two kernels of the captured chain.
  const Tensor emb = embedding(model_.backbone->embedding->weight, tokens_);  // (B, d_model)
  Tensor hidden = emb, residual;
  // cuBLASLt's outputs are allocated per call; they too live to the end of
  // the step, so their frees do not split the PDL chain of our kernels.
  std::vector<Tensor> keep;
  size_t li = 0;
  for (Layer& l : layers_) {
    Tensor& res_out = res_[li++ % 2];  // ping-pong: a layer reads one, writes the other
    // The block's norm, then xz (B, 2 Di) = x | z and x through the conv
    // step (GEMV path: all in one kernel).
    Tensor xz, x;
    if (gemv_) {
      NormLinearResult nl = decode_norm_linear(hidden, residual, l.norm_w, l.eps, res32, l.w_in, l.b_in,
                                               l.conv_state, l.conv_w, l.conv_b, true, xz_, res_out, xc_);
      bind(xz_, nl.y);
      bind(res_out, nl.residual);
      bind(xc_, nl.conv_out);
      residual = nl.residual;
      xz = nl.y;
      x = nl.conv_out;
    } else {
      AddNormResult nr = decode_add_rms_norm(hidden, residual, l.norm_w, l.eps, res32, c, normed_, res_out);
      bind(normed_, nr.y);
      bind(res_out, nr.residual);
      residual = nr.residual;
      xz = project(nr.y, l.w_in, l.b_in, xz_);
      if (!gemv_proj_) keep.push_back(xz);
    }
    // x_proj (B, R + 2N): dt | B | C. GEMV path: the conv ran in the norm +
    // in_proj kernel, x_proj is a GEMV. Otherwise the conv step then x_proj,
    // or both in one kernel (decode_conv_xproj).
    Tensor x_dbl;
    if (!gemv_ && !conv_xproj_) {
      x = causal_conv1d_step(narrow(xz, 1, 0, di), l.conv_state, l.conv_w, l.conv_b, /*silu=*/true, xc_);
      bind(xc_, x);
    }
    if (gemv_ || !conv_xproj_) {
      x_dbl = project(x, l.w_x, Tensor(), xdbl_);
      if (!gemv_proj_) keep.push_back(x_dbl);
    } else {
      ConvXprojResult cx = decode_conv_xproj(narrow(xz, 1, 0, di), l.conv_state, l.conv_w, l.conv_b, l.w_x, xc_, xdbl_);
      bind(xc_, cx.conv_out);
      bind(xdbl_, cx.x_dbl);
      x = cx.conv_out;
      x_dbl = cx.x_dbl;
    }
    SsmStepInputs s;
    s.x = x;
    s.dt = narrow(x_dbl, 1, 0, r);
    s.dt_weight = l.w_dt;
    s.A = l.A;
    s.B = narrow(x_dbl, 1, r, n);
    s.C = narrow(x_dbl, 1, r + n, n);
    s.D = l.D;
    s.z = narrow(xz, 1, di, di);
    s.dt_bias = l.dt_bias;
    s.softplus = true;
    Tensor y = selective_state_step(l.ssm_state, s, y_);
    bind(y_, y);
    hidden = project(y, l.w_out, l.b_out, hid_);
    if (!gemv_proj_) keep.push_back(hidden);
  }
  Tensor& res_out = res_[li % 2];
  if (gemv_) {
    // norm_f fused into the LM head's GEMV, written straight into logits_.
    NormLinearResult nl = decode_norm_linear(hidden, residual, norm_f_w_, norm_f_eps_, res32, head_w_, Tensor(),
                                             Tensor(), Tensor(), Tensor(), true, logits_, res_out);
    bind(res_out, nl.residual);
  } else {
    AddNormResult nr = decode_add_rms_norm(hidden, residual, norm_f_w_, norm_f_eps_, res32, c, normed_, res_out);
    bind(normed_, nr.y);
    bind(res_out, nr.residual);
    linear_into(nr.y, head_w_, logits_);  // the GEMM writes the logits buffer: no copy
  }
  if (opt_.greedy) argmax_rows_(logits_, opt_.vocab_limit, tokens_);
}

const Tensor& Decoder::prefill(const Tensor& ids) {
  COIL_CHECK(ids.dim() == 2 && ids.size(0) == batch_ && ids.size(1) >= 1, "Decoder::prefill: ids must be (", batch_,
             ", L) with L >= 1, got ", ids.desc());
  NoGradGuard no_grad;
  MambaLM::InferenceCache cache;
  Tensor last = model_.prefill(ids, cache);
  for (size_t i = 0; i < layers_.size(); ++i) {
    copy_(layers_[i].conv_state, cache.layers[i].conv_state);
    copy_(layers_[i].ssm_state, cache.layers[i].ssm_state);
  }
  copy_(logits_, last);
  if (opt_.greedy) argmax_rows_(logits_, opt_.vocab_limit, tokens_);
  return logits_;
}

void Decoder::set_tokens(const Tensor& ids) {
  COIL_CHECK((ids.dim() == 1 && ids.size(0) == batch_) || (ids.dim() == 2 && ids.size(0) == batch_ && ids.size(1) == 1),
             "Decoder::set_tokens: ids must be (", batch_, ") or (", batch_, ", 1), got ", ids.desc());
  COIL_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64,
             "Decoder::set_tokens: ids must be i32 or i64, got ",
             ids.desc());
  NoGradGuard no_grad;
  copy_(tokens_, reshape(ids, {batch_}));
}

void Decoder::step() {
  NoGradGuard no_grad;
  if (graph_.ready()) {
    graph_.replay();
  } else {
    run_step();
  }
}

size_t Decoder::weight_bytes() const {
  size_t b = 0;
  for (const Layer& l : layers_)
    for (const Tensor* t : {&l.norm_w, &l.w_in, &l.b_in, &l.w_x, &l.w_dt, &l.w_out, &l.b_out, &l.conv_w, &l.conv_b,
                            &l.A, &l.D, &l.dt_bias})
      if (t->defined()) b += t->nbytes();
  const Tensor& emb = model_.backbone->embedding->weight;
  return b + norm_f_w_.nbytes() + head_w_.nbytes() + size_t(batch_ * emb.size(1)) * element_size(emb.dtype());
}

size_t Decoder::state_bytes() const {
  size_t b = 0;
  for (const Layer& l : layers_) b += l.conv_state.nbytes() + l.ssm_state.nbytes();
  return b;
}

}  // namespace coil::nn
