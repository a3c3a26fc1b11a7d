// Tiny model configs for [models] tests that need no transformers.
#pragma once
#include <string>

#include "onebit/models/model_config.h"

namespace onebit::test {

inline models::ModelConfig tiny_llama_config(bool tied = false) {
  return models::parse_model_config(std::string(R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": )") +
                                    (tied ? "true" : "false") + "}");
}

inline models::ModelConfig tiny_opt_config() {
  return models::parse_model_config(R"({"model_type": "opt", "vocab_size": 64, "hidden_size": 32,
      "ffn_dim": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64,
      "word_embed_proj_dim": 16, "do_layer_norm_before": false, "pad_token_id": 1})");
}

}  // namespace onebit::test
