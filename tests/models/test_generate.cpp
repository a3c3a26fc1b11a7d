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

TEST_CASE("rows that stop at EOS leave the batch; the others continue unchanged", "[models]") {
  auto m = tiny_model();
  torch::manual_seed(12);
  const auto prompt = torch::randint(3, 64, {6, 2}, torch::kLong);
  const int64_t n = 12;
  const auto ref = greedy_no_cache(*m, prompt, n);
  GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = n;
  o.eos_token_id = ref[0][2 + 1].item<int64_t>();  // row 0 stops at its second token
  // Expected: each reference row up to its first EOS, then EOS.
  auto expect = ref.clone();
  int64_t stopped = 0;
  for (int64_t r = 0; r < expect.size(0); ++r) {
    for (int64_t t = 2; t < expect.size(1); ++t)
      if (ref[r][t].item<int64_t>() == o.eos_token_id) {
        expect[r].narrow(0, t, expect.size(1) - t).fill_(o.eos_token_id);
        ++stopped;
        break;
      }
  }
  REQUIRE(stopped >= 1);
  REQUIRE(stopped < expect.size(0));  // some rows run to the end
  for (int64_t every : {1, 3, 100}) {
    INFO("drop_every " << every);
    o.drop_every = every;
    CHECK(torch::equal(generate(*m, prompt, o), expect));
  }
  o.drop_every = 0;
  CHECK_THROWS_WITH(generate(*m, prompt, o), OB_CONTAINS("drop_every must be >= 1"));
}

// One sampled token for many copies of a prompt: its frequencies against softmax(logits / T),
// and, with top-k, the softmax over the k largest logits (the definitions, from a plain forward).
TEST_CASE("sampling draws from softmax(logits / temperature), restricted to the top k", "[models]") {
  auto m = tiny_model();
  const int64_t rows = 20000;
  const auto prompt = torch::full({rows, 2}, 7, torch::kLong);
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = m->forward(prompt.narrow(0, 0, 1)).logits[0][1].to(torch::kFloat64);
  }
  GenerateOptions o;
  o.max_new_tokens = 1;
  o.seed = 3;
  for (const auto& [temperature, top_k] : std::vector<std::pair<double, int64_t>>{{1.0, 0}, {2.0, 0}, {1.0, 5}}) {
    INFO("temperature " << temperature << ", top_k " << top_k);
    o.temperature = temperature;
    o.top_k = top_k;
    auto z = logits / temperature;
    if (top_k > 0) z = z.masked_fill(z < std::get<0>(z.topk(top_k)).min(), -INFINITY);
    const auto p = z.softmax(0);
    const auto drawn = generate(*m, prompt, o).select(1, 2);
    const auto freq = torch::bincount(drawn, {}, 64).to(torch::kFloat64) / double(rows);
    // Five standard deviations of a binomial frequency, per token.
    const auto tol = 5 * (p * (1 - p) / double(rows)).sqrt() + 1e-4;
    CAPTURE(p, freq);
    CHECK(((freq - p).abs() <= tol).all().item<bool>());
    if (top_k > 0) CHECK((freq.masked_select(p == 0) == 0).all().item<bool>());  // nothing outside the top k
  }
}
