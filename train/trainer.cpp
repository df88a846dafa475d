#include "train/trainer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "core/cuda_context.h"
#include "core/error.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "data/token_file.h"
#include "nn/mamba_lm.h"
#include "nn/model_stats.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/dist/comm.h"
#include "train/dist/gloo_comm.h"
#include "train/dist/grad_buckets.h"
#include "train/dist/nccl_comm.h"
#include "train/launcher/env.h"
#include "train/eval.h"
#include "train/metrics.h"
#include "train/model_config.h"

namespace coil::train {

Device resolve_device(const std::string& spec) {
  if (spec == "auto" || spec.empty()) return cuda_available() ? Device::cuda(0) : Device::cpu();
  Device d = Device::parse(spec);
  if (d.is_cuda())
    COIL_CHECK(d.index < cuda_device_count(), "device ", spec, " requested but ",
               cuda_device_count() == 0 ? std::string("no CUDA device is present")
                                        : std::to_string(cuda_device_count()) + " CUDA devices are visible");
  return d;
}

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// SIGINT/SIGTERM ask the loop to finish its step, save and exit. The handler
// only sets the flag and restores the default action, so a second signal
// stops the process at once.
std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_stop_signal(int sig) {
  g_stop_requested.store(true);
  std::signal(sig, SIG_DFL);
}
struct StopSignals {
  using Handler = void (*)(int);
  Handler old_int, old_term;
  StopSignals() {
    g_stop_requested.store(false);
    old_int = std::signal(SIGINT, on_stop_signal);
    old_term = std::signal(SIGTERM, on_stop_signal);
  }
  ~StopSignals() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

// After a resume from `step`: drops metrics rows past it (a run that crashed
// after its last checkpoint logged steps that will be run again).
void trim_metrics(const fs::path& path, int64_t step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::ifstream in(path);
  std::vector<std::string> keep;
  bool dropped = false;
  for (std::string l; std::getline(in, l);) {
    auto k = l.find("\"step\": ");
    if (k != std::string::npos && std::atof(l.c_str() + k + 8) > double(step)) {
      dropped = true;
      continue;
    }
    keep.push_back(l);
  }
  in.close();
  if (!dropped) return;
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& l : keep) out << l << "\n";
    COIL_CHECK(out.good(), tmp.string(), ": cannot write");
  }
  fs::rename(tmp, path);
}


// The training and validation data the config asks for.
struct Data {
  std::unique_ptr<data::BatchSource> train;
  std::shared_ptr<const data::SyntheticTask> task;  // synthetic kinds
  std::unique_ptr<data::TokenFile> file;            // token kind
  int64_t vocab = 0;
  bool scores_accuracy = false;
};

Data make_data(const Config& c, int64_t micro_batch, int rank, int world) {
  Data d;
  if (c.data.kind == "tokens") {
    if (!std::filesystem::exists(c.data.path) && !c.data.text.empty()) {
      // Relative paths in the config are taken from the working directory.
      spdlog::info("{} does not exist: tokenizing {} file(s) into it ({})", c.data.path, c.data.text.size(),
                   c.data.tokenizer);
      auto tok = data::load_tokenizer(c.data.tokenizer);
      std::vector<std::filesystem::path> texts(c.data.text.begin(), c.data.text.end());
      auto rep = data::prepare(texts, *tok, c.data.path, c.data.val_fraction);
      spdlog::info("{}: {} train + {} val tokens", c.data.path, rep.n_train, rep.n_val);
    }
    d.file = std::make_unique<data::TokenFile>(data::TokenFile::open(c.data.path));
    d.vocab = d.file->vocab_size();
    d.train = std::make_unique<data::TokenLoader>(*d.file, "train", micro_batch, c.data.seq_len,
                                                  data::parse_loader_mode(c.data.sampling), c.seed, rank, world);
  } else {
    if (c.data.kind == "selective_copying") {
      data::SelectiveCopyingConfig sc;
      sc.seq_len = c.data.seq_len;
      sc.vocab = c.model.vocab_size;
      sc.n_tokens = c.data.n_tokens;
      sc.seed = c.seed;
      d.task = std::make_shared<data::SelectiveCopying>(sc);
    } else {
      data::InductionHeadsConfig ic;
      ic.seq_len = c.data.seq_len;
      ic.vocab = c.model.vocab_size;
      ic.seed = c.seed;
      d.task = std::make_shared<data::InductionHeads>(ic);
    }
    d.vocab = d.task->vocab_size();
    d.scores_accuracy = true;
    d.train = std::make_unique<data::SyntheticLoader>(d.task, micro_batch, rank, world);
  }
  if (c.model.vocab_size < d.vocab)
    fail(c.source + ": model.vocab_size: " + std::to_string(c.model.vocab_size) + " is smaller than the data's " +
         std::to_string(d.vocab) + " tokens");
  return d;
}

// Accuracy of argmax(logits) over the scored (non-ignored) positions.
struct Score {
  double loss_sum = 0;
  int64_t tokens = 0;
  int64_t correct = 0;
};

void score_batch(const nn::MambaLM& model, const data::Batch& b, Device dev, bool accuracy, Score& s) {
  Tensor x = b.inputs.to(dev), y = b.targets.to(dev);
  Tensor logits = model.forward(x);
  Tensor loss = cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}));
  std::vector<double> tv = b.targets.to_vector();
  int64_t n = 0;
  for (double t : tv) n += t != data::kIgnoreIndex;
  s.loss_sum += loss.item() * double(n);
  s.tokens += n;
  if (!accuracy) return;
  std::vector<double> lv = logits.to(DType::f32).to_vector();
  const int64_t V = logits.size(-1);
  for (size_t i = 0; i < tv.size(); ++i) {
    if (tv[i] == data::kIgnoreIndex) continue;
    size_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (lv[i * size_t(V) + size_t(v)] > lv[i * size_t(V) + best]) best = size_t(v);
    s.correct += int64_t(best) == int64_t(tv[i]);
  }
}

// Validation: a fixed set of batches (the same every time).
Score evaluate(const Config& c, const Data& d, const nn::MambaLM& model, Device dev, int64_t batch) {
  NoGradGuard ng;
  Score s;
  if (d.task) {
    for (int64_t i = 0; i < c.eval.batches; ++i) score_batch(model, d.task->val_batch(uint64_t(i * batch), batch), dev, true, s);
  } else {
    // The first eval.batches x batch non-overlapping windows of the val split
    // (fewer when the split is shorter), scored as `coil eval` scores them.
    ScoreOptions so;
    so.seq_len = c.data.seq_len;
    so.stride = c.data.seq_len;
    so.batch = batch;
    so.max_tokens = c.eval.batches * batch * c.data.seq_len;
    TokenScore ts = score_token_split(model, d.file->split("val"), c.data.path, so, dev);
    s.loss_sum = ts.loss_sum;
    s.tokens = ts.tokens;
  }
  return s;
}

// The communicator dist.backend asks for (auto: NCCL on CUDA, coil's
// rank-order store all-reduce on the CPU).
std::unique_ptr<dist::Communicator> make_communicator(const Config& c, const launcher::WorkerEnv& env, Device dev) {
  const std::string be = c.dist.backend == "auto" ? (dev.is_cuda() ? "nccl" : "store") : c.dist.backend;
  const auto timeout = std::chrono::milliseconds(int64_t(c.dist.timeout_s * 1000));
  if (be == "nccl") {
    if (!dev.is_cuda()) fail(c.source + ": dist.backend: nccl needs a CUDA device, the run is on " + dev.str());
    dist::NcclOptions o;
    o.device = dev.index;
    o.timeout = timeout;
    o.rendezvous_timeout = timeout;
    return dist::make_nccl_communicator(env, o);
  }
  if (!dev.is_cpu())
    fail(c.source + ": dist.backend: " + be + " is a CPU backend, the run is on " + dev.str() + " (use nccl or auto)");
  if (be == "gloo") {
#ifdef COIL_WITH_GLOO
    return dist::make_gloo_communicator(env, timeout);
#else
    fail(c.source + ": dist.backend: gloo: this build of coil has no Gloo (use store or auto)");
#endif
  }
  return dist::make_cpu_communicator(env, timeout);
}

// Rows one loader step hands out over all ranks (the micro-batch times the
// world size) for a config and world size.
int64_t loader_rows(const Config& c, int world) {
  const int64_t rank_batch = c.batch.sequences_per_step / world;
  return (c.batch.micro_batch > 0 ? c.batch.micro_batch : rank_batch) * world;
}

// Resuming with another world size (or micro-batch): the loader cursor counts
// loader steps of the old run's global micro-batch; the same data position in
// sequences is old.step * old_rows, which this run reaches after
// old.step * old_rows / new_rows of its own steps. Sequential token windows
// keep their global position and epoch, so the data continues exactly; the
// random mode draws its windows from (step, row) and so continues with a
// fresh, equally uniform stream.
data::Cursor translate_cursor(data::Cursor cur, int64_t old_rows, int64_t new_rows, const std::string& where) {
  if (old_rows == new_rows) return cur;
  const int64_t seqs = cur.step * old_rows;
  if (seqs % new_rows != 0)
    fail(where + ": the checkpoint's data position (" + std::to_string(seqs) +
         " sequences) is not a whole number of this run's loader steps of " + std::to_string(new_rows) +
         " sequences (micro-batch x world size); choose batch.micro_batch so it divides");
  cur.step = seqs / new_rows;
  return cur;
}

// Non-zero ranks log warnings and errors only (unless dist.log_all_ranks);
// the previous level comes back when the run ends.
struct RankLogLevel {
  spdlog::level::level_enum old = spdlog::get_level();
  explicit RankLogLevel(bool quiet) {
    if (quiet) spdlog::set_level(spdlog::level::warn);
  }
  ~RankLogLevel() { spdlog::set_level(old); }
};

double measured_gemm_tflops(Device dev) {
  if (!dev.is_cuda()) return 0;
  NoGradGuard ng;
  Generator g{1, 0};
  const int64_t n = 4096;
  Tensor a = randn({n, n}, DType::bf16, dev, &g), b = randn({n, n}, DType::bf16, dev, &g);
  matmul(a, b);
  cuda_ctx::synchronize(dev.index);
  auto t0 = Clock::now();
  for (int i = 0; i < 10; ++i) matmul(a, b);
  cuda_ctx::synchronize(dev.index);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return 10 * 2.0 * double(n) * n * n / s / 1e12;
}

}  // namespace

int run_train(const TrainOptions& opt) {
  Config c = load_config(opt.config_path, opt.overrides);
  if (!opt.device.empty()) c.device = opt.device;
  Device dev = resolve_device(c.device);
  const launcher::WorkerEnv wenv = launcher::worker_env_from_environment();
  const int world = wenv.world_size, rank = wenv.rank;
  // World 1 takes none of the data-parallel paths unless a backend is named
  // (a 1-rank NCCL run checks the communicator against the plain step).
  const bool dp = world > 1 || c.dist.backend != "auto";
  const bool writer = rank == 0;
  // One process per GPU: rank r of a node drives cuda:LOCAL_RANK.
  if (dp && dev.is_cuda() && world > 1) {
    if (wenv.local_rank >= cuda_device_count())
      fail("LOCAL_RANK " + std::to_string(wenv.local_rank) + " has no GPU: " + std::to_string(cuda_device_count()) +
           " CUDA devices are visible (set --nproc-per-node to at most that)");
    dev = Device::cuda(wenv.local_rank);
  }
  RankLogLevel rank_log(!writer && !c.dist.log_all_ranks);
  const int64_t global_batch = c.batch.sequences_per_step;
  if (dp && global_batch % world != 0)
    fail(c.source + ": batch.sequences_per_step: " + std::to_string(global_batch) +
         " (the global batch) is not divisible by the world size " + std::to_string(world));
  const int64_t rank_batch = global_batch / world;  // this rank's share of the global batch
  const int64_t micro = c.batch.micro_batch > 0 ? c.batch.micro_batch : rank_batch;
  if (dp && rank_batch % micro != 0)
    fail(c.source + ": batch.micro_batch: " + std::to_string(micro) + " does not divide the per-rank share " +
         std::to_string(rank_batch) + " of batch.sequences_per_step " + std::to_string(global_batch) + " over " +
         std::to_string(world) + " ranks");
  const int64_t accum = rank_batch / micro;
  const int64_t eval_batch = c.eval.batch_size > 0 ? c.eval.batch_size : micro;

  if (writer || c.dist.log_all_ranks) std::printf("# resolved config (%s)\n%s", c.source.c_str(), to_yaml(c).c_str());
  nn::MambaConfig mc = mamba_config_from(c);
  nn::MemoryEstimate mem = nn::estimate_training_memory(mc, micro * c.data.seq_len);
  spdlog::info("model: {} parameters ({} layers x d_model {}, vocab {} padded to {}), device {}",
               nn::count_parameters(mc), mc.n_layer, mc.d_model, mc.vocab_size, mc.padded_vocab_size(), dev.str());
  spdlog::info("batch: {} sequences x {} tokens per step = {} micro-batches of {}", global_batch, c.data.seq_len,
               accum, micro);
  spdlog::info("memory estimate: {}", mem.str());
  if (opt.dry_run) return 0;  // no data is read: the config and the model are what a dry run checks
  std::unique_ptr<dist::Communicator> comm;
  if (dp) {
    comm = make_communicator(c, wenv, dev);
    spdlog::info("data parallel ({}): rank {} of {} on {}, {} sequences per rank per step", comm->backend(), rank,
                 world, dev.str(), rank_batch);
  }
  Data data = make_data(c, micro, rank, world);

  // Resume: find and read the checkpoint before anything is written.
  fs::path resume_from;
  if (opt.resume == "auto") {
    resume_from = latest_checkpoint(c.run_dir);
    if (resume_from.empty()) spdlog::info("--resume auto: no checkpoint in {}/checkpoints, starting fresh", c.run_dir);
  } else if (!opt.resume.empty()) {
    resume_from = opt.resume;
    std::error_code ec;
    COIL_CHECK(fs::exists(resume_from, ec), opt.resume, ": --resume: checkpoint not found");
  }
  std::optional<Checkpoint> ck;
  if (!resume_from.empty()) {
    ck = load_checkpoint(resume_from);
    if (ck->trainer.world_size != world)
      spdlog::info("{}: saved by {} ranks, resuming on {}: same global step and data position", resume_from.string(),
                   ck->trainer.world_size, world);
    if (writer) trim_metrics(fs::path(c.run_dir) / "metrics.jsonl", ck->trainer.step);
  }
  const std::string config_yaml = to_yaml(c);

  std::filesystem::create_directories(c.run_dir);
  if (writer) {
    std::ofstream f(std::filesystem::path(c.run_dir) / "config.yaml");
    f << to_yaml(c);
    COIL_CHECK(f.good(), c.run_dir, "/config.yaml: cannot write the resolved config");
  }
  // Only rank 0 writes metrics: the others log to a sink that is never opened.
  std::optional<MetricsLog> metrics_log;
  if (writer) metrics_log.emplace((std::filesystem::path(c.run_dir) / "metrics.jsonl").string());
  auto write_metrics = [&](const std::vector<std::pair<std::string, double>>& row) {
    if (metrics_log) metrics_log->write(row);
  };

  nn::MambaLM model(mc, c.seed, dev);
  optim::GroupingOptions go;
  go.weight_decay = c.optim.name == "adam" ? 0.0 : c.optim.weight_decay;
  go.decay_embeddings = c.optim.decay_embeddings;
  optim::AdamW adamw(optim::group_parameters(optim::param_specs(model.parameter_infos()), go),
                     {c.optim.beta1, c.optim.beta2, c.optim.eps});
  optim::LrSchedule sched;
  sched.kind = optim::parse_schedule_kind(c.schedule.kind);
  sched.lr_max = c.optim.lr;
  sched.lr_min = c.schedule.kind == "constant" ? c.optim.lr : c.schedule.lr_min;
  sched.total_steps = c.schedule.max_steps;
  sched.warmup_steps = c.schedule.warmup_steps >= 0
                           ? c.schedule.warmup_steps
                           : int64_t(std::llround(c.schedule.warmup_fraction * double(c.schedule.max_steps)));
  sched.validate();
  std::vector<Tensor> params = model.parameters();
  if (dp) {
    // Same seed gives the same weights; broadcast from rank 0 anyway.
    NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) {
      COIL_CHECK(params[i].is_contiguous(), "data parallel: parameter ", params[i].desc(), " must be contiguous");
      comm->broadcast_tensor(params[i], 0, "broadcast of parameter " + std::to_string(i));
    }
    comm->wait_pending();
  }
  // Gradients are averaged over ranks in buckets during the last
  // micro-batch's backward (train/dist/grad_buckets.h). Declared after the
  // communicator and the model, so it goes first.
  std::optional<dist::GradBuckets> buckets;
  if (dp) {
    buckets.emplace(params, *comm, size_t(std::max(1.0, c.dist.bucket_mb * double(1 << 20))));
    spdlog::info("gradient all-reduce: {} buckets of up to {} MiB", buckets->bucket_count(), c.dist.bucket_mb);
  }
  int64_t start_step = 0;
  if (ck) {
    check_compatible(*ck, model, config_yaml, resume_from);
    model.load_state_dict(ck->model);
    try {
      adamw.load_state_dict(ck->optim);
    } catch (const Error& e) {
      fail(resume_from.string() + ": optim: " + e.what());
    }
    if (ck->trainer.world_size == world && !dp) {
      data.train->set_cursor(ck->trainer.cursor);
    } else {
      // The old run's loader geometry comes from its saved config.
      const Config old = parse_config(ck->config_yaml, resume_from.string() + " (saved config)");
      data.train->set_cursor(translate_cursor(ck->trainer.cursor, loader_rows(old, ck->trainer.world_size),
                                              loader_rows(c, world), resume_from.string()));
    }
    default_generator() = Generator{ck->trainer.generator_seed, ck->trainer.generator_offset};
    start_step = ck->trainer.step;
    spdlog::info("resumed from {} at step {} ({} tokens seen)", resume_from.string(), start_step,
                 ck->trainer.tokens_seen);
    ck.reset();
  }
  const double flops_per_token = nn::flops_per_token(mc).total;
  const double peak_tflops = measured_gemm_tflops(dev);

  // Only rank 0 shows progress (others would print the same line).
  const bool show_progress = c.log.progress && (writer || c.dist.log_all_ranks);
  Progress progress(c.schedule.max_steps, show_progress && isatty(2));
  const int64_t tokens_per_step = global_batch * c.data.seq_len;
  Tensor loss_acc;  // sum of step losses since the last log, on the device
  int64_t steps_since_log = 0, skipped = 0;
  auto t_log = Clock::now();
  double last_grad_norm = 0;
  Score final_score;
  StopSignals stop_signals;
  auto save = [&](int64_t done) {
    TrainerState ts;
    ts.step = done;
    ts.tokens_seen = done * tokens_per_step;
    ts.cursor = data.train->cursor();
    ts.generator_seed = default_generator().seed;
    ts.generator_offset = default_generator().offset;
    ts.world_size = world;
    return save_run_checkpoint(c.run_dir, c.checkpoint.keep_last, model, adamw.state_dict(), ts, config_yaml);
  };

  for (int64_t step = start_step; step < c.schedule.max_steps; ++step) {
    model.train();
    Tensor step_loss;
    for (int64_t m = 0; m < accum; ++m) {
      data::Batch b = data.train->next();
      Tensor loss = model.loss(b.inputs.to(dev), b.targets.to(dev));
      if (buckets && m == accum - 1) buckets->arm();  // only the last micro-batch all-reduces
      backward(accum > 1 ? loss * (1.0 / double(accum)) : loss);
      NoGradGuard ng;
      Tensor l = loss.detach();
      step_loss = step_loss.defined() ? step_loss + l : l;
    }
    Tensor mean_loss = accum > 1 ? step_loss * (1.0 / double(accum)) : step_loss;
    // Before clipping. Every rank then holds the same averaged gradients, so
    // the grad norm below is already the global one.
    if (buckets) buckets->finish();
    Tensor gnorm = optim::clip_grad_norm(params, c.optim.grad_clip > 0 ? c.optim.grad_clip : INFINITY);
    if (c.on_nan == "skip") {
      // Skipping needs the verdict before the update: one sync per step.
      double lv = mean_loss.item();
      if (dp) {
        // Every rank must take the same branch (a skipped step issues no
        // collectives): a non-finite loss on any rank makes the sum non-finite.
        float v = float(lv);
        comm->all_reduce_sum(&v, 1);
        lv = double(v) / double(world);
      }
      if (!std::isfinite(lv) || !std::isfinite(optim::scalar_value(gnorm))) {
        spdlog::warn("step {}: loss {} is not finite; skipping the update", step + 1, lv);
        adamw.zero_grad();
        ++skipped;
        continue;
      }
    }
    const double lr = sched.lr_at(step);
    adamw.step(lr);
    adamw.zero_grad();
    {
      NoGradGuard ng;
      loss_acc = loss_acc.defined() ? loss_acc + mean_loss : mean_loss;
    }
    ++steps_since_log;

    const int64_t done = step + 1;
    const bool last = done == c.schedule.max_steps;
    const bool ckpt_step = last || (c.checkpoint.every > 0 && done % c.checkpoint.every == 0);
    // A stop signal may reach one rank only: ranks vote at agreed points
    // (log and checkpoint steps), so all stop at the same step instead of
    // one waiting in a barrier the others never reach.
    float stop_votes = g_stop_requested.load() ? 1.0f : 0.0f;
    bool voted = !dp;
    if (done % c.log.every == 0 || last) {
      double avg = loss_acc.item() / double(steps_since_log);  // the one sync per interval
      if (dp) {
        float v[2] = {float(avg), stop_votes};  // the mean loss over ranks, and the vote
        comm->all_reduce_sum(v, 2);
        avg = double(v[0]) / double(world);
        stop_votes = v[1];
        voted = true;
      }
      if (!std::isfinite(avg))
        fail("training diverged: the loss is " + std::to_string(avg) + " between steps " +
             std::to_string(done - steps_since_log + 1) + " and " + std::to_string(done) +
             " (lower optim.lr, or set on_nan: skip)");
      last_grad_norm = optim::scalar_value(gnorm);
      double secs = std::chrono::duration<double>(Clock::now() - t_log).count();
      double tps = double(steps_since_log * tokens_per_step) / secs;
      std::vector<std::pair<std::string, double>> row = {{"step", double(done)},
                                                         {"loss", avg},
                                                         {"lr", lr},
                                                         {"grad_norm", last_grad_norm},
                                                         {"tokens_per_s", tps}};
      std::string text = "loss " + std::to_string(avg).substr(0, 6) + " | lr " + std::to_string(lr).substr(0, 8) +
                         " | gnorm " + std::to_string(last_grad_norm).substr(0, 5) + " | " + human(tps) + " tok/s";
      if (peak_tflops > 0) {
        double mfu = tps * flops_per_token / (peak_tflops * 1e12);
        row.push_back({"mfu", mfu});
        text += " | MFU " + std::to_string(mfu * 100).substr(0, 4) + "%";
      }
      write_metrics(row);
      if (show_progress) progress.update(done, text);
      loss_acc = Tensor();
      steps_since_log = 0;
      t_log = Clock::now();
    }
    if ((c.eval.every > 0 && done % c.eval.every == 0) || last) {
      model.eval();
      Score s = evaluate(c, data, model, dev, eval_batch);
      double vl = s.tokens ? s.loss_sum / double(s.tokens) : NAN;
      std::vector<std::pair<std::string, double>> row = {{"step", double(done)}, {"val_loss", vl}};
      std::string text = "val_loss " + std::to_string(vl).substr(0, 6);
      if (data.scores_accuracy) {
        double acc = s.tokens ? double(s.correct) / double(s.tokens) : NAN;
        row.push_back({"val_acc", acc});
        text += " val_acc " + std::to_string(acc).substr(0, 6);
      } else {
        row.push_back({"val_ppl", std::exp(vl)});
        text += " val_ppl " + std::to_string(std::exp(vl)).substr(0, 7);
      }
      write_metrics(row);
      progress.done();
      spdlog::info("step {}: {}", done, text);
      final_score = s;
      t_log = Clock::now();  // evaluation time stays out of tokens/s
    }
    if (!voted && ckpt_step) {
      comm->all_reduce_sum(&stop_votes, 1);
      voted = true;
    }
    const bool signalled = voted && stop_votes > 0;
    if (signalled && dp && !g_stop_requested.load())
      spdlog::warn("step {}: another rank was asked to stop; stopping with it", done);
    const bool stop = signalled || (opt.stop_after > 0 && done - start_step >= opt.stop_after);
    if (ckpt_step || stop) {
      fs::path p;
      if (dp) comm->barrier();  // every rank has finished the step
      if (writer) p = save(done);
      if (dp) {
        comm->barrier();  // the checkpoint is on disk before any rank goes on (or exits)
        if (!writer) p = latest_checkpoint(c.run_dir);
      }
      if (!stop || last) spdlog::info("step {}: checkpoint {}", done, p.string());
      if (stop && !last) {
        progress.done();
        spdlog::info("{} at step {}: checkpoint {} saved; continue with --resume auto",
                     signalled ? "interrupted" : "stopped (stop_after)", done, p.string());
        return 0;
      }
      t_log = Clock::now();
    }
  }
  progress.done();
  if (skipped) spdlog::warn("{} steps were skipped for non-finite losses", skipped);
  if (data.scores_accuracy && data.task && data.task->name() == "induction_heads" && !c.data.eval_lengths.empty()) {
    NoGradGuard ng;
    model.eval();
    for (int64_t len : c.data.eval_lengths) {
      data::InductionHeadsConfig ic;
      ic.seq_len = len;
      ic.vocab = c.model.vocab_size;
      ic.seed = c.seed;
      data::InductionHeads task(ic);
      Score s;
      for (int64_t i = 0; i < c.eval.batches; ++i) score_batch(model, task.val_batch(uint64_t(i * eval_batch), eval_batch), dev, true, s);
      double acc = double(s.correct) / double(std::max<int64_t>(s.tokens, 1));
      write_metrics({{"eval_len", double(len)}, {"val_acc", acc}});
      spdlog::info("induction heads at length {}: accuracy {:.4f}", len, acc);
    }
  }
  spdlog::info("done: {} steps, metrics in {}/metrics.jsonl", c.schedule.max_steps, c.run_dir);
  return 0;
}

}  // namespace coil::train
