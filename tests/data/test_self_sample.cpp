#include <torch/torch.h>

#include <fstream>
#include <set>

#include "onebit/core/error.h"
#include "onebit/config/train_config.h"
#include "onebit/data/self_sample.h"
#include "onebit/data/synthetic_language.h"
#include "onebit/data/training_data.h"
#include "tests/data/tmpdir.h"
#include "tests/support.h"

using namespace onebit::data;
using onebit::test::TempDir;
namespace models = onebit::models;

namespace {
constexpr int64_t kVocab = 16, kBos = 1, kEos = 2;

// A bigram "language model": logits of the next token are row `prev` of a fixed table,
// through the real generate() path (last_hidden = one_hot(prev), lm_head = tableᵀ).
// EOS is likely but never the argmax. Optionally throws after `fail_after` forwards.
class BigramLM : public models::CausalLMImpl {
 public:
  explicit BigramLM(int64_t fail_after = -1) : fail_after_(fail_after) {
    cfg_.model_type = "llama";
    cfg_.vocab_size = kVocab;
    cfg_.bos_token_id = kBos;
    cfg_.eos_token_id = kEos;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    table_ = torch::randn({kVocab, kVocab}, gen) * 2;
    auto others = table_.index_fill(1, torch::tensor({kEos}), -1e9);
    table_.select(1, kEos).copy_(std::get<0>(others.max(1)) - 0.7);
  }
  models::ForwardOutput forward(const torch::Tensor& ids, const models::ForwardArgs& args) override {
    if (fail_after_ >= 0 && calls_++ >= fail_after_) throw onebit::Error("interrupted");
    models::ForwardOutput out;
    out.last_hidden = torch::one_hot(ids, kVocab).to(torch::kFloat32);
    if (args.compute_logits) out.logits = torch::matmul(out.last_hidden, lm_head_weight().t());
    return out;
  }
  const models::ModelConfig& config() const override { return cfg_; }
  torch::Tensor lm_head_weight() const override { return table_.t().contiguous(); }
  void set_gradient_checkpointing(bool) override {}
  int64_t greedy_next(int64_t prev) const { return table_[prev].argmax().item<int64_t>(); }

 private:
  models::ModelConfig cfg_;
  torch::Tensor table_;
  int64_t fail_after_, calls_ = 0;
};

SampleOptions small(int64_t n) {
  SampleOptions o;
  o.sampling.num_samples = n;
  o.sampling.max_length = 9;
  o.sampling.batch_size = 4;
  o.seed = 3;
  o.progress = false;
  o.provenance = {{"model", "bigram-stub"}};
  return o;
}

std::string bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void check_same_dataset(const std::string& a, const std::string& b) {
  CHECK(bytes(a + "/tokens.bin") == bytes(b + "/tokens.bin"));
  CHECK(bytes(a + "/offsets.bin") == bytes(b + "/offsets.bin"));
  CHECK(bytes(a + "/index.json") == bytes(b + "/index.json"));
}
}  // namespace

TEST_CASE("self-sampling: first token, greedy prefix, then sampling up to EOS or max_length", "[data]") {
  TempDir tmp("self_sample_basic");
  BigramLM lm;
  const SampleOptions o = small(30);
  const auto rep = self_sample(lm, tmp.str(), o);
  CHECK(rep.resumed_from == 0);
  CHECK(rep.total == 30);
  const auto ds = TokenDataset::open(tmp.str());
  REQUIRE(ds.size() == 30);
  CHECK(rep.total_tokens == ds.num_tokens());
  CHECK(ds.generator().at("model") == "bigram-stub");
  CHECK(ds.generator().at("greedy_max") == "4");
  int64_t ended_early = 0, full = 0, sampled_not_greedy = 0;
  for (int64_t j = 0; j < ds.size(); ++j) {
    const auto s = ds.sample(j);
    const int64_t k = j / o.sampling.batch_size;
    INFO("sample " << j);
    REQUIRE(!s.empty());
    CHECK(int64_t(s.size()) <= o.sampling.max_length);
    CHECK(s[0] == first_tokens_of_batch(lm.config(), o, k)[size_t(j % o.sampling.batch_size)]);
    CHECK(s[0] != kBos);
    for (int64_t id : s) CHECK(id != kEos);  // EOS ends a sample and is not stored
    const int64_t g = greedy_tokens_of_batch(o, k);
    CHECK(g >= 2);
    CHECK(g <= 4);
    for (int64_t i = 1; i < int64_t(s.size()); ++i) {
      if (i <= g) CHECK(s[size_t(i)] == lm.greedy_next(s[size_t(i - 1)]));
      else sampled_not_greedy += s[size_t(i)] != lm.greedy_next(s[size_t(i - 1)]);
    }
    (int64_t(s.size()) < o.sampling.max_length ? ended_early : full) += 1;
  }
  CHECK(ended_early > 0);  // some rows stopped at EOS
  CHECK(full > 0);         // others ran to max_length
  CHECK(sampled_not_greedy > 5);  // after the prefix the tokens are sampled
}

TEST_CASE("self-sampling: first tokens uniform over non-special ids, or a sweep over them", "[data]") {
  BigramLM lm;
  SampleOptions o = small(1);
  std::set<int64_t> seen;
  for (int64_t k = 0; k < 40; ++k)
    for (int64_t id : first_tokens_of_batch(lm.config(), o, k)) seen.insert(id);
  CHECK(seen.size() == size_t(kVocab - 2));
  CHECK(seen.count(kBos) == 0);
  CHECK(seen.count(kEos) == 0);
  CHECK(first_tokens_of_batch(lm.config(), o, 7) == first_tokens_of_batch(lm.config(), o, 7));
  o.sampling.first_token = "sweep";
  // Candidates 0, 3, 4, ..., 15 (14 ids); row j starts with candidate j mod 14.
  CHECK(first_tokens_of_batch(lm.config(), o, 0) == std::vector<int64_t>{0, 3, 4, 5});
  CHECK(first_tokens_of_batch(lm.config(), o, 3) == std::vector<int64_t>{14, 15, 0, 3});
  o.sampling.first_token = "random";
  CHECK_THROWS_WITH(first_tokens_of_batch(lm.config(), o, 0), OB_CONTAINS("first_token must be 'uniform' or 'sweep', got 'random'"));
  o = small(1);
  o.sampling.greedy_min = 5;
  CHECK_THROWS_WITH(greedy_tokens_of_batch(o, 0), OB_CONTAINS("need 0 <= greedy_min <= greedy_max, got 5 and 4"));
}

TEST_CASE("self-sampling: interrupted and resumed equals uninterrupted, byte for byte", "[data]") {
  TempDir tmp("self_sample_resume");
  const std::string whole = tmp.str("whole"), cut = tmp.str("cut"), grown = tmp.str("grown");
  {
    BigramLM lm;
    self_sample(lm, whole, small(14));
  }
  {
    BigramLM lm(/*fail_after=*/19);  // 8 forwards per batch: dies inside the third batch
    CHECK_THROWS_WITH(self_sample(lm, cut, small(14)), OB_CONTAINS("interrupted"));
  }
  CHECK(TokenDataset::open(cut).size() == 8);  // two committed batches survive
  {
    BigramLM lm;
    const auto rep = self_sample(lm, cut, small(14));
    CHECK(rep.resumed_from == 8);
    CHECK(rep.total == 14);
  }
  check_same_dataset(whole, cut);
  {
    // A smaller run extended later: the same stream (the partial batch is regenerated).
    BigramLM lm;
    self_sample(lm, grown, small(6));
    CHECK(self_sample(lm, grown, small(14)).resumed_from == 6);
  }
  check_same_dataset(whole, grown);

  BigramLM lm;
  SampleOptions other = small(20);
  other.sampling.temperature = 0.7;
  CHECK_THROWS_WITH(self_sample(lm, whole, other),
                    OB_CONTAINS("cannot resume: existing samples were made with temperature=1, this run asks for "
                                "temperature=0.7"));
  other = small(20);
  other.provenance["model"] = "another";
  CHECK_THROWS_WITH(self_sample(lm, whole, other), OB_CONTAINS("made with model=bigram-stub, this run asks for model=another"));
}

TEST_CASE("training data: blocks from a TrainConfig for each data.source", "[data]") {
  TempDir tmp("training_data");
  BigramLM lm;
  auto cfg = onebit::config::parse_train_config(
      "model:\n  teacher: embedded\n  dtype: fp32\n"
      "data:\n  num_samples: 10\n  sample_length: 9\n  sample_batch: 4\n  seq_len: 8\n  batch_size: 2\n  seed: 3\n",
      {"output_dir=" + tmp.str("run")});
  // A teacher folder with a recipe (the quickstart's embedded teacher) keys its samples by it.
  std::filesystem::create_directories(tmp.str("teacher"));
  std::ofstream(tmp.str("teacher/embedded.json")) << R"({"settings": {"hidden_size": 128}})";
  const auto blocks = training_blocks(cfg, lm, tmp.str("teacher"), /*progress=*/false);
  const auto ds = TokenDataset::open(tmp.str("run/samples"));
  CHECK(ds.size() == 10);
  CHECK(ds.generator().at("model") == "embedded");
  CHECK(ds.generator().at("teacher_recipe") == R"({"hidden_size":128})");
  std::ofstream(tmp.str("teacher/embedded.json")) << R"({"settings": {"hidden_size": 64}})";
  CHECK_THROWS_WITH(training_blocks(cfg, lm, tmp.str("teacher"), false),
                    OB_CONTAINS(R"(made with teacher_recipe={"hidden_size":128}, this run asks for teacher_recipe={"hidden_size":64})"));
  CHECK(blocks->num_blocks() == (ds.num_tokens() + 2 * 10) / 8);
  CHECK(ds.generator().at("temperature") == "1");
  CHECK(ds.generator().at("device") == "cpu");

  // The data.* sampling keys are what self_sample uses.
  const auto keyed = onebit::config::parse_train_config(
      "model:\n  teacher: embedded\n  dtype: fp32\n"
      "data:\n  num_samples: 6\n  sample_length: 7\n  sample_batch: 3\n  seq_len: 8\n  seed: 3\n"
      "  first_token: sweep\n  greedy_min: 1\n  greedy_max: 1\n  temperature: 0.5\n  top_k: 3\n  top_p: 0.9\n"
      "  stop_at_eos: false\n",
      {"output_dir=" + tmp.str("keyed")});
  training_blocks(keyed, lm, tmp.str("keyed_teacher"), false);
  const auto kds = TokenDataset::open(tmp.str("keyed/samples"));
  const onebit::data::GeneratorSettings want = {
      {"first_token", "sweep"}, {"greedy_min", "1"}, {"greedy_max", "1"}, {"temperature", "0.5"}, {"top_k", "3"},
      {"top_p", "0.9"},         {"eos_token_id", "-1"}, {"max_length", "7"}, {"batch_size", "3"}};
  for (const auto& [key, value] : want) CHECK(kds.generator().at(key) == value);
  CHECK(kds.size() == 6);
  for (int64_t i = 0; i < kds.size(); ++i) CHECK(kds.length(i) == 7);  // no EOS stop
  CHECK(kds.sample(0)[0] == 0);  // sweep: candidates 0, 3, 4, ...
  CHECK(kds.sample(1)[0] == 3);
  CHECK(blocks->block(0)[0].item<int64_t>() == kBos);
  BatchIterator it(blocks, batch_options(cfg));
  CHECK(it.next().sizes() == torch::IntArrayRef({2, 8}));

  // The same folder as a dataset; a dataset from a larger vocabulary is refused.
  cfg.data.source = "dataset";
  cfg.data.path = tmp.str("run/samples");
  CHECK(training_blocks(cfg, lm, "")->num_blocks() == blocks->num_blocks());
  {
    TokenDatasetWriter w(tmp.str("big"), 100, {});
    w.append({50});
    w.commit();
  }
  cfg.data.path = tmp.str("big");
  CHECK_THROWS_WITH(training_blocks(cfg, lm, ""), OB_CONTAINS("dataset vocab size 100 does not fit the teacher's 16"));

  // Text through a tokenizer folder (the synthetic language's: 370 ids, too many here).
  onebit::data::synthetic::write_tokenizer(tmp.str("tok"));
  std::ofstream(tmp.path / "t.txt") << "tom runs .\n\nmia sings .\n";
  // data.mix_text goes through the same tokenizer check as data.source=text.
  cfg.data.path = tmp.str("run/samples");
  cfg.data.mix_text = tmp.str("t.txt");
  cfg.data.mix_fraction = 0.25;
  CHECK_THROWS_WITH(training_blocks(cfg, lm, tmp.str("tok")), OB_CONTAINS("has 370 ids but the model at"));
  cfg.data.mix_text.clear();
  cfg.data.mix_fraction = 0;
  cfg.data.source = "text";
  cfg.data.path = tmp.str("t.txt");
  CHECK_THROWS_WITH(training_blocks(cfg, lm, tmp.str("tok")), OB_CONTAINS("has 370 ids but the model at"));
  CHECK_THROWS_WITH(training_blocks(cfg, lm, tmp.str("tok")), OB_CONTAINS("only 16"));
}

TEST_CASE("self-sampling: a complete dataset is only read, even while another writer holds it", "[data]") {
  TempDir tmp("self_sample_complete");
  BigramLM lm;
  self_sample(lm, tmp.str(), small(8));
  TokenDatasetWriter holder(tmp.str(), kVocab, TokenDataset::open(tmp.str()).generator());  // holds the lock
  const auto rep = self_sample(lm, tmp.str(), small(8));
  CHECK(rep.resumed_from == 8);
  CHECK(rep.total == 8);
  CHECK_THROWS_WITH(self_sample(lm, tmp.str(), small(12)), OB_CONTAINS("another process is writing this dataset"));
}
