#include "onebit/models/opt.h"

#include <torch/torch.h>

#include <cmath>

#include "onebit/core/error.h"
#include "onebit/models/layers.h"
#include "onebit/nn/dense_linear.h"
#include "onebit/nn/replace.h"

namespace onebit::models {

using detail::AttnMask;
using detail::Proj;

namespace {

constexpr int64_t kPositionOffset = 2;  // OPTLearnedPositionalEmbedding's offset

torch::nn::LayerNorm make_ln(const ModelConfig& c) {
  return torch::nn::LayerNorm(
      torch::nn::LayerNormOptions({c.hidden_size}).eps(1e-5).elementwise_affine(c.layer_norm_elementwise_affine));
}

class OptAttentionImpl : public torch::nn::Module, public nn::SlotOwner {
 public:
  explicit OptAttentionImpl(const ModelConfig& c) : heads_(c.num_attention_heads), head_dim_(c.head_dim) {
    const auto H = c.hidden_size;
    k_ = detail::make_linear(*this, "k_proj", H, H, c.enable_bias);
    v_ = detail::make_linear(*this, "v_proj", H, H, c.enable_bias);
    q_ = detail::make_linear(*this, "q_proj", H, H, c.enable_bias);
    o_ = detail::make_linear(*this, "out_proj", H, H, c.enable_bias);
  }
  void rebind_slots() override {
    k_.bind(*this, "k_proj");
    v_.bind(*this, "v_proj");
    q_.bind(*this, "q_proj");
    o_.bind(*this, "out_proj");
  }
  torch::Tensor forward(const torch::Tensor& x, const AttnMask& mask, torch::Tensor* kc, torch::Tensor* vc) {
    const auto B = x.size(0), T = x.size(1);
    // transformers scales q before the product and attends with scale 1.
    const auto qkv = detail::project(x, {&q_, &k_, &v_});
    auto q = (qkv[0] * std::pow(static_cast<double>(head_dim_), -0.5)).view({B, T, heads_, head_dim_}).transpose(1, 2);
    auto k = qkv[1].view({B, T, heads_, head_dim_}).transpose(1, 2);
    auto v = qkv[2].view({B, T, heads_, head_dim_}).transpose(1, 2);
    return o_(detail::attend(q, k, v, mask, 1.0, kc, vc));
  }

 private:
  int64_t heads_, head_dim_;
  Proj k_, v_, q_, o_;
};

class OptDecoderLayerImpl : public torch::nn::Module, public nn::SlotOwner {
 public:
  explicit OptDecoderLayerImpl(const ModelConfig& c) : pre_ln_(c.do_layer_norm_before), act_(c.hidden_act) {
    OB_CHECK(act_ == "relu" || act_ == "gelu", "OPT activation_function '", act_, "' is not supported (relu, gelu)");
    self_attn = register_module("self_attn", std::make_shared<OptAttentionImpl>(c));
    self_attn_layer_norm = register_module("self_attn_layer_norm", make_ln(c));
    fc1_ = detail::make_linear(*this, "fc1", c.hidden_size, c.intermediate_size, c.enable_bias);
    fc2_ = detail::make_linear(*this, "fc2", c.intermediate_size, c.hidden_size, c.enable_bias);
    final_layer_norm = register_module("final_layer_norm", make_ln(c));
  }
  void rebind_slots() override {
    fc1_.bind(*this, "fc1");
    fc2_.bind(*this, "fc2");
  }
  torch::Tensor forward(const torch::Tensor& x, const AttnMask& mask, torch::Tensor* kc, torch::Tensor* vc) {
    auto h = pre_ln_ ? self_attn_layer_norm->forward(x) : x;
    h = x + self_attn->forward(h, mask, kc, vc);
    if (!pre_ln_) h = self_attn_layer_norm->forward(h);
    auto f = pre_ln_ ? final_layer_norm->forward(h) : h;
    f = fc1_(f);
    f = act_ == "relu" ? torch::relu(f) : torch::gelu(f);
    h = h + fc2_(f);
    if (!pre_ln_) h = final_layer_norm->forward(h);
    return h;
  }
  std::shared_ptr<OptAttentionImpl> self_attn;
  torch::nn::LayerNorm self_attn_layer_norm{nullptr}, final_layer_norm{nullptr};

 private:
  bool pre_ln_;
  std::string act_;
  Proj fc1_, fc2_;
};

class OptDecoderImpl : public torch::nn::Module {
 public:
  explicit OptDecoderImpl(const ModelConfig& c) {
    std::optional<int64_t> pad;
    if (c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size) pad = c.pad_token_id;
    embed_tokens = register_module("embed_tokens", detail::empty_embedding(c.vocab_size, c.word_embed_proj_dim, pad));
    embed_positions = register_module(
        "embed_positions", detail::empty_embedding(c.max_position_embeddings + kPositionOffset, c.hidden_size));
    if (c.do_layer_norm_before) final_layer_norm = register_module("final_layer_norm", make_ln(c));
    if (c.word_embed_proj_dim != c.hidden_size) {
      project_out = register_module("project_out", detail::empty_linear(c.hidden_size, c.word_embed_proj_dim, false));
      project_in = register_module("project_in", detail::empty_linear(c.word_embed_proj_dim, c.hidden_size, false));
    }
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      decoder.push_back(std::make_shared<OptDecoderLayerImpl>(c));
      layers->push_back(decoder.back());
    }
  }
  torch::nn::Embedding embed_tokens{nullptr}, embed_positions{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  torch::nn::Linear project_in{nullptr}, project_out{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<std::shared_ptr<OptDecoderLayerImpl>> decoder;
};

class OptModelImpl : public torch::nn::Module {
 public:
  explicit OptModelImpl(const ModelConfig& c) {
    decoder = register_module("decoder", std::make_shared<OptDecoderImpl>(c));
  }
  std::shared_ptr<OptDecoderImpl> decoder;
};

class OptForCausalLMImpl : public CausalLMImpl {
 public:
  explicit OptForCausalLMImpl(const ModelConfig& c) : cfg_(c) {
    model = register_module("model", std::make_shared<OptModelImpl>(c));
    if (!c.tie_word_embeddings)
      lm_head = register_module("lm_head", detail::empty_linear(c.word_embed_proj_dim, c.vocab_size, false));
  }

  const ModelConfig& config() const override { return cfg_; }
  ModelConfig& mutable_config() override { return cfg_; }
  torch::Tensor lm_head_weight() const override {
    return cfg_.tie_word_embeddings ? model->decoder->embed_tokens->weight : lm_head->weight;
  }
  void set_gradient_checkpointing(bool on) override { checkpointing_ = on; }

  ForwardOutput forward(const torch::Tensor& input_ids, const ForwardArgs& args) override {
    OB_CHECK(input_ids.dim() == 2, "input_ids must be [B, T], got ", input_ids.sizes());
    auto& dec = *model->decoder;
    const auto B = input_ids.size(0), T = input_ids.size(1);
    const auto device = input_ids.device();
    const auto place = detail::place(args, T, device);

    torch::Tensor pos = args.position_ids;
    if (pos.defined()) {
      pos = pos.to(device);
    } else if (args.attention_mask.defined()) {
      // transformers: cumsum(mask) * mask - 1, cut to the new tokens (padding -> -1).
      auto m = args.attention_mask.to(device).to(torch::kLong);
      pos = (m.cumsum(1) * m - 1).narrow(1, place.past, T);
    } else {
      pos = detail::default_positions(place, B, T, device);
    }
    auto x = dec.embed_tokens->forward(input_ids);
    if (dec.project_in) x = nn::dense_linear(x, dec.project_in->weight);
    auto h = x + dec.embed_positions->forward(pos + kPositionOffset);
    auto mask = detail::forward_mask(place, args, B, T, std::nullopt, device);

    ForwardOutput out;
    if (args.output_hidden_states) out.hidden_states.push_back(h);
    const auto layers = dec.decoder;
    h = detail::run_decoder(
        static_cast<int64_t>(layers.size()), h,
        [layers, mask](int64_t i, const torch::Tensor& x, torch::Tensor* k, torch::Tensor* v) {
          return layers[i]->forward(x, mask, k, v);
        },
        [&](int64_t i) { return layers[i]->parameters(); }, checkpointing_ && is_training(), args, out,
        layer_hooks());
    if (dec.final_layer_norm) h = dec.final_layer_norm->forward(h);
    if (dec.project_out) h = nn::dense_linear(h, dec.project_out->weight);
    if (args.output_hidden_states) out.hidden_states.push_back(h);
    out.last_hidden = h;
    if (args.compute_logits) out.logits = nn::dense_linear(h, lm_head_weight());
    return out;
  }

  std::shared_ptr<OptModelImpl> model;
  torch::nn::Linear lm_head{nullptr};

 private:
  ModelConfig cfg_;
  bool checkpointing_ = false;
};

}  // namespace

CausalLM make_opt(const ModelConfig& cfg) {
  OB_CHECK(cfg.model_type == "opt", "make_opt: model_type '", cfg.model_type, "' is not opt");
  return std::make_shared<OptForCausalLMImpl>(cfg);
}

}  // namespace onebit::models
