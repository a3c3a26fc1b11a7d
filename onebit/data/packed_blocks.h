// Packing (method.md §4): every sample gets BOS and EOS, all are concatenated and cut into
// fixed seq_len blocks, the remainder is dropped. Batches of blocks in an order shuffled
// per (seed, epoch), with a position the trainer saves and restores.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "onebit/data/token_dataset.h"

namespace onebit::tokenizer {
class Tokenizer;
}

namespace onebit::data {

struct PackOptions {
  int64_t seq_len = 2048;
  int64_t bos_id = -1;  // < 0: no BOS added
  int64_t eos_id = -1;  // < 0: no EOS added
};

// Blocks read lazily from the dataset (nothing is copied up front).
class PackedBlocks {
 public:
  PackedBlocks(TokenDataset samples, const PackOptions& opts);
  int64_t num_blocks() const { return num_blocks_ + mixed_blocks_; }
  int64_t seq_len() const { return opts_.seq_len; }
  int64_t stream_tokens() const;   // tokens after adding BOS/EOS
  int64_t dropped_tokens() const;  // the remainder cut off the end
  const TokenDataset& samples() const { return samples_; }
  void read_block(int64_t b, int64_t* out) const;  // seq_len ids
  torch::Tensor block(int64_t b) const;            // [seq_len] int64, CPU
  // Appends blocks 0..count−1 of `other` (same seq_len) after this one's own blocks, which
  // keep their numbers: data.mix_text. The batches' per-epoch shuffle then mixes them.
  void mix_in(std::shared_ptr<const PackedBlocks> other, int64_t count);
  int64_t mixed_blocks() const { return mixed_blocks_; }

 private:
  int64_t stream_begin(int64_t sample) const;  // where sample starts in the packed stream
  TokenDataset samples_;
  PackOptions opts_;
  int64_t per_sample_ = 0;  // special tokens added per sample (0..2)
  int64_t num_blocks_ = 0;  // own blocks
  std::shared_ptr<const PackedBlocks> mixed_;
  int64_t mixed_blocks_ = 0;
};

// data.mix_text: so many blocks of the text join `own` blocks that they are `fraction` of all
// (rounded to the nearest block); fraction in [0, 1).
int64_t mixed_text_blocks(int64_t own, double fraction);

// Where the next batch comes from. index counts batches within the epoch.
struct BatchPosition {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const BatchPosition& o) const { return epoch == o.epoch && index == o.index; }
};

struct BatchOptions {
  int64_t batch_size = 4;  // blocks per rank per batch
  uint64_t seed = 0;
  bool shuffle = true;     // false: blocks in order (evaluation)
  // Data parallelism: a global batch holds batch_size * world_size blocks; rank r gets
  // the r-th slice. Every rank walks the same permutation.
  int64_t rank = 0;
  int64_t world_size = 1;
};

// Endless iterator over [batch_size, seq_len] int64 batches; after the last full batch of
// an epoch (a partial one is dropped) it moves to the next epoch and a new permutation.
class BatchIterator {
 public:
  BatchIterator(std::shared_ptr<const PackedBlocks> blocks, const BatchOptions& opts, BatchPosition start = {});
  int64_t batches_per_epoch() const { return per_epoch_; }
  torch::Tensor next();
  BatchPosition position() const { return pos_; }  // of the batch next() returns next
  void seek(BatchPosition pos);

 private:
  std::shared_ptr<const PackedBlocks> blocks_;
  BatchOptions opts_;
  int64_t per_epoch_ = 0;
  BatchPosition pos_;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
};

// Documents of a text file: .jsonl (one JSON object per line, its "text" field) or plain
// text with documents separated by blank lines. onebit::Error names file and line.
std::vector<std::string> read_documents(const std::string& path);

// Each document encoded without special tokens, one sample per document.
TokenDataset tokenize_documents(const std::vector<std::string>& docs, const tokenizer::Tokenizer& tok);

// read_documents + tokenize_documents + PackedBlocks with the tokenizer's BOS/EOS.
PackedBlocks pack_text_file(const std::string& path, const tokenizer::Tokenizer& tok, int64_t seq_len);

}  // namespace onebit::data
