// Token datasets on disk: the format onebit-sample writes and the trainer reads.
//
//   DIR/index.json   {"format": "onebit-token-dataset", "version": 1, "vocab_size": V,
//                     "dtype": "uint16" | "uint32", "num_samples": N, "num_tokens": T,
//                     "tokens_file": "tokens.bin", "offsets_file": "offsets.bin",
//                     "generator": {settings that produced the samples}}
//   DIR/tokens.bin   the T token ids of all samples back to back, little-endian, uint16 when
//                    V <= 65536 else uint32 (no BOS/EOS: packing adds them)
//   DIR/offsets.bin  N little-endian uint64: the end of sample i in tokens.bin, in tokens
//
// The index is the commit record: bytes past what it counts are an interrupted batch and
// are cut off when a writer reopens the folder (readers ignore them).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace onebit::data {

inline constexpr int kTokenDatasetVersion = 1;

// The settings that produced a dataset (program, model, seed, temperature, ...), all as
// strings. A writer resuming a folder must bring the same settings.
using GeneratorSettings = std::map<std::string, std::string>;

// Read-only samples (memory-mapped from a folder, or held in memory). Cheap to copy.
class TokenDataset {
 public:
  // Opens DIR; onebit::Error naming the file for a missing/corrupt index, a truncated
  // tokens.bin or offsets.bin, inconsistent offsets, or token ids >= vocab size.
  static TokenDataset open(const std::string& dir);
  // An in-memory dataset (tokenized text); ids must lie in [0, vocab_size).
  static TokenDataset from_samples(const std::vector<std::vector<int64_t>>& samples, int64_t vocab_size);

  int64_t size() const;  // number of samples
  int64_t num_tokens() const;
  int64_t vocab_size() const;
  int64_t begin(int64_t i) const;  // offset of sample i's first token in the flat token array
  int64_t length(int64_t i) const;
  std::vector<int64_t> sample(int64_t i) const;
  // Copies flat tokens [first, first + count) into out.
  void read_tokens(int64_t first, int64_t count, int64_t* out) const;
  const GeneratorSettings& generator() const;
  const std::string& where() const;  // folder, or "<memory>"

 private:
  struct Impl;
  explicit TokenDataset(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

// Appends samples to DIR and commits them in batches: commit() fsyncs tokens.bin and
// offsets.bin, then replaces index.json atomically (temp file, fsync, rename). Samples
// appended after the last commit are lost on interruption, never half-kept.
class TokenDatasetWriter {
 public:
  // Creates DIR (and an empty committed dataset) or reopens an existing one, whose vocab
  // size and generator settings must equal these (onebit::Error naming the first setting
  // that differs). Uncommitted bytes of an interrupted run are truncated.
  TokenDatasetWriter(const std::string& dir, int64_t vocab_size, GeneratorSettings generator);
  ~TokenDatasetWriter();
  TokenDatasetWriter(const TokenDatasetWriter&) = delete;
  TokenDatasetWriter& operator=(const TokenDatasetWriter&) = delete;

  void append(const std::vector<int64_t>& ids);  // one sample; ids in [0, vocab_size)
  void commit();
  int64_t committed() const;  // samples on disk after the last commit
  int64_t pending() const;    // appended since

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace onebit::data
