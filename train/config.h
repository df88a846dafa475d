// The run configuration: one YAML file (plus --set key=value overrides)
// bound to typed structs by a strict schema. Unknown keys, wrong types and
// out-of-range values are errors naming the file, the line and the key.
// The same schema writes the resolved config back out (printed at start,
// saved in the run directory and in checkpoints).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace coil::train {

struct ModelConfig {
  std::string arch = "mamba";
  int64_t d_model = 64;
  int64_t n_layer = 2;
  int64_t vocab_size = 16;
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0 = auto: ceil(d_model / 16)
  double dt_min = 1e-3;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double norm_eps = 1e-5;
  bool residual_in_fp32 = true;
  bool tie_embeddings = true;
  int64_t pad_vocab_size_multiple = 8;
  bool selective_delta = true;  // ablations: false makes it a learned parameter
  bool selective_B = true;
  bool selective_C = true;
};

struct DataConfig {
  std::string kind = "tokens";  // tokens | selective_copying | induction_heads
  std::string path;             // token file (kind tokens)
  // When path does not exist yet: text files to tokenize into it first
  // (as `coil prepare` would), with this tokenizer and validation share.
  std::vector<std::string> text;
  std::string tokenizer = "bytes";  // bytes | path to a tokenizer.json
  double val_fraction = 0.1;
  int64_t seq_len = 256;
  std::string sampling = "random";  // random | sequential (token files)
  int64_t n_tokens = 16;            // selective copying: tokens to copy
  std::vector<int64_t> eval_lengths;  // induction heads: lengths to evaluate
};

struct OptimConfig {
  std::string name = "adamw";
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_embeddings = false;
  double grad_clip = 1.0;  // 0 = off
};

struct ScheduleConfig {
  std::string kind = "cosine";  // constant | cosine | linear
  int64_t max_steps = 1000;
  int64_t warmup_steps = -1;     // -1: use warmup_fraction
  double warmup_fraction = 0.01;
  double lr_min = 1e-5;
};

struct BatchConfig {
  int64_t sequences_per_step = 8;  // global batch in sequences
  int64_t micro_batch = 0;         // per-rank sequences per forward; 0 = all
};

struct LogConfig {
  int64_t every = 10;
  bool progress = true;
};

struct EvalConfig {
  int64_t every = 100;  // 0 = only at the end
  int64_t batches = 8;
  int64_t batch_size = 0;  // 0 = the training micro-batch
};

struct CheckpointConfig {
  int64_t every = 0;      // save every N steps; 0 = only at the end
  int64_t keep_last = 3;  // step files kept in run_dir/checkpoints
};

// Data parallel (only read when WORLD_SIZE > 1, or backend is set explicitly).
struct DistConfig {
  // auto: nccl on CUDA, store (coil's rank-order CPU all-reduce) on the CPU;
  // gloo: Gloo's CPU all-reduce (when built with it); nccl or store with
  // WORLD_SIZE 1 runs the data-parallel path on one rank (tests, checks).
  std::string backend = "auto";  // auto | nccl | store | gloo
  double bucket_mb = 25;         // gradient all-reduce bucket size, MiB
  double timeout_s = 600;        // one collective (NCCL) / one rendezvous wait
  bool log_all_ranks = false;    // false: only rank 0 prints progress and info logs
};

struct Config {
  std::string run_dir = "runs/default";
  uint64_t seed = 0;
  std::string device = "auto";     // auto | cpu | cuda | cuda:N
  std::string precision = "fp32";  // fp32 | bf16
  std::string on_nan = "stop";     // stop | skip
  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  ScheduleConfig schedule;
  BatchConfig batch;
  LogConfig log;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  DistConfig dist;

  std::string source;  // the file it came from, for messages
};

// Loads `path`, applies overrides ("key.sub=value"), validates. Throws
// coil::Error with "file:line: key: problem".
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Parses YAML text (source names it in messages).
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
// The resolved config as YAML (every key, defaults included).
std::string to_yaml(const Config& c);

}  // namespace coil::train
