#include "onebit/distill/progressive.h"

#include <torch/torch.h>

#include "onebit/core/error.h"
#include "onebit/models/param_shapes.h"

namespace onebit::distill {

ProgressiveReplacement::ProgressiveReplacement(models::CausalLMImpl& teacher, models::CausalLMImpl& student,
                                               int64_t steps, const std::string& order)
    : layers_(student.config().num_hidden_layers), steps_(steps), reverse_(order == "last_to_first") {
  OB_CHECK(steps > 0, "student.progressive_steps must be > 0 here, got ", steps);
  OB_CHECK(order == "first_to_last" || order == "last_to_first",
           "student.progressive_order must be first_to_last or last_to_first, got '", order, "'");
  const auto tp = teacher.named_parameters();
  for (const auto& item : student.named_modules("", /*include_self=*/false)) {
    auto* linear = dynamic_cast<nn::OneBitLinearImpl*>(item.value().get());
    if (!linear) continue;
    const std::string& name = item.key();
    const int64_t layer = models::decoder_layer_of(name);
    OB_CHECK(layer >= 0 && layer < layers_, "student.progressive_steps: OneBit linear '", name,
             "' is not inside a decoder layer");
    const auto* w = tp.find(name + ".weight");
    OB_CHECK(w, "student.progressive_steps: the teacher has no '", name, ".weight' to stand in for the 1-bit layer");
    OB_CHECK(w->dim() == 2 && w->size(0) == linear->options.out_features() &&
                 w->size(1) == linear->options.in_features(),
             "student.progressive_steps: the teacher's '", name, ".weight' is ", w->sizes(), ", the student's layer [",
             linear->options.out_features(), ", ", linear->options.in_features(), "]");
    const auto* b = tp.find(name + ".bias");
    entries_.push_back({layer, linear, w->detach(), b ? b->detach() : torch::Tensor()});
  }
  OB_CHECK(!entries_.empty(), "student.progressive_steps: the student has no OneBit linears");
}

void ProgressiveReplacement::check_run_length(int64_t layers, int64_t steps, int64_t run_steps) {
  const int64_t last = last_turn(layers, steps);
  OB_CHECK(last < run_steps, "student.progressive_steps=", steps, " keeps a decoder layer full precision until step ",
           last, ", but the run has only ", run_steps, " steps; lower it below the run's steps");
}

int64_t ProgressiveReplacement::first_step(int64_t layer) const {
  const int64_t rank = reverse_ ? layers_ - 1 - layer : layer;
  return rank * steps_ / layers_;
}

int64_t ProgressiveReplacement::apply(int64_t step) {
  for (auto& e : entries_) {
    const bool onebit = step >= first_step(e.layer);
    if (onebit && e.linear->has_stand_in()) e.linear->set_stand_in({});
    if (!onebit && !e.linear->has_stand_in()) e.linear->set_stand_in(e.weight, e.bias);
  }
  int64_t onebit_layers = 0;
  for (int64_t l = 0; l < layers_; ++l) onebit_layers += step >= first_step(l);
  return onebit_layers;
}

}  // namespace onebit::distill
