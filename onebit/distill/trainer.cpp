#include "onebit/distill/trainer.h"

#include <torch/torch.h>

#include <cmath>

#include "onebit/core/error.h"
#include "onebit/distill/schedule.h"

namespace onebit::distill {

Trainer::Trainer(const config::TrainConfig& cfg, models::CausalLM teacher, models::CausalLM student,
                 std::function<torch::Tensor()> next_batch, dist::GradSync& sync, int64_t total_steps)
    : cfg_(cfg), teacher_(std::move(teacher)), student_(std::move(student)), next_batch_(std::move(next_batch)),
      sync_(sync), total_steps_(total_steps) {
  kd_.kd_loss_scale = cfg.kd.kd_loss_scale;
  kd_.alpha = cfg.kd.alpha;
  kd_.ce_weight = cfg.kd.ce_weight;
  kd_.chunk_tokens = cfg.kd.chunk_tokens;
  for (auto& p : teacher_->parameters()) p.requires_grad_(false);
  teacher_->eval();
  student_->train();
  for (const auto& item : student_->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    names_.push_back(item.key());
    params_.push_back(item.value());
  }
  OB_CHECK(!params_.empty(), "trainer: the student has no trainable parameters (was it converted by to_onebit?)");
  student_->set_gradient_checkpointing(cfg.model.gradient_checkpointing);
  const auto& o = cfg.optim;
  opt_ = std::make_unique<torch::optim::AdamW>(
      params_, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
}

Trainer::~Trainer() = default;

torch::optim::AdamW& Trainer::optimizer() { return *opt_; }

std::map<std::string, torch::Tensor> Trainer::trainable() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < names_.size(); ++i) out.emplace(names_[i], params_[i]);
  return out;
}

StepStats Trainer::step() {
  StepStats st;
  models::ForwardArgs args;
  args.output_hidden_states = true;
  args.compute_logits = false;  // the KD loss computes logits chunk by chunk
  const int64_t accum = cfg_.optim.grad_accum;
  const auto device = params_.front().device();

  for (int64_t micro = 0; micro < accum; ++micro) {
    // batch
    const torch::Tensor ids = next_batch_().to(device);
    st.tokens += ids.numel();
    // teacher forward (frozen)
    models::ForwardOutput t;
    {
      torch::NoGradGuard no_grad;
      t = teacher_->forward(ids, args);
    }
    // student forward + KD loss
    const models::ForwardOutput s = student_->forward(ids, args);
    const KdLossParts parts = kd_loss(t, teacher_->lm_head_weight(), s, student_->lm_head_weight(), ids, kd_);
    // backward (averaged over micro-steps)
    (parts.total / static_cast<double>(accum)).backward();
    st.loss += parts.total.item<double>() / accum;
    st.kl += parts.kl.item<double>() / accum;
    st.hidden += parts.hidden.item<double>() / accum;
    st.ce += parts.ce.item<double>() / accum;
  }

  // NaN/inf: skip the update, stop after max_bad_steps in a row.
  if (!std::isfinite(sync_.mean(st.loss))) {
    opt_->zero_grad();
    st.skipped = true;
    st.step = step_;
    ++bad_streak_;
    OB_CHECK(bad_streak_ < cfg_.train.max_bad_steps, "training stopped: the loss was NaN/inf for ", bad_streak_,
             " steps in a row at step ", step_, " (train.max_bad_steps=", cfg_.train.max_bad_steps,
             "); lower optim.lr or use train.precision=bf16/fp32");
    return st;
  }
  bad_streak_ = 0;

  // sync, clip
  sync_.after_backward(params_);
  const double clip = cfg_.optim.grad_clip > 0 ? cfg_.optim.grad_clip : std::numeric_limits<double>::infinity();
  st.grad_norm = torch::nn::utils::clip_grad_norm_(params_, clip);

  // schedule, optimizer step
  ScheduleOptions so;
  so.kind = cfg_.optim.schedule;
  so.warmup_steps = cfg_.optim.warmup_steps;
  so.total_steps = total_steps_;
  so.min_lr_ratio = cfg_.optim.min_lr_ratio;
  st.lr = cfg_.optim.lr * lr_factor(step_, so);
  for (auto& g : opt_->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(st.lr);
  opt_->step();
  opt_->zero_grad();
  ++step_;

  // log (rank means)
  st.step = step_;
  st.loss = sync_.mean(st.loss);
  st.kl = sync_.mean(st.kl);
  st.hidden = sync_.mean(st.hidden);
  st.ce = sync_.mean(st.ce);
  return st;
}

}  // namespace onebit::distill
