// OPT decoder with Hugging Face parameter names: model.decoder.{embed_tokens, embed_positions,
// project_in, project_out, final_layer_norm}, model.decoder.layers.N.{self_attn.{q,k,v,out}_proj,
// self_attn_layer_norm, fc1, fc2, final_layer_norm}, lm_head (absent when tied).
#pragma once
#include "onebit/models/causal_lm.h"

namespace onebit::models {

// fp32 CPU model (LibTorch default init; build_model applies the HF init) of cfg (model_type "opt").
CausalLM make_opt(const ModelConfig& cfg);

}  // namespace onebit::models
