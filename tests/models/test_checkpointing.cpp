// Activation checkpointing: same loss and the same gradients as the plain backward.
#include <torch/torch.h>

#include "onebit/models/loader.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;
using namespace onebit::models;

namespace {
constexpr double kGradTol = 1e-6;

// Gradients of a loss that uses the logits and every hidden state.
std::map<std::string, torch::Tensor> grads(CausalLMImpl& m, const torch::Tensor& ids, bool ckpt) {
  m.zero_grad();
  m.set_gradient_checkpointing(ckpt);
  ForwardArgs args;
  args.output_hidden_states = true;
  auto out = m.forward(ids, args);
  auto loss = torch::nn::functional::cross_entropy(out.logits.flatten(0, 1), ids.flatten());
  for (auto& h : out.hidden_states) loss = loss + h.square().mean();
  loss.backward();
  std::map<std::string, torch::Tensor> g;
  for (auto& p : m.named_parameters())
    if (p.value().grad().defined()) g[p.key()] = p.value().grad().clone();
  return g;
}
}  // namespace

TEST_CASE("gradient checkpointing gives the non-checkpointed gradients", "[models]") {
  for (const auto& cfg : {test::tiny_llama_config(), test::tiny_opt_config()}) {
    INFO(cfg.model_type);
    torch::manual_seed(7);
    auto model = build_model(cfg);
    model->train();
    const auto ids = torch::randint(3, 64, {2, 10}, torch::kLong);
    for (bool frozen_embeddings : {false, true}) {
      INFO("frozen embeddings " << frozen_embeddings);
      // Frozen embeddings: the layer input needs no grad, parameter grads must still flow.
      for (auto& p : model->named_parameters())
        if (p.key().find("embed") != std::string::npos) p.value().set_requires_grad(!frozen_embeddings);
      auto plain = grads(*model, ids, false);
      auto ckpt = grads(*model, ids, true);
      REQUIRE(plain.size() == ckpt.size());
      REQUIRE(plain.size() > 4);
      for (auto& [name, g] : plain) {
        INFO(name);
        REQUIRE(ckpt.count(name));
        CHECK((g - ckpt[name]).abs().max().item<double>() <= kGradTol);
      }
    }
  }
}
