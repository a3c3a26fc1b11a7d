#include <torch/torch.h>

#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/data/packed_blocks.h"
#include "onebit/data/seed.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/data/tmpdir.h"
#include "tests/references.h"
#include "tests/support.h"

using namespace onebit::data;
using onebit::test::TempDir;

namespace {
// Independent reference: materialise the whole stream, cut it.
std::vector<std::vector<int64_t>> reference_blocks(const std::vector<std::vector<int64_t>>& samples, int64_t L,
                                                   int64_t bos, int64_t eos) {
  std::vector<int64_t> stream;
  for (const auto& s : samples) {
    if (bos >= 0) stream.push_back(bos);
    stream.insert(stream.end(), s.begin(), s.end());
    if (eos >= 0) stream.push_back(eos);
  }
  std::vector<std::vector<int64_t>> blocks;
  for (size_t i = 0; i + L <= stream.size(); i += L) blocks.emplace_back(stream.begin() + i, stream.begin() + i + L);
  return blocks;
}

std::vector<int64_t> row(const torch::Tensor& x) {
  const auto t = x.contiguous();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

// Whitespace tokenizer over a fixed word list (the real ones live in onebit::tokenizer).
class WordTokenizer : public onebit::tokenizer::Tokenizer {
 public:
  WordTokenizer() {
    words_ = {"<unk>", "<s>", "</s>", "the", "cat", "sat", "on", "mat", "."};
    bos_id_ = 1;
    eos_id_ = 2;
  }
  std::vector<int64_t> encode(std::string_view text) const override {
    std::istringstream is{std::string(text)};
    std::vector<int64_t> ids;
    for (std::string w; is >> w;) {
      auto it = std::find(words_.begin(), words_.end(), w);
      ids.push_back(it == words_.end() ? 0 : it - words_.begin());
    }
    return ids;
  }
  std::string decode(const std::vector<int64_t>&) const override { return ""; }
  int64_t vocab_size() const override { return int64_t(words_.size()); }

 private:
  std::vector<std::string> words_;
};
}  // namespace

TEST_CASE("packing: BOS + sample + EOS, concatenated, cut, remainder dropped", "[data]") {
  const std::vector<std::vector<int64_t>> samples = {{1, 2, 3}, {4}, {5, 6}};
  PackedBlocks pb(TokenDataset::from_samples(samples, 10), {5, 8, 9});
  // stream: 8 1 2 3 9 | 8 4 9 8 5 | 6 9 (dropped)
  REQUIRE(pb.num_blocks() == 2);
  CHECK(pb.stream_tokens() == 12);
  CHECK(pb.dropped_tokens() == 2);
  CHECK(row(pb.block(0)) == std::vector<int64_t>{8, 1, 2, 3, 9});
  CHECK(row(pb.block(1)) == std::vector<int64_t>{8, 4, 9, 8, 5});
  CHECK_THROWS_WITH(pb.block(2), OB_CONTAINS("packed block 2 out of range [0, 2)"));
  CHECK_THROWS_WITH(PackedBlocks(TokenDataset::from_samples(samples, 10), {0, 8, 9}), OB_CONTAINS("seq_len must be > 0"));
  CHECK_THROWS_WITH(PackedBlocks(TokenDataset::from_samples(samples, 10), {4, 10, 9}),
                    OB_CONTAINS("special token id 10 is >= vocab size 10"));
}

TEST_CASE("packing: matches the materialised stream for random samples", "[data]") {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<std::vector<int64_t>> samples(1 + rng() % 30);
    for (auto& s : samples) {
      s.resize(rng() % 12);  // empty samples too
      for (auto& id : s) id = int64_t(rng() % 50);
    }
    const int64_t L = 1 + int64_t(rng() % 17);
    const int64_t bos = trial % 4 == 1 ? -1 : 50, eos = trial % 4 == 2 ? -1 : 51;
    const PackedBlocks pb(TokenDataset::from_samples(samples, 52), {L, bos, eos});
    const auto ref = reference_blocks(samples, L, bos, eos);
    REQUIRE(pb.num_blocks() == int64_t(ref.size()));
    for (size_t b = 0; b < ref.size(); ++b) {
      INFO("trial " << trial << " block " << b);
      CHECK(row(pb.block(int64_t(b))) == ref[b]);
    }
  }
}

TEST_CASE("packing: data.mix_text blocks follow the own blocks; batches cover both", "[data]") {
  // Own: 4 blocks of 3 (ids < 20); text: 5 blocks of 3 (ids 20..), of which the first 2 join.
  std::vector<std::vector<int64_t>> own(6, std::vector<int64_t>{1, 2}), text(5, std::vector<int64_t>{20, 21, 22});
  auto pb = std::make_shared<PackedBlocks>(TokenDataset::from_samples(own, 30), PackOptions{3, -1, -1});
  auto tx = std::make_shared<const PackedBlocks>(TokenDataset::from_samples(text, 30), PackOptions{3, -1, -1});
  REQUIRE(pb->num_blocks() == 4);
  CHECK(mixed_text_blocks(4, 1.0 / 3) == 2);  // 2 of 6 blocks are text
  CHECK(mixed_text_blocks(90, 0.1) == 10);
  CHECK(mixed_text_blocks(7, 0) == 0);
  CHECK(mixed_text_blocks(3, 0.5) == 3);
  CHECK_THROWS_WITH(mixed_text_blocks(3, 1.0), OB_CONTAINS("fraction must be in [0, 1)"));
  CHECK_THROWS_WITH(pb->mix_in(tx, 6), OB_CONTAINS("has 5 blocks of 3 tokens, fewer than the 6 asked for"));
  pb->mix_in(tx, 2);
  REQUIRE(pb->num_blocks() == 6);
  CHECK(pb->mixed_blocks() == 2);
  CHECK(row(pb->block(3)) == std::vector<int64_t>{2, 1, 2});   // own blocks keep their numbers
  CHECK(row(pb->block(4)) == std::vector<int64_t>{20, 21, 22});
  CHECK(row(pb->block(5)) == std::vector<int64_t>{20, 21, 22});
  CHECK_THROWS_WITH(pb->block(6), OB_CONTAINS("packed block 6 out of range [0, 6)"));
  // One epoch of shuffled batches reads every own and every mixed block once: 2 of 6 are text.
  BatchOptions bo;
  bo.batch_size = 3;
  bo.seed = 5;
  BatchIterator it(pb, bo);
  int text_rows = 0;
  for (int b = 0; b < it.batches_per_epoch(); ++b) text_rows += it.next().select(1, 0).eq(20).sum().item<int>();
  CHECK(text_rows == 2);
}

TEST_CASE("batches: shuffled per (seed, epoch), each epoch covers every block once", "[data]") {
  std::vector<std::vector<int64_t>> samples;
  for (int64_t i = 0; i < 24; ++i) samples.push_back({i, i, i});  // with BOS+EOS: 5 tokens, block i = sample i
  auto pb = std::make_shared<const PackedBlocks>(TokenDataset::from_samples(samples, 30), PackOptions{5, 28, 29});
  REQUIRE(pb->num_blocks() == 24);

  auto epoch_blocks = [&](uint64_t seed, int64_t epoch) {
    BatchIterator it(pb, {4, seed}, {epoch, 0});
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < it.batches_per_epoch(); ++b) {
      auto batch = it.next();
      REQUIRE(batch.sizes() == torch::IntArrayRef({4, 5}));
      REQUIRE(batch.dtype() == torch::kInt64);
      for (int64_t r = 0; r < 4; ++r) ids.push_back(batch[r][1].item<int64_t>());
    }
    CHECK(it.position() == BatchPosition{epoch + 1, 0});
    return ids;
  };
  const auto e0 = epoch_blocks(1, 0), e1 = epoch_blocks(1, 1), again = epoch_blocks(1, 0), other = epoch_blocks(2, 0);
  CHECK(std::set<int64_t>(e0.begin(), e0.end()).size() == 24);
  CHECK(std::set<int64_t>(e1.begin(), e1.end()).size() == 24);
  CHECK(e0 == again);
  CHECK(e0 != e1);
  CHECK(e0 != other);
  // Order agrees with the documented permutation.
  CHECK(e0 == epoch_permutation(24, 1, 0));

  BatchOptions plain{4, 1};
  plain.shuffle = false;
  BatchIterator seq(pb, plain);
  CHECK(row(seq.next().select(1, 1)) == std::vector<int64_t>{0, 1, 2, 3});
}

TEST_CASE("batches: a saved position resumes the same stream; ranks split global batches", "[data]") {
  std::vector<std::vector<int64_t>> samples;
  for (int64_t i = 0; i < 30; ++i) samples.push_back({i});  // BOS i EOS: 3 tokens; seq_len 3
  auto pb = std::make_shared<const PackedBlocks>(TokenDataset::from_samples(samples, 40), PackOptions{3, 38, 39});
  BatchIterator a(pb, {4, 9});  // 7 batches per epoch, 2 blocks dropped
  REQUIRE(a.batches_per_epoch() == 7);
  for (int i = 0; i < 10; ++i) a.next();
  const BatchPosition saved = a.position();
  CHECK(saved == BatchPosition{1, 3});
  BatchIterator b(pb, {4, 9}, saved);
  for (int i = 0; i < 12; ++i) CHECK(torch::equal(a.next(), b.next()));

  BatchIterator whole(pb, {4, 5});
  BatchIterator r0(pb, {2, 5, true, 0, 2}), r1(pb, {2, 5, true, 1, 2});
  for (int i = 0; i < 9; ++i) CHECK(torch::equal(whole.next(), torch::cat({r0.next(), r1.next()})));

  CHECK_THROWS_WITH(BatchIterator(pb, {31, 0}), OB_CONTAINS("fewer than one batch of 31 blocks"));
  CHECK_THROWS_WITH(BatchIterator(pb, {2, 0, true, 2, 2}), OB_CONTAINS("rank 2 is not in [0, world size 2)"));
  CHECK_THROWS_WITH(BatchIterator(pb, {4, 9}, {0, 8}), OB_CONTAINS("position (epoch 0, index 8) is invalid"));
}

TEST_CASE("text source: .txt split at blank lines, .jsonl text fields, tokenized and packed", "[data]") {
  TempDir tmp("text_source");
  std::ofstream(tmp.path / "a.txt") << "the cat sat\non the mat .\n\n\n  \nthe cat .\r\n\nthe dog\n";
  const auto docs = read_documents(tmp.str("a.txt"));
  CHECK(docs == std::vector<std::string>{"the cat sat\non the mat .", "the cat .", "the dog"});

  std::ofstream(tmp.path / "b.jsonl") << "{\"text\": \"the mat\", \"id\": 1}\n\n{\"text\": \"cat\\non mat\"}\n";
  CHECK(read_documents(tmp.str("b.jsonl")) == std::vector<std::string>{"the mat", "cat\non mat"});

  WordTokenizer tok;
  const PackedBlocks pb = pack_text_file(tmp.str("a.txt"), tok, 4);
  // <s> the cat sat on the mat . </s> <s> the cat . </s> <s> the <unk> </s>: 18 tokens -> 4 blocks
  CHECK(pb.num_blocks() == 4);
  CHECK(row(pb.block(0)) == std::vector<int64_t>{1, 3, 4, 5});
  CHECK(row(pb.block(2)) == std::vector<int64_t>{2, 1, 3, 4});
  CHECK(row(pb.block(3)) == std::vector<int64_t>{8, 2, 1, 3});

  std::ofstream(tmp.path / "bad.jsonl") << "{\"text\": \"a\"}\n{\"text\": 3}\n";
  CHECK_THROWS_WITH(read_documents(tmp.str("bad.jsonl")), OB_CONTAINS("bad.jsonl:2: expected an object with a string field \"text\""));
  std::ofstream(tmp.path / "broken.jsonl") << "{\"text\": \"a\"}\n{\"text\n";
  CHECK_THROWS_WITH(read_documents(tmp.str("broken.jsonl")), OB_CONTAINS("broken.jsonl:2: invalid JSON"));
  std::ofstream(tmp.path / "empty.txt") << "\n\n";
  CHECK_THROWS_WITH(read_documents(tmp.str("empty.txt")), OB_CONTAINS("empty.txt: no documents"));
  CHECK_THROWS_WITH(read_documents(tmp.str("missing.txt")), OB_CONTAINS("cannot open text file"));
}

TEST_CASE("text source: TinyStories with the stories260K tokenizer", "[data]") {
  OB_SHARED_OR_SKIP(model, "models/stories260K");
  OB_SHARED_OR_SKIP(text, "data/tinystories_val.txt");
  const auto tok = onebit::tokenizer::load_tokenizer(model.string());
  const auto docs = read_documents(text.string());
  CHECK(docs.size() > 100);
  const PackedBlocks pb = pack_text_file(text.string(), *tok, 256);
  CHECK(pb.num_blocks() > 100);
  // Blocks 0 and 1 = the start of BOS story EOS BOS story EOS ...
  std::vector<int64_t> stream;
  for (size_t d = 0; stream.size() < 512; ++d) {
    stream.push_back(tok->bos_id());
    const auto ids = tok->encode(docs[d]);
    stream.insert(stream.end(), ids.begin(), ids.end());
    stream.push_back(tok->eos_id());
  }
  CHECK(row(pb.block(0)) == std::vector<int64_t>(stream.begin(), stream.begin() + 256));
  CHECK(row(pb.block(1)) == std::vector<int64_t>(stream.begin() + 256, stream.begin() + 512));
  CHECK(pb.stream_tokens() - pb.dropped_tokens() == pb.num_blocks() * 256);
}
