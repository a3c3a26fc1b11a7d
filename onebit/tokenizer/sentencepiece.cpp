// SentencePiece tokenizer.model through libsentencepiece, matching transformers' LlamaTokenizer:
// - control and unknown pieces (<s>, </s>, <unk>) written in the text become their ids;
// - the dummy "▁" prefix goes only before the text's first segment, and not when that
//   segment already starts with a space (tokenizers' Metaspace prepend_scheme="first").
#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/tokenizer/backends.h"
#include "onebit/tokenizer/utf8.h"

namespace onebit::tokenizer::detail {

namespace {

// Reads a protobuf varint at `p`; false when truncated.
bool read_varint(const std::string& s, size_t& p, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && p < s.size(); shift += 7) {
    const uint8_t b = static_cast<uint8_t>(s[p++]);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// The serialized ModelProto with normalizer_spec.add_dummy_prefix = false and without
// self_test_data (field 4, whose samples assume the dummy prefix). Repeated embedded-message
// fields merge in protobuf, so appending {3: {3: 0}} overrides just that flag.
std::string without_dummy_prefix(const std::string& proto, const std::string& path) {
  std::string out;
  out.reserve(proto.size() + 4);
  size_t p = 0;
  while (p < proto.size()) {
    const size_t start = p;
    uint64_t tag = 0, len = 0;
    if (!read_varint(proto, p, tag)) fail(path, ": truncated SentencePiece model");
    switch (tag & 7) {
      case 0:
        if (!read_varint(proto, p, len)) fail(path, ": truncated SentencePiece model");
        break;
      case 1:
        p += 8;
        break;
      case 5:
        p += 4;
        break;
      case 2:
        if (!read_varint(proto, p, len) || len > proto.size() - p)
          fail(path, ": truncated SentencePiece model");
        p += len;
        break;
      default:
        fail(path, ": not a SentencePiece model (bad protobuf wire type)");
    }
    if (p > proto.size()) fail(path, ": truncated SentencePiece model");
    if ((tag >> 3) != 4) out.append(proto, start, p - start);
  }
  out += std::string("\x1a\x02\x18\x00", 4);
  return out;
}

class SentencePieceTokenizer : public TokenizerBase {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const std::string proto = io::read_file(path);
    auto st = sp_.LoadFromSerializedProto(proto);
    if (!st.ok()) fail(path, ": cannot load SentencePiece model: ", st.ToString());
    st = raw_.LoadFromSerializedProto(without_dummy_prefix(proto, path));
    if (!st.ok()) fail(path, ": cannot load SentencePiece model: ", st.ToString());
    std::vector<int> a, b;
    sp_.Encode("x", &a).IgnoreError();
    raw_.Encode("x", &b).IgnoreError();
    dummy_prefix_ = a != b;
    for (int i = 0; i < sp_.GetPieceSize(); ++i)
      if (sp_.IsControl(i) || sp_.IsUnknown(i)) {
        const std::string& piece = sp_.IdToPiece(i);
        if (!piece.empty()) {
          specials_.emplace_back(piece, i);
          first_byte_[uint8_t(piece[0])] = true;
        }
      }
    // Longest first, so "<s>" never shadows a longer token that starts with it.
    std::sort(specials_.begin(), specials_.end(),
              [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  }

  std::vector<int64_t> encode(std::string_view text) const override {
    std::string owned;
    if (!valid_utf8(text)) {  // same rule as the byte-level BPE: invalid bytes -> U+FFFD
      owned = utf8_lossy(text);
      text = owned;
    }
    std::vector<int64_t> out;
    size_t seg = 0;
    auto flush = [&](size_t end) {
      if (end <= seg) return;
      std::string piece(text.substr(seg, end - seg));
      if (seg == 0 && dummy_prefix_ && piece[0] != ' ') piece.insert(0, " ");
      std::vector<int> ids;
      raw_.Encode(piece, &ids).IgnoreError();
      out.insert(out.end(), ids.begin(), ids.end());
    };
    for (size_t i = 0; i < text.size();) {
      bool hit = false;
      if (first_byte_[uint8_t(text[i])])
        for (const auto& [s, id] : specials_) {
          if (text.compare(i, s.size(), s) == 0) {
            flush(i);
            out.push_back(id);
            i += s.size();
            seg = i;
            hit = true;
            break;
          }
        }
      if (!hit) ++i;
    }
    flush(text.size());
    return out;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> keep;
    keep.reserve(ids.size());
    for (int64_t id : ids) {
      OB_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " out of range [0, ", vocab_size(),
               ") of the SentencePiece model");
      if (!sp_.IsControl(int(id)) && !sp_.IsUnknown(int(id))) keep.push_back(int(id));
    }
    std::string text;
    sp_.Decode(keep, &text).IgnoreError();
    return text;
  }

  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int64_t token_id(const std::string& token) const override {
    const int id = sp_.PieceToId(token);
    // PieceToId answers unk for anything unknown; only the unk piece itself maps there.
    return (sp_.IsUnknown(id) && sp_.IdToPiece(id) != token) ? -1 : id;
  }
  int64_t default_bos() const override { return sp_.bos_id(); }
  int64_t default_eos() const override { return sp_.eos_id(); }
  bool default_add_bos() const override { return true; }  // LlamaTokenizer's default

 private:
  sentencepiece::SentencePieceProcessor sp_;   // as trained: decoding, ids
  sentencepiece::SentencePieceProcessor raw_;  // no dummy prefix: encoding segments
  bool dummy_prefix_ = false;
  std::vector<std::pair<std::string, int>> specials_;
  std::array<bool, 256> first_byte_{};  // first bytes of specials_: skips most positions fast
};

}  // namespace

std::unique_ptr<TokenizerBase> load_sentencepiece(const std::string& model_path) {
  return std::make_unique<SentencePieceTokenizer>(model_path);
}

}  // namespace onebit::tokenizer::detail
