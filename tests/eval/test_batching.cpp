// Zero-shot request batching: the cut of length-sorted rows against brute force, and batched
// scores (across questions, shared prefixes, padding, masks) against one dense forward per
// request on tiny random LLaMA (GQA) and OPT models.
#include "tests/support.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "onebit/core/error.h"
#include "onebit/eval/batching.h"
#include "onebit/eval/zeroshot.h"
#include "onebit/models/loader.h"
#include "tests/models/tiny.h"

using namespace onebit;

namespace {

constexpr double kDenseTol = 1e-4;  // absolute, nats: fp32 batched vs fp32 dense, fp64 sums

// Least cost over every partition of `len` into runs, each costing fc + rows × first length,
// none over max_tokens unless it is one row: the 2^(n-1) cuts enumerated.
int64_t brute_force_cost(const std::vector<int64_t>& len, int64_t max_tokens, int64_t fc) {
  const size_t n = len.size();
  int64_t best = std::numeric_limits<int64_t>::max();
  for (uint64_t m = 0; m < (uint64_t(1) << (n - 1)); ++m) {  // bit i: a cut after row i
    int64_t cost = 0;
    bool ok = true;
    size_t begin = 0;
    for (size_t i = 0; i < n; ++i) {
      if (i + 1 == n || ((m >> i) & 1)) {
        const int64_t tokens = int64_t(i + 1 - begin) * len[begin];
        ok = ok && (i == begin || tokens <= max_tokens);
        cost += fc + tokens;
        begin = i + 1;
      }
    }
    if (ok) best = std::min(best, cost);
  }
  return best;
}

// Dense reference: sum of log p(full[j+1] | full[..j]) over the continuation from one plain
// forward (no cache, no padding, no mask) of full[:-1], left-truncated to max_len + 1 tokens.
eval::RequestScore dense_score(models::CausalLMImpl& model, const eval::EncodedPair& p, int64_t max_len) {
  std::vector<int64_t> full = p.context;
  full.insert(full.end(), p.continuation.begin(), p.continuation.end());
  const int64_t drop = std::max<int64_t>(0, int64_t(full.size()) - (max_len + 1));
  full.erase(full.begin(), full.begin() + drop);
  torch::NoGradGuard no_grad;
  auto ids = torch::tensor(full, torch::kInt64).unsqueeze(0);
  auto logits = model.forward(ids.slice(1, 0, -1)).logits[0].to(torch::kFloat64);
  auto lp = torch::log_softmax(logits, -1);
  eval::RequestScore s{0.0, true};
  for (size_t j = full.size() - 1 - p.continuation.size(); j + 1 < full.size(); ++j) {
    s.loglik += lp[int64_t(j)][full[j + 1]].item<double>();
    s.greedy = s.greedy && logits[int64_t(j)].argmax().item<int64_t>() == full[j + 1];
  }
  return s;
}

// Questions of very different lengths: multiple choice with a long shared context and
// continuations of 1 to 30 tokens, one choice a prefix of another (a request lying wholly in
// the shared prefix), schema questions (different contexts, one continuation), single requests.
std::vector<std::vector<eval::EncodedPair>> make_questions(int64_t vocab) {
  std::mt19937 rng(7);
  auto ids = [&](int64_t n) {
    std::vector<int64_t> v;
    for (int64_t i = 0; i < n; ++i) v.push_back(3 + int64_t(rng() % uint64_t(vocab - 3)));
    return v;
  };
  std::vector<std::vector<eval::EncodedPair>> qs;
  for (int64_t ctx : {40, 3, 17, 1, 25}) {
    std::vector<eval::EncodedPair> q;
    const auto c = ids(ctx);
    for (int64_t k : {1, 30, 4}) q.push_back({c, ids(k)});
    q.push_back({c, {q[2].continuation[0], q[2].continuation[1]}});  // a prefix of choice 2
    qs.push_back(q);
  }
  for (int64_t ctx : {2, 33, 9}) {  // schema: contexts share a start, then differ
    const auto start = ids(ctx), cont = ids(5 + ctx % 7);
    std::vector<eval::EncodedPair> q;
    for (int64_t opt : {1, 6}) {
      auto c = start;
      const auto o = ids(opt);
      c.insert(c.end(), o.begin(), o.end());
      q.push_back({c, cont});
    }
    qs.push_back(q);
  }
  for (int64_t ctx : {50, 2}) qs.push_back({{ids(ctx), ids(3)}});  // LAMBADA-like
  return qs;
}

}  // namespace

TEST_CASE("cut_sorted: the least padded tokens plus forward cost, as brute force finds", "[eval]") {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng() % 11;
    std::vector<int64_t> len;
    for (size_t i = 0; i < n; ++i) len.push_back(1 + int64_t(rng() % 40));
    std::sort(len.rbegin(), len.rend());
    const int64_t max_tokens = 1 + int64_t(rng() % 120), fc = int64_t(rng() % 50);
    INFO("trial " << trial);
    const auto cuts = eval::cut_sorted(len, max_tokens, fc);
    // The cut covers every row once, in order, within the budget, at the least cost.
    int64_t cost = 0;
    size_t next = 0;
    for (auto [a, b] : cuts) {
      REQUIRE(a == next);
      REQUIRE(b > a);
      CHECK((b == a + 1 || int64_t(b - a) * len[a] <= max_tokens));
      cost += fc + int64_t(b - a) * len[a];
      next = b;
    }
    CHECK(next == n);
    CHECK(cost == brute_force_cost(len, max_tokens, fc));
  }
  CHECK(eval::cut_sorted({}, 10, 5).empty());
  // No forward cost: only equal lengths share a forward. A huge one: one forward under the budget.
  using Cuts = std::vector<std::pair<size_t, size_t>>;
  CHECK(eval::cut_sorted({5, 5, 4, 2, 2}, 100, 0) == Cuts{{0, 2}, {2, 3}, {3, 5}});
  CHECK(eval::cut_sorted({5, 5, 4, 2, 2}, 100, 1000) == Cuts{{0, 5}});
  CHECK(eval::cut_sorted({5, 5, 4, 2, 2}, 10, 1000) == Cuts{{0, 2}, {2, 3}, {3, 5}});  // 18 < 20 tokens
  CHECK_THROWS_WITH(eval::cut_sorted({2, 3}, 10, 1), OB_CONTAINS("sorted longest first"));
}

TEST_CASE("batched request scores equal one dense forward per request (LLaMA GQA, OPT)", "[eval]") {
  for (bool opt : {false, true}) {
    torch::manual_seed(5);
    auto model = models::build_model(opt ? test::tiny_opt_config() : test::tiny_llama_config());
    {
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters())
        if (p.dim() == 2) p.normal_(0, 0.3);
    }
    model->eval();
    const auto qs = make_questions(model->config().vocab_size);
    // OPT's 64 positions left-truncate the longest requests; LLaMA is truncated by max_length.
    for (int64_t max_length : {int64_t(0), int64_t(32)}) {
      const int64_t max_len = max_length > 0 ? max_length : model->config().max_position_embeddings;
      std::vector<std::vector<eval::RequestScore>> expect;
      for (const auto& q : qs) {
        expect.emplace_back();
        for (const auto& p : q) expect.back().push_back(dense_score(*model, p, max_len));
      }
      for (bool reuse : {true, false})
        for (int64_t budget : {int64_t(1), int64_t(37), int64_t(4096)}) {
          INFO((opt ? "opt" : "llama") << ", max_length " << max_length << ", reuse " << reuse << ", batch_tokens "
                                       << budget);
          eval::ZeroShotOptions o;
          o.reuse_prefix = reuse;
          o.batch_tokens = budget;
          o.max_length = max_length;
          eval::ScoreStats st;
          const auto got = eval::score_requests(*model, qs, o, &st);
          REQUIRE(got.size() == qs.size());
          for (size_t q = 0; q < qs.size(); ++q)
            for (size_t r = 0; r < qs[q].size(); ++r) {
              CHECK(got[q][r].loglik == Approx(expect[q][r].loglik).margin(kDenseTol));
              CHECK(got[q][r].greedy == expect[q][r].greedy);
            }
          if (budget == 4096) CHECK(st.forwards < int64_t(qs.size()));  // questions share forwards
          if (budget == 1) CHECK(st.padded_tokens == 0);              // one row per forward
        }
    }
  }
}
