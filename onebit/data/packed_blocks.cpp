#include "onebit/data/packed_blocks.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "onebit/core/error.h"
#include "onebit/data/seed.h"
#include "onebit/tokenizer/tokenizer.h"
#include "onebit/util/strings.h"

namespace onebit::data {

// ======================================================================================
// PackedBlocks
// ======================================================================================

PackedBlocks::PackedBlocks(TokenDataset samples, const PackOptions& opts) : samples_(std::move(samples)), opts_(opts) {
  OB_CHECK(opts_.seq_len > 0, "packing ", samples_.where(), ": seq_len must be > 0, got ", opts_.seq_len);
  const int64_t V = samples_.vocab_size();
  for (int64_t id : {opts_.bos_id, opts_.eos_id})
    OB_CHECK(id < V, "packing ", samples_.where(), ": special token id ", id, " is >= vocab size ", V);
  per_sample_ = (opts_.bos_id >= 0 ? 1 : 0) + (opts_.eos_id >= 0 ? 1 : 0);
  num_blocks_ = stream_tokens() / opts_.seq_len;
}

int64_t PackedBlocks::stream_tokens() const { return samples_.num_tokens() + per_sample_ * samples_.size(); }
int64_t PackedBlocks::dropped_tokens() const { return stream_tokens() - num_blocks_ * opts_.seq_len; }

int64_t PackedBlocks::stream_begin(int64_t s) const { return samples_.begin(s) + per_sample_ * s; }

void PackedBlocks::mix_in(std::shared_ptr<const PackedBlocks> other, int64_t count) {
  OB_CHECK(other && other->seq_len() == seq_len(), "mixing blocks: the other source's seq_len differs");
  OB_CHECK(count >= 0 && count <= other->num_blocks(), "mixing blocks: ", other->samples().where(), " has ",
           other->num_blocks(), " blocks of ", seq_len(), " tokens, fewer than the ", count, " asked for");
  mixed_ = std::move(other);
  mixed_blocks_ = count;
}

void PackedBlocks::read_block(int64_t b, int64_t* out) const {
  OB_CHECK(b >= 0 && b < num_blocks(), "packed block ", b, " out of range [0, ", num_blocks(), ")");
  if (b >= num_blocks_) return mixed_->read_block(b - num_blocks_, out);
  const int64_t L = opts_.seq_len;
  int64_t pos = b * L;
  // The last sample starting at or before pos (stream_begin is non-decreasing).
  int64_t lo = 0, hi = samples_.size() - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (stream_begin(mid) <= pos) lo = mid;
    else hi = mid - 1;
  }
  int64_t filled = 0;
  for (int64_t s = lo; filled < L; ++s) {
    // Sample s in the stream: [BOS] tokens [EOS]; copy the part from pos on.
    const int64_t len = samples_.length(s), first = samples_.begin(s);
    int64_t local = pos + filled - stream_begin(s);
    if (opts_.bos_id >= 0) {
      if (local == 0) out[filled++] = opts_.bos_id;
      else --local;
    }
    if (filled == L) break;
    if (local < len) {
      const int64_t n = std::min(len - local, L - filled);
      samples_.read_tokens(first + local, n, out + filled);
      filled += n;
    }
    if (filled < L && opts_.eos_id >= 0) out[filled++] = opts_.eos_id;
  }
}

int64_t mixed_text_blocks(int64_t own, double fraction) {
  OB_CHECK(own >= 0 && fraction >= 0 && fraction < 1, "mixed_text_blocks: fraction must be in [0, 1), got ", fraction);
  return std::llround(double(own) * fraction / (1.0 - fraction));
}

torch::Tensor PackedBlocks::block(int64_t b) const {
  auto t = torch::empty({opts_.seq_len}, torch::kInt64);
  read_block(b, t.data_ptr<int64_t>());
  return t;
}

// ======================================================================================
// BatchIterator
// ======================================================================================

BatchIterator::BatchIterator(std::shared_ptr<const PackedBlocks> blocks, const BatchOptions& opts, BatchPosition start)
    : blocks_(std::move(blocks)), opts_(opts) {
  OB_CHECK(blocks_, "batch iterator: no blocks");
  OB_CHECK(opts_.batch_size > 0, "batch iterator: batch_size must be > 0, got ", opts_.batch_size);
  OB_CHECK(opts_.world_size > 0 && opts_.rank >= 0 && opts_.rank < opts_.world_size, "batch iterator: rank ",
           opts_.rank, " is not in [0, world size ", opts_.world_size, ")");
  const int64_t global = opts_.batch_size * opts_.world_size;
  per_epoch_ = blocks_->num_blocks() / global;
  OB_CHECK(per_epoch_ > 0, blocks_->samples().where(), ": only ", blocks_->num_blocks(), " blocks of ",
           blocks_->seq_len(), " tokens (", blocks_->stream_tokens(), " tokens with BOS/EOS), fewer than one batch of ",
           global, " blocks (batch size ", opts_.batch_size, " x ", opts_.world_size,
           " ranks); use more data, a shorter seq_len or a smaller batch");
  seek(start);
}

void BatchIterator::seek(BatchPosition pos) {
  OB_CHECK(pos.epoch >= 0 && pos.index >= 0 && pos.index <= per_epoch_, "batch iterator: position (epoch ", pos.epoch,
           ", index ", pos.index, ") is invalid for ", per_epoch_, " batches per epoch");
  if (pos.index == per_epoch_) pos = {pos.epoch + 1, 0};
  pos_ = pos;
}

torch::Tensor BatchIterator::next() {
  if (order_epoch_ != pos_.epoch) {
    const int64_t n = blocks_->num_blocks();
    if (opts_.shuffle) {
      order_ = epoch_permutation(n, opts_.seed, pos_.epoch);
    } else {
      order_.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) order_[size_t(i)] = i;
    }
    order_epoch_ = pos_.epoch;
  }
  const int64_t B = opts_.batch_size, L = blocks_->seq_len();
  auto batch = torch::empty({B, L}, torch::kInt64);
  int64_t* out = batch.data_ptr<int64_t>();
  const int64_t first = (pos_.index * opts_.world_size + opts_.rank) * B;
  for (int64_t r = 0; r < B; ++r) blocks_->read_block(order_[size_t(first + r)], out + r * L);
  seek({pos_.epoch, pos_.index + 1});
  return batch;
}

// ======================================================================================
// Text sources
// ======================================================================================

namespace {
bool blank(const std::string& line) { return line.find_first_not_of(" \t\r\f\v") == std::string::npos; }
}  // namespace

std::vector<std::string> read_documents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  OB_CHECK(in, "cannot open text file '", path, "'");
  std::vector<std::string> docs;
  std::string line;
  int64_t lineno = 0;
  if (ends_with(path, ".jsonl")) {
    while (std::getline(in, line)) {
      ++lineno;
      if (blank(line)) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail(path, ":", lineno, ": invalid JSON (", e.what(), ")");
      }
      OB_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), path, ":", lineno,
               ": expected an object with a string field \"text\"");
      docs.push_back(j["text"].get<std::string>());
    }
  } else {
    // Blank lines separate documents; lines within one keep their newlines.
    std::string doc;
    auto flush = [&] {
      if (!doc.empty()) docs.push_back(doc);
      doc.clear();
    };
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (blank(line)) {
        flush();
      } else {
        if (!doc.empty()) doc += '\n';
        doc += line;
      }
    }
    flush();
  }
  OB_CHECK(!docs.empty(), path, ": no documents (empty file?)");
  return docs;
}

TokenDataset tokenize_documents(const std::vector<std::string>& docs, const tokenizer::Tokenizer& tok) {
  std::vector<std::vector<int64_t>> samples;
  samples.reserve(docs.size());
  for (const auto& d : docs) samples.push_back(tok.encode(d));
  return TokenDataset::from_samples(samples, tok.vocab_size());
}

PackedBlocks pack_text_file(const std::string& path, const tokenizer::Tokenizer& tok, int64_t seq_len) {
  TokenDataset ds = tokenize_documents(read_documents(path), tok);
  return PackedBlocks(std::move(ds), {seq_len, tok.bos_id(), tok.eos_id()});
}

}  // namespace onebit::data
