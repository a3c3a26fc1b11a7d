#include <torch/torch.h>

#include "onebit/core/error.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;
using namespace onebit::models;

namespace {
CausalLM tiny_model() {
  torch::manual_seed(11);
  auto m = build_model(test::tiny_llama_config());
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters())
    if (p.dim() == 2) p.normal_(0, 0.3);  // peaked distributions: greedy is unambiguous
  return m;
}

// Greedy continuation by full forwards without cache: the independent reference.
torch::Tensor greedy_no_cache(CausalLMImpl& m, torch::Tensor ids, int64_t n) {
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < n; ++i) {
    auto next = m.forward(ids).logits.select(1, ids.size(1) - 1).argmax(-1, true);
    ids = torch::cat({ids, next}, 1);
  }
  return ids;
}
}  // namespace

TEST_CASE("greedy generate equals argmax decoding without cache", "[models]") {
  auto m = tiny_model();
  const auto prompt = torch::randint(3, 64, {3, 4}, torch::kLong);
  GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 12;
  CHECK(torch::equal(generate(*m, prompt, o), greedy_no_cache(*m, prompt, 12)));
  o.temperature = 1.0;
  o.top_k = 1;  // sampling restricted to the top token is greedy
  CHECK(torch::equal(generate(*m, prompt, o), greedy_no_cache(*m, prompt, 12)));
}

TEST_CASE("sampling is reproducible per seed with greedy_prefix and top-p", "[models]") {
  auto m = tiny_model();
  const auto prompt = torch::randint(3, 64, {4, 3}, torch::kLong);
  GenerateOptions o;
  o.max_new_tokens = 16;
  o.seed = 5;
  auto a = generate(*m, prompt, o);
  auto b = generate(*m, prompt, o);
  CHECK(torch::equal(a, b));
  o.seed = 6;
  CHECK_FALSE(torch::equal(a, generate(*m, prompt, o)));

  o.greedy_prefix = 3;
  auto g = generate(*m, prompt, o);
  auto ref = greedy_no_cache(*m, prompt, 3);
  CHECK(torch::equal(g.narrow(1, 0, 6), ref));

  o.greedy_prefix = 0;
  o.top_p = 1e-6;  // only the most likely token survives
  CHECK(torch::equal(generate(*m, prompt, o), greedy_no_cache(*m, prompt, 16)));
}

TEST_CASE("eos stops a row and pads it with eos and bad options are errors", "[models]") {
  auto m = tiny_model();
  const auto prompt = torch::randint(3, 64, {2, 3}, torch::kLong);
  auto ref = greedy_no_cache(*m, prompt, 10);
  GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 10;
  o.eos_token_id = ref[0][3 + 2].item<int64_t>();  // row 0's third generated token
  auto out = generate(*m, prompt, o);
  CHECK(torch::equal(out[0].narrow(0, 0, 6), ref[0].narrow(0, 0, 6)));
  CHECK((out[0].narrow(0, 6, out.size(1) - 6) == o.eos_token_id).all().item<bool>());

  o.top_p = 0;
  CHECK_THROWS_WITH(generate(*m, prompt, o), OB_CONTAINS("top_p"));
  CHECK_THROWS_WITH(generate(*m, torch::zeros({2}, torch::kLong), GenerateOptions{}), OB_CONTAINS("[B, T0]"));
}
