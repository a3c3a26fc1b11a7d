// Perplexity protocols against direct formulas on a stub model with closed-form logits.
#include "tests/support.h"

#include <cmath>

#include "onebit/core/error.h"
#include "onebit/eval/perplexity.h"
#include "onebit/eval/py_random.h"
#include "tests/eval/stub_lm.h"
#include "tests/eval/temp_files.h"

using namespace onebit;
using onebit::test::StubLMImpl;
using onebit::test::StubTokenizer;

namespace {

constexpr double kNllTol = 1e-5;  // fp32 log-softmax vs the fp64 formula, relative

// Expected mean NLL of windows of `stream` by the direct formula (position restarts per window).
double direct_mean_nll(const std::vector<std::vector<int64_t>>& windows) {
  double nll = 0;
  int64_t n = 0;
  for (const auto& w : windows)
    for (size_t t = 0; t + 1 < w.size(); ++t, ++n) nll -= test::stub_logprob(w[t], int64_t(t), w[t + 1]);
  return nll / double(n);
}

std::vector<std::vector<int64_t>> cut(const std::vector<int64_t>& s, int64_t L, int64_t cap = 0) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t w = 0; (w + 1) * L <= int64_t(s.size()) && (cap == 0 || w < cap); ++w)
    out.emplace_back(s.begin() + w * L, s.begin() + (w + 1) * L);
  return out;
}

eval::PplOptions opts(eval::PplProtocol p, int64_t L, int64_t batch = 1, int64_t windows = 0) {
  eval::PplOptions o;
  o.protocol = p;
  o.seq_len = L;
  o.batch_size = batch;
  o.windows = windows;
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("PyRandom reproduces Python's random module", "[eval]") {
  // Values printed by CPython 3: random.seed(s); random.randint(...) / getrandbits(...).
  eval::PyRandom r0(0);
  std::vector<int64_t> got;
  for (int i = 0; i < 6; ++i) got.push_back(r0.randint(0, 100));
  CHECK(got == std::vector<int64_t>{49, 97, 53, 5, 33, 65});
  eval::PyRandom r1(12345);
  got.clear();
  for (int i = 0; i < 6; ++i) got.push_back(r1.randint(3, 9));
  CHECK(got == std::vector<int64_t>{6, 8, 3, 9, 9, 9});
  eval::PyRandom r2((uint64_t(1) << 40) + 5);
  CHECK(r2.getrandbits(40) == 569101979940ull);
  CHECK(r2.getrandbits(64) == 12244916861145399977ull);
  CHECK(r2.randint(0, int64_t(1) << 33) == 3976222944);
}

TEST_CASE("read_documents: paragraphs, jsonl records, bad input", "[eval]") {
  auto txt = test::write_temp("docs.txt", "a b\r\nc\n\n \t\n\nsecond\n\n\nthird para\n");
  CHECK(eval::read_documents(txt, eval::PplProtocol::Docs) ==
        std::vector<std::string>{"a b\nc", "second", "third para"});
  CHECK(eval::read_documents(txt, eval::PplProtocol::C4).size() == 3);
  CHECK(eval::read_documents(txt, eval::PplProtocol::Wikitext) ==
        std::vector<std::string>{"a b\r\nc\n\n \t\n\nsecond\n\n\nthird para\n"});

  auto jl = test::write_temp("docs.jsonl", "{\"text\": \"one\"}\n\n{\"text\": \"\", \"x\": 1}\n{\"text\": \"two\\n\"}\n");
  CHECK(eval::read_documents(jl, eval::PplProtocol::Docs) == std::vector<std::string>{"one", "two\n"});
  CHECK(eval::read_documents(jl, eval::PplProtocol::Wikitext) ==
        std::vector<std::string>{"one", "", "two\n"});

  auto bad = test::write_temp("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  CHECK_THROWS_WITH(eval::read_documents(bad, eval::PplProtocol::Docs), OB_CONTAINS("bad.jsonl:2: malformed JSON"));
  auto notext = test::write_temp("notext.jsonl", "{\"txt\": \"x\"}\n");
  CHECK_THROWS_WITH(eval::read_documents(notext, eval::PplProtocol::Docs), OB_CONTAINS("notext.jsonl:1: no \"text\" field"));
  auto empty = test::write_temp("empty.txt", "\n \n");
  CHECK_THROWS_WITH(eval::read_documents(empty, eval::PplProtocol::Docs), OB_CONTAINS("empty file"));
  CHECK_THROWS_WITH(eval::read_documents("/nonexistent/x.txt", eval::PplProtocol::Docs),
                    OB_CONTAINS("cannot open '/nonexistent/x.txt'"));
  CHECK_THROWS_WITH(eval::parse_ppl_protocol("wiki"), OB_CONTAINS("unknown perplexity protocol 'wiki'"));
}

TEST_CASE("perplexity wikitext/docs equal the direct formula", "[eval]") {
  StubTokenizer tok;
  StubLMImpl model;
  const std::vector<std::string> docs = {"Hello there", "", "x y\n z"};
  const int64_t L = 5;

  // wikitext: one BOS, documents joined by "\n\n"; remainder dropped.
  auto stream = tok.encode_with_special("Hello there\n\n\n\nx y\n z");
  auto r = eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Wikitext, L, 2));
  auto wins = cut(stream, L);
  CHECK(r.windows == int64_t(wins.size()));
  CHECK(r.input_tokens == int64_t(stream.size()));
  CHECK(r.predicted_tokens == r.windows * (L - 1));
  CHECK(r.mean_nll == Approx(direct_mean_nll(wins)).epsilon(kNllTol));
  CHECK(r.ppl == Approx(std::exp(direct_mean_nll(wins))).epsilon(kNllTol));

  // docs: each document with its own BOS, concatenated.
  std::vector<int64_t> dstream;
  for (const auto& d : docs) {
    auto ids = tok.encode_with_special(d);
    dstream.insert(dstream.end(), ids.begin(), ids.end());
  }
  auto rd = eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, L, 3));
  CHECK(rd.windows == int64_t(dstream.size()) / L);
  CHECK(rd.mean_nll == Approx(direct_mean_nll(cut(dstream, L))).epsilon(kNllTol));

  // a window cap keeps the first windows; batch size does not change the number.
  auto capped = eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, L, 1, 2));
  CHECK(capped.windows == 2);
  CHECK(capped.mean_nll == Approx(direct_mean_nll(cut(dstream, L, 2))).epsilon(kNllTol));
  auto b1 = eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, L, 1));
  CHECK(b1.mean_nll == Approx(rd.mean_nll).epsilon(kNllTol));
}

TEST_CASE("perplexity c4 draws windows in the documented order", "[eval]") {
  StubTokenizer tok;
  StubLMImpl model;
  // Lengths with BOS: 4, 9, 3, 13 tokens; only documents 1 and 3 are longer than L = 6.
  const std::vector<std::string> docs = {"abc", "defghijk", "lm", "nopqrstuvwxy"};
  const int64_t L = 6, W = 5;
  eval::PyRandom rng(7);
  std::vector<std::vector<int64_t>> expect;
  for (int64_t w = 0; w < W; ++w) {
    std::vector<int64_t> ids;
    do ids = tok.encode_with_special(docs[size_t(rng.randint(0, 3))]);
    while (int64_t(ids.size()) <= L);
    const int64_t s = rng.randint(0, int64_t(ids.size()) - L - 1);
    expect.emplace_back(ids.begin() + s, ids.begin() + s + L);
  }
  auto o = opts(eval::PplProtocol::C4, L, 2, W);
  o.seed = 7;
  auto r = eval::perplexity(model, tok, docs, o);
  CHECK(r.windows == W);
  CHECK(r.predicted_tokens == W * (L - 1));
  CHECK(r.mean_nll == Approx(direct_mean_nll(expect)).epsilon(kNllTol));
  o.seed = 8;
  CHECK(eval::perplexity(model, tok, docs, o).mean_nll != Approx(r.mean_nll).epsilon(kNllTol));

  o.seq_len = 20;
  CHECK_THROWS_WITH(eval::perplexity(model, tok, docs, o), OB_CONTAINS("no document is longer than seq_len 20"));
}

TEST_CASE("perplexity rejects text shorter than a window and bad options", "[eval]") {
  StubTokenizer tok;
  StubLMImpl model(/*max_pos=*/64);
  const std::vector<std::string> docs = {"short"};
  CHECK_THROWS_WITH(eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, 7)),
                    OB_CONTAINS("6 tokens, shorter than one window of seq_len 7"));
  CHECK_THROWS_WITH(eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, 1)),
                    OB_CONTAINS("seq_len must be >= 2"));
  CHECK_THROWS_WITH(eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, 128)),
                    OB_CONTAINS("exceeds the model's max_position_embeddings 64"));
  CHECK_THROWS_WITH(eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, 3, 0)),
                    OB_CONTAINS("batch_size must be >= 1"));
}

TEST_CASE("perplexity computes the NLL in fp32 for a bf16 model", "[eval]") {
  StubTokenizer tok;
  StubLMImpl model(4096, torch::kBFloat16);
  const std::vector<std::string> docs = {"some text to score here"};
  auto r = eval::perplexity(model, tok, docs, opts(eval::PplProtocol::Docs, 8));
  // Reference: the bf16-rounded logits through an fp64 log-softmax.
  auto stream = tok.encode_with_special(docs[0]);
  double nll = 0;
  for (size_t t = 0; t + 1 < 24; ++t) {
    const int64_t w = int64_t(t) % 8;
    if (w == 7) continue;  // last position of a window predicts nothing
    auto row = torch::empty({260}, torch::kFloat64);
    for (int64_t v = 0; v < 260; ++v) row[v] = test::stub_logit(stream[t], w, v);
    row = row.to(torch::kBFloat16).to(torch::kFloat64);
    nll -= (row[stream[t + 1]] - torch::logsumexp(row, 0)).item<double>();
  }
  CHECK(r.predicted_tokens == 21);
  CHECK(r.mean_nll == Approx(nll / 21).epsilon(kNllTol));
}
