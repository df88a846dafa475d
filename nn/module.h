// Module: the container every model piece derives from. It owns nothing but
// bookkeeping: named parameter slots (pointers to the subclass's Tensor
// members, registered in order), named children, and the training flag.
//
// Names are dotted paths as in PyTorch / mamba_ssm state dicts
// ("backbone.layers.0.mixer.in_proj.weight"): a module's own parameters come
// first, then its children's, depth first, in registration order.
//
// Tied weights are two slots holding the same tensor (same impl), e.g.
// backbone.embedding.weight and lm_head.weight. named_parameters(),
// parameters(), parameter_infos() and num_parameters() list each distinct
// tensor once, under its first name; state_dict() lists every name, as
// mamba_ssm's does. Module::to keeps ties (one new tensor per distinct one).
//
// Modules are neither copyable nor movable (slots point into the object);
// hold them by value as members or by std::shared_ptr.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/param_kind.h"
#include "core/tensor.h"

namespace coil::nn {

namespace param_kind = ::coil::param_kind;  // the kinds' strings: core/param_kind.h

struct ParamOptions {
  std::string kind = param_kind::ssm;
  bool no_weight_decay = false;  // mamba_ssm's _no_weight_decay (A_log, D)
};

struct ParamInfo {
  std::string name;
  Tensor tensor;
  std::string kind;
  bool no_weight_decay = false;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using StateDict = std::map<std::string, Tensor>;

struct LoadResult {
  std::vector<std::string> missing_keys;     // model names absent from the map (non-strict only)
  std::vector<std::string> unexpected_keys;  // map names the model does not have (non-strict only)
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Distinct parameters (first name wins for tied ones), in order.
  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  std::vector<ParamInfo> parameter_infos() const;
  // Every name, tied aliases included. Values are detached aliases of the
  // parameters (they share storage: copy them for a snapshot).
  StateDict state_dict() const;
  // The same entries as state_dict(), in registration order.
  NamedTensors state_dict_ordered() const;
  // Copies values in place (converted to each parameter's dtype and device).
  // A shape mismatch is always an error; with strict, so are missing and
  // unexpected keys (the message names them). A tied parameter counts as
  // present when any of its names is in the map (safetensors files store a
  // tied weight once).
  LoadResult load_state_dict(const StateDict& sd, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Elements of the distinct parameters.
  int64_t num_parameters() const;
  // Moves every parameter (and its grad) to `device`; parameters stay leaves
  // requiring grad and tied ones stay tied. Build optimizers afterwards.
  void to(Device device);
  // Sets every parameter's grad to undefined.
  void zero_grad();

  std::vector<std::pair<std::string, Module*>> named_children() const;
  // This module ("") and every descendant, pre-order, with dotted names.
  std::vector<std::pair<std::string, const Module*>> named_modules() const;

 protected:
  // `slot` must be a member of the subclass (it is read and rebound later).
  // `value` becomes a leaf requiring grad (unless it already is one: a tied
  // parameter passes the other module's tensor).
  void register_parameter(const std::string& name, Tensor& slot, Tensor value, ParamOptions opts = {});
  template <class M> std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  struct Slot {
    std::string name;
    Tensor* tensor;
    ParamOptions opts;
  };
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  // Every slot of the tree with its full name, in order.
  void collect(const std::string& prefix, std::vector<std::pair<std::string, const Slot*>>& out) const;
  std::vector<std::pair<std::string, const Slot*>> all_slots() const;

  std::vector<Slot> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace coil::nn
