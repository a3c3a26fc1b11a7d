// config.json of a random LLaMA for the bench/ programs (untied embeddings, heads of 64 by default).
#pragma once
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

namespace onebit::bench {

inline nlohmann::json llama_config(int64_t layers, int64_t hidden, int64_t ffn, int64_t vocab, int64_t heads = 0,
                                   int64_t kv_heads = 0, int64_t max_positions = 2048) {
  if (heads <= 0) heads = hidden / 64;
  return {{"model_type", "llama"},
          {"vocab_size", vocab},
          {"hidden_size", hidden},
          {"intermediate_size", ffn},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"num_key_value_heads", kv_heads > 0 ? kv_heads : heads},
          {"max_position_embeddings", std::max<int64_t>(2048, max_positions)},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", false},
          {"architectures", {"LlamaForCausalLM"}}};
}

}  // namespace onebit::bench
