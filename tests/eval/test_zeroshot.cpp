// Zero-shot scoring against hand-computed sums on the stub model; task-file parsing and errors.
#include "tests/support.h"

#include "onebit/core/error.h"
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
  // No BOS and no context: scored after EOS, as lm-eval does with its end-of-text token.
  StubTokenizer nobos(false);
  auto e = eval::encode_pair(nobos, "", " hi");
  CHECK(e.context == std::vector<int64_t>{2});
  CHECK(e.continuation.size() == 3);
}

TEST_CASE("load_task detects formats, applies the delimiter and rejects bad input", "[eval]") {
  auto mc = test::write_temp("mc.jsonl",
                             "{\"query\": \"Question: q?\\n\", \"choices\": [\"a\", \" b\"], \"gold\": 1}\n\n"
                             "{\"query\": \"Q2\", \"choices\": [\"x\", \"y\", \"z\"], \"gold\": 0}\n");
  auto t = eval::load_task(mc);
  CHECK(t.name == "mc");
  CHECK(t.format == eval::TaskFormat::MultipleChoice);
  REQUIRE(t.examples.size() == 2);
  CHECK(t.examples[0].contexts == std::vector<std::string>{"Question: q?\n", "Question: q?\n"});
  CHECK(t.examples[0].continuations == std::vector<std::string>{" a", " b"});
  CHECK(t.examples[0].gold == 1);
  CHECK(t.examples[1].line == 3);
  CHECK(eval::load_task(mc, 1).examples.size() == 1);

  auto sc = test::write_temp("sc.jsonl",
                             "{\"context_options\": [\"A so A\", \"A so B\"], \"continuation\": \"won.\", \"gold\": 1}\n");
  auto s = eval::load_task(sc);
  CHECK(s.format == eval::TaskFormat::Schema);
  CHECK(s.examples[0].contexts == std::vector<std::string>{"A so A", "A so B"});
  CHECK(s.examples[0].continuations == std::vector<std::string>{" won.", " won."});

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
  CHECK_THROWS_WITH(eval::load_task("/nonexistent/task.jsonl"), OB_CONTAINS("cannot open task file"));
}

TEST_CASE("choice log-likelihoods equal hand-computed sums, with and without prefix reuse", "[eval]") {
  StubTokenizer tok;
  eval::TaskExample ex;
  ex.contexts = {"Question: which?\n", "Question: which?\n", "Question: which?\n"};
  ex.continuations = {" alpha", " alphabet", " b"};
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
    int64_t fwd = 0;
    auto r = eval::score_example(model, tok, ex, o, &fwd);
    REQUIRE(r.loglik.size() == 3);
    for (size_t i = 0; i < 3; ++i) CHECK(r.loglik[i] == Approx(expect[i]).epsilon(kLoglikTol));
    CHECK(r.bytes == std::vector<int64_t>{6, 9, 2});
    CHECK(r.tokens == std::vector<int64_t>{6, 9, 2});  // "\n " merged + the rest
    CHECK(model.calls == (reuse ? 2 : 1));
    // Inputs (full[:-1]) of 22, 25, 18 tokens share BOS + "Question: which?" + merged "\n ".
    CHECK(fwd == (reuse ? 18 + 4 + 7 + 0 : 22 + 25 + 18));
    int64_t pred = 0, pred_norm = 0;
    for (int64_t i = 1; i < 3; ++i) {
      if (expect[size_t(i)] > expect[size_t(pred)]) pred = i;
      if (expect[size_t(i)] / r.bytes[size_t(i)] > expect[size_t(pred_norm)] / r.bytes[size_t(pred_norm)]) pred_norm = i;
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

TEST_CASE("acc and acc_norm: argmax with ties to the lowest index, per-byte normalisation", "[eval]") {
  StubTokenizer tok;
  StubLMImpl model;
  // Two identical choices tie on both metrics: the first wins, so gold 1 scores 0.
  auto path = test::write_temp("ties.jsonl",
                               "{\"query\": \"Pick:\", \"choices\": [\"same\", \"same\"], \"gold\": 1}\n"
                               "{\"query\": \"Pick:\", \"choices\": [\"same\", \"same\"], \"gold\": 0}\n"
                               "{\"query\": \"Say\", \"choices\": [\"no\", \"nonononono\", \"yes\"], \"gold\": 2}\n");
  eval::ZeroShotOptions o;
  o.progress = false;
  auto res = eval::evaluate_task(model, tok, eval::load_task(path), o);
  REQUIRE(res.n == 3);
  CHECK(res.examples[0].pred == 0);
  CHECK(res.examples[0].pred_norm == 0);
  CHECK(res.examples[1].pred == 0);

  // Third question by hand.
  std::vector<std::string> conts = {" no", " nonononono", " yes"};
  std::vector<double> ll, norm;
  for (const auto& c : conts) {
    auto p = eval::encode_pair(tok, "Say", c);
    ll.push_back(hand_loglik(p.context, p.continuation));
    norm.push_back(ll.back() / double(c.size()));
  }
  auto argmax = [](const std::vector<double>& v) {
    return int64_t(std::max_element(v.begin(), v.end()) - v.begin());  // first maximum
  };
  CHECK(res.examples[2].pred == argmax(ll));
  CHECK(res.examples[2].pred_norm == argmax(norm));
  const double hits = 0 + 1 + double(argmax(ll) == 2);
  const double hits_norm = 0 + 1 + double(argmax(norm) == 2);
  CHECK(res.acc == Approx(hits / 3));
  CHECK(res.acc_norm == Approx(hits_norm / 3));
  CHECK(res.acc_stderr == Approx(std::sqrt(res.acc * (1 - res.acc) / 2)));
  CHECK(res.scored_tokens == 5 + 5 + 5 + 5 + 3 + 11 + 4);
}
