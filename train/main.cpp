// coil: the command line. One binary, one subcommand per job; every error is
// one line on stderr and a non-zero exit.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "train/bench.h"
#include "train/bench_allreduce.h"
#include "train/convert.h"
#include "train/generate.h"
#include "train/eval.h"
#include "train/metrics.h"
#include "train/trainer.h"

using namespace coil;

namespace {

int run_prepare(const std::vector<std::string>& texts, const std::string& tok_spec, const std::string& out,
                double val_fraction) {
  auto tok = data::load_tokenizer(tok_spec);
  std::vector<std::filesystem::path> paths(texts.begin(), texts.end());
  const bool tty = isatty(2);
  auto report = data::prepare(
      paths, *tok, out, val_fraction, [&](const data::PrepareProgress& p) {
        double frac = p.bytes_total ? double(p.bytes_done) / double(p.bytes_total) : 1.0;
        int filled = int(frac * 30);
        std::string bar(size_t(filled), '#');
        bar.resize(30, '-');
        std::fprintf(stderr, "%s[%s] %5.1f%%  %s tokens%s%s", tty ? "\r\033[K" : "", bar.c_str(), frac * 100,
                     train::human(double(p.tokens)).c_str(), p.writing ? "  writing" : "", tty ? "" : "\n");
        std::fflush(stderr);
      });
  if (tty) std::fprintf(stderr, "\n");
  std::printf("%s: %lld train + %lld val tokens (vocab %lld, %s) from %zu files, %.1f s\n", out.c_str(),
              (long long)report.n_train, (long long)report.n_val, (long long)report.vocab_size,
              report.tokenizer.c_str(), report.n_files, report.seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coil: train selective state space models (Mamba)"};
  app.require_subcommand(1);
  spdlog::set_pattern("[%H:%M:%S] %v");

  train::TrainOptions topt;
  auto* tr = app.add_subcommand("train", "train a model from a YAML config");
  tr->add_option("--config", topt.config_path, "YAML config file")->required();
  tr->add_option("--set", topt.overrides, "override a config key: key.sub=value (repeatable)");
  tr->add_option("--device", topt.device, "cpu, cuda or cuda:N (default: the config's, else auto)");
  tr->add_option("--resume", topt.resume,
                 "continue a run: 'auto' (run_dir/checkpoints/latest, if any) or a checkpoint path");
  tr->add_flag("--dry-run", topt.dry_run, "resolve the config, build the model, print its size and memory, exit");

  std::vector<std::string> texts;
  std::string tokenizer = "bytes", out;
  double val_fraction = 0.1;
  auto* pr = app.add_subcommand("prepare", "turn text files into a token dataset (HDF5)");
  pr->add_option("--text", texts, "input text files")->required();
  pr->add_option("--tokenizer", tokenizer, "'bytes' or a Hugging Face tokenizer.json");
  pr->add_option("--out", out, "output .h5 file")->required();
  pr->add_option("--val-fraction", val_fraction, "share of tokens (at the end) kept for validation")
      ->check(CLI::Range(0.0, 0.99));

  train::BenchOptions bopt;
  std::vector<std::string> what;
  auto* be = app.add_subcommand("bench",
                                "GPU benchmarks: copy, gemm, norm, conv, scan, embedding, proj, lce, all; step --config X; "
                                "generate; allreduce (under coil-run)");
  be->add_option("what", what, "what to measure")->required();
  be->add_option("--device", bopt.device, "CUDA device index");
  be->add_option("--iters", bopt.iters, "timed runs per shape");
  be->add_option("--config", bopt.config, "bench step: the YAML config whose model and batch to time");
  be->add_option("--set", bopt.overrides, "bench step: config overrides key=value");
  be->add_flag("--profile", bopt.profile, "bench step: print a per-op time breakdown of one step");
  be->add_flag("--profile-shapes", bopt.profile_shapes,
               "bench step: the per-op breakdown with a row per input shape (implies --profile)");
  be->add_option("--micro-batch", bopt.micro_batch, "bench step: sequences per step (default: the config's)");
  be->add_option("--batch", bopt.gen_batches, "bench generate: batch sizes, e.g. 1,64")->delimiter(',');
  be->add_option("--prompt-len", bopt.prompt_len, "bench generate: prompt tokens per sequence");
  be->add_option("--new-tokens", bopt.new_tokens, "bench generate: decode steps to time");

  train::EvalOptions eopt;
  eopt.progress = true;
  auto* ev = app.add_subcommand("eval", "perplexity of a checkpoint over a split of a token file (JSON on stdout)");
  ev->add_option("--checkpoint", eopt.checkpoint, "checkpoint .h5 (from coil train)")->required();
  ev->add_option("--data", eopt.data, "token file .h5 (from coil prepare)")->required();
  ev->add_option("--split", eopt.split, "split to score (default val)");
  ev->add_option("--seq-len", eopt.seq_len, "window length (default: the checkpoint config's data.seq_len)");
  ev->add_option("--stride", eopt.stride,
                 "new targets scored per window after the first, in [1, seq-len] (default: seq-len, "
                 "non-overlapping)");
  ev->add_option("--batch", eopt.batch, "windows per forward (default: the config's eval batch)");
  ev->add_option("--device", eopt.device, "cpu, cuda, cuda:N or auto");
  ev->add_option("--max-tokens", eopt.max_tokens, "score only the first N targets (default: all)");
  ev->add_option("--json", eopt.json_out, "also write the JSON result to this file");

  train::ConvertOptions copt;
  auto* cv = app.add_subcommand(
      "convert", "coil checkpoint (.h5) <-> mamba_ssm / Hugging Face folder (config.json + model.safetensors)");
  cv->add_option("--input", copt.input, "a coil checkpoint .h5 (export) or a model folder (import)")->required();
  cv->add_option("--output", copt.output, "the folder (export) or the checkpoint .h5 (import)")->required();
  cv->add_option("--flavor", copt.flavor, "export names and config.json: mamba_ssm or hf")
      ->check(CLI::IsMember({"mamba_ssm", "hf"}));
  cv->add_option("--config", copt.config, "import: a coil run YAML to store with the weights");

  train::GenerateOptions gopt;
  auto* ge = app.add_subcommand("generate", "sample text from a checkpoint (recurrent step mode, constant memory)");
  ge->add_option("--checkpoint", gopt.checkpoint, "a checkpoint .h5, a run directory, or its latest pointer")->required();
  ge->add_option("--prompt", gopt.prompt, "the text to continue")->required();
  ge->add_option("--max-new-tokens", gopt.max_new_tokens, "tokens to generate");
  ge->add_option("--temperature", gopt.temperature, "0 = greedy");
  ge->add_option("--top-k", gopt.top_k, "sample among the k most likely (0 = all)");
  ge->add_option("--top-p", gopt.top_p, "nucleus sampling mass (1 = off)");
  ge->add_option("--seed", gopt.seed, "sampling seed");
  ge->add_option("--device", gopt.device, "auto, cpu, cuda or cuda:N");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*tr) return train::run_train(topt);
    if (*pr) return run_prepare(texts, tokenizer, out, val_fraction);
    if (*be && what == std::vector<std::string>{"allreduce"}) {
      // NCCL bandwidth under coil-run (train/bench_allreduce.h).
      train::AllreduceBenchOptions ao;
      if (be->count("--iters")) ao.iters = bopt.iters;
      return train::run_bench_allreduce(ao);
    }
    if (*be) return train::run_bench(what, bopt);
    if (*cv) return train::run_convert(copt);
    if (*ge) return train::run_generate(gopt);
    if (*ev) {
      // 0 in EvalOptions means "not given": an explicit 0 is an error here.
      for (auto [flag, v] : {std::pair<const char*, int64_t>{"--seq-len", eopt.seq_len}, {"--stride", eopt.stride},
                             {"--batch", eopt.batch}})
        if (ev->count(flag) && v < 1) fail(std::string(flag) + ": must be >= 1 (got " + std::to_string(v) + ")");
      return train::run_eval(eopt);
    }
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "\ncoil: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
