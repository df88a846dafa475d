#include "nn/mamba_lm.h"

#include "autograd/grad_mode.h"
#include "ops/cross_entropy.h"
#include "ops/linear_cross_entropy.h"
#include "ops/views.h"

namespace coil::nn {

MixerModel::MixerModel(const MambaConfig& cfg, Generator& gen, Device device)
    : residual_in_fp32_(cfg.residual_in_fp32) {
  cfg.validate();
  embedding = register_module("embedding", std::make_shared<Embedding>(cfg.padded_vocab_size(), cfg.d_model, gen,
                                                                       cfg.param_dtype, device,
                                                                       cfg.initializer_range));
  layers = register_module("layers", std::make_shared<ModuleList<Block>>());
  for (int64_t i = 0; i < cfg.n_layer; ++i) layers->push_back(std::make_shared<Block>(cfg, i, gen, device));
  norm_f = register_module("norm_f", std::make_shared<RMSNorm>(cfg.d_model, cfg.norm_eps, cfg.param_dtype, device));
}

Tensor MixerModel::forward(const Tensor& input_ids) const {
  COIL_CHECK(input_ids.dim() == 2, "MambaLM: input_ids must be (B, L), got ", input_ids.desc());
  Tensor hidden = embedding->forward(input_ids), residual;
  for (const auto& layer : *layers) {
    Block::Output o = layer->forward(hidden, residual);
    hidden = o.hidden;
    residual = o.residual;
  }
  return norm_f->forward(hidden, residual, residual_in_fp32_).y;
}

Tensor MixerModel::forward_with_state(const Tensor& input_ids, std::vector<MambaState>& states, bool step) const {
  COIL_CHECK(input_ids.dim() == 2, "MambaLM: input_ids must be (B, L), got ", input_ids.desc());
  COIL_CHECK(!step || input_ids.size(1) == 1, "MambaLM::step: one token per sequence, got ", input_ids.desc());
  COIL_CHECK(states.size() == layers->size(), "MambaLM: ", states.size(), " layer states for ", layers->size(),
             " layers");
  Tensor hidden = embedding->forward(input_ids), residual;
  size_t i = 0;
  for (const auto& layer : *layers) {
    Block::Output o =
        step ? layer->step(hidden, residual, states[i]) : layer->forward_with_state(hidden, residual, states[i]);
    ++i;
    hidden = o.hidden;
    residual = o.residual;
  }
  return norm_f->forward(hidden, residual, residual_in_fp32_).y;
}

MambaLM::MambaLM(const MambaConfig& cfg, Generator& gen, Device device) : cfg_(cfg) { build(gen, device); }

MambaLM::MambaLM(const MambaConfig& cfg, uint64_t seed, Device device) : cfg_(cfg) {
  Generator gen{seed, 0};
  build(gen, device);
}

void MambaLM::build(Generator& gen, Device device) {
  cfg_.validate();
  backbone = register_module("backbone", std::make_shared<MixerModel>(cfg_, gen, device));
  if (cfg_.tie_embeddings) {
    lm_head = register_module("lm_head", std::make_shared<Linear>(backbone->embedding->weight));
  } else {
    LinearOptions o;
    o.dtype = cfg_.param_dtype;
    o.device = device;
    lm_head = register_module("lm_head", std::make_shared<Linear>(cfg_.d_model, cfg_.padded_vocab_size(), gen, o));
  }
}

Tensor MambaLM::forward(const Tensor& input_ids) const {
  Tensor hidden = backbone->forward(input_ids);
  return lm_head->forward(to_dtype(hidden, cfg_.compute_dtype), cfg_.compute_dtype);
}

Tensor MambaLM::prefill(const Tensor& input_ids, InferenceCache& cache) const {
  NoGradGuard no_grad;
  COIL_CHECK(input_ids.dim() == 2 && input_ids.size(1) >= 1, "MambaLM::prefill: ids must be (B, L) with L >= 1, got ",
             input_ids.desc());
  cache.layers.assign(size_t(cfg_.n_layer), MambaState());
  Tensor hidden = backbone->forward_with_state(input_ids, cache.layers, /*step=*/false);
  const int64_t b = hidden.size(0), l = hidden.size(1);
  Tensor last = reshape(narrow(hidden, 1, l - 1, 1), {b, cfg_.d_model});
  return lm_head->forward(to_dtype(last, cfg_.compute_dtype), cfg_.compute_dtype);
}

Tensor MambaLM::step(const Tensor& input_ids, InferenceCache& cache) const {
  NoGradGuard no_grad;
  COIL_CHECK(input_ids.dim() == 1 || (input_ids.dim() == 2 && input_ids.size(1) == 1),
             "MambaLM::step: ids must be (B) or (B, 1), got ", input_ids.desc());
  Tensor ids = input_ids.dim() == 1 ? unsqueeze(input_ids, 1) : input_ids;
  Tensor hidden = backbone->forward_with_state(ids, cache.layers, /*step=*/true);
  Tensor last = reshape(hidden, {hidden.size(0), cfg_.d_model});
  return lm_head->forward(to_dtype(last, cfg_.compute_dtype), cfg_.compute_dtype);
}

Tensor MambaLM::loss(const Tensor& input_ids, const Tensor& targets, int64_t ignore_index) const {
  // The head and the loss are fused and chunked so the (B*L, V) logits never
  // exist. The head's f32 weight goes in as it is (cast to the compute dtype
  // inside), so its gradient lands in f32 on the same tensor as the tied
  // embedding's.
  COIL_CHECK(!lm_head->bias.defined(), "MambaLM::loss: an LM head with a bias is not supported");
  Tensor hidden = backbone->forward(input_ids);
  COIL_CHECK(targets.shape() == Shape({hidden.size(0), hidden.size(1)}), "MambaLM::loss: targets ", targets.desc(),
             " do not match input_ids ", input_ids.desc());
  Tensor h = reshape(to_dtype(hidden, cfg_.compute_dtype), {-1, cfg_.d_model});
  return linear_cross_entropy(h, lm_head->weight, reshape(targets, {-1}), ignore_index);
}

}  // namespace coil::nn
