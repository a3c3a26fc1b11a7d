// Converting a full-precision CausalLM into its OneBit student (method.md §1-2), and the
// naive 1-bit baseline.
#pragma once
#include <string>
#include <vector>

#include "onebit/models/causal_lm.h"

namespace onebit::models {

// The student's OneBitLinear settings; strings as in onebit::config::StudentCfg.
struct StudentOptions {
  std::string svid = "nmf";            // nmf | svd | none
  std::string latent_init = "scaled";  // scaled (sign(W)·latent_scale) | keep
  double latent_scale = 0.01;
  std::string ste = "tanh";            // tanh | identity | clipped
  bool post_layernorm = true;
  bool keep_bias = true;               // keep the original bias (OPT; LLaMA has none)
  std::string layers;                  // regex over linear names; "" = every decoder linear
};

// Regex of every decoder linear of the model's family (q,k,v,o,gate,up,down / q,k,v,out,fc1,fc2).
std::string default_student_layers(const ModelConfig& cfg);

// Replaces the chosen linears by OneBitLinear::from_linear (SVID init), freezes everything
// else (embeddings, lm_head, norms, kept biases: requires_grad=false; only W, g, h train) and
// marks the config as a student ("onebit" key on save). Returns the replaced names.
std::vector<std::string> to_onebit(CausalLMImpl& model, const StudentOptions& opts = {});

// Stores every OneBitLinear's latent W in `dtype` (student.latent_dtype; g, h and the rest keep
// theirs). The forward uses only sign(W), which a bf16 W keeps exactly.
void set_latent_dtype(CausalLMImpl& model, torch::Dtype dtype);

// Rebuilds the student layout recorded in model.config().onebit_json (uninitialised OneBitLinear
// in place of the replaced linears, same freezing); used by load_pretrained/build_model.
void apply_student_layout(CausalLMImpl& model);

// Naive 1-bit baseline: every decoder linear weight W <- sign(W)·mean(|W|) (one scale per
// matrix, sign(0) = +1), in place. Returns the quantized names.
std::vector<std::string> naive_sign_quantize(CausalLMImpl& model);

}  // namespace onebit::models
