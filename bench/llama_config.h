// config.json of a random LLaMA for the bench/ programs (untied embeddings, heads of 64 by default),
// and the training config their measured steps run.
#pragma once
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "onebit/config/train_config.h"

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

// One measured training step's config: the teacher folder on `device`, model.dtype =
// train.precision = dtype, the lean keys, batch × seq tokens, a constant lr from step 0; validated.
struct StepSetup {
  std::string teacher, device = "cpu", dtype = "fp32", latent = "fp32", state = "fp32";
  bool checkpointing = false;
  int64_t batch = 2, seq = 256;
};
inline config::TrainConfig step_config(const StepSetup& s) {
  config::TrainConfig cfg;
  cfg.model.teacher = s.teacher;
  cfg.model.dtype = cfg.train.precision = s.dtype;
  cfg.model.device = s.device;
  cfg.model.gradient_checkpointing = s.checkpointing;
  cfg.student.latent_dtype = s.latent;
  cfg.optim.state_dtype = s.state;
  cfg.data.batch_size = s.batch;
  cfg.data.seq_len = s.seq;
  cfg.optim.warmup_steps = 0;
  cfg.optim.schedule = "constant";
  cfg.validate();
  return cfg;
}

}  // namespace onebit::bench
