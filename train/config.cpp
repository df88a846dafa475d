#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"

namespace coil::train {

namespace {

// Where a value came from, for messages: "file:line" or "--set key=value".
struct Origin {
  std::string source;
  std::map<std::string, std::string> overrides;  // dotted key -> the --set text
  std::string at(const YAML::Node& n, const std::string& key) const {
    auto it = overrides.find(key);
    if (it != overrides.end()) return "--set " + it->second;
    if (n.Mark().is_null()) return source;
    return source + ":" + std::to_string(n.Mark().line + 1);
  }
};

[[noreturn]] void bad(const Origin& o, const YAML::Node& n, const std::string& key, const std::string& what) {
  fail(o.at(n, key) + ": " + key + ": " + what);
}

// Reads one mapping section, remembering which keys were used so leftovers
// (typos, keys from another version) are reported instead of ignored.
class Reader {
 public:
  Reader(const YAML::Node& node, std::string prefix, const Origin& o) : node_(node), prefix_(std::move(prefix)), o_(o) {
    if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) bad(o_, node_, prefix_.empty() ? "(top level)" : prefix_, "expected a mapping");
  }

  template <class T> void field(const char* key, T& out) {
    YAML::Node v = get(key);
    if (!v.IsDefined()) return;
    out = convert<T>(v, full(key));
  }
  template <class T> void field(const char* key, T& out, double lo, double hi) {
    field(key, out);
    if (!present(key)) return;
    const YAML::Node& cn = node_;
    YAML::Node v = cn[key];
    if (double(out) < lo || double(out) > hi) {
      std::ostringstream os;
      os << "value " << out << " is out of range [" << lo << ", " << hi << "]";
      bad(o_, v, full(key), os.str());
    }
  }
  void choice(const char* key, std::string& out, std::initializer_list<const char*> allowed) {
    field(key, out);
    for (const char* a : allowed)
      if (out == a) return;
    std::string list;
    for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
    const YAML::Node& cn = node_;
    bad(o_, present(key) ? cn[key] : node_, full(key), "'" + out + "' is not one of: " + list);
  }
  // "auto" or an integer >= lo; auto stored as 0.
  void auto_int(const char* key, int64_t& out, int64_t lo) {
    YAML::Node v = get(key);
    if (!v.IsDefined()) return;
    if (v.IsScalar() && v.Scalar() == "auto") {
      out = 0;
      return;
    }
    out = convert<int64_t>(v, full(key));
    if (out < lo) bad(o_, v, full(key), "must be 'auto' or an integer >= " + std::to_string(lo));
  }
  Reader section(const char* key) {
    YAML::Node v = get(key);
    return Reader(v.IsDefined() ? v : YAML::Node(YAML::NodeType::Undefined), full(key), o_);
  }
  void finish() const {
    if (!node_.IsDefined() || !node_.IsMap()) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string k = it->first.as<std::string>();
      if (!used_.count(k)) bad(o_, it->first, full(k.c_str()), "unknown key" + suggestion(k));
    }
  }

 private:
  // The value under key, or an invalid node (false in a boolean test) when the
  // key is absent or null. Const access: a non-const operator[] would insert.
  YAML::Node get(const char* key) {
    used_.insert(key);
    if (!present(key)) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& cn = node_;
    return cn[key];
  }
  bool present(const char* key) const {
    if (!node_.IsDefined() || !node_.IsMap()) return false;
    const YAML::Node& cn = node_;
    YAML::Node v = cn[key];
    return v.IsDefined() && !v.IsNull();
  }
  std::string full(const char* key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  std::string suggestion(const std::string& k) const {
    // The closest known key by edit distance, if close.
    std::string best;
    size_t best_d = 3;
    for (const std::string& u : used_) {
      std::vector<size_t> prev(u.size() + 1), cur(u.size() + 1);
      for (size_t j = 0; j <= u.size(); ++j) prev[j] = j;
      for (size_t i = 1; i <= k.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= u.size(); ++j)
          cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (k[i - 1] == u[j - 1] ? 0 : 1)});
        std::swap(prev, cur);
      }
      if (prev[u.size()] < best_d) best_d = prev[u.size()], best = u;
    }
    return best.empty() ? "" : " (did you mean '" + best + "'?)";
  }

  template <class T> T convert(const YAML::Node& v, const std::string& key) {
    if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (v.IsScalar()) return T{v.Scalar()};
      if (!v.IsSequence()) bad(o_, v, key, "expected a list of strings");
      T out;
      for (const auto& e : v) out.push_back(convert<std::string>(e, key));
      return out;
    } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      if (!v.IsSequence()) bad(o_, v, key, "expected a list of integers");
      T out;
      for (const auto& e : v) out.push_back(convert<int64_t>(e, key));
      return out;
    } else {
      if (!v.IsScalar()) bad(o_, v, key, std::string("expected ") + type_name<T>());
      const std::string& s = v.Scalar();
      if constexpr (std::is_same_v<T, std::string>) {
        return s;
      } else if constexpr (std::is_same_v<T, bool>) {
        if (s == "true" || s == "True" || s == "yes" || s == "on") return true;
        if (s == "false" || s == "False" || s == "no" || s == "off") return false;
        bad(o_, v, key, "expected true or false, got '" + s + "'");
      } else {
        // Integers accept 1e6-style values when they are exact integers.
        size_t pos = 0;
        double d = 0;
        try {
          d = std::stod(s, &pos);
        } catch (...) {
          pos = 0;
        }
        if (pos != s.size() || !std::isfinite(d)) bad(o_, v, key, std::string("expected ") + type_name<T>() + ", got '" + s + "'");
        if constexpr (std::is_integral_v<T>) {
          if (d != std::floor(d) || std::fabs(d) > 9e15)
            bad(o_, v, key, std::string("expected ") + type_name<T>() + ", got '" + s + "'");
          if (std::is_unsigned_v<T> && d < 0) bad(o_, v, key, "expected a non-negative integer, got '" + s + "'");
          return T(d);
        } else {
          return T(d);
        }
      }
    }
  }
  template <class T> static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>) return "a boolean";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else return "a string";
  }

  YAML::Node node_;
  std::string prefix_;
  const Origin& o_;
  std::set<std::string> used_;
};

void apply_override(YAML::Node& root, const std::string& text, Origin& origin) {
  auto eq = text.find('=');
  COIL_CHECK(eq != std::string::npos && eq > 0, "--set ", text, ": expected key=value");
  std::string key = text.substr(0, eq), value = text.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) {
    COIL_CHECK(!p.empty(), "--set ", text, ": empty key component");
    parts.push_back(p);
  }
  // yaml-cpp nodes are handles: walk with reset() so assignment re-points
  // the handle instead of overwriting the parent's value.
  YAML::Node cur;
  cur.reset(root);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    COIL_CHECK(!cur[parts[i]] || cur[parts[i]].IsMap() || cur[parts[i]].IsNull(), "--set ", text, ": '",
               parts[i], "' is not a section");
    if (!cur[parts[i]] || cur[parts[i]].IsNull()) cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = cur[parts[i]];
    cur.reset(next);
  }
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    fail("--set " + text + ": cannot parse value: " + e.msg);
  }
  cur[parts.back()] = parsed ? parsed : YAML::Node(value);
  origin.overrides[key] = text;
}

void bind(Reader& r, Config& c) {
  r.field("run_dir", c.run_dir);
  r.field("seed", c.seed);
  r.field("device", c.device);
  r.choice("precision", c.precision, {"fp32", "bf16"});
  r.choice("on_nan", c.on_nan, {"stop", "skip"});

  Reader m = r.section("model");
  m.choice("arch", c.model.arch, {"mamba"});
  m.field("d_model", c.model.d_model, 1, 1 << 16);
  m.field("n_layer", c.model.n_layer, 1, 1024);
  m.field("vocab_size", c.model.vocab_size, 2, 1 << 24);
  m.field("d_state", c.model.d_state, 1, 256);
  m.field("d_conv", c.model.d_conv, 1, 8);
  m.field("expand", c.model.expand, 1, 16);
  m.auto_int("dt_rank", c.model.dt_rank, 1);
  m.field("dt_min", c.model.dt_min, 1e-8, 10);
  m.field("dt_max", c.model.dt_max, 1e-8, 10);
  m.field("dt_init_floor", c.model.dt_init_floor, 0, 1);
  m.field("norm_eps", c.model.norm_eps, 1e-12, 1);
  m.field("residual_in_fp32", c.model.residual_in_fp32);
  m.field("tie_embeddings", c.model.tie_embeddings);
  m.field("pad_vocab_size_multiple", c.model.pad_vocab_size_multiple, 1, 1024);
  m.field("selective_delta", c.model.selective_delta);
  m.field("selective_B", c.model.selective_B);
  m.field("selective_C", c.model.selective_C);
  m.finish();

  Reader d = r.section("data");
  d.choice("kind", c.data.kind, {"tokens", "selective_copying", "induction_heads"});
  d.field("path", c.data.path);
  d.field("text", c.data.text);
  d.field("tokenizer", c.data.tokenizer);
  d.field("val_fraction", c.data.val_fraction, 0, 0.99);
  d.field("seq_len", c.data.seq_len, 1, 1 << 24);
  d.choice("sampling", c.data.sampling, {"random", "sequential"});
  d.field("n_tokens", c.data.n_tokens, 1, 1 << 20);
  d.field("eval_lengths", c.data.eval_lengths);
  d.finish();

  Reader o = r.section("optim");
  o.choice("name", c.optim.name, {"adamw", "adam"});
  o.field("lr", c.optim.lr, 0, 10);
  o.field("beta1", c.optim.beta1, 0, 0.999999);
  o.field("beta2", c.optim.beta2, 0, 0.999999999);
  o.field("eps", c.optim.eps, 0, 1);
  o.field("weight_decay", c.optim.weight_decay, 0, 10);
  o.field("decay_embeddings", c.optim.decay_embeddings);
  o.field("grad_clip", c.optim.grad_clip, 0, 1e9);
  o.finish();

  Reader s = r.section("schedule");
  s.choice("kind", c.schedule.kind, {"constant", "cosine", "linear"});
  s.field("max_steps", c.schedule.max_steps, 1, 1e12);
  s.field("warmup_steps", c.schedule.warmup_steps, -1, 1e12);
  s.field("warmup_fraction", c.schedule.warmup_fraction, 0, 1);
  s.field("lr_min", c.schedule.lr_min, 0, 10);
  s.finish();

  Reader b = r.section("batch");
  b.field("sequences_per_step", c.batch.sequences_per_step, 1, 1 << 24);
  b.field("micro_batch", c.batch.micro_batch, 0, 1 << 24);
  b.finish();

  Reader l = r.section("log");
  l.field("every", c.log.every, 1, 1e12);
  l.field("progress", c.log.progress);
  l.finish();

  Reader e = r.section("eval");
  e.field("every", c.eval.every, 0, 1e12);
  e.field("batches", c.eval.batches, 1, 1e9);
  e.field("batch_size", c.eval.batch_size, 0, 1 << 24);
  e.finish();

  Reader k = r.section("checkpoint");
  k.field("every", c.checkpoint.every, 0, 1e12);
  k.field("keep_last", c.checkpoint.keep_last, 1, 1e6);
  k.finish();

  Reader ds = r.section("dist");
  ds.choice("backend", c.dist.backend, {"auto", "nccl", "store", "gloo"});
  ds.field("bucket_mb", c.dist.bucket_mb, 1e-6, 1 << 16);
  ds.field("timeout_s", c.dist.timeout_s, 1e-3, 1e7);
  ds.field("log_all_ranks", c.dist.log_all_ranks);
  ds.finish();

  r.finish();
}

// Checks between keys, reported against the key that must change.
void validate(const Config& c, const YAML::Node& root_in, const Origin& o) {
  const YAML::Node root = root_in;
  auto at = [&](const char* sec, const char* key) {
    YAML::Node s = root[sec];
    if (s.IsDefined() && s.IsMap() && s[key].IsDefined()) return YAML::Node(s[key]);
    return YAML::Node(root);
  };
  if (c.model.dt_min > c.model.dt_max)
    bad(o, at("model", "dt_min"), "model.dt_min", "must not exceed model.dt_max");
  if (c.data.kind == "tokens" && c.data.path.empty())
    bad(o, root["data"].IsDefined() ? YAML::Node(root["data"]) : YAML::Node(root), "data.path",
        "required when data.kind is tokens");
  if (c.data.kind != "tokens" && !c.data.text.empty())
    bad(o, at("data", "text"), "data.text", "only used when data.kind is tokens");
  if (c.data.kind != "tokens" && !c.data.path.empty())
    bad(o, at("data", "path"), "data.path", "only used when data.kind is tokens");
  if (c.batch.micro_batch > 0 && c.batch.sequences_per_step % c.batch.micro_batch != 0)
    bad(o, at("batch", "micro_batch"), "batch.micro_batch",
        "must divide batch.sequences_per_step (" + std::to_string(c.batch.sequences_per_step) + ")");
  if (c.schedule.warmup_steps > c.schedule.max_steps)
    bad(o, at("schedule", "warmup_steps"), "schedule.warmup_steps", "exceeds schedule.max_steps");
  if (c.schedule.lr_min > c.optim.lr)
    bad(o, at("schedule", "lr_min"), "schedule.lr_min", "exceeds optim.lr");
  for (int64_t len : c.data.eval_lengths)
    if (len < 1) bad(o, at("data", "eval_lengths"), "data.eval_lengths", "lengths must be positive");
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda" && c.device.rfind("cuda:", 0) != 0)
    bad(o, root["device"].IsDefined() ? YAML::Node(root["device"]) : YAML::Node(root), "device", "expected auto, cpu, cuda or cuda:N, got '" + c.device + "'");
}

}  // namespace

Config parse_config(const std::string& text, const std::string& source, const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    fail(source + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  Origin origin{source, {}};
  COIL_CHECK(root.IsMap(), source, ": the config must be a mapping of sections");
  for (const std::string& ov : overrides) apply_override(root, ov, origin);
  Config c;
  c.source = source;
  Reader r(root, "", origin);
  bind(r, c);
  validate(c, root, origin);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  COIL_CHECK(in.good(), path, ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

std::string to_yaml(const Config& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "run_dir" << YAML::Value << c.run_dir;
  e << YAML::Key << "seed" << YAML::Value << c.seed;
  e << YAML::Key << "device" << YAML::Value << c.device;
  e << YAML::Key << "precision" << YAML::Value << c.precision;
  e << YAML::Key << "on_nan" << YAML::Value << c.on_nan;
  auto sec = [&](const char* name, auto&& body) {
    e << YAML::Key << name << YAML::Value << YAML::BeginMap;
    body();
    e << YAML::EndMap;
  };
  auto kv = [&](const char* k, const auto& v) { e << YAML::Key << k << YAML::Value << v; };
  sec("model", [&] {
    const ModelConfig& m = c.model;
    kv("arch", m.arch), kv("d_model", m.d_model), kv("n_layer", m.n_layer), kv("vocab_size", m.vocab_size);
    kv("d_state", m.d_state), kv("d_conv", m.d_conv), kv("expand", m.expand);
    if (m.dt_rank == 0) kv("dt_rank", "auto"); else kv("dt_rank", m.dt_rank);
    kv("dt_min", m.dt_min), kv("dt_max", m.dt_max), kv("dt_init_floor", m.dt_init_floor), kv("norm_eps", m.norm_eps);
    kv("residual_in_fp32", m.residual_in_fp32), kv("tie_embeddings", m.tie_embeddings);
    kv("pad_vocab_size_multiple", m.pad_vocab_size_multiple);
    kv("selective_delta", m.selective_delta), kv("selective_B", m.selective_B), kv("selective_C", m.selective_C);
  });
  sec("data", [&] {
    const DataConfig& d = c.data;
    kv("kind", d.kind), kv("path", d.path);
    e << YAML::Key << "text" << YAML::Value << YAML::Flow << d.text;
    kv("tokenizer", d.tokenizer), kv("val_fraction", d.val_fraction);
    kv("seq_len", d.seq_len), kv("sampling", d.sampling);
    kv("n_tokens", d.n_tokens);
    e << YAML::Key << "eval_lengths" << YAML::Value << YAML::Flow << d.eval_lengths;
  });
  sec("optim", [&] {
    const OptimConfig& o = c.optim;
    kv("name", o.name), kv("lr", o.lr), kv("beta1", o.beta1), kv("beta2", o.beta2), kv("eps", o.eps);
    kv("weight_decay", o.weight_decay), kv("decay_embeddings", o.decay_embeddings), kv("grad_clip", o.grad_clip);
  });
  sec("schedule", [&] {
    const ScheduleConfig& s = c.schedule;
    kv("kind", s.kind), kv("max_steps", s.max_steps), kv("warmup_steps", s.warmup_steps);
    kv("warmup_fraction", s.warmup_fraction), kv("lr_min", s.lr_min);
  });
  sec("batch", [&] { kv("sequences_per_step", c.batch.sequences_per_step), kv("micro_batch", c.batch.micro_batch); });
  sec("log", [&] { kv("every", c.log.every), kv("progress", c.log.progress); });
  sec("eval", [&] { kv("every", c.eval.every), kv("batches", c.eval.batches), kv("batch_size", c.eval.batch_size); });
  sec("checkpoint", [&] { kv("every", c.checkpoint.every), kv("keep_last", c.checkpoint.keep_last); });
  sec("dist", [&] {
    kv("backend", c.dist.backend), kv("bucket_mb", c.dist.bucket_mb), kv("timeout_s", c.dist.timeout_s);
    kv("log_all_ranks", c.dist.log_all_ranks);
  });
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace coil::train
