// load_tokenizer: picks the backend for a model folder and resolves BOS/EOS/add_bos from
// tokenizer_config.json, then config.json, then the tokenizer's own defaults.
#include "onebit/tokenizer/tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/tokenizer/backends.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace onebit::tokenizer {

namespace {

json read_json_or_empty(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return json::object();
  json j = json::parse(io::read_file(p.string()), nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail(p.string(), ": invalid JSON");
  return j;
}

// bos_token / eos_token: a string, or an AddedToken object {"content": ...}; null = unset.
std::optional<std::string> token_string(const json& cfg, const char* key, const fs::path& file) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  fail(file.string(), ": ", key, " is neither a string nor {\"content\": ...}");
}

// bos_token_id / eos_token_id in config.json: an int, or a list (first one wins); null = unset.
std::optional<int64_t> config_id(const json& cfg, const char* key, const fs::path& file) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  fail(file.string(), ": ", key, " is not an integer or a list of integers");
}

// Special tokens a GPT2Tokenizer folder (vocab.json + merges.txt) declares in
// tokenizer_config.json and special_tokens_map.json.
std::vector<std::string> declared_specials(const fs::path& dir) {
  std::set<std::string> out;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path p = dir / name;
    const json j = read_json_or_empty(p);
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
                            "cls_token", "mask_token"})
      if (auto s = token_string(j, key, p)) out.insert(*s);
    if (j.contains("additional_special_tokens") && j["additional_special_tokens"].is_array()) {
      for (const auto& t : j["additional_special_tokens"]) {
        if (t.is_string()) out.insert(t.get<std::string>());
        if (t.is_object() && t.contains("content") && t["content"].is_string())
          out.insert(t["content"].get<std::string>());
      }
    }
    if (j.contains("added_tokens_decoder") && j["added_tokens_decoder"].is_object()) {
      for (const auto& [id, t] : j["added_tokens_decoder"].items())
        if (t.is_object() && t.value("special", false) && t.contains("content") &&
            t["content"].is_string())
          out.insert(t["content"].get<std::string>());
    }
  }
  return {out.begin(), out.end()};
}

void configure(detail::TokenizerBase& tok, const fs::path& dir) {
  const fs::path tc_path = dir / "tokenizer_config.json", c_path = dir / "config.json";
  const json tc = read_json_or_empty(tc_path), cfg = read_json_or_empty(c_path);
  auto resolve = [&](const char* tok_key, const char* id_key, int64_t fallback) -> int64_t {
    if (auto s = token_string(tc, tok_key, tc_path)) {
      const int64_t id = tok.token_id(*s);
      if (id < 0) fail(tc_path.string(), ": ", tok_key, " '", *s, "' is not in the vocabulary");
      return id;
    }
    if (auto id = config_id(cfg, id_key, c_path)) {
      if (*id < 0 || *id >= tok.vocab_size())
        fail(c_path.string(), ": ", id_key, " ", *id, " is outside the vocabulary (size ",
             tok.vocab_size(), ")");
      return *id;
    }
    return fallback;
  };
  const int64_t bos = resolve("bos_token", "bos_token_id", tok.default_bos());
  const int64_t eos = resolve("eos_token", "eos_token_id", tok.default_eos());
  bool add_bos = tok.default_add_bos();
  if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean())
    add_bos = tc["add_bos_token"];
  tok.set_special(bos, eos, add_bos);
}

}  // namespace

void check_fits_model(const Tokenizer& tok, const std::string& tokenizer_dir, int64_t model_vocab,
                      const std::string& model_dir) {
  OB_CHECK(tok.vocab_size() <= model_vocab, "tokenizer in '", tokenizer_dir, "' has ", tok.vocab_size(),
           " ids but the model at '", model_dir, "' only ", model_vocab);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  const fs::path dir(model_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail(model_dir,
         ": not a folder (expected a model folder with tokenizer.json or tokenizer.model)");
  const fs::path tj = dir / "tokenizer.json", tm = dir / "tokenizer.model", vj = dir / "vocab.json",
                 mt = dir / "merges.txt";
  std::unique_ptr<detail::TokenizerBase> tok;
  std::string unsupported;
  if (fs::exists(tj, ec)) tok = detail::load_tokenizer_json(tj.string(), &unsupported);
  if (!tok && fs::exists(tm, ec)) tok = detail::load_sentencepiece(tm.string());
  if (!tok && fs::exists(vj, ec) && fs::exists(mt, ec))
    tok = detail::load_vocab_merges(vj.string(), mt.string(), declared_specials(dir));
  if (!tok) {
    if (!unsupported.empty())
      fail(model_dir, ": tokenizer.json uses ", unsupported,
           ", which onebit does not support, and there is no tokenizer.model");
    fail(model_dir,
         ": no tokenizer.json, tokenizer.model or vocab.json + merges.txt in this folder");
  }
  configure(*tok, dir);
  return tok;
}

std::vector<std::string> copy_tokenizer_files(const std::string& from, const std::string& to) {
  std::vector<std::string> copied;
  for (const char* f : {"tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json",
                        "special_tokens_map.json", "added_tokens.json", "chat_template.jinja"}) {
    const fs::path src = fs::path(from) / f;
    if (!fs::exists(src)) continue;
    std::error_code ec;
    fs::copy_file(src, fs::path(to) / f, fs::copy_options::overwrite_existing, ec);
    OB_CHECK(!ec, "cannot copy ", src.string(), " to ", to, ": ", ec.message());
    copied.emplace_back(f);
  }
  return copied;
}

}  // namespace onebit::tokenizer
