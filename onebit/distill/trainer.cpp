#include "onebit/distill/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "onebit/distill/schedule.h"
#include "onebit/models/loader.h"
#include "onebit/models/param_shapes.h"
#include "onebit/distill/train_models.h"
#include "onebit/util/strings.h"

namespace onebit::distill {
namespace {

// Checkpoint keys of the fp16 scaler state (TrainState::scalars / counters).
constexpr const char* kLossScale = "loss_scale";
constexpr const char* kLossScaleGrowth = "loss_scale_growth";

bool all_finite(const std::vector<torch::Tensor>& ts) {
  for (const auto& t : ts)
    if (!torch::isfinite(t).all().item<bool>()) return false;
  return true;
}

}  // namespace

Trainer::Trainer(const config::TrainConfig& cfg, models::CausalLM teacher, models::CausalLM student,
                 std::function<torch::Tensor()> next_batch, dist::GradSync& sync, int64_t total_steps)
    : cfg_(cfg), teacher_(std::move(teacher)), student_(std::move(student)), next_batch_(std::move(next_batch)),
      sync_(sync), total_steps_(total_steps) {
  OB_CHECK(cfg.optim.grad_accum >= 1, "trainer: optim.grad_accum must be >= 1, got ", cfg.optim.grad_accum,
           " (0 is resolved from train.global_batch by config::grad_accum_for)");
  for (auto& p : teacher_->parameters()) p.requires_grad_(false);
  teacher_->eval();
  student_->train();
  for (const auto& item : student_->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    names_.push_back(item.key());
    params_.push_back(item.value());
  }
  OB_CHECK(!params_.empty(), "trainer: the student has no trainable parameters (was it converted by to_onebit?)");
  // Mixed precision keeps fp32 masters: autocast casts copies for compute, the optimizer
  // sees the stored tensors: fp32, but the latent W (".weight") in student.latent_dtype.
  const torch::Dtype latent = config_dtype(cfg.student.latent_dtype, "student.latent_dtype");
  for (size_t i = 0; i < params_.size(); ++i) {
    const bool is_w = ends_with(names_[i], ".weight");
    const torch::Dtype want = is_w ? latent : torch::kFloat32;
    OB_CHECK(params_[i].scalar_type() == want, "trainer: trainable parameter '", names_[i], "' is ",
             params_[i].scalar_type(), ", expected ", c10::toString(want),
             " (the student is loaded in fp32, its latent W in student.latent_dtype; train.precision sets the "
             "compute dtype)");
  }
  dist::ParamSyncOptions po;
  po.sharding = dist::parse_sharding(cfg.dist.sharding);
  po.bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(cfg.dist.bucket_mb * (1 << 20)));
  po.beta1 = cfg.optim.beta1;
  po.beta2 = cfg.optim.beta2;
  po.eps = cfg.optim.eps;
  po.weight_decay = cfg.optim.weight_decay;
  po.state_dtype = cfg.optim.state_dtype == "int8" ? torch::kChar : config_dtype(cfg.optim.state_dtype, "optim.state_dtype");
  po.seed = cfg.train.seed;
  // optim.gh_lr_scale: the OneBit layers' g and h vectors ("....g", "....h") get their own lr.
  if (cfg.optim.gh_lr_scale != 1.0)
    for (const auto& name : names_)
      po.lr_scale.push_back(ends_with(name, ".g") || ends_with(name, ".h") ? cfg.optim.gh_lr_scale : 1.0);
  // The decoder layer of each tensor ("...layers.<i>...."): full sharding gathers layer by layer.
  std::vector<int64_t> layer_of;
  for (const auto& name : names_) layer_of.push_back(models::decoder_layer_of(name));
  opt_ = std::make_unique<dist::ParamSync>(params_, sync_, po, layer_of);
  // full: the layers' tensors exist only while their layer runs, so backward recomputes them.
  student_->set_gradient_checkpointing(cfg.model.gradient_checkpointing || po.sharding == dist::Sharding::Full);
  student_->set_layer_hooks(opt_->layer_hooks());
  if (cfg.dist.shard_teacher) shard_teacher(po.bucket_bytes);
  if (cfg.student.progressive_steps > 0) {
    OB_CHECK(!cfg.dist.shard_teacher, "student.progressive_steps cannot be used with dist.shard_teacher");
    progressive_ = std::make_unique<ProgressiveReplacement>(*teacher_, *student_, cfg.student.progressive_steps,
                                                            cfg.student.progressive_order);
    ProgressiveReplacement::check_run_length(student_->config().num_hidden_layers, cfg.student.progressive_steps,
                                             total_steps);
  }
  if (cfg.train.precision == "bf16") autocast_ = torch::kBFloat16;
  if (cfg.train.precision == "fp16") {
    autocast_ = torch::kHalf;
    LossScalerOptions so;
    so.init_scale = cfg.train.loss_scale_init;
    so.growth_interval = cfg.train.loss_scale_growth_interval;
    scaler_ = std::make_unique<LossScaler>(so);
  }
}

Trainer::~Trainer() {
  if (progressive_) progressive_->apply(std::numeric_limits<int64_t>::max());  // no stand-in outlives training
  if (student_) student_->set_layer_hooks(nullptr);
  if (teacher_) teacher_->set_layer_hooks(nullptr);
}

void Trainer::shard_teacher(int64_t bucket_bytes) {
  // The teacher's decoder-layer tensors that the student does not share (the replaced
  // linears; the shared norms stay whole), sharded over the ranks and gathered layer by layer
  // for each teacher forward.
  const auto student_params = student_->parameters();
  std::vector<torch::Tensor> tensors;
  std::vector<int64_t> layer_of;
  for (const auto& item : teacher_->named_parameters()) {
    const int64_t layer = models::decoder_layer_of(item.key());
    if (layer < 0) continue;
    const bool shared = std::any_of(student_params.begin(), student_params.end(),
                                    [&](const torch::Tensor& p) { return p.is_alias_of(item.value()); });
    if (shared) continue;
    tensors.push_back(item.value());
    layer_of.push_back(layer);
  }
  OB_CHECK(!tensors.empty(), "dist.shard_teacher: the teacher has no decoder-layer tensors of its own to shard");
  dist::ParamSyncOptions o;
  o.sharding = dist::Sharding::Full;
  o.frozen = true;
  o.bucket_bytes = bucket_bytes;
  teacher_shards_ = std::make_unique<dist::ParamSync>(tensors, sync_, o, layer_of);
  teacher_->set_layer_hooks(teacher_shards_->layer_hooks());
}

dist::ParamSync& Trainer::param_sync() {
  OB_CHECK(!finished_, "trainer: finish() ended training");
  return *opt_;
}

void Trainer::finish() {
  if (finished_) return;
  finished_ = true;
  if (progressive_) progressive_->apply(std::numeric_limits<int64_t>::max());
  if (opt_->sharding() == dist::Sharding::Full) {
    opt_->end_training();  // the shards stay; the layer hooks gather them for every forward
    return;
  }
  student_->set_layer_hooks(nullptr);
  opt_.reset();  // the tensors keep their (replicated) values
}

int64_t Trainer::save_student(const std::string& dir, bool write) {
  if (!opt_) {  // replicated: nothing to gather
    if (write) models::save_pretrained(student_, dir);
    return 0;
  }
  models::LayerByLayer layers;
  for (size_t i = 0; i < names_.size(); ++i) layers.shapes[names_[i]] = opt_->shape(i);
  layers.hold = [this](int64_t layer) { opt_->hold_layer(layer); };
  opt_->reset_peak_state_bytes();
  const int64_t kept = opt_->state_bytes();
  if (write) {
    models::save_pretrained(student_, dir, std::nullopt, &layers);
  } else {
    for (int64_t l = 0; l < student_->config().num_hidden_layers; ++l) layers.hold(l);  // rank 0's sequence
    layers.hold(-1);
  }
  return opt_->peak_state_bytes() - kept;
}

std::map<std::string, torch::Tensor> Trainer::trainable() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < names_.size(); ++i) out.emplace(names_[i], params_[i]);
  return out;
}

void Trainer::save_state(TrainState& state) const {
  state.step = step_;
  if (scaler_) {
    state.scalars[kLossScale] = scaler_->scale();
    state.counters[kLossScaleGrowth] = scaler_->growth_tracker();
  }
}

void Trainer::load_state(const TrainState& state) {
  step_ = state.step;
  // A checkpoint of an fp32/bf16 run has no scaler state: fp16 then starts from its initial scale.
  if (scaler_ && state.scalars.count(kLossScale))
    scaler_->load(state.scalars.at(kLossScale),
                  state.counters.count(kLossScaleGrowth) ? state.counters.at(kLossScaleGrowth) : 0);
}

StepStats Trainer::step() {
  OB_CHECK(!finished_, "trainer: finish() ended training; no more steps");
  StepStats st;
  models::ForwardArgs args;
  args.output_hidden_states = true;
  args.compute_logits = false;  // the KD loss computes logits chunk by chunk
  const int64_t accum = cfg_.optim.grad_accum;
  const auto device = params_.front().device();
  st.loss_scale = scaler_ ? scaler_->scale() : 1.0;
  if (progressive_) progressive_->apply(step_);  // which layers run 1-bit in this step

  for (int64_t micro = 0; micro < accum; ++micro) {
    // batch
    const torch::Tensor ids = next_batch_().to(device);
    st.tokens += ids.numel();
    KdLossParts parts;
    {
      // Forwards under autocast (bf16/fp16); kd_loss switches it off and works in fp32.
      std::optional<AutocastGuard> autocast;
      if (autocast_) autocast.emplace(device.type(), *autocast_);
      // teacher forward (frozen)
      models::ForwardOutput t;
      {
        torch::NoGradGuard no_grad;
        t = teacher_->forward(ids, args);
      }
      // student forward + KD loss; during kd.block_warmup_steps every layer reads the teacher's
      // input of that layer and learns to reproduce its teacher layer's output
      if (step_ < cfg_.kd.block_warmup_steps) {
        models::ForwardArgs forced = args;
        forced.layer_inputs = &t.hidden_states;
        parts = block_loss(t, student_->forward(ids, forced));
      } else {
        const models::ForwardOutput s = student_->forward(ids, args);
        parts = kd_loss(t, teacher_->lm_head_weight(), s, student_->lm_head_weight(), ids, cfg_.kd);
      }
    }
    // backward outside autocast, as torch.autocast prescribes (averaged over micro-steps; fp16:
    // times the loss scale, a power of two, so the fp16 gradients stay above underflow). On the
    // last micro-step the gradients are reduced from hooks while the backward runs.
    auto loss = parts.total / static_cast<double>(accum);
    if (scaler_) loss = loss * st.loss_scale;
    opt_->begin_backward(micro + 1 == accum);
    loss.backward();
    st.loss += parts.total.item<double>() / accum;
    st.kl += parts.kl.item<double>() / accum;
    st.hidden += parts.hidden.item<double>() / accum;
    st.ce += parts.ce.item<double>() / accum;
  }
  // sync: wait for the reductions; this rank now holds its share of the averaged gradients
  opt_->finish_backward();

  // NaN/inf loss: skip the update, stop after max_bad_steps in a row.
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

  // inf/NaN gradients on any rank skip the step on every rank. fp16: unscale first; an overflow
  // is the scaler's business, not a bad step. fp32/bf16: a bad step like a NaN loss.
  const auto grads = opt_->grads();
  const bool local_bad = scaler_ ? scaler_->unscale_grads_(grads) : !all_finite(grads);
  const bool bad = sync_.any(local_bad);
  if (scaler_) {
    st.overflow = bad;
    scaler_->update(bad);
  }
  bad_streak_ = bad && !scaler_ ? bad_streak_ + 1 : 0;
  OB_CHECK(bad_streak_ < cfg_.train.max_bad_steps, "training stopped: the gradients were NaN/inf for ", bad_streak_,
           " steps in a row at step ", step_, " (train.max_bad_steps=", cfg_.train.max_bad_steps,
           "); lower optim.lr or use train.precision=fp32");
  if (bad) {
    opt_->zero_grad();
    st.skipped = true;
  } else {
    // clip (on unscaled gradients)
    const double clip = cfg_.optim.grad_clip > 0 ? cfg_.optim.grad_clip : std::numeric_limits<double>::infinity();
    st.grad_norm = opt_->clip_grad_norm(clip);

    // schedule, optimizer step
    ScheduleOptions so;
    so.kind = cfg_.optim.schedule;
    so.warmup_steps = cfg_.optim.warmup_steps;
    so.total_steps = total_steps_;
    so.min_lr_ratio = cfg_.optim.min_lr_ratio;
    st.lr = cfg_.optim.lr * lr_factor(step_, so);
    opt_->step(st.lr);
    opt_->zero_grad();
    ++step_;
  }

  // log (rank means)
  st.step = step_;
  st.loss = sync_.mean(st.loss);
  st.kl = sync_.mean(st.kl);
  st.hidden = sync_.mean(st.hidden);
  st.ce = sync_.mean(st.ce);
  return st;
}

}  // namespace onebit::distill
