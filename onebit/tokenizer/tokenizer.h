// Tokenizer: text <-> token ids, as the model folder's tokenizer files define them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace onebit::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text` without special tokens (no BOS/EOS), as HF `encode(text, add_special_tokens=False)`.
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // Text of `ids`; special tokens are dropped.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  int64_t bos_id() const { return bos_id_; }  // -1 when the model has none
  int64_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }  // whether HF prepends BOS by default

  // encode() with BOS prepended when add_bos().
  std::vector<int64_t> encode_with_special(std::string_view text) const {
    auto ids = encode(text);
    if (add_bos_ && bos_id_ >= 0) ids.insert(ids.begin(), bos_id_);
    return ids;
  }

 protected:
  int64_t bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = false;
};

// Loads the tokenizer of a Hugging Face model folder: tokenizer.model (SentencePiece) or
// tokenizer.json (byte-level BPE / WordLevel), with tokenizer_config.json for BOS/EOS.
// Throws onebit::Error naming the folder when none is usable.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

// onebit::Error unless every id of `tok` has a row in a model of `model_vocab` ids ("tokenizer
// in TOKENIZER_DIR has N ids but the model at MODEL_DIR only M"): ids past the embedding would
// index out of range.
void check_fits_model(const Tokenizer& tok, const std::string& tokenizer_dir, int64_t model_vocab,
                      const std::string& model_dir);

// Every tokenizer file a Hugging Face folder may hold (tokenizer.json, tokenizer.model,
// vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json, added_tokens.json,
// chat_template.jinja): copies those present in `from` into `to`; returns their names.
std::vector<std::string> copy_tokenizer_files(const std::string& from, const std::string& to);

}  // namespace onebit::tokenizer
