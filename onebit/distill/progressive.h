// Progressive replacement of the decoder layers (student.progressive_steps; docs/training.md).
// Over the first N optimizer steps the student's decoder layers become 1-bit one after another:
// layer i of L is 1-bit from step ⌊i·N/L⌋ (first_to_last) or ⌊(L−1−i)·N/L⌋ (last_to_first), and
// until then each of its OneBit linears runs its teacher linear instead (a stand-in: the
// teacher's frozen tensors, shared, not copied; W, g, h of that layer get no gradient). So one
// layer is 1-bit from the first step, all are from step ⌊(L−1)·N/L⌋ < N, and the network around
// a layer being learnt is closer to the teacher's early on. The schedule is a function of the
// step alone, so a resumed run replaces exactly as an uninterrupted one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "onebit/models/causal_lm.h"
#include "onebit/nn/onebit_linear.h"

namespace onebit::distill {

class ProgressiveReplacement {
 public:
  // Pairs every OneBitLinear of the student with the teacher linear of the same name (an error
  // names one that has none, or whose shape differs). steps > 0; order: first_to_last | last_to_first.
  ProgressiveReplacement(models::CausalLMImpl& teacher, models::CausalLMImpl& student, int64_t steps,
                         const std::string& order);
  // The optimizer step from which decoder layer `layer` is 1-bit.
  int64_t first_step(int64_t layer) const;
  // The step from which the last layer (in either order) of `layers` is 1-bit: ⌊(L−1)·steps/L⌋.
  static int64_t last_turn(int64_t layers, int64_t steps) { return (layers - 1) * steps / layers; }
  // The one-line error when a run of `run_steps` steps would end with a layer still full precision.
  static void check_run_length(int64_t layers, int64_t steps, int64_t run_steps);
  // Puts every layer in its mode for optimizer step `step`; returns how many decoder layers are 1-bit.
  int64_t apply(int64_t step);

 private:
  struct Entry {
    int64_t layer;
    nn::OneBitLinearImpl* linear;
    torch::Tensor weight, bias;  // the teacher's
  };
  std::vector<Entry> entries_;
  int64_t layers_, steps_;
  bool reverse_;
};

}  // namespace onebit::distill
