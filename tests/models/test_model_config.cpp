#include <nlohmann/json.hpp>

#include "onebit/core/error.h"
#include "onebit/models/model_config.h"
#include "tests/support.h"

using namespace onebit::models;

namespace {
const char* const kLlama3 = R"({
  "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "rope_theta": 500000.0, "eos_token_id": [128001, 128009], "bos_token_id": 128000,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "my_custom_key": {"kept": true}
})";
}  // namespace

TEST_CASE("config.json of LLaMA-3 parses with HF defaults", "[models]") {
  auto c = parse_model_config(kLlama3);
  CHECK(c.model_type == "llama");
  CHECK(c.num_key_value_heads == 8);
  CHECK(c.head_dim == 128);
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.rope_scaling.type == "llama3");
  CHECK(c.rope_scaling.factor == 8.0);
  CHECK(c.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(c.eos_token_id == 128001);
  CHECK(c.tie_word_embeddings == false);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK_FALSE(c.onebit);
}

TEST_CASE("transformers 5 rope_parameters and Qwen2 and OPT defaults", "[models]") {
  auto q = parse_model_config(R"({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8,
      "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
      "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}})");
  CHECK(q.attention_bias);
  CHECK(q.num_key_value_heads == 2);
  CHECK(q.rope_theta == 1000.0);
  CHECK(q.rope_scaling.type == "linear");
  CHECK_FALSE(q.sliding_window.has_value());

  auto o = parse_model_config(R"({"model_type": "opt", "vocab_size": 10, "hidden_size": 8, "ffn_dim": 16,
      "num_hidden_layers": 1, "num_attention_heads": 2})");
  CHECK(o.word_embed_proj_dim == 8);
  CHECK(o.do_layer_norm_before);
  CHECK(o.tie_word_embeddings);
  CHECK(o.hidden_act == "relu");
  CHECK(o.intermediate_size == 16);
  CHECK_FALSE(o.is_llama_family());
}

TEST_CASE("bad config.json: errors name the file and key", "[models]") {
  CHECK_THROWS_WITH(parse_model_config(R"({"model_type": "gpt2", "vocab_size": 1})", "dir/config.json"),
                    OB_CONTAINS("dir/config.json: unsupported model_type 'gpt2'"));
  CHECK_THROWS_WITH(parse_model_config(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
      "num_hidden_layers": 1, "num_attention_heads": 2})", "x.json"),
                    OB_CONTAINS("x.json: missing required key 'intermediate_size'"));
  CHECK_THROWS_WITH(parse_model_config(R"({"model_type": "llama", "vocab_size": "ten"})", "x.json"),
                    OB_CONTAINS("key 'vocab_size' has the wrong type"));
  CHECK_THROWS_WITH(parse_model_config("{not json", "x.json"), OB_CONTAINS("x.json: invalid JSON"));
  CHECK_THROWS_WITH(load_model_config("/nonexistent/config.json"), OB_CONTAINS("/nonexistent/config.json"));
}

TEST_CASE("config round trip keeps unknown keys and writes the onebit marker", "[models]") {
  auto c = parse_model_config(kLlama3);
  c.onebit = true;
  c.onebit_json = R"({"svid": "nmf"})";
  const auto text = model_config_to_json(c);
  auto j = nlohmann::json::parse(text);
  CHECK(j["my_custom_key"]["kept"] == true);
  CHECK(j["onebit"]["svid"] == "nmf");
  auto back = parse_model_config(text);
  CHECK(back.onebit);
  CHECK(back.rope_scaling.type == "llama3");
  CHECK(back.num_key_value_heads == 8);
  CHECK(back.head_dim == 128);
  c.onebit = false;
  CHECK_FALSE(nlohmann::json::parse(model_config_to_json(c)).contains("onebit"));
}
