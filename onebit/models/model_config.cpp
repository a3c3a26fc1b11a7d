#include "onebit/models/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "onebit/core/error.h"

namespace onebit::models {

namespace {
using nlohmann::json;

// Reads required/optional keys with the file and key named in every error.
struct Reader {
  const json& j;
  const std::string& where;

  template <class T>
  T req(const char* key) const {
    auto it = j.find(key);
    OB_CHECK(it != j.end() && !it->is_null(), where, ": missing required key '", key, "'");
    return as<T>(*it, key);
  }
  template <class T>
  T opt(const char* key, T fallback) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    return as<T>(*it, key);
  }
  template <class T>
  T as(const json& v, const char* key) const {
    try {
      if constexpr (std::is_same_v<T, int64_t>) {
        // eos_token_id may be a list (LLaMA-3): the first id is the primary one.
        if (v.is_array()) {
          OB_CHECK(!v.empty(), where, ": key '", key, "' is an empty list");
          return v.front().get<int64_t>();
        }
      }
      return v.get<T>();
    } catch (const json::exception& e) {
      fail(where, ": key '", key, "' has the wrong type (", v.dump(), ")");
    }
  }
};

RopeScaling parse_rope(const json& r, const std::string& where, double& theta) {
  RopeScaling s;
  Reader rd{r, where};
  if (r.contains("rope_theta")) theta = rd.req<double>("rope_theta");
  std::string type = rd.opt<std::string>("rope_type", rd.opt<std::string>("type", "default"));
  if (type == "default") return s;
  if (type != "linear" && type != "llama3")
    fail(where, ": unsupported rope scaling type '", type, "' (supported: default, linear, llama3)");
  s.type = type;
  s.factor = rd.req<double>("factor");
  if (type == "llama3") {
    s.low_freq_factor = rd.req<double>("low_freq_factor");
    s.high_freq_factor = rd.req<double>("high_freq_factor");
    s.original_max_position_embeddings = rd.req<int64_t>("original_max_position_embeddings");
  }
  return s;
}
}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& where) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(where, ": invalid JSON: ", e.what());
  }
  OB_CHECK(j.is_object(), where, ": expected a JSON object");
  Reader rd{j, where};
  ModelConfig c;
  c.raw_json = json_text;
  c.model_type = rd.req<std::string>("model_type");
  const std::string& t = c.model_type;
  OB_CHECK(t == "llama" || t == "mistral" || t == "qwen2" || t == "opt", where,
           ": unsupported model_type '", t, "' (supported: llama, mistral, qwen2, opt)");
  c.vocab_size = rd.req<int64_t>("vocab_size");
  c.hidden_size = rd.req<int64_t>("hidden_size");
  c.num_hidden_layers = rd.req<int64_t>("num_hidden_layers");
  c.num_attention_heads = rd.req<int64_t>("num_attention_heads");
  OB_CHECK(c.num_attention_heads > 0 && c.hidden_size > 0 && c.vocab_size > 0 && c.num_hidden_layers > 0,
           where, ": vocab_size, hidden_size, num_hidden_layers, num_attention_heads must be positive");
  c.bos_token_id = rd.opt<int64_t>("bos_token_id", -1);
  c.eos_token_id = rd.opt<int64_t>("eos_token_id", -1);
  c.pad_token_id = rd.opt<int64_t>("pad_token_id", -1);
  c.torch_dtype = rd.opt<std::string>("torch_dtype", rd.opt<std::string>("dtype", ""));

  if (t == "opt") {
    c.intermediate_size = rd.req<int64_t>("ffn_dim");
    c.num_key_value_heads = c.num_attention_heads;
    c.head_dim = c.hidden_size / c.num_attention_heads;
    OB_CHECK(c.head_dim * c.num_attention_heads == c.hidden_size, where,
             ": hidden_size must be divisible by num_attention_heads");
    c.max_position_embeddings = rd.opt<int64_t>("max_position_embeddings", 2048);
    c.hidden_act = rd.opt<std::string>("activation_function", "relu");
    c.do_layer_norm_before = rd.opt<bool>("do_layer_norm_before", true);
    c.word_embed_proj_dim = rd.opt<int64_t>("word_embed_proj_dim", c.hidden_size);
    c.enable_bias = rd.opt<bool>("enable_bias", true);
    c.layer_norm_elementwise_affine = rd.opt<bool>("layer_norm_elementwise_affine", true);
    c.tie_word_embeddings = rd.opt<bool>("tie_word_embeddings", true);
    c.rms_norm_eps = 1e-5;  // nn.LayerNorm default
    OB_CHECK(!rd.opt<bool>("_remove_final_layer_norm", false), where,
             ": _remove_final_layer_norm=true (legacy OPT) is not supported");
  } else {
    c.intermediate_size = rd.req<int64_t>("intermediate_size");
    c.num_key_value_heads = rd.opt<int64_t>("num_key_value_heads", c.num_attention_heads);
    c.head_dim = rd.opt<int64_t>("head_dim", c.hidden_size / c.num_attention_heads);
    OB_CHECK(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0, where,
             ": num_attention_heads (", c.num_attention_heads, ") must be a multiple of num_key_value_heads (",
             c.num_key_value_heads, ")");
    OB_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, where, ": head_dim must be positive and even");
    const int64_t default_max_pos = t == "llama" ? 2048 : t == "mistral" ? 4096 * 32 : 32768;
    c.max_position_embeddings = rd.opt<int64_t>("max_position_embeddings", default_max_pos);
    c.rms_norm_eps = rd.opt<double>("rms_norm_eps", 1e-6);
    c.hidden_act = rd.opt<std::string>("hidden_act", "silu");
    c.tie_word_embeddings = rd.opt<bool>("tie_word_embeddings", false);
    if (t == "qwen2") {
      c.attention_bias = true;  // Qwen2: q/k/v always carry a bias, o_proj none
    } else {
      c.attention_bias = rd.opt<bool>("attention_bias", false);
      c.mlp_bias = rd.opt<bool>("mlp_bias", false);
    }
    c.rope_theta = rd.opt<double>("rope_theta", 10000.0);
    // transformers < 5 writes rope_scaling (+ rope_theta); >= 5 writes rope_parameters.
    for (const char* key : {"rope_scaling", "rope_parameters"}) {
      auto it = j.find(key);
      if (it != j.end() && !it->is_null()) {
        OB_CHECK(it->is_object(), where, ": key '", key, "' must be an object");
        c.rope_scaling = parse_rope(*it, where + " key '" + key + "'", c.rope_theta);
      }
    }
    if (t == "mistral") {
      auto sw = rd.opt<int64_t>("sliding_window", 0);
      if (sw > 0) c.sliding_window = sw;
    } else if (t == "qwen2" && rd.opt<bool>("use_sliding_window", false)) {
      auto sw = rd.opt<int64_t>("sliding_window", 0);
      OB_CHECK(rd.opt<int64_t>("max_window_layers", 0) == 0 || sw <= 0, where,
               ": per-layer sliding windows (max_window_layers) are not supported");
      if (sw > 0) c.sliding_window = sw;
    }
  }
  if (j.contains("onebit") && !j["onebit"].is_null()) {
    OB_CHECK(j["onebit"].is_object(), where, ": key 'onebit' must be an object");
    c.onebit = true;
    c.onebit_json = j["onebit"].dump();
  }
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  OB_CHECK(in.good(), "cannot open model config '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), path);
}

std::string model_config_to_json(const ModelConfig& cfg) {
  json j = cfg.raw_json.empty() ? json::object() : json::parse(cfg.raw_json);
  // Fields onebit may change (students, dtype conversion); the rest stays as read.
  j["model_type"] = cfg.model_type;
  j["vocab_size"] = cfg.vocab_size;
  j["hidden_size"] = cfg.hidden_size;
  j["num_hidden_layers"] = cfg.num_hidden_layers;
  j["num_attention_heads"] = cfg.num_attention_heads;
  j["tie_word_embeddings"] = cfg.tie_word_embeddings;
  if (cfg.model_type == "opt") {
    j["ffn_dim"] = cfg.intermediate_size;
    j["word_embed_proj_dim"] = cfg.word_embed_proj_dim;
    j["do_layer_norm_before"] = cfg.do_layer_norm_before;
    j["enable_bias"] = cfg.enable_bias;
    j["activation_function"] = cfg.hidden_act;
  } else {
    j["intermediate_size"] = cfg.intermediate_size;
    j["num_key_value_heads"] = cfg.num_key_value_heads;
    j["head_dim"] = cfg.head_dim;
    j["rms_norm_eps"] = cfg.rms_norm_eps;
    j["hidden_act"] = cfg.hidden_act;
    if (!j.contains("rope_parameters")) j["rope_theta"] = cfg.rope_theta;
  }
  if (!j.contains("max_position_embeddings")) j["max_position_embeddings"] = cfg.max_position_embeddings;
  if (!cfg.torch_dtype.empty()) {
    j["torch_dtype"] = cfg.torch_dtype;
    if (j.contains("dtype")) j["dtype"] = cfg.torch_dtype;
  }
  if (cfg.onebit)
    j["onebit"] = json::parse(cfg.onebit_json.empty() ? "{}" : cfg.onebit_json);
  else
    j.erase("onebit");
  return j.dump(2) + "\n";
}

}  // namespace onebit::models
