// Zero-shot scoring against hand-computed sums on the stub model; task-file parsing and errors.
#include "tests/support.h"

#include <algorithm>
#include <cmath>

#include "onebit/core/error.h"
#include "onebit/eval/tasks.h"
#include "onebit/eval/zeroshot.h"
#include "tests/eval/stub_lm.h"
#include "tests/eval/temp_files.h"

using namespace onebit;
using onebit::test::StubLMImpl;
using onebit::test::StubTokenizer;

namespace {

constexpr double kLoglikTol = 1e-5;  // fp32 log-softmax vs the fp64 formula, relative

// Sum of log p(full[j+1] | full[..j]) over the continuation, by the direct formula; the model
// input is full[:-1] left-truncated to max_pos tokens (positions restart at 0).
double hand_loglik(std::vector<int64_t> ctx, const std::vector<int64_t>& cont, int64_t max_pos = 1 << 30) {
  std::vector<int64_t> full = ctx;
  full.insert(full.end(), cont.begin(), cont.end());
  const int64_t drop = std::max<int64_t>(0, int64_t(full.size()) - (max_pos + 1));
  full.erase(full.begin(), full.begin() + drop);
  double ll = 0;
  for (size_t j = full.size() - 1 - cont.size(); j + 1 < full.size(); ++j)
    ll += test::stub_logprob(full[j], int64_t(j), full[j + 1]);
  return ll;
}

}  // namespace

TEST_CASE("Python whitespace and lm-eval's encode_pair", "[eval]") {
  CHECK(eval::trailing_space_bytes("abc") == 0);
  CHECK(eval::trailing_space_bytes("abc \n\t") == 3);
  CHECK(eval::trailing_space_bytes("x\xc2\xa0") == 2);             // U+00A0
  CHECK(eval::trailing_space_bytes("x \xe3\x80\x80") == 4);        // U+3000
  CHECK(eval::trailing_space_bytes("\xc3\xa9") == 0);              // é is not a space
  CHECK(eval::trailing_space_bytes("   ") == 3);

  StubTokenizer tok;
  // "Q:\n" + " ans": the "\n" moves to the continuation, where it merges with the space.
  auto p = eval::encode_pair(tok, "Q:\n", " ans");
  CHECK(p.context == std::vector<int64_t>{1, 'Q' + 3, ':' + 3});
  CHECK(p.continuation == std::vector<int64_t>{StubTokenizer::kMerged, 'a' + 3, 'n' + 3, 's' + 3});
  auto q = eval::encode_pair(tok, "ctx", " x");
  CHECK(q.context == std::vector<int64_t>{1, 'c' + 3, 't' + 3, 'x' + 3});
  CHECK(q.continuation == std::vector<int64_t>{' ' + 3, 'x' + 3});
  // Empty context (lm-eval's loglikelihood): the continuation without special tokens, scored
  // after the prefix token, BOS when the tokenizer has one (added by default or not), else EOS.
  for (bool add : {true, false}) {
    auto e = eval::encode_pair(StubTokenizer(add), "", " hi");
    CHECK(e.context == std::vector<int64_t>{1});
    CHECK(e.continuation == std::vector<int64_t>{' ' + 3, 'h' + 3, 'i' + 3});
  }
  auto e = eval::encode_pair(StubTokenizer(false, false), "", " hi");
  CHECK(e.context == std::vector<int64_t>{2});
  CHECK(e.continuation.size() == 3);
  // --add-bos yes / no override the tokenizer's default on both halves.
  StubTokenizer plain(false);
  CHECK(eval::encode_pair(plain, "ctx", " x", eval::AddBos::Yes).context ==
        std::vector<int64_t>{1, 'c' + 3, 't' + 3, 'x' + 3});
  CHECK(eval::encode_pair(tok, "ctx", " x", eval::AddBos::No).context ==
        std::vector<int64_t>{'c' + 3, 't' + 3, 'x' + 3});
  CHECK(eval::encode_pair(tok, "ctx", " x", eval::AddBos::No).continuation == q.continuation);
  CHECK_THROWS_WITH(eval::encode_pair(StubTokenizer(false, false), "c", " x", eval::AddBos::Yes),
                    OB_CONTAINS("no BOS token"));
  // A whitespace-only context without BOS encodes to nothing: an error, not a crash.
  CHECK_THROWS_WITH(eval::encode_pair(plain, " ", "x"), OB_CONTAINS("encodes to no tokens"));
  CHECK(eval::parse_add_bos("no") == eval::AddBos::No);
  CHECK_THROWS_WITH(eval::parse_add_bos("maybe"), OB_CONTAINS("expected yes, no or auto"));
  CHECK(eval::py_len("a\xc3\xa9\xe2\x82\xac") == 3);  // "aé€": 3 code points, 6 bytes
}

TEST_CASE("load_task detects formats, applies the delimiter and rejects bad input", "[eval]") {
  auto mc = test::write_temp("mc.jsonl",
                             "{\"query\": \"Question: q?\\n\", \"choices\": [\"a\", \" b\"], \"gold\": 1}\n\n"
                             "{\"query\": \"Q2\", \"choices\": [\"x\", \"y\", \"z\"], \"gold\": 0}\n");
  auto t = eval::load_task(mc);
  CHECK(t.name == "mc");
  CHECK(t.format == "multiple_choice");
  REQUIRE(t.examples.size() == 2);
  CHECK(t.examples[0].contexts == std::vector<std::string>{"Question: q?\n", "Question: q?\n"});
  CHECK(t.examples[0].continuations == std::vector<std::string>{" a", " b"});
  CHECK(t.examples[0].choices == std::vector<std::string>{"a", " b"});
  CHECK(t.examples[0].gold == 1);
  CHECK(t.examples[1].line == 3);
  CHECK(eval::load_task(mc, 1).examples.size() == 1);

  auto sc = test::write_temp("sc.jsonl",
                             "{\"context_options\": [\"A so A\", \"A so B\"], \"continuation\": \"won.\", \"gold\": 1}\n");
  auto s = eval::load_task(sc);
  CHECK(s.format == "schema");
  CHECK(s.examples[0].contexts == std::vector<std::string>{"A so A", "A so B"});
  CHECK(s.examples[0].continuations == std::vector<std::string>{" won.", " won."});
  CHECK(s.examples[0].choices == s.examples[0].contexts);  // lm-eval's multiple-input choices

  auto bad = [](const std::string& name, const std::string& text) {
    return eval::load_task(test::write_temp(name, text));
  };
  CHECK_THROWS_WITH(bad("t1.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n{\"query\": \"q\",\n"),
                    OB_CONTAINS("t1.jsonl:2: malformed JSON line"));
  CHECK_THROWS_WITH(bad("t2.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n"),
                    OB_CONTAINS("t2.jsonl:1: gold 2 out of range for 2 choices"));
  CHECK_THROWS_WITH(bad("t3.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": -1}\n"),
                    OB_CONTAINS("gold -1 out of range"));
  CHECK_THROWS_WITH(bad("t4.jsonl", " \n\n"), OB_CONTAINS("t4.jsonl: empty task file"));
  CHECK_THROWS_WITH(bad("t5.jsonl", "{\"question\": \"q\", \"answers\": [], \"label\": 0}\n"),
                    OB_CONTAINS("t5.jsonl:1: unknown task format (keys: answers, label, question)"));
  CHECK_THROWS_WITH(bad("t6.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n{\"query\": \"q\", \"gold\": 0, \"choices\": \"ab\"}\n"),
                    OB_CONTAINS("t6.jsonl:2: \"choices\" must be a list of strings"));
  CHECK_THROWS_WITH(bad("t7.jsonl", "{\"context_options\": [\"a\", \"b\"], \"continuation\": \"c\"}\n"),
                    OB_CONTAINS("t7.jsonl:1: missing key \"gold\""));
  CHECK_THROWS_WITH(bad("t8.jsonl", "{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 0}\n"),
                    OB_CONTAINS("needs at least 2 entries"));
  CHECK_THROWS_WITH(eval::load_task("/nonexistent/task.jsonl"), OB_CONTAINS("/nonexistent/task.jsonl: no such file"));
}

TEST_CASE("choice log-likelihoods equal hand-computed sums, with and without prefix reuse", "[eval]") {
  StubTokenizer tok;
  eval::TaskExample ex;
  ex.contexts = {"Question: which?\n", "Question: which?\n", "Question: which?\n"};
  ex.continuations = {" alpha", " alphabet", " b"};
  ex.choices = {"alpha", "alphabet", "b"};
  ex.gold = 1;
  std::vector<double> expect;
  for (size_t i = 0; i < 3; ++i) {
    auto p = eval::encode_pair(tok, ex.contexts[i], ex.continuations[i]);
    expect.push_back(hand_loglik(p.context, p.continuation));
  }
  for (bool reuse : {true, false}) {
    StubLMImpl model;
    eval::ZeroShotOptions o;
    o.reuse_prefix = reuse;
    eval::ScoreStats st;
    auto r = eval::score_example(model, tok, ex, o, &st);
    const int64_t fwd = st.forward_tokens;
    REQUIRE(r.loglik.size() == 3);
    for (size_t i = 0; i < 3; ++i) CHECK(r.loglik[i] == Approx(expect[i]).epsilon(kLoglikTol));
    CHECK(r.bytes == std::vector<int64_t>{5, 8, 1});
    CHECK(r.chars == std::vector<int64_t>{5, 8, 1});
    CHECK(r.tokens == std::vector<int64_t>{6, 9, 2});  // "\n " merged + the rest
    CHECK(model.calls == (reuse ? 2 : 1));
    // Inputs (full[:-1]) of 22, 25, 18 tokens share BOS + "Question: which?" + merged "\n ".
    CHECK(fwd == (reuse ? 18 + 4 + 7 + 0 : 22 + 25 + 18));
    int64_t pred = 0, pred_norm = 0;
    for (int64_t i = 1; i < 3; ++i) {
      if (expect[size_t(i)] > expect[size_t(pred)]) pred = i;
      if (expect[size_t(i)] / r.chars[size_t(i)] > expect[size_t(pred_norm)] / r.chars[size_t(pred_norm)]) pred_norm = i;
    }
    CHECK(r.pred == pred);
    CHECK(r.pred_norm == pred_norm);
  }

  // Schema: different contexts, one continuation; long inputs are left-truncated to the context.
  eval::TaskExample sc;
  sc.contexts = {"The cat sat so the cat", "The cat sat so the dog"};
  sc.continuations = {" ran away.", " ran away."};
  for (int64_t max_pos : {int64_t(4096), int64_t(16)}) {
    StubLMImpl model(max_pos);
    auto r = eval::score_example(model, tok, sc, {});
    for (size_t i = 0; i < 2; ++i) {
      auto p = eval::encode_pair(tok, sc.contexts[i], sc.continuations[i]);
      CHECK(r.loglik[i] == Approx(hand_loglik(p.context, p.continuation, max_pos)).epsilon(kLoglikTol));
    }
  }
}

TEST_CASE("acc, acc_norm (characters), acc_bytes: numpy argmax, lm-eval's sample stderr", "[eval]") {
  StubTokenizer tok;
  StubLMImpl model;
  // Two identical choices tie on every metric: the first wins, so gold 1 scores 0.
  // "\u00e9t\u00e9" has 3 characters and 5 bytes: acc_norm and acc_bytes divide differently.
  auto path = test::write_temp("ties.jsonl",
                               "{\"query\": \"Pick:\", \"choices\": [\"same\", \"same\"], \"gold\": 1}\n"
                               "{\"query\": \"Pick:\", \"choices\": [\"same\", \"same\"], \"gold\": 0}\n"
                               "{\"query\": \"Say\", \"choices\": [\"no\", \"\u00e9t\u00e9\", \"yes\"], \"gold\": 2}\n");
  eval::ZeroShotOptions o;
  o.progress = false;
  auto res = eval::evaluate_task(model, tok, eval::load_task(path), o);
  REQUIRE(res.n == 3);
  CHECK(res.examples[0].pred == 0);
  CHECK(res.examples[0].pred_norm == 0);
  CHECK(res.examples[0].pred_bytes == 0);
  CHECK(res.examples[1].pred == 0);

  // Third question by hand: lm-eval divides by len(choice) without the delimiter.
  const std::vector<std::string> choices = {"no", "\xc3\xa9t\xc3\xa9", "yes"};
  const std::vector<double> chars = {2, 3, 3}, bytes = {2, 5, 3};
  std::vector<double> ll, norm, per_byte;
  for (size_t i = 0; i < 3; ++i) {
    auto p = eval::encode_pair(tok, "Say", " " + choices[i]);
    ll.push_back(hand_loglik(p.context, p.continuation));
    norm.push_back(ll.back() / chars[i]);
    per_byte.push_back(ll.back() / bytes[i]);
  }
  auto argmax = [](const std::vector<double>& v) {
    return int64_t(std::max_element(v.begin(), v.end()) - v.begin());  // first maximum
  };
  const auto& r = res.examples[2];
  CHECK(r.chars == std::vector<int64_t>{2, 3, 3});
  CHECK(r.bytes == std::vector<int64_t>{2, 5, 3});
  CHECK(r.pred == argmax(ll));
  CHECK(r.pred_norm == argmax(norm));
  CHECK(r.pred_bytes == argmax(per_byte));
  CHECK(res.acc == Approx((0 + 1 + double(argmax(ll) == 2)) / 3));
  CHECK(res.acc_norm == Approx((0 + 1 + double(argmax(norm) == 2)) / 3));
  CHECK(res.acc_bytes == Approx((0 + 1 + double(argmax(per_byte) == 2)) / 3));
  // lm-eval's mean_stderr: sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n), by the formula.
  auto stderr_of = [](std::vector<double> xs) {
    double m = 0, ss = 0;
    for (double x : xs) m += x / double(xs.size());
    for (double x : xs) ss += (x - m) * (x - m);
    return std::sqrt(ss / double(xs.size() - 1)) / std::sqrt(double(xs.size()));
  };
  CHECK(res.acc_stderr == Approx(stderr_of({0, 1, double(argmax(ll) == 2)})));
  CHECK(res.acc_norm_stderr == Approx(stderr_of({0, 1, double(argmax(norm) == 2)})));
  CHECK(res.scored_tokens == 5 + 5 + 5 + 5 + 3 + 6 + 4);
  CHECK(std::isnan(res.ppl));

  // One example: lm-eval reports the stderr as "N/A" (NaN here, null in the JSON).
  auto one = eval::evaluate_task(model, tok, eval::load_task(path, 1), o);
  CHECK(std::isnan(one.acc_stderr));
}

TEST_CASE("batching across questions gives the hand-computed sums at every batch size", "[eval]") {
  StubTokenizer tok;
  // Questions of different lengths and choice counts: ragged shared prefixes in one batch.
  std::vector<eval::TaskExample> exs(4);
  exs[0].contexts = {"Q: a long question here?\n", "Q: a long question here?\n"};
  exs[0].continuations = {" yes", " no"};
  exs[1].contexts = {"Short", "Short", "Short"};
  exs[1].continuations = {" x", " xy", " xyz"};
  exs[2].contexts = {"The cat sat so the cat", "The dog sat so the dog"};  // schema: no common tail
  exs[2].continuations = {" ran away.", " ran away."};
  exs[3].contexts = {"one two three four"};  // a single request (LAMBADA-like)
  exs[3].continuations = {" five"};
  std::vector<std::vector<eval::EncodedPair>> qs;
  std::vector<std::vector<double>> expect;
  std::vector<std::vector<bool>> greedy;
  for (const auto& ex : exs) {
    qs.emplace_back();
    expect.emplace_back();
    greedy.emplace_back();
    for (size_t i = 0; i < ex.contexts.size(); ++i) {
      auto p = eval::encode_pair(tok, ex.contexts[i], ex.continuations[i]);
      expect.back().push_back(hand_loglik(p.context, p.continuation));
      // Greedy: every continuation token is the argmax of its row's logits.
      std::vector<int64_t> full = p.context;
      full.insert(full.end(), p.continuation.begin(), p.continuation.end());
      bool g = true;
      for (size_t j = p.context.size() - 1; j + 1 < full.size(); ++j) {
        int64_t best = 0;
        for (int64_t v = 1; v < 260; ++v)
          if (test::stub_logit(full[j], int64_t(j) % 7, v) > test::stub_logit(full[j], int64_t(j) % 7, best)) best = v;
        g = g && best == full[j + 1];
      }
      greedy.back().push_back(g);
      qs.back().push_back(std::move(p));
    }
  }
  for (bool reuse : {true, false}) {
    for (int64_t budget : {int64_t(1), int64_t(40), int64_t(100), int64_t(1 << 20)}) {
      INFO("reuse " << reuse << ", batch_tokens " << budget);
      StubLMImpl model;
      eval::ZeroShotOptions o;
      o.reuse_prefix = reuse;
      o.batch_tokens = budget;
      eval::ScoreStats st;
      auto scores = eval::score_requests(model, qs, o, &st);
      REQUIRE(scores.size() == qs.size());
      for (size_t q = 0; q < qs.size(); ++q)
        for (size_t i = 0; i < qs[q].size(); ++i) {
          CHECK(scores[q][i].loglik == Approx(expect[q][i]).epsilon(kLoglikTol));
          CHECK(scores[q][i].greedy == greedy[q][i]);
        }
      // One row per forward: with reuse, the 3 shared prefixes, then the suffixes of the 8
      // requests but " x" (its input is its question's prefix).
      if (budget == 1) CHECK(st.forwards == (reuse ? 3 + 7 : 8));
      if (budget == 1) CHECK(st.padded_tokens == 0);
      if (budget == (1 << 20)) CHECK(st.forwards <= (reuse ? 2 + 2 : 2));
    }
  }
}
