// ForwardArgs::layer_inputs (teacher forcing of the decoder, for block-wise distillation): fed
// the model's own hidden states it changes nothing, and fed them it makes each state depend on
// its own layer only.
#include <torch/torch.h>

#include "onebit/models/loader.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

namespace {

using onebit::models::ForwardArgs;
using onebit::models::ForwardOutput;

ForwardOutput run(const onebit::models::CausalLM& m, const torch::Tensor& ids,
                  const std::vector<torch::Tensor>* inputs = nullptr) {
  torch::NoGradGuard no_grad;
  ForwardArgs a;
  a.output_hidden_states = true;
  a.layer_inputs = inputs;
  return m->forward(ids, a);
}

}  // namespace

TEST_CASE("forward: layer_inputs feed each decoder layer a given input", "[models]") {
  for (auto mc : {onebit::test::tiny_llama_config(), onebit::test::tiny_opt_config()}) {
    CAPTURE(mc.model_type);
    mc.num_hidden_layers = 3;
    torch::manual_seed(7);
    auto m = onebit::models::build_model(mc);
    m->eval();
    const auto ids = torch::randint(2, 64, {2, 9}, torch::kLong);
    const auto free = run(m, ids);
    REQUIRE(free.hidden_states.size() == 4);

    // Its own states as inputs: the same forward.
    const auto self = run(m, ids, &free.hidden_states);
    for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(self.hidden_states[i], free.hidden_states[i], 1e-6, 1e-6));
    CHECK(torch::allclose(self.last_hidden, free.last_hidden, 1e-6, 1e-6));

    // Change layer 0: a free forward changes every later state; a forced one only state 1.
    {
      torch::NoGradGuard no_grad;
      for (auto& p : m->named_parameters())
        if (p.key().find("layers.0.") != std::string::npos && p.value().dim() == 2) p.value().mul_(-1.5);
    }
    const auto free2 = run(m, ids);
    const auto forced = run(m, ids, &free.hidden_states);
    for (size_t i = 1; i < 4; ++i) CHECK(!torch::allclose(free2.hidden_states[i], free.hidden_states[i], 1e-3, 1e-3));
    CHECK(!torch::allclose(forced.hidden_states[1], free.hidden_states[1], 1e-3, 1e-3));
    for (size_t i = 2; i < 4; ++i) CHECK(torch::allclose(forced.hidden_states[i], free.hidden_states[i], 1e-6, 1e-6));

    const std::vector<torch::Tensor> short_inputs(free.hidden_states.begin(), free.hidden_states.begin() + 2);
    CHECK_THROWS_WITH(run(m, ids, &short_inputs), OB_CONTAINS("layer_inputs has 2 tensors for 3 decoder layers"));
  }
}
