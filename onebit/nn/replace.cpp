#include "onebit/nn/replace.h"

#include <regex>

#include "onebit/core/error.h"

namespace onebit::nn {

namespace {
void walk(torch::nn::Module& parent, const std::string& prefix, const std::regex& re,
          const LinearFactory& make, std::vector<std::string>& replaced) {
  bool changed = false;
  for (const auto& item : parent.named_children()) {
    const std::string name = prefix.empty() ? item.key() : prefix + "." + item.key();
    auto* linear = dynamic_cast<torch::nn::LinearImpl*>(item.value().get());
    if (linear && std::regex_match(name, re)) {
      auto fresh = make(name, *linear);
      OB_CHECK(fresh != nullptr, "replace_linears: factory returned no module for '", name, "'");
      parent.replace_module(item.key(), fresh);
      replaced.push_back(name);
      changed = true;
    } else {
      walk(*item.value(), name, re, make, replaced);
    }
  }
  if (changed) {
    if (auto* owner = dynamic_cast<SlotOwner*>(&parent)) owner->rebind_slots();
  }
}
}  // namespace

std::vector<std::string> replace_linears(torch::nn::Module& root, const std::string& pattern,
                                         const LinearFactory& make) {
  std::regex re;
  try {
    re = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("replace_linears: invalid name pattern '", pattern, "': ", e.what());
  }
  std::vector<std::string> replaced;
  walk(root, "", re, make, replaced);
  return replaced;
}

}  // namespace onebit::nn
