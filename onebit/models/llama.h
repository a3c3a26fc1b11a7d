// LLaMA-family decoder (llama, mistral, qwen2) with Hugging Face parameter names:
// model.embed_tokens, model.layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj,
// input_layernorm, post_attention_layernorm}, model.norm, lm_head (absent when tied).
#pragma once
#include <torch/types.h>

#include "onebit/models/causal_lm.h"

namespace onebit::models {

// fp32 CPU model (LibTorch default init; build_model applies the HF init) of cfg (is_llama_family()).
CausalLM make_llama(const ModelConfig& cfg);

// HF rotary inverse frequencies [head_dim / 2] (fp32), with linear / llama3 scaling.
torch::Tensor rope_inv_freq(const ModelConfig& cfg);

}  // namespace onebit::models
