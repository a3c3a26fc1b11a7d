// Trainer: one OneBit distillation step (method.md §3, §5), read top to bottom in step().
// The caller owns the models, the batch source and the GradSync; the trainer never reduces
// gradients itself.
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "onebit/config/train_config.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/distill/kd_loss.h"
#include "onebit/models/causal_lm.h"

namespace torch::optim {
class AdamW;
}

namespace onebit::distill {

struct StepStats {
  int64_t step = 0;  // optimizer steps done after this one
  double loss = 0, kl = 0, hidden = 0, ce = 0;
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // tokens seen by this rank in this step
  bool skipped = false;  // NaN/inf loss: no update
};

class Trainer {
 public:
  // next_batch returns [B,T] int64 token ids (any device). total_steps drives the schedule.
  Trainer(const config::TrainConfig& cfg, models::CausalLM teacher, models::CausalLM student,
          std::function<torch::Tensor()> next_batch, dist::GradSync& sync, int64_t total_steps);
  ~Trainer();

  StepStats step();

  // Trainable student tensors by parameter name (latent W, g, h).
  std::map<std::string, torch::Tensor> trainable() const;
  torch::optim::AdamW& optimizer();
  int64_t steps_done() const { return step_; }
  void set_steps_done(int64_t s) { step_ = s; }
  int64_t bad_streak() const { return bad_streak_; }

 private:
  config::TrainConfig cfg_;
  models::CausalLM teacher_, student_;
  std::function<torch::Tensor()> next_batch_;
  dist::GradSync& sync_;
  int64_t total_steps_;
  KdLossOptions kd_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> opt_;
  int64_t step_ = 0, bad_streak_ = 0;
};

}  // namespace onebit::distill
