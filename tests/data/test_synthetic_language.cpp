#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "onebit/data/packed_blocks.h"
#include "onebit/data/synthetic_language.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/data/tmpdir.h"
#include "tests/support.h"
#include "tests/references.h"

namespace syn = onebit::data::synthetic;
using onebit::test::TempDir;

namespace {
std::vector<std::string> split(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> w;
  for (std::string x; is >> x;) w.push_back(x);
  return w;
}
bool in(const std::vector<std::string>& v, const std::string& w) { return std::find(v.begin(), v.end(), w) != v.end(); }

// Runs a shell command, returns (exit status, stdout).
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  return {::pclose(p), out};
}
}  // namespace

TEST_CASE("synthetic language: documents are determined by (seed, index)", "[data]") {
  const auto a = syn::generate_documents(6, 7), b = syn::generate_documents(6, 7);
  CHECK(a == b);
  CHECK(syn::generate_document(7, 4) == a[4]);
  CHECK(syn::generate_documents(2, 7, 4) == std::vector<std::string>{a[4], a[5]});
  CHECK(syn::generate_documents(6, 8) != a);
  std::set<std::string> distinct(a.begin(), a.end());
  CHECK(distinct.size() == a.size());
  for (const auto& d : a) {
    CHECK(d.find("  ") == std::string::npos);  // single spaces, no blank lines inside
    CHECK(d.find('\n') == std::string::npos);
    CHECK(d.back() == '.');
  }
}

TEST_CASE("synthetic language: vocabulary is complete, lower-case and used", "[data]") {
  const auto vocab = syn::token_vocabulary();
  CHECK(vocab[syn::kUnkId] == "<unk>");
  CHECK(vocab[syn::kBosId] == "<s>");
  CHECK(vocab[syn::kEosId] == "</s>");
  CHECK(syn::vocab_size() == int64_t(vocab.size()));
  CHECK(vocab.size() >= 300);
  CHECK(vocab.size() <= 600);
  CHECK(std::set<std::string>(vocab.begin(), vocab.end()).size() == vocab.size());
  for (const auto& w : syn::words())
    for (char ch : w) CHECK_FALSE(std::isupper(static_cast<unsigned char>(ch)));

  std::vector<int64_t> count(vocab.size(), 0);
  int64_t tokens = 0;
  for (const auto& d : syn::generate_documents(3000, 1)) {
    for (int64_t id : syn::encode(d)) ++count[size_t(id)], ++tokens;
  }
  CHECK(count[syn::kUnkId] == 0);  // every emitted word is in the vocabulary
  int64_t used = 0;
  for (size_t i = 3; i < count.size(); ++i) used += count[i] > 0;
  INFO("used " << used << " of " << syn::words().size() << " words, " << tokens << " tokens");
  CHECK(double(used) >= 0.97 * double(syn::words().size()));
}

TEST_CASE("synthetic language: agreement, a/an, pronouns and colours are consistent", "[data]") {
  std::set<std::string> singular, plural;
  for (const auto& [s, p] : syn::verb_forms()) singular.insert(s), plural.insert(p);
  for (const auto& s : singular) REQUIRE(plural.count(s) == 0);  // forms never overlap
  const auto& male = syn::male_names();
  const auto& female = syn::female_names();
  int64_t checked_singular = 0, checked_plural = 0, checked_colour = 0;
  for (const auto& d : syn::generate_documents(800, 3)) {
    const auto w = split(d);
    std::set<std::string> males, females;
    std::map<std::string, std::string> colour_of;
    for (size_t i = 0; i < w.size(); ++i) {
      const std::string& t = w[i];
      if (in(male, t)) males.insert(t);
      if (in(female, t)) females.insert(t);
      // Pronouns only for someone of that gender already in the story.
      if (t == "he" || t == "him" || t == "his") CHECK_FALSE(males.empty());
      if (t == "she") CHECK_FALSE(females.empty());
      // a/an.
      if ((t == "a" || t == "an") && i + 1 < w.size()) {
        const bool vowel = std::string("aeiou").find(w[i + 1][0]) != std::string::npos;
        INFO(d);
        CHECK((t == "an") == vowel);
      }
      // Subject-verb agreement.
      if (i + 1 < w.size() && (singular.count(w[i + 1]) || plural.count(w[i + 1]))) {
        const std::string& v = w[i + 1];
        const bool name = in(male, t) || in(female, t);
        const bool coordinated = name && i >= 2 && w[i - 1] == "and";
        INFO(d);
        if (t == "they" || coordinated) {
          CHECK(plural.count(v) == 1);
          ++checked_plural;
        } else if (t == "he" || t == "she" || name) {
          CHECK(singular.count(v) == 1);
          ++checked_singular;
        }
      }
      // An object keeps its colour for the whole story.
      if (in(syn::colors(), t) && i + 1 < w.size() && in(syn::objects(), w[i + 1])) {
        auto [it, fresh] = colour_of.emplace(w[i + 1], t);
        INFO(d);
        CHECK(it->second == t);
        checked_colour += !fresh;
      }
      if (t == "the" && i + 3 < w.size() && in(syn::objects(), w[i + 1]) && w[i + 2] == "is" &&
          in(syn::colors(), w[i + 3])) {
        auto it = colour_of.find(w[i + 1]);
        REQUIRE(it != colour_of.end());
        CHECK(it->second == w[i + 3]);
        ++checked_colour;
      }
    }
  }
  CHECK(checked_singular > 1000);
  CHECK(checked_plural > 300);
  CHECK(checked_colour > 300);
}

TEST_CASE("synthetic language: a bigram model has far lower entropy than uniform", "[data]") {
  const int64_t V = syn::vocab_size();
  std::vector<double> pair(size_t(V * V), 0.0), first(size_t(V), 0.0);
  for (const auto& d : syn::generate_documents(3000, 11)) {
    auto ids = syn::encode(d);
    ids.insert(ids.begin(), syn::kBosId);
    for (size_t i = 1; i < ids.size(); ++i) pair[size_t(ids[i - 1] * V + ids[i])] += 1, first[size_t(ids[i - 1])] += 1;
  }
  constexpr double kSmooth = 0.01;  // add-k smoothing
  double nll = 0;
  int64_t n = 0;
  for (const auto& d : syn::generate_documents(300, 11, 100000)) {  // held out
    auto ids = syn::encode(d);
    ids.insert(ids.begin(), syn::kBosId);
    for (size_t i = 1; i < ids.size(); ++i, ++n)
      nll -= std::log2((pair[size_t(ids[i - 1] * V + ids[i])] + kSmooth) / (first[size_t(ids[i - 1])] + kSmooth * V));
  }
  const double bigram_bits = nll / double(n), uniform_bits = std::log2(double(V));
  INFO("bigram " << bigram_bits << " bits/token, uniform " << uniform_bits);
  CHECK(bigram_bits < 0.5 * uniform_bits);
}

TEST_CASE("synthetic language: HF tokenizer files (WordLevel + WhitespaceSplit)", "[data]") {
  TempDir tmp("syn_tokenizer");
  syn::write_tokenizer(tmp.str());
  nlohmann::json tok, cfg;
  std::ifstream(tmp.path / "tokenizer.json") >> tok;
  std::ifstream(tmp.path / "tokenizer_config.json") >> cfg;
  CHECK(tok["model"]["type"] == "WordLevel");
  CHECK(tok["model"]["unk_token"] == "<unk>");
  CHECK(tok["pre_tokenizer"]["type"] == "WhitespaceSplit");
  CHECK(tok["model"]["vocab"].size() == size_t(syn::vocab_size()));
  CHECK(tok["model"]["vocab"]["</s>"] == syn::kEosId);
  CHECK(tok["added_tokens"].size() == 3);
  CHECK(cfg["add_bos_token"] == true);
  CHECK(cfg["bos_token"] == "<s>");
  CHECK(cfg["eos_token"] == "</s>");

  // The Python `tokenizers` library loads it and encodes like syn::encode.
  const std::string py = onebit::test::python();
  OB_REFERENCE_OR_SKIP(!py.empty() && run(py + " -c 'import tokenizers' 2>/dev/null").first == 0,
                     "needs Python with the tokenizers package (ONEBIT_PYTHON)");
  const auto docs = syn::generate_documents(5, 2);
  std::ofstream(tmp.path / "docs.txt") << docs[0] << "\n" << docs[1] << "\n" << docs[2] << " zebra\n";
  std::ofstream(tmp.path / "check.py") << R"(import sys, json
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
out = []
for line in open(sys.argv[1] + "/docs.txt"):
    line = line.rstrip("\n")
    out.append({"plain": t.encode(line, add_special_tokens=False).ids,
                "special": t.encode(line).ids})
print(json.dumps(out))
)";
  const auto [rc, text] = run(py + " " + tmp.str("check.py") + " " + tmp.str());
  REQUIRE(rc == 0);
  const auto res = nlohmann::json::parse(text);
  REQUIRE(res.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    auto expect = syn::encode(docs[i] + (i == 2 ? " zebra" : ""));
    CHECK(res[i]["plain"].get<std::vector<int64_t>>() == expect);
    expect.insert(expect.begin(), syn::kBosId);
    CHECK(res[i]["special"].get<std::vector<int64_t>>() == expect);
  }
  CHECK(res[2]["plain"].back() == syn::kUnkId);
}

TEST_CASE("synthetic language: onebit::tokenizer loads the written tokenizer and agrees", "[data]") {
  TempDir tmp("syn_tokenizer_ours");
  syn::write_tokenizer(tmp.str());
  const auto tok = onebit::tokenizer::load_tokenizer(tmp.str());
  CHECK(tok->vocab_size() == syn::vocab_size());
  CHECK(tok->bos_id() == syn::kBosId);
  CHECK(tok->eos_id() == syn::kEosId);
  CHECK(tok->add_bos());
  for (const auto& d : syn::generate_documents(20, 4)) {
    const auto ids = syn::encode(d);
    CHECK(tok->encode(d) == ids);
    CHECK(tok->decode(ids) == d);
  }
}

TEST_CASE("synthetic language: token dataset and text file helpers", "[data]") {
  const auto docs = syn::generate_documents(50, 9, 10);
  const auto ds = syn::token_dataset(50, 9, 10);
  REQUIRE(ds.size() == 50);
  CHECK(ds.vocab_size() == syn::vocab_size());
  for (int64_t i = 0; i < 50; ++i) CHECK(ds.sample(i) == syn::encode(docs[size_t(i)]));
  const onebit::data::PackedBlocks pb(ds, {64, syn::kBosId, syn::kEosId});
  CHECK(pb.block(0)[0].item<int64_t>() == syn::kBosId);

  TempDir tmp("syn_text");
  syn::write_documents(tmp.str("docs.txt"), docs);
  CHECK(onebit::data::read_documents(tmp.str("docs.txt")) == docs);
}
