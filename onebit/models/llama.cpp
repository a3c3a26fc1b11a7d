#include "onebit/models/llama.h"

#include <torch/torch.h>

#include <cmath>

#include "onebit/core/error.h"
#include "onebit/models/layers.h"
#include "onebit/nn/dense_linear.h"
#include "onebit/nn/fused_ops.h"
#include "onebit/nn/replace.h"

namespace onebit::models {

using detail::AttnMask;
using detail::Proj;
using detail::RMSNormImpl;

torch::Tensor rope_inv_freq(const ModelConfig& cfg) {
  const int64_t dim = cfg.head_dim;
  // Same op sequence as transformers' _compute_*_parameters, in fp32.
  auto exponent = torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat32) / static_cast<double>(dim);
  auto inv_freq = torch::reciprocal(torch::pow(cfg.rope_theta, exponent));
  const auto& rs = cfg.rope_scaling;
  if (rs.type == "linear") {
    inv_freq = inv_freq / rs.factor;
  } else if (rs.type == "llama3") {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    auto wavelen = (2 * M_PI) / inv_freq;
    auto scaled = torch::where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq);
    auto smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq = torch::where(medium, smoothed, scaled);
  }
  return inv_freq;
}

namespace {

struct LayerCtx {
  detail::Rope rope;  // [B, 1, T, D]
  AttnMask mask;
};

class LlamaAttentionImpl : public torch::nn::Module, public nn::SlotOwner {
 public:
  explicit LlamaAttentionImpl(const ModelConfig& c)
      : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
    q_ = detail::make_linear(*this, "q_proj", c.hidden_size, heads_ * head_dim_, c.attention_bias);
    k_ = detail::make_linear(*this, "k_proj", c.hidden_size, kv_heads_ * head_dim_, c.attention_bias);
    v_ = detail::make_linear(*this, "v_proj", c.hidden_size, kv_heads_ * head_dim_, c.attention_bias);
    // Qwen2 biases q/k/v only; LLaMA's attention_bias covers o_proj too.
    o_ = detail::make_linear(*this, "o_proj", heads_ * head_dim_, c.hidden_size,
                             c.attention_bias && c.model_type != "qwen2");
  }
  void rebind_slots() override {
    q_.bind(*this, "q_proj");
    k_.bind(*this, "k_proj");
    v_.bind(*this, "v_proj");
    o_.bind(*this, "o_proj");
  }
  torch::Tensor forward(const torch::Tensor& x, const LayerCtx& ctx, torch::Tensor* kc, torch::Tensor* vc) {
    const auto B = x.size(0), T = x.size(1);
    const auto qkv = detail::project(x, {&q_, &k_, &v_});
    auto q = qkv[0].view({B, T, heads_, head_dim_}).transpose(1, 2);  // (RoPE: in attend, with the cache writes)
    auto k = qkv[1].view({B, T, kv_heads_, head_dim_}).transpose(1, 2);
    auto v = qkv[2].view({B, T, kv_heads_, head_dim_}).transpose(1, 2);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
    auto out = detail::attend(q, k, v, ctx.mask, scale, kc, vc, &ctx.rope);
    return o_(out);
  }

 private:
  int64_t heads_, kv_heads_, head_dim_;
  Proj q_, k_, v_, o_;
};

class LlamaMLPImpl : public torch::nn::Module, public nn::SlotOwner {
 public:
  explicit LlamaMLPImpl(const ModelConfig& c) {
    OB_CHECK(c.hidden_act == "silu", "hidden_act '", c.hidden_act, "' is not supported (only silu)");
    gate_ = detail::make_linear(*this, "gate_proj", c.hidden_size, c.intermediate_size, c.mlp_bias);
    up_ = detail::make_linear(*this, "up_proj", c.hidden_size, c.intermediate_size, c.mlp_bias);
    down_ = detail::make_linear(*this, "down_proj", c.intermediate_size, c.hidden_size, c.mlp_bias);
  }
  void rebind_slots() override {
    gate_.bind(*this, "gate_proj");
    up_.bind(*this, "up_proj");
    down_.bind(*this, "down_proj");
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto gu = detail::project(x, {&gate_, &up_});
    return down_(nn::silu_mul(gu[0], gu[1]));
  }

 private:
  Proj gate_, up_, down_;
};

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const ModelConfig& c) {
    self_attn = register_module("self_attn", std::make_shared<LlamaAttentionImpl>(c));
    mlp = register_module("mlp", std::make_shared<LlamaMLPImpl>(c));
    input_layernorm = register_module("input_layernorm", std::make_shared<RMSNormImpl>(c.hidden_size, c.rms_norm_eps));
    post_attention_layernorm =
        register_module("post_attention_layernorm", std::make_shared<RMSNormImpl>(c.hidden_size, c.rms_norm_eps));
  }
  torch::Tensor forward(const torch::Tensor& x, const LayerCtx& ctx, torch::Tensor* kc, torch::Tensor* vc) {
    auto [h, mlp_out] = forward_deferred(x, torch::Tensor(), ctx, kc, vc);
    return h + mlp_out;
  }
  // The layer on x + pending (pending undefined: x), its output h + mlp_out unsummed
  // (detail::DeferredLayerFn): the input's add in the input norm's pass.
  std::pair<torch::Tensor, torch::Tensor> forward_deferred(const torch::Tensor& x, const torch::Tensor& pending,
                                                           const LayerCtx& ctx, torch::Tensor* kc, torch::Tensor* vc) {
    const auto& in = *input_layernorm;
    const auto& post = *post_attention_layernorm;
    auto [x0, normed0] = pending.defined() ? nn::add_rms_norm(x, pending, in.weight, in.eps)
                                           : std::pair{x, input_layernorm->forward(x)};
    auto [h, normed] = nn::add_rms_norm(x0, self_attn->forward(normed0, ctx, kc, vc), post.weight,
                                        post.eps);  // h = x + attention, and its norm
    return {h, mlp->forward(normed)};
  }
  std::shared_ptr<LlamaAttentionImpl> self_attn;
  std::shared_ptr<LlamaMLPImpl> mlp;
  std::shared_ptr<RMSNormImpl> input_layernorm, post_attention_layernorm;
};

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const ModelConfig& c) {
    embed_tokens = register_module("embed_tokens", detail::empty_embedding(c.vocab_size, c.hidden_size));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      decoder.push_back(std::make_shared<LlamaDecoderLayerImpl>(c));
      layers->push_back(decoder.back());
    }
    norm = register_module("norm", std::make_shared<RMSNormImpl>(c.hidden_size, c.rms_norm_eps));
  }
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<std::shared_ptr<LlamaDecoderLayerImpl>> decoder;
  std::shared_ptr<RMSNormImpl> norm;
};

class LlamaForCausalLMImpl : public CausalLMImpl {
 public:
  explicit LlamaForCausalLMImpl(const ModelConfig& c) : cfg_(c), inv_freq_(rope_inv_freq(c)) {
    model = register_module("model", std::make_shared<LlamaModelImpl>(c));
    if (!c.tie_word_embeddings)
      lm_head = register_module("lm_head", detail::empty_linear(c.hidden_size, c.vocab_size, false));
  }

  const ModelConfig& config() const override { return cfg_; }
  ModelConfig& mutable_config() override { return cfg_; }
  torch::Tensor lm_head_weight() const override {
    return cfg_.tie_word_embeddings ? model->embed_tokens->weight : lm_head->weight;
  }
  void set_gradient_checkpointing(bool on) override { checkpointing_ = on; }

  ForwardOutput forward(const torch::Tensor& input_ids, const ForwardArgs& args) override {
    OB_CHECK(input_ids.dim() == 2, "input_ids must be [B, T], got ", input_ids.sizes());
    const auto B = input_ids.size(0), T = input_ids.size(1);
    const auto device = input_ids.device();
    const auto place = detail::place(args, T, device);
    auto h = model->embed_tokens->forward(input_ids);

    auto pos = args.position_ids.defined() ? args.position_ids.to(device) : detail::default_positions(place, B, T, device);
    // Kept on the model's device (a host-to-device copy per forward could not be captured in a CUDA graph).
    if (inv_freq_.device() != device) inv_freq_ = inv_freq_.to(device);
    LayerCtx ctx;
    auto freqs = pos.to(torch::kFloat32).unsqueeze(-1) * inv_freq_.view({1, 1, -1});
    auto emb = torch::cat({freqs, freqs}, -1);
    ctx.rope.cos = emb.cos().to(h.scalar_type()).unsqueeze(1);
    ctx.rope.sin = emb.sin().to(h.scalar_type()).unsqueeze(1);
    ctx.mask = detail::forward_mask(place, args, B, T, cfg_.sliding_window, device);

    ForwardOutput out;
    if (args.output_hidden_states) out.hidden_states.push_back(h);
    const auto layers = model->decoder;
    const auto L = static_cast<int64_t>(layers.size());
    if (detail::can_defer(args, layer_hooks())) {  // inference: each residual add in the next norm's pass
      auto [hl, pending] = detail::run_decoder_deferred(
          L, h,
          [&layers, &ctx](int64_t i, const torch::Tensor& x, const torch::Tensor& p, torch::Tensor* k,
                          torch::Tensor* v) { return layers[i]->forward_deferred(x, p, ctx, k, v); },
          args);
      h = pending.defined() ? nn::add_rms_norm(hl, pending, model->norm->weight, model->norm->eps).second
                            : model->norm->forward(hl);  // (no layers)
    } else {
      h = detail::run_decoder(
          L, h,
          [layers, ctx](int64_t i, const torch::Tensor& x, torch::Tensor* k, torch::Tensor* v) {
            return layers[i]->forward(x, ctx, k, v);
          },
          [&](int64_t i) { return layers[i]->parameters(); }, checkpointing_ && is_training(), args, out,
          layer_hooks());
      h = model->norm->forward(h);
    }
    if (args.output_hidden_states) out.hidden_states.push_back(h);
    out.last_hidden = h;
    if (args.compute_logits) out.logits = nn::dense_linear(h, lm_head_weight());
    return out;
  }

  std::shared_ptr<LlamaModelImpl> model;
  torch::nn::Linear lm_head{nullptr};

 private:
  ModelConfig cfg_;
  torch::Tensor inv_freq_;
  bool checkpointing_ = false;
};

}  // namespace

CausalLM make_llama(const ModelConfig& cfg) {
  OB_CHECK(cfg.is_llama_family(), "make_llama: model_type '", cfg.model_type, "' is not in the LLaMA family");
  return std::make_shared<LlamaForCausalLMImpl>(cfg);
}

}  // namespace onebit::models
