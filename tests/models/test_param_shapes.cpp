// param_shapes(cfg) lists what the built model holds: same names, order and shapes as
// named_parameters(), for LLaMA (tied and untied), Qwen2 (q/k/v bias) and OPT (project_in/out).
#include <torch/torch.h>

#include "onebit/models/loader.h"
#include "onebit/models/param_shapes.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;

namespace {
void check_against_model(const models::ModelConfig& cfg) {
  const auto listed = models::param_shapes(cfg);
  const auto built = models::build_model(cfg)->named_parameters(/*recurse=*/true);
  REQUIRE(listed.size() == built.size());
  for (size_t i = 0; i < listed.size(); ++i) {
    INFO(listed[i].name);
    CHECK(listed[i].name == built[i].key());
    CHECK(c10::IntArrayRef(listed[i].shape) == built[i].value().sizes());
  }
}
}  // namespace

TEST_CASE("param_shapes matches the parameters of built models", "[models][plan]") {
  check_against_model(test::tiny_llama_config(false));
  check_against_model(test::tiny_llama_config(true));
  check_against_model(test::tiny_opt_config());
  check_against_model(models::parse_model_config(R"({"model_type": "qwen2", "vocab_size": 64, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "tie_word_embeddings": false})"));
}

TEST_CASE("param_shapes marks decoder layers and linear weights", "[models][plan]") {
  const auto cfg = test::tiny_llama_config(false);
  int64_t linears = 0, in_layers = 0;
  for (const auto& p : models::param_shapes(cfg)) {
    linears += p.linear_weight;
    in_layers += p.layer >= 0;
  }
  CHECK(linears == 2 * 7 + 1);     // 7 per layer and lm_head
  CHECK(in_layers == 2 * (7 + 2));  // 7 linears and 2 norms per layer
}
