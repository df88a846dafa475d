// Parameter groups for weight decay, as the paper's recipe (the authors'
// flash-attention trainer, training/src/optim/param_grouping.py):
// decay on Linear weights; none on parameters flagged no-weight-decay
// (mamba_ssm's A_log and D), biases, norm weights and embeddings. Names are
// sorted inside each group so the optimizer-state order is stable across
// resumes.
//
// Kinds are the plain strings of core/param_kind.h, which nn::ParamInfo
// carries too, so optim/ needs nothing from nn/.
#pragma once
#include <string>
#include <vector>

#include "core/param_kind.h"
#include "core/tensor.h"

namespace coil::optim {

namespace param_kind = ::coil::param_kind;  // the kinds' strings: core/param_kind.h

struct ParamSpec {
  std::string name;
  Tensor tensor;
  std::string kind;              // a param_kind string; unknown kinds get no decay
  bool no_weight_decay = false;  // wins over everything
};

// From anything with fields name, tensor, kind, no_weight_decay (nn::ParamInfo).
template <class Infos> std::vector<ParamSpec> param_specs(const Infos& infos) {
  std::vector<ParamSpec> out;
  for (const auto& p : infos) out.push_back({p.name, p.tensor, p.kind, p.no_weight_decay});
  return out;
}

struct GroupingOptions {
  double weight_decay = 0.1;
  bool decay_embeddings = false;
  // The flash-attention trainer decays every parameter it does not exclude,
  // which includes conv1d.weight; the default here is Linear weights only.
  bool decay_conv_weights = false;
  bool decay_biases = false;
  bool decay_norms = false;
};

struct ParamGroup {
  std::string label;  // "decay" or "no_decay"
  double weight_decay = 0;
  std::vector<std::string> names;  // sorted
  std::vector<Tensor> params;      // in the order of names
};

// Whether `spec` takes weight decay under `opt`.
bool decays(const ParamSpec& spec, const GroupingOptions& opt);

// Two groups, "decay" (opt.weight_decay) then "no_decay" (0), either possibly
// empty. A tensor listed twice (tied weights) is kept under its first name;
// two different tensors under one name are an error.
std::vector<ParamGroup> group_parameters(const std::vector<ParamSpec>& specs, const GroupingOptions& opt = {});

}  // namespace coil::optim
