// Trainer: one OneBit distillation step (method.md §3, §5), read top to bottom in step().
// The caller owns the models, the batch source and the GradSync; gradient reduction and the
// AdamW update belong to a ParamSync (dist.sharding), so the trainer never reduces gradients
// nor knows how the state is sharded. Inf/NaN gradients on any rank skip the step on every
// rank (fp16: a loss-scale overflow; fp32/bf16: a bad step). dist.shard_teacher shards the
// teacher's own decoder-layer tensors the same way as dist.sharding=full (frozen, forward only):
// from construction on, every rank must run the same teacher forwards. train.precision: fp32;
// bf16 (teacher and student forwards under autocast, the KD loss in fp32, fp32 master weights
// and AdamW state unless student.latent_dtype / optim.state_dtype ask for bf16 or int8); fp16 (the same
// in half precision plus a dynamic LossScaler whose overflow decision all ranks take together).
// student.progressive_steps: each step first puts every decoder layer in its mode for that step
// (the teacher's linears as stand-ins until the layer's turn; onebit/distill/progressive.h).
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "onebit/config/train_config.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/dist/param_sync.h"
#include "onebit/distill/checkpoint.h"
#include "onebit/distill/kd_loss.h"
#include "onebit/distill/loss_scaler.h"
#include "onebit/distill/progressive.h"
#include "onebit/models/causal_lm.h"

namespace onebit::distill {

struct StepStats {
  int64_t step = 0;  // optimizer steps done after this one
  double loss = 0, kl = 0, hidden = 0, ce = 0;
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // tokens seen by this rank in this step
  bool skipped = false;  // no update: NaN/inf loss or inf/NaN gradients on some rank
  bool overflow = false;  // fp16: inf/NaN gradients on some rank; the loss scale was backed off
  double loss_scale = 1;  // fp16: the scale this step's backward used; 1 otherwise
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
  // Gradient reduction, AdamW and its (sharded) state: checkpoints save and load through it.
  dist::ParamSync& param_sync();
  // Ends training (and student.progressive_steps: every layer is 1-bit from here on): frees the gradients, the optimizer state and the communication buffers.
  // dist.sharding=full keeps the student's decoder layers sharded, gathered one at a time by
  // each forward (every rank must then run the same forwards) and by save_student. step() and
  // param_sync() may not be called afterwards.
  void finish();
  // After finish(): writes the student in Hugging Face layout (config.json, model.safetensors)
  // to dir where `write` (rank 0). Collective under dist.sharding=full: every rank takes part
  // in gathering one decoder layer at a time, so no rank holds more than one layer's full
  // tensors beyond its shard. Returns the most bytes of trainable state this rank held at
  // once beyond what it kept before (0 when nothing had to be gathered).
  int64_t save_student(const std::string& dir, bool write);
  int64_t steps_done() const { return step_; }
  void set_steps_done(int64_t s) { step_ = s; }
  int64_t bad_streak() const { return bad_streak_; }
  // The fp16 loss scaler; nullptr for fp32 and bf16.
  const LossScaler* loss_scaler() const { return scaler_.get(); }

  // Checkpoint state besides tensors: the step and (fp16) the scaler's scale and counter.
  void save_state(TrainState& state) const;
  void load_state(const TrainState& state);

 private:
  config::TrainConfig cfg_;
  models::CausalLM teacher_, student_;
  std::function<torch::Tensor()> next_batch_;
  dist::GradSync& sync_;
  int64_t total_steps_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<dist::ParamSync> opt_;
  std::unique_ptr<dist::ParamSync> teacher_shards_;  // dist.shard_teacher: the teacher's layers, frozen
  std::optional<torch::ScalarType> autocast_;  // bf16 | fp16; none for fp32
  std::unique_ptr<LossScaler> scaler_;         // fp16 only
  std::unique_ptr<ProgressiveReplacement> progressive_;  // student.progressive_steps > 0
  int64_t step_ = 0, bad_streak_ = 0;
  bool finished_ = false;

  void shard_teacher(int64_t bucket_bytes);
};

}  // namespace onebit::distill
