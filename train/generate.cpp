#include "train/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "autograd/grad_mode.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "nn/decoder.h"
#include "ops/creation.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_config.h"
#include "train/trainer.h"

namespace coil::train {

namespace fs = std::filesystem;

int32_t sample_token(const std::vector<double>& logits, int64_t vocab_limit, const SampleOptions& opt,
                     Generator& gen) {
  const int64_t v = std::min<int64_t>(vocab_limit, int64_t(logits.size()));
  COIL_CHECK(v >= 1, "sample_token: no token to sample (vocab limit ", vocab_limit, ")");
  COIL_CHECK(opt.temperature >= 0 && std::isfinite(opt.temperature), "--temperature: must be >= 0 (got ",
             opt.temperature, ")");
  COIL_CHECK(opt.top_k >= 0, "--top-k: must be >= 0 (got ", opt.top_k, ")");
  COIL_CHECK(opt.top_p > 0 && opt.top_p <= 1, "--top-p: must be in (0, 1] (got ", opt.top_p, ")");
  // Candidates by decreasing logit (ties: lower id first), NaN last.
  std::vector<int32_t> order(static_cast<size_t>(v));
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int32_t i) { return std::isnan(logits[size_t(i)]) ? -INFINITY : logits[size_t(i)]; };
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
  if (opt.temperature == 0 || opt.top_k == 1) return order[0];
  size_t keep = order.size();
  if (opt.top_k > 0) keep = std::min(keep, size_t(opt.top_k));
  const double top = key(order[0]);
  std::vector<double> p(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp((key(order[i]) - top) / opt.temperature);
  for (double& x : p) x /= sum;
  if (opt.top_p < 1) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += p[n++];
      if (cum >= opt.top_p) break;
    }
    keep = n;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += p[i];
  const double u = rand({1}, DType::f64, Device::cpu(), &gen).to_vector()[0] * total;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return order[i];
  }
  return order[keep - 1];
}

namespace {

// The CUDA path: nn::Decoder (fused step kernels, one graph launch per
// token). Greedy keeps the argmax on the device; only the chosen id comes
// back per token (to stream the text and stop at eos). Sampling reads the
// logits row and draws on the host exactly as the op path does, so a seed
// gives the same tokens on both paths (up to the logits' rounding).
std::vector<int32_t> generate_tokens_fused(const nn::MambaLM& model, const std::vector<int64_t>& ids,
                                           int64_t max_new_tokens, const SampleOptions& opt, Generator& gen,
                                           int64_t vocab_limit, int32_t eos_id,
                                           const std::function<void(int32_t)>& on_token) {
  const int64_t pv = model.config().padded_vocab_size();
  // The checks sample_token makes, also for greedy runs that never call it.
  COIL_CHECK(vocab_limit >= 1, "sample_token: no token to sample (vocab limit ", vocab_limit, ")");
  COIL_CHECK(opt.temperature >= 0 && std::isfinite(opt.temperature), "--temperature: must be >= 0 (got ",
             opt.temperature, ")");
  COIL_CHECK(opt.top_k >= 0, "--top-k: must be >= 0 (got ", opt.top_k, ")");
  COIL_CHECK(opt.top_p > 0 && opt.top_p <= 1, "--top-p: must be in (0, 1] (got ", opt.top_p, ")");
  const bool greedy = opt.temperature == 0 || opt.top_k == 1;
  nn::DecoderOptions o;
  o.greedy = greedy;
  o.vocab_limit = std::clamp<int64_t>(vocab_limit, 1, pv);
  const Device device = model.backbone->embedding->weight.device();
  nn::Decoder dec(model, 1, o);
  dec.prefill(Tensor::from_ints(ids, {1, int64_t(ids.size())}, DType::i64, device));
  std::vector<int32_t> out;
  for (int64_t t = 0; t < max_new_tokens; ++t) {
    const int32_t next =
        greedy ? int32_t(dec.tokens().item()) : sample_token(dec.logits().to_vector(), vocab_limit, opt, gen);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == eos_id || t + 1 == max_new_tokens) break;
    if (!greedy) dec.set_tokens(Tensor::from_ints({int64_t(next)}, {1}, DType::i64, device));
    dec.step();
  }
  return out;
}

}  // namespace

std::vector<int32_t> generate_tokens(const nn::MambaLM& model, const std::vector<int32_t>& prompt,
                                     int64_t max_new_tokens, const SampleOptions& opt, uint64_t seed,
                                     int64_t vocab_limit, int32_t eos_id, Device device,
                                     const std::function<void(int32_t)>& on_token) {
  COIL_CHECK(!prompt.empty(), "--prompt: the prompt is empty (it must give at least one token)");
  COIL_CHECK(max_new_tokens >= 0, "--max-new-tokens: must be >= 0 (got ", max_new_tokens, ")");
  NoGradGuard no_grad;
  Generator gen{seed, 0};
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  nn::MambaLM::InferenceCache cache;
  std::vector<int32_t> out;
  if (max_new_tokens == 0) return out;
  if (device.is_cuda() && nn::Decoder::unsupported(model.config(), device).empty())
    return generate_tokens_fused(model, ids, max_new_tokens, opt, gen, vocab_limit, eos_id, on_token);
  Tensor logits = model.prefill(Tensor::from_ints(ids, {1, int64_t(ids.size())}, DType::i64, device), cache);
  for (int64_t t = 0; t < max_new_tokens; ++t) {
    const int32_t next = sample_token(logits.to_vector(), vocab_limit, opt, gen);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == eos_id || t + 1 == max_new_tokens) break;
    logits = model.step(Tensor::from_ints({int64_t(next)}, {1}, DType::i64, device), cache);
  }
  return out;
}

int run_generate(const GenerateOptions& opt) {
  COIL_CHECK(!opt.checkpoint.empty(), "--checkpoint: no path given");
  COIL_CHECK(!opt.prompt.empty(), "--prompt: the prompt is empty");
  std::error_code ec;
  COIL_CHECK(fs::exists(opt.checkpoint, ec), opt.checkpoint, ": --checkpoint: file not found");
  Checkpoint ck = load_checkpoint(resolve_checkpoint(opt.checkpoint));
  Config c = parse_config(ck.config_yaml, opt.checkpoint + " (config)");
  COIL_CHECK(c.data.kind == "tokens", opt.checkpoint, ": generate needs a language model trained on text (data.kind ",
             "tokens); this checkpoint was trained on the synthetic task '", c.data.kind, "'");
  std::unique_ptr<data::Tokenizer> tok = data::load_tokenizer(c.data.tokenizer);
  COIL_CHECK(tok->vocab_size() <= c.model.vocab_size, opt.checkpoint, ": the tokenizer's vocab ", tok->vocab_size(),
             " is larger than the model's ", c.model.vocab_size);
  const std::vector<int32_t> prompt = tok->encode(opt.prompt);
  COIL_CHECK(!prompt.empty(), "--prompt: the prompt encodes to no tokens");

  Device dev = resolve_device(opt.device);
  nn::MambaLM model(mamba_config_from(c), c.seed, dev);
  try {
    model.load_state_dict(ck.model);
  } catch (const Error& e) {
    fail(opt.checkpoint + ": " + e.what());
  }
  ck = Checkpoint();
  model.eval();

  SampleOptions so{opt.temperature, opt.top_k, opt.top_p};
  std::fputs(opt.prompt.c_str(), stdout);
  std::fflush(stdout);
  // Stream the text: decode everything so far and print what is new (a
  // multi-byte character may need several tokens before it appears).
  std::vector<int32_t> gen_ids;
  std::string printed;
  const int32_t eos = tok->eos_id();
  auto on_token = [&](int32_t id) {
    if (id == eos) return;
    gen_ids.push_back(id);
    std::string text = tok->decode(gen_ids);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::fputs(text.c_str() + printed.size(), stdout);
      std::fflush(stdout);
      printed = std::move(text);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> out =
      generate_tokens(model, prompt, opt.max_new_tokens, so, opt.seed, tok->vocab_size(), eos, dev, on_token);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string all = tok->decode(gen_ids);
  if (all.size() > printed.size() && all.compare(0, printed.size(), printed) == 0)
    std::fputs(all.c_str() + printed.size(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "generated %zu tokens in %.3f s (%.1f tokens/s, prompt %zu tokens)\n", out.size(), secs,
               secs > 0 ? double(out.size()) / secs : 0.0, prompt.size());
  return 0;
}

}  // namespace coil::train
