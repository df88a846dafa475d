#include "nn/model_stats.h"

#include <algorithm>
#include <cstdio>

#include "ops/linear_cross_entropy.h"

namespace coil::nn {

int64_t count_parameters(const MambaConfig& cfg) {
  cfg.validate();
  const int64_t d = cfg.d_model, di = cfg.d_inner(), n = cfg.d_state, r = cfg.resolved_dt_rank();
  int64_t layer = 2 * di * d + (cfg.bias ? 2 * di : 0);        // in_proj
  layer += di * cfg.d_conv + (cfg.conv_bias ? di : 0);          // conv1d
  layer += cfg.x_proj_rows() * di;                              // x_proj
  layer += cfg.selective_delta ? di * r + di : di;              // dt_proj (or dt_bias)
  layer += di * n + di;                                         // A_log, D
  layer += (cfg.selective_B ? 0 : di * n) + (cfg.selective_C ? 0 : di * n);  // B, C parameters
  layer += d * di + (cfg.bias ? d : 0);                         // out_proj
  layer += d;                                                   // norm
  const int64_t emb = cfg.padded_vocab_size() * d;
  return cfg.n_layer * layer + emb + d + (cfg.tie_embeddings ? 0 : emb);
}

int64_t count_matmul_parameters(const MambaConfig& cfg) {
  cfg.validate();
  const int64_t d = cfg.d_model, di = cfg.d_inner(), r = cfg.resolved_dt_rank();
  int64_t layer = 2 * di * d + cfg.x_proj_rows() * di + (cfg.selective_delta ? di * r : 0) + d * di;
  return cfg.n_layer * layer + cfg.padded_vocab_size() * d;
}

FlopsPerToken flops_per_token(const MambaConfig& cfg) {
  FlopsPerToken f;
  const double di = double(cfg.d_inner()), L = double(cfg.n_layer);
  f.matmul = 6.0 * double(count_matmul_parameters(cfg));
  f.scan = 3.0 * L * (9.0 * di * double(cfg.d_state) + 2.0 * di);
  f.conv = 6.0 * L * di * double(cfg.d_conv);
  f.total = f.matmul + f.scan;
  return f;
}

MemoryEstimate estimate_training_memory(const MambaConfig& cfg, int64_t tokens) {
  cfg.validate();
  MemoryEstimate m;
  const int64_t P = count_parameters(cfg), pbytes = int64_t(element_size(cfg.param_dtype));
  const int64_t c = int64_t(element_size(cfg.compute_dtype));
  const int64_t r = cfg.residual_in_fp32 && cfg.compute_dtype != DType::f64 ? 4 : c;
  const int64_t d = cfg.d_model, di = cfg.d_inner(), x = cfg.x_proj_rows(), V = cfg.padded_vocab_size();
  m.params_bytes = P * pbytes;
  m.grads_bytes = P * pbytes;
  m.optimizer_bytes = 2 * P * (cfg.param_dtype == DType::f64 ? 8 : 4);
  m.weight_copies_bytes = cfg.compute_dtype != cfg.param_dtype ? c * count_matmul_parameters(cfg) : 0;
  // Kept for the backward per token and layer: the residual stream and the
  // norm's statistic, the normed input, xz, the conv output, x_dbl, the scan
  // output, and the scan's chunk-entry states (dstate f32 per 64 steps). A
  // selective delta is recomputed in the scan's backward, not kept.
  const int64_t layer = r * d + 4 + c * (d + 2 * di + di + x + di) + 4 * di * cfg.d_state / 64 +
                        (cfg.selective_delta ? 0 : c * di);
  const int64_t head = r * d + 4 + 4 * d + 8;
  m.activation_bytes_per_token = cfg.n_layer * layer + head;
  m.tokens = tokens;
  m.loss_buffer_bytes = c * std::min<int64_t>(tokens, default_lce_chunk_rows(V, cfg.compute_dtype)) * V + 4 * V * d;
  m.activation_bytes = m.activation_bytes_per_token * tokens + m.loss_buffer_bytes;
  m.total_bytes = m.params_bytes + m.grads_bytes + m.optimizer_bytes + m.weight_copies_bytes + m.activation_bytes;
  return m;
}

std::string MemoryEstimate::str() const {
  auto gib = [](int64_t b) { return double(b) / double(1ll << 30); };
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "parameters      %8.3f GiB\n"
                "gradients       %8.3f GiB\n"
                "AdamW m, v      %8.3f GiB\n"
                "weight casts    %8.3f GiB\n"
                "activations     %8.3f GiB (%lld tokens x %.1f KiB + %.3f GiB loss chunk and head gradient)\n"
                "total           %8.3f GiB",
                gib(params_bytes), gib(grads_bytes), gib(optimizer_bytes), gib(weight_copies_bytes),
                gib(activation_bytes), static_cast<long long>(tokens), double(activation_bytes_per_token) / 1024.0,
                gib(loss_buffer_bytes), gib(total_bytes));
  return buf;
}

}  // namespace coil::nn
