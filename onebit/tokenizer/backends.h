// Internal to onebit/tokenizer: the concrete tokenizers behind load_tokenizer().
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "onebit/tokenizer/tokenizer.h"

namespace onebit::tokenizer::detail {

// What every backend offers load_tokenizer() to resolve BOS/EOS from the config files.
class TokenizerBase : public Tokenizer {
 public:
  // Id of a token string (vocabulary or added token); -1 when absent.
  virtual int64_t token_id(const std::string& token) const = 0;
  // Used when tokenizer_config.json and config.json don't say.
  virtual int64_t default_bos() const { return -1; }
  virtual int64_t default_eos() const { return -1; }
  virtual bool default_add_bos() const { return false; }

  void set_special(int64_t bos, int64_t eos, bool add_bos) {
    bos_id_ = bos;
    eos_id_ = eos;
    add_bos_ = add_bos;
  }
};

// SentencePiece tokenizer.model, tokenized as transformers' LlamaTokenizer does (control
// tokens matched literally in text, dummy prefix only at the start of the text).
std::unique_ptr<TokenizerBase> load_sentencepiece(const std::string& model_path);

// tokenizer.json with a byte-level BPE or WordLevel model. Returns nullptr and sets
// `unsupported` when the file uses a component this code doesn't implement; throws
// onebit::Error when the file is malformed.
std::unique_ptr<TokenizerBase> load_tokenizer_json(const std::string& path,
                                                   std::string* unsupported);

// GPT-2 style vocab.json + merges.txt (e.g. OPT checkpoints without tokenizer.json): byte-level
// BPE with the GPT-2 regex; `specials` are matched literally in text and dropped by decode.
std::unique_ptr<TokenizerBase> load_vocab_merges(const std::string& vocab_path,
                                                 const std::string& merges_path,
                                                 const std::vector<std::string>& specials);

}  // namespace onebit::tokenizer::detail
