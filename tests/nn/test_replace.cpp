// replace_linears on a small nested module tree.
#include <torch/torch.h>

#include "onebit/core/error.h"
#include "onebit/nn/onebit_linear.h"
#include "onebit/nn/replace.h"
#include "tests/support.h"

namespace {
// Caches its projections in members, like a decoder layer; rebind_slots refreshes them.
struct BlockImpl : torch::nn::Module, onebit::nn::SlotOwner {
  BlockImpl() {
    q_proj = register_module("q_proj", torch::nn::Linear(8, 8));
    k_proj = register_module("k_proj", torch::nn::Linear(8, 4));
    mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(8, 16)));
  }
  void rebind_slots() override {
    ++rebinds;
    q = named_children()["q_proj"];
    k = named_children()["k_proj"];
  }
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr};
  torch::nn::Sequential mlp{nullptr};
  std::shared_ptr<torch::nn::Module> q, k;
  int rebinds = 0;
};

struct RootImpl : torch::nn::Module {
  RootImpl() {
    b0 = register_module("b0", std::make_shared<BlockImpl>());
    b1 = register_module("b1", std::make_shared<BlockImpl>());
    head = register_module("head", torch::nn::Linear(8, 2));
  }
  std::shared_ptr<BlockImpl> b0, b1;
  torch::nn::Linear head{nullptr};
};

onebit::nn::LinearFactory to_onebit(std::vector<std::string>* seen) {
  return [seen](const std::string& name, torch::nn::LinearImpl& lin) -> std::shared_ptr<torch::nn::Module> {
    seen->push_back(name);
    return onebit::nn::OneBitLinearImpl::from_linear(
        lin.weight, lin.bias,
        onebit::nn::OneBitLinearOptions(lin.weight.size(1), lin.weight.size(0)));
  };
}
}  // namespace

TEST_CASE("replace_linears swaps matching linears and rebinds their owners", "[layer]") {
  RootImpl root;
  std::vector<std::string> seen;
  auto names = onebit::nn::replace_linears(root, R"(b\d+\.(q|k)_proj)", to_onebit(&seen));
  CHECK(names == std::vector<std::string>{"b0.q_proj", "b0.k_proj", "b1.q_proj", "b1.k_proj"});
  CHECK(seen == names);
  CHECK(root.b0->rebinds == 1);  // once per parent, after all its swaps
  CHECK(root.b1->rebinds == 1);
  CHECK(std::dynamic_pointer_cast<onebit::nn::OneBitLinearImpl>(root.b0->q) != nullptr);
  CHECK(std::dynamic_pointer_cast<onebit::nn::OneBitLinearImpl>(root.b1->k) != nullptr);
  auto params = root.named_parameters();
  CHECK(params.contains("b0.q_proj.g"));
  CHECK(params.contains("b1.k_proj.h"));
  CHECK(params.contains("b0.mlp.0.weight"));  // not matched: untouched
  CHECK(params.contains("head.bias"));
  CHECK(!params.contains("b0.q_proj.bias"));

  // The pattern must match the whole name; a second pass finds the nested Sequential child.
  auto more = onebit::nn::replace_linears(root, R"(.*mlp\.\d+)", to_onebit(&seen));
  CHECK(more == std::vector<std::string>{"b0.mlp.0", "b1.mlp.0"});
  CHECK(onebit::nn::replace_linears(root, "proj", to_onebit(&seen)).empty());
}

TEST_CASE("replace_linears reports bad patterns and null factories", "[layer]") {
  RootImpl root;
  std::vector<std::string> seen;
  CHECK_THROWS_WITH(onebit::nn::replace_linears(root, "(q_proj", to_onebit(&seen)),
                    OB_CONTAINS("replace_linears: invalid name pattern '(q_proj'"));
  CHECK_THROWS_WITH(onebit::nn::replace_linears(
                        root, "head", [](const std::string&, torch::nn::LinearImpl&) {
                          return std::shared_ptr<torch::nn::Module>();
                        }),
                    OB_CONTAINS("factory returned no module for 'head'"));
}
