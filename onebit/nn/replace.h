// replace_linears: swap chosen torch::nn::Linear children anywhere in a module tree.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace onebit::nn {

// Modules that cache pointers to their children (e.g. a decoder layer holding its
// projections in AnyModule members) implement this; replace_linears calls it on the
// parent after swapping one of its children, so the cache sees the new module.
class SlotOwner {
 public:
  virtual ~SlotOwner() = default;
  virtual void rebind_slots() = 0;
};

// Builds the replacement of the Linear at qualified name `name` ("layers.0.self_attn.q_proj").
using LinearFactory =
    std::function<std::shared_ptr<torch::nn::Module>(const std::string& name, torch::nn::LinearImpl& linear)>;

// Replaces every torch::nn::Linear below `root` whose dotted name fully matches the ECMAScript
// regex `pattern` by make(name, linear). Returns the replaced names in traversal order.
// Throws onebit::Error when the pattern is invalid or make returns null.
std::vector<std::string> replace_linears(torch::nn::Module& root, const std::string& pattern,
                                         const LinearFactory& make);

}  // namespace onebit::nn
