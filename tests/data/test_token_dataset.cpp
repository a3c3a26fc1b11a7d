#include <filesystem>
#include <fstream>

#include "onebit/core/error.h"
#include "onebit/data/token_dataset.h"
#include "tests/data/tmpdir.h"
#include "tests/support.h"

using onebit::data::GeneratorSettings;
using onebit::data::TokenDataset;
using onebit::data::TokenDatasetWriter;
using onebit::test::TempDir;
namespace fs = std::filesystem;

namespace {
const GeneratorSettings kGen = {{"program", "test"}, {"seed", "7"}};
const std::vector<std::vector<int64_t>> kSamples = {{1, 2, 3}, {}, {99, 0}, {5, 6, 7, 8}, {42}};

void write_raw(const fs::path& p, const std::string& bytes, bool append) {
  std::ofstream(p, std::ios::binary | (append ? std::ios::app : std::ios::trunc)) << bytes;
}
std::string read_raw(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST_CASE("token dataset: write in batches, read back memory-mapped", "[data]") {
  TempDir tmp("ds_roundtrip");
  const std::string dir = tmp.str("ds");
  {
    TokenDatasetWriter w(dir, 100, kGen);
    for (int i = 0; i < 3; ++i) w.append(kSamples[i]);
    CHECK(w.pending() == 3);
    w.commit();
    CHECK(w.committed() == 3);
    for (int i = 3; i < 5; ++i) w.append(kSamples[i]);
    w.commit();
  }
  const TokenDataset ds = TokenDataset::open(dir);
  REQUIRE(ds.size() == 5);
  CHECK(ds.num_tokens() == 10);
  CHECK(ds.vocab_size() == 100);
  CHECK(ds.generator() == kGen);
  for (int i = 0; i < 5; ++i) CHECK(ds.sample(i) == kSamples[i]);
  CHECK(ds.begin(3) == 5);
  CHECK(ds.length(1) == 0);
  // uint16 little-endian on disk: 10 tokens, 2 bytes each; 5 uint64 offsets.
  CHECK(fs::file_size(tmp.path / "ds/tokens.bin") == 20);
  CHECK(fs::file_size(tmp.path / "ds/offsets.bin") == 40);
  const std::string raw = read_raw(tmp.path / "ds/tokens.bin");
  CHECK(uint8_t(raw[6]) == 99);
  CHECK(uint8_t(raw[7]) == 0);
  const std::string index = read_raw(tmp.path / "ds/index.json");
  CHECK(index.find("\"dtype\": \"uint16\"") != std::string::npos);
  CHECK(index.find("\"num_samples\": 5") != std::string::npos);
}

TEST_CASE("token dataset: vocab > 65536 stores uint32", "[data]") {
  TempDir tmp("ds_u32");
  {
    TokenDatasetWriter w(tmp.str(), 70000, {});
    w.append({65536, 69999, 1});
    w.commit();
  }
  const auto ds = TokenDataset::open(tmp.str());
  CHECK(ds.sample(0) == std::vector<int64_t>{65536, 69999, 1});
  CHECK(fs::file_size(tmp.path / "tokens.bin") == 12);
  CHECK(read_raw(tmp.path / "index.json").find("\"dtype\": \"uint32\"") != std::string::npos);
}

TEST_CASE("token dataset: an interrupted run resumes without duplicates or losses", "[data]") {
  TempDir tmp("ds_resume");
  const std::string dir = tmp.str();
  {
    TokenDatasetWriter w(dir, 100, kGen);
    w.append(kSamples[0]);
    w.append(kSamples[1]);
    w.commit();
    w.append(kSamples[2]);  // never committed: the "crash" drops it
  }
  // A crash between writing data and renaming the index leaves bytes past the commit.
  write_raw(tmp.path / "tokens.bin", std::string("\x07\x00\x08\x00", 4), true);
  write_raw(tmp.path / "offsets.bin", std::string(8, '\x09'), true);
  CHECK(TokenDataset::open(dir).size() == 2);  // readers ignore the tail
  {
    TokenDatasetWriter w(dir, 100, kGen);
    CHECK(w.committed() == 2);
    CHECK(fs::file_size(tmp.path / "tokens.bin") == 6);  // truncated to the commit
    CHECK(fs::file_size(tmp.path / "offsets.bin") == 16);
    for (int i = 2; i < 5; ++i) w.append(kSamples[i]);
    w.commit();
  }
  const auto ds = TokenDataset::open(dir);
  REQUIRE(ds.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(ds.sample(i) == kSamples[i]);
}

TEST_CASE("token dataset: resuming with other settings is an error", "[data]") {
  TempDir tmp("ds_settings");
  { TokenDatasetWriter w(tmp.str(), 100, kGen); }
  CHECK_THROWS_WITH(TokenDatasetWriter(tmp.str(), 100, {{"program", "test"}, {"seed", "8"}}),
                    OB_CONTAINS("cannot resume: existing samples were made with seed=7, this run asks for seed=8"));
  CHECK_THROWS_WITH(TokenDatasetWriter(tmp.str(), 100, {{"program", "test"}}),
                    OB_CONTAINS("existing samples were made with seed=7, this run does not set seed"));
  CHECK_THROWS_WITH(TokenDatasetWriter(tmp.str(), 100, {{"program", "test"}, {"seed", "7"}, {"top_k", "5"}}),
                    OB_CONTAINS("made with top_k=<unset>, this run asks for top_k=5"));
  CHECK_THROWS_WITH(TokenDatasetWriter(tmp.str(), 50, kGen),
                    OB_CONTAINS("existing dataset has vocab size 100, this run has 50"));
  TokenDatasetWriter w(tmp.str(), 100, kGen);
  CHECK_THROWS_WITH(TokenDatasetWriter(tmp.str(), 100, kGen), OB_CONTAINS("another process is writing this dataset"));
  CHECK_THROWS_WITH(w.append({1, 100}), OB_CONTAINS("token id 100 at position 1 of sample 0 is outside the vocabulary [0, 100)"));
  CHECK_THROWS_WITH(w.append({-1}), OB_CONTAINS("token id -1 at position 0"));
}

TEST_CASE("token dataset: corrupt, missing and truncated files are clear errors", "[data]") {
  TempDir tmp("ds_corrupt");
  const std::string dir = tmp.str();
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("is not a token dataset: no index.json"));
  {
    TokenDatasetWriter w(dir, 100, kGen);
    for (const auto& s : kSamples) w.append(s);
    w.commit();
  }
  const std::string good_index = read_raw(tmp.path / "index.json");
  const std::string good_tokens = read_raw(tmp.path / "tokens.bin");

  write_raw(tmp.path / "index.json", "{\"format\": \"onebit-token-dataset\", \"vers", false);
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("index.json: corrupt index"));
  write_raw(tmp.path / "index.json", "{\"format\": \"something-else\"}", false);
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("corrupt index (format is not 'onebit-token-dataset')"));
  std::string v2 = good_index;
  v2.replace(v2.find("\"version\": 1"), 12, "\"version\": 2");
  write_raw(tmp.path / "index.json", v2, false);
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("format version 2 is not supported"));
  std::string no_vocab = good_index;
  no_vocab.replace(no_vocab.find("\"vocab_size\""), 12, "\"vocab_sise\"");
  write_raw(tmp.path / "index.json", no_vocab, false);
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("index.json: corrupt index"));
  write_raw(tmp.path / "index.json", good_index, false);

  write_raw(tmp.path / "tokens.bin", good_tokens.substr(0, 7), false);
  CHECK_THROWS_WITH(TokenDataset::open(dir),
                    OB_CONTAINS("tokens.bin is truncated: index.json records 10 tokens (20 bytes) but the file has 7 bytes"));
  CHECK_THROWS_WITH(TokenDatasetWriter(dir, 100, kGen), OB_CONTAINS("tokens.bin is truncated"));
  fs::remove(tmp.path / "tokens.bin");
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("tokens.bin is missing"));

  std::string bad = good_tokens;
  bad[6] = char(200);  // sample 2's first token: 200 >= vocab 100
  write_raw(tmp.path / "tokens.bin", bad, false);
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("token id 200 at position 3 (sample 2) is >= vocab size 100"));

  write_raw(tmp.path / "tokens.bin", good_tokens, false);
  write_raw(tmp.path / "offsets.bin", std::string(8, '\xff') + read_raw(tmp.path / "offsets.bin").substr(8), false);
  CHECK_THROWS_WITH(TokenDataset::open(dir), OB_CONTAINS("corrupt offsets (sample 0 ends at"));
}

TEST_CASE("token dataset: in-memory samples", "[data]") {
  const auto ds = TokenDataset::from_samples(kSamples, 100);
  CHECK(ds.size() == 5);
  CHECK(ds.sample(3) == kSamples[3]);
  CHECK(ds.where() == "<memory>");
  CHECK_THROWS_WITH(TokenDataset::from_samples({{1, 2}, {3, 100}}, 100),
                    OB_CONTAINS("token id 100 in sample 1 is outside the vocabulary [0, 100)"));
  CHECK_THROWS_WITH(ds.sample(5), OB_CONTAINS("sample 5 out of range [0, 5)"));
}
