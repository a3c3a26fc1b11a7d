#include "onebit/models/inference_scope.h"

#include "onebit/models/causal_lm.h"

namespace onebit::models {

namespace {
std::vector<torch::Tensor> dense_weights(CausalLMImpl& model) {
  auto w = nn::linear_weights(model);
  w.push_back(model.lm_head_weight());
  return w;
}
}  // namespace

InferenceScope::InferenceScope(CausalLMImpl& model)
    : model_(model), was_training_(model.is_training()), packed_(dense_weights(model)) {
  model_.eval();
}

InferenceScope::~InferenceScope() {
  if (was_training_) model_.train();
}

}  // namespace onebit::models
