// tokenizer.json (Hugging Face `tokenizers` format): byte-level BPE (GPT-2/OPT, LLaMA-3,
// Qwen2) and WordLevel. Pipeline as in `tokenizers`: added tokens matched literally first,
// then the pre-tokenizer steps (Split regex / ByteLevel / WhitespaceSplit / Whitespace), then
// the model on each piece. Regexes use PCRE2 (UTF + UCP): the BPE patterns need lookahead.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <unordered_map>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/tokenizer/backends.h"
#include "onebit/tokenizer/utf8.h"

using nlohmann::json;

namespace onebit::tokenizer::detail {

namespace {

// GPT-2's pre-tokenizer pattern, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- GPT-2 byte <-> unicode table: printable bytes map to themselves, the rest to 256+k ----

struct ByteMap {
  std::array<std::string, 256> to_text;  // byte -> UTF-8 of its stand-in character
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteMap() {
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : 256 + extra++;
      append_utf8(to_text[b], cp);
      to_byte[cp] = uint8_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;  // immutable after construction
  return m;
}

// ---- PCRE2 regex ----

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(where, ": regex '", pattern, "' does not compile at offset ", off, ": ",
           reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back silently
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends [begin, end) of every non-empty match in s (valid UTF-8).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos <= s.size()) {
      const int rc = pcre2_match(code_, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;  // no more matches (the input was validated, so no UTF errors)
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] > ov[0]) {
        out.emplace_back(ov[0], ov[1]);
        pos = ov[1];
      } else {  // empty match: step one character
        if (ov[0] >= s.size()) break;
        size_t i = ov[0];
        next_cp(s, i);
        pos = i;
      }
    }
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};

// ---- pre-tokenizer steps ----

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Step {
  enum Kind { Split, ByteLevel } kind;
  std::shared_ptr<Regex> regex;  // Split (and ByteLevel with use_regex)
  std::string literal;           // Split on a plain string when regex is null
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
};

// Splits `s` the way tokenizers' NormalizedString::split does.
void split_piece(const std::string& s, const Step& st, std::vector<std::string>& out) {
  std::vector<std::pair<size_t, size_t>> m;
  if (st.regex) {
    st.regex->find_all(s, m);
  } else if (!st.literal.empty()) {
    for (size_t p = s.find(st.literal); p != std::string::npos; p = s.find(st.literal, p))
      m.emplace_back(p, p + st.literal.size()), p += st.literal.size();
  }
  // Segments covering s, flagged as match or not.
  std::vector<std::tuple<size_t, size_t, bool>> seg;
  size_t last = 0;
  for (auto [b, e] : m) {
    if (b > last) seg.emplace_back(last, b, st.invert);
    seg.emplace_back(b, e, !st.invert);
    last = e;
  }
  if (last < s.size()) seg.emplace_back(last, s.size(), st.invert);

  std::string pending;  // MergedWithNext: a match waiting for the next piece
  for (size_t k = 0; k < seg.size(); ++k) {
    const auto [b, e, is_match] = seg[k];
    std::string piece = s.substr(b, e - b);
    switch (st.behavior) {
      case Behavior::Removed:
        if (!is_match) out.push_back(std::move(piece));
        break;
      case Behavior::Isolated:
        out.push_back(std::move(piece));
        break;
      case Behavior::MergedWithPrevious:
        if (is_match && k > 0)
          out.back() += piece;
        else
          out.push_back(std::move(piece));
        break;
      case Behavior::MergedWithNext:
        if (is_match) {
          pending += piece;
        } else {
          out.push_back(pending + piece);
          pending.clear();
        }
        break;
      case Behavior::Contiguous:
        if (is_match && k > 0 && std::get<2>(seg[k - 1]))
          out.back() += piece;
        else
          out.push_back(std::move(piece));
        break;
    }
  }
  if (!pending.empty()) out.push_back(std::move(pending));
}

// Applies the steps to one text segment (between added tokens); pieces come out byte-mapped
// when a ByteLevel step ran.
std::vector<std::string> pre_tokenize(const std::string& text, const std::vector<Step>& steps) {
  std::vector<std::string> pieces{text}, next;
  for (const Step& st : steps) {
    next.clear();
    for (auto& p : pieces) {
      if (st.kind == Step::Split) {
        split_piece(p, st, next);
        continue;
      }
      // ByteLevel: optional prefix space, optional GPT-2 split, then bytes -> stand-in chars.
      if (st.add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(0, " ");
      std::vector<std::string> parts;
      if (st.regex) {
        Step split{Step::Split, st.regex, "", Behavior::Isolated, false, false};
        split_piece(p, split, parts);
      } else {
        parts.push_back(p);
      }
      const auto& bm = byte_map();
      for (const auto& part : parts) {
        std::string mapped;
        mapped.reserve(part.size() * 2);
        for (unsigned char c : part) mapped += bm.to_text[c];
        next.push_back(std::move(mapped));
      }
    }
    pieces.swap(next);
  }
  pieces.erase(
      std::remove_if(pieces.begin(), pieces.end(), [](const std::string& p) { return p.empty(); }),
      pieces.end());
  return pieces;
}

struct AddedToken {
  std::string content;
  int64_t id;
  bool special;
};

const json& req(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail(where, ": missing \"", key, "\"");
  return j.at(key);
}

// ---- the tokenizer ----

class JsonTokenizer : public TokenizerBase {
 public:
  enum class Model { BPE, WordLevel };

  // Throws on malformed input; sets *unsupported (and leaves the object unusable) otherwise.
  // `path` names the source in messages.
  JsonTokenizer(const json& j, const std::string& path, std::string* unsupported) : path_(path) {
    auto unsup = [&](const std::string& what) { *unsupported = what; };
    const json& model = req(j, "model", path);
    const std::string type =
        model.value("type", std::string(model.contains("merges") ? "BPE" : ""));
    if (type == "BPE")
      model_ = Model::BPE;
    else if (type == "WordLevel")
      model_ = Model::WordLevel;
    else {
      unsup("model type '" + type + "'");
      return;
    }

    // Normalizer: none, or NFC (treated as identity: input is expected to be NFC already).
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      const std::string nt = j["normalizer"].value("type", "");
      if (nt != "NFC") {
        unsup("normalizer '" + nt + "'");
        return;
      }
    }
    bool has_byte_level = false;
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
      std::string why;
      if (!add_pre_tokenizer(j["pre_tokenizer"], &why)) {
        unsup(why);
        return;
      }
      for (const auto& st : steps_) has_byte_level |= st.kind == Step::ByteLevel;
    }

    const json& vocab = req(model, "vocab", path);
    if (!vocab.is_object()) fail(path, ": model.vocab is not an object");
    // Real files number their tokens densely (vocabulary, then added tokens); an id far past the
    // file's token count is a broken file and would size the id table to it.
    const size_t added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0;
    file_tokens_ = int64_t(vocab.size() + added);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
        fail(path, ": vocab id of '", it.key(), "' is not a non-negative integer");
      const int64_t id = it.value().get<int64_t>();
      vocab_[it.key()] = id;
      grow(id);
      id_to_token_[id] = it.key();
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const std::string unk = model["unk_token"];
      auto u = vocab_.find(unk);
      if (u == vocab_.end()) fail(path, ": unk_token '", unk, "' is not in the vocabulary");
      unk_id_ = u->second;
    }

    if (model_ == Model::BPE) {
      if (!has_byte_level) {
        unsup("a BPE model without a ByteLevel pre-tokenizer");
        return;
      }
      const json& dec = j.contains("decoder") ? j["decoder"] : json();
      if (dec.is_null() || dec.value("type", "") != "ByteLevel") {
        unsup("a BPE model without a ByteLevel decoder");
        return;
      }
      for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (model.contains(k) && !model[k].is_null() && model[k] != "") {
          unsup(std::string("BPE ") + k);
          return;
        }
      if (model.value("byte_fallback", false)) {
        unsup("BPE byte_fallback");
        return;
      }
      ignore_merges_ = model.value("ignore_merges", false);
      load_merges(req(model, "merges", path));
    } else {
      const json& dec = j.contains("decoder") ? j["decoder"] : json();
      if (!dec.is_null()) {
        unsup("WordLevel decoder '" + dec.value("type", "") + "'");
        return;
      }
    }

    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& t : j["added_tokens"]) {
        AddedToken a{req(t, "content", path).get<std::string>(), req(t, "id", path).get<int64_t>(),
                     t.value("special", false)};
        if (a.id < 0) fail(path, ": added token '", a.content, "' has a negative id");
        if (a.content.empty()) continue;
        grow(a.id);
        id_to_token_[a.id] = a.content;
        if (a.special) special_ids_.push_back(a.id);
        first_byte_[uint8_t(a.content[0])] = true;
        added_.push_back(std::move(a));
      }
      // Longest first: the leftmost-longest literal match wins.
      std::sort(added_.begin(), added_.end(), [](const AddedToken& x, const AddedToken& y) {
        return x.content.size() > y.content.size();
      });
      added_index_.clear();
      for (size_t k = 0; k < added_.size(); ++k) added_index_[added_[k].content] = k;
    }
    std::sort(special_ids_.begin(), special_ids_.end());
    read_template(j.contains("post_processor") ? j["post_processor"] : json());
  }

  std::vector<int64_t> encode(std::string_view input) const override {
    std::string owned;
    if (!valid_utf8(input)) {
      owned = utf8_lossy(input);
      input = owned;
    }
    std::vector<int64_t> out;
    size_t seg = 0;
    for (size_t i = 0; i < input.size();) {
      const AddedToken* hit = nullptr;
      if (first_byte_[uint8_t(input[i])])
        for (const auto& a : added_)
          if (input.compare(i, a.content.size(), a.content) == 0) {
            hit = &a;
            break;
          }
      if (!hit) {
        ++i;
        continue;
      }
      encode_segment(input.substr(seg, i - seg), out);
      out.push_back(hit->id);
      i += hit->content.size();
      seg = i;
    }
    encode_segment(input.substr(seg), out);
    return out;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string bytes;
    bool first = true;
    for (int64_t id : ids) {
      OB_CHECK(id >= 0 && id < vocab_size() && id_to_token_[id].has_value(), "token id ", id,
               " is not in the vocabulary of ", path_);
      if (std::binary_search(special_ids_.begin(), special_ids_.end(), id)) continue;
      const std::string& tok = *id_to_token_[id];
      if (model_ == Model::WordLevel) {  // no decoder: tokens joined with single spaces
        if (!first) bytes += ' ';
        bytes += tok;
      } else {
        append_byte_level(tok, bytes);
      }
      first = false;
    }
    return utf8_lossy(bytes);
  }

  int64_t vocab_size() const override { return int64_t(id_to_token_.size()); }

  int64_t token_id(const std::string& token) const override {
    auto a = added_index_.find(token);
    if (a != added_index_.end()) return added_[a->second].id;
    auto v = vocab_.find(token);
    return v == vocab_.end() ? -1 : v->second;
  }
  int64_t default_bos() const override { return template_bos_; }
  bool default_add_bos() const override { return template_bos_ >= 0; }

 private:
  void grow(int64_t id) {
    const int64_t max_id = 2 * file_tokens_ + 255;  // room for holes, never gigabytes
    if (id > max_id)
      fail(path_, ": token id ", id, " is out of range for a file of ", file_tokens_, " tokens (at most ", max_id, ")");
    if (id >= int64_t(id_to_token_.size())) id_to_token_.resize(size_t(id) + 1);
  }

  // Returns false (with *why) for pre-tokenizers this code doesn't implement.
  bool add_pre_tokenizer(const json& pt, std::string* why) {
    const std::string t = pt.value("type", "");
    if (t == "Sequence") {
      for (const auto& sub : req(pt, "pretokenizers", path_))
        if (!add_pre_tokenizer(sub, why)) return false;
      return true;
    }
    Step st{Step::Split, nullptr, "", Behavior::Isolated, false, false};
    if (t == "ByteLevel") {
      st.kind = Step::ByteLevel;
      st.add_prefix_space = pt.value("add_prefix_space", false);
      if (pt.value("use_regex", true)) st.regex = std::make_shared<Regex>(kGpt2Pattern, path_);
    } else if (t == "Split") {
      const json& pat = req(pt, "pattern", path_);
      if (pat.contains("Regex"))
        st.regex = std::make_shared<Regex>(pat["Regex"].get<std::string>(), path_);
      else if (pat.contains("String"))
        st.literal = pat["String"].get<std::string>();
      else
        fail(path_, ": Split pattern is neither Regex nor String");
      const std::string b = pt.value("behavior", "Isolated");
      static const std::map<std::string, Behavior> kBehaviors = {
          {"Removed", Behavior::Removed},
          {"Isolated", Behavior::Isolated},
          {"MergedWithPrevious", Behavior::MergedWithPrevious},
          {"MergedWithNext", Behavior::MergedWithNext},
          {"Contiguous", Behavior::Contiguous}};
      auto it = kBehaviors.find(b);
      if (it == kBehaviors.end()) fail(path_, ": unknown Split behavior '", b, "'");
      st.behavior = it->second;
      st.invert = pt.value("invert", false);
    } else if (t == "WhitespaceSplit") {
      st.regex = std::make_shared<Regex>(R"(\s+)", path_);
      st.behavior = Behavior::Removed;
    } else if (t == "Whitespace") {  // keeps \w+ and runs of other non-space characters
      st.regex = std::make_shared<Regex>(R"(\w+|[^\w\s]+)", path_);
      st.behavior = Behavior::Removed;
      st.invert = true;
    } else {
      *why = "pre_tokenizer '" + t + "'";
      return false;
    }
    steps_.push_back(std::move(st));
    return true;
  }

  // Merges as "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20).
  void load_merges(const json& merges) {
    if (!merges.is_array()) fail(path_, ": model.merges is not an array");
    int64_t rank = 0;
    for (const auto& m : merges) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos) fail(path_, ": merge '", s, "' is not \"a b\"");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(path_, ": merge #", rank, " is neither \"a b\" nor [a, b]");
      }
      const int64_t ia = token_in_vocab(a), ib = token_in_vocab(b), ab = token_in_vocab(a + b);
      merges_.emplace(pair_key(ia, ib), std::make_pair(rank++, ab));
    }
  }

  int64_t token_in_vocab(const std::string& t) const {
    auto it = vocab_.find(t);
    if (it == vocab_.end()) fail(path_, ": merge token '", t, "' is not in the vocabulary");
    return it->second;
  }

  static uint64_t pair_key(int64_t a, int64_t b) { return (uint64_t(a) << 32) | uint64_t(b); }

  // BOS that the post-processor template puts first (LLaMA-3 style), if any.
  void read_template(const json& pp) {
    if (pp.is_null() || !pp.is_object()) return;
    const std::string t = pp.value("type", "");
    if (t == "Sequence" && pp.contains("processors")) {
      for (const auto& p : pp["processors"]) read_template(p);
      return;
    }
    if (t != "TemplateProcessing" || !pp.contains("single") || !pp["single"].is_array() ||
        pp["single"].empty())
      return;
    const json& first = pp["single"][0];
    if (!first.contains("SpecialToken")) return;
    const std::string name = first["SpecialToken"].value("id", "");
    if (pp.contains("special_tokens") && pp["special_tokens"].contains(name)) {
      const json& ids = pp["special_tokens"][name]["ids"];
      if (ids.is_array() && !ids.empty()) template_bos_ = ids[0].get<int64_t>();
    } else {
      template_bos_ = token_id(name);
    }
  }

  void encode_segment(std::string_view text, std::vector<int64_t>& out) const {
    if (text.empty()) return;
    for (const std::string& piece : pre_tokenize(std::string(text), steps_)) {
      if (model_ == Model::WordLevel) {
        auto it = vocab_.find(piece);
        if (it != vocab_.end())
          out.push_back(it->second);
        else if (unk_id_ >= 0)
          out.push_back(unk_id_);
        else
          fail(path_, ": word '", piece, "' is not in the vocabulary and there is no unk_token");
        continue;
      }
      bpe(piece, out);
    }
  }

  // BPE of one byte-mapped piece: repeatedly merge the lowest-ranked adjacent pair (leftmost
  // first), as tokenizers does. Results are cached per piece: text repeats words a lot.
  void bpe(const std::string& piece, std::vector<int64_t>& out) const {
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(piece);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int64_t> syms;
    auto whole = ignore_merges_ ? vocab_.find(piece) : vocab_.end();
    if (whole != vocab_.end()) {
      syms.push_back(whole->second);
    } else {
      for (size_t i = 0; i < piece.size();) {
        const size_t start = i;
        next_cp(piece, i);
        auto it = vocab_.find(piece.substr(start, i - start));
        if (it != vocab_.end())
          syms.push_back(it->second);
        else if (unk_id_ >= 0)
          syms.push_back(unk_id_);
      }
      merge(syms);
    }
    out.insert(out.end(), syms.begin(), syms.end());
    if (piece.size() > kCacheMaxPiece) return;
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheMax) cache_.clear();  // bounds memory on huge corpora
    cache_.emplace(piece, std::move(syms));
  }

  // Applies merges to `syms` in place: always the lowest rank, leftmost on ties. A heap of
  // candidate pairs over a linked list keeps this O(n log n), so long pieces (whitespace
  // runs, digit strings) stay fast.
  void merge(std::vector<int64_t>& syms) const {
    const int n = int(syms.size());
    if (n < 2) return;
    std::vector<int> prev(n), next(n);
    for (int k = 0; k < n; ++k) prev[k] = k - 1, next[k] = k + 1 < n ? k + 1 : -1;
    struct Cand {
      int64_t rank;
      int left, right;
      int64_t a, b, merged;
      bool operator>(const Cand& o) const {
        return rank != o.rank ? rank > o.rank : left > o.left;
      }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      auto m = merges_.find(pair_key(syms[l], syms[r]));
      if (m != merges_.end())
        heap.push({m->second.first, l, r, syms[l], syms[r], m->second.second});
    };
    for (int k = 0; k + 1 < n; ++k) push(k, k + 1);
    std::vector<bool> dead(n, false);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      // Skip candidates made stale by earlier merges.
      if (dead[c.left] || dead[c.right] || next[c.left] != c.right || syms[c.left] != c.a ||
          syms[c.right] != c.b)
        continue;
      syms[c.left] = c.merged;
      dead[c.right] = true;
      next[c.left] = next[c.right];
      if (next[c.right] >= 0) prev[next[c.right]] = c.left;
      push(prev[c.left], c.left);
      push(c.left, next[c.left]);
    }
    std::vector<int64_t> out;
    for (int k = 0; k >= 0; k = next[k]) out.push_back(syms[k]);
    syms.swap(out);
  }

  // tokenizers' ByteLevel decoder: a token whose characters all have byte stand-ins becomes
  // those bytes; any other token (e.g. an added token with a plain space) is kept as is.
  static void append_byte_level(const std::string& tok, std::string& bytes) {
    const auto& bm = byte_map();
    std::string mapped;
    for (size_t i = 0; i < tok.size();) {
      auto it = bm.to_byte.find(next_cp(tok, i));
      if (it == bm.to_byte.end()) {
        bytes += tok;
        return;
      }
      mapped += char(it->second);
    }
    bytes += mapped;
  }

  static constexpr size_t kCacheMax = 1 << 18;
  static constexpr size_t kCacheMaxPiece = 256;  // bytes; longer pieces rarely repeat

  std::string path_;
  int64_t file_tokens_ = 0;  // entries of model.vocab and added_tokens (bounds the ids: grow)
  Model model_ = Model::BPE;
  std::vector<Step> steps_;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::optional<std::string>> id_to_token_;
  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> merges_;  // (a,b) -> (rank, a+b)
  bool ignore_merges_ = false;
  int64_t unk_id_ = -1;
  std::vector<AddedToken> added_;  // longest first
  std::unordered_map<std::string, size_t> added_index_;
  std::vector<int64_t> special_ids_;  // sorted
  std::array<bool, 256> first_byte_{};
  int64_t template_bos_ = -1;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

}  // namespace

std::unique_ptr<TokenizerBase> load_tokenizer_json(const std::string& path,
                                                   std::string* unsupported) {
  unsupported->clear();
  json j = json::parse(io::read_file(path), nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail(path, ": invalid JSON");
  try {
    auto tok = std::make_unique<JsonTokenizer>(j, path, unsupported);
    if (!unsupported->empty()) return nullptr;
    return tok;
  } catch (const json::exception& e) {  // a field of the wrong JSON type
    fail(path, ": ", e.what());
  }
}

std::unique_ptr<TokenizerBase> load_vocab_merges(const std::string& vocab_path,
                                                 const std::string& merges_path,
                                                 const std::vector<std::string>& specials) {
  json vocab = json::parse(io::read_file(vocab_path), nullptr, false);
  if (vocab.is_discarded() || !vocab.is_object()) fail(vocab_path, ": invalid JSON");
  json merges = json::array();
  const std::string text = io::read_file(merges_path);
  for (size_t p = 0; p < text.size();) {
    size_t q = text.find('\n', p);
    if (q == std::string::npos) q = text.size();
    std::string line = text.substr(p, q - p);
    p = q + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(line);
  }
  // The layout GPT2Tokenizer implies: GPT-2 regex + byte-level, special tokens matched first.
  json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens", json::array()}};
  for (const auto& s : specials) {
    if (!vocab.contains(s) || !vocab[s].is_number_integer())
      fail(vocab_path, ": special token '", s, "' is not in the vocabulary");
    j["added_tokens"].push_back({{"content", s}, {"id", vocab[s]}, {"special", true}});
  }
  std::string unsupported;
  try {
    return std::make_unique<JsonTokenizer>(j, vocab_path, &unsupported);
  } catch (const json::exception& e) {
    fail(vocab_path, ": ", e.what());
  }
}

}  // namespace onebit::tokenizer::detail
