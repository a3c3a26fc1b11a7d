// The parameter tensors a config.json describes (Hugging Face names and shapes), without
// building the model: what the planner counts. tests/models/test_param_shapes.cpp checks
// the list against the parameters of models built from the same configs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "onebit/models/model_config.h"

namespace onebit::models {

struct ParamShape {
  std::string name;            // "model.layers.3.mlp.up_proj.weight"
  std::vector<int64_t> shape;  // [out, in] for a linear weight
  int64_t layer = -1;          // decoder layer index; -1 outside the decoder layers
  bool linear_weight = false;  // the weight of a torch::nn::Linear (a OneBit candidate)
  int64_t numel() const;
};

// The decoder layer of a parameter name ("...layers.<i>....", LLaMA and OPT layouts); -1 when none.
int64_t decoder_layer_of(const std::string& name);

// In the order of model->named_parameters(); a tied lm_head is not listed (it is the embedding).
std::vector<ParamShape> param_shapes(const ModelConfig& cfg);

}  // namespace onebit::models
