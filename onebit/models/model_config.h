// ModelConfig: the architecture fields onebit reads from a Hugging Face config.json.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace onebit::models {

// Hugging Face `rope_scaling` (LLaMA-3 type "llama3"; "linear"; none).
struct RopeScaling {
  std::string type;  // "" = none, "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2", "opt"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // OPT: ffn_dim
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // = num_attention_heads when absent
  int64_t head_dim = 0;             // = hidden_size / num_attention_heads when absent
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;  // LLaMA family; OPT uses LayerNorm eps 1e-5
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  std::string hidden_act = "silu";  // OPT: activation_function ("relu")
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Qwen2: q/k/v bias true
  bool mlp_bias = false;
  std::optional<int64_t> sliding_window;  // Mistral/Qwen2 when enabled
  // OPT
  bool do_layer_norm_before = true;
  int64_t word_embed_proj_dim = 0;  // = hidden_size when absent
  bool enable_bias = true;
  bool layer_norm_elementwise_affine = true;
  // special tokens (-1 when absent)
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;
  std::string torch_dtype;  // as written in config.json ("float32", "bfloat16", ...)

  // OneBit student marker: config.json key "onebit" (written by onebit) lists the replaced
  // linears; empty for a full-precision model.
  bool onebit = false;
  std::string onebit_json;  // the raw "onebit" object, round-tripped on save

  std::string raw_json;  // the whole config.json as read, for save round trips

  bool is_llama_family() const { return model_type != "opt"; }
};

// Parses config.json text / file; unknown model_type or missing fields -> onebit::Error.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where = "config.json");
ModelConfig load_model_config(const std::string& path);
// Serialises back to config.json text (raw_json with onebit's fields updated).
std::string model_config_to_json(const ModelConfig& cfg);

}  // namespace onebit::models
