#include "onebit/models/layers.h"

#include <torch/torch.h>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "onebit/export/packed_linear.h"
#include "onebit/nn/dense_linear.h"
#include "onebit/nn/fused_ops.h"
#include "onebit/nn/onebit_linear.h"

namespace onebit::models::detail {

void Proj::bind(torch::nn::Module& owner, const std::string& name) {
  auto children = owner.named_children();
  OB_CHECK(children.contains(name), "module '", owner.name(), "' has no child '", name, "'");
  mod_ = children[name];
  if (auto lin = std::dynamic_pointer_cast<torch::nn::LinearImpl>(mod_)) {
    fn_ = [lin](const torch::Tensor& x) { return nn::dense_linear(x, lin->weight, lin->bias); };
    return;
  }
  if (auto ob = std::dynamic_pointer_cast<nn::OneBitLinearImpl>(mod_)) {
    fn_ = [ob](const torch::Tensor& x) { return ob->forward(x); };
    return;
  }
  if (auto pk = std::dynamic_pointer_cast<packed::PackedOneBitLinearImpl>(mod_)) {
    fn_ = [pk](const torch::Tensor& x) { return pk->forward(x); };
    return;
  }
  fail("projection '", name, "' is a ", mod_->name(), ", expected Linear, OneBitLinear or PackedOneBitLinear");
}

std::vector<torch::Tensor> project(const torch::Tensor& x, std::initializer_list<const Proj*> projs) {
  std::vector<const packed::PackedOneBitLinearImpl*> group;
  for (const Proj* p : projs)
    if (const auto* pk = dynamic_cast<const packed::PackedOneBitLinearImpl*>(p->module().get())) group.push_back(pk);
  if (group.size() == projs.size() && group.size() > 1)
    if (auto out = packed::forward_group(group, x)) return std::move(*out);
  std::vector<torch::Tensor> out;
  for (const Proj* p : projs) out.push_back((*p)(x));
  return out;
}

namespace {
// Constructed at 1x1 (a negligible default init), then given its real shape uninitialised.
struct EmptyLinearImpl : torch::nn::LinearImpl {
  EmptyLinearImpl(int64_t in, int64_t out, bool with_bias) : LinearImpl(torch::nn::LinearOptions(1, 1).bias(with_bias)) {
    options = torch::nn::LinearOptions(in, out).bias(with_bias);
    torch::NoGradGuard no_grad;
    weight.set_data(torch::empty({out, in}));
    if (with_bias) bias.set_data(torch::empty({out}));
  }
};
struct EmptyEmbeddingImpl : torch::nn::EmbeddingImpl {
  EmptyEmbeddingImpl(int64_t num, int64_t dim, std::optional<int64_t> padding_idx)
      : EmbeddingImpl(torch::nn::EmbeddingOptions(1, 1)) {
    options = torch::nn::EmbeddingOptions(num, dim);
    if (padding_idx) options.padding_idx(*padding_idx);
    torch::NoGradGuard no_grad;
    weight.set_data(torch::empty({num, dim}));
  }
};
}  // namespace

torch::nn::Linear empty_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(std::shared_ptr<torch::nn::LinearImpl>(std::make_shared<EmptyLinearImpl>(in, out, bias)));
}

torch::nn::Embedding empty_embedding(int64_t num, int64_t dim, std::optional<int64_t> padding_idx) {
  return torch::nn::Embedding(
      std::shared_ptr<torch::nn::EmbeddingImpl>(std::make_shared<EmptyEmbeddingImpl>(num, dim, padding_idx)));
}

Proj make_linear(torch::nn::Module& owner, const std::string& name, int64_t in, int64_t out, bool bias) {
  owner.register_module(name, empty_linear(in, out, bias));
  Proj p;
  p.bind(owner, name);
  return p;
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) { return nn::rms_norm(x, weight, eps); }

AttnMask build_mask(const torch::Tensor& attention_mask, int64_t batch, int64_t T, int64_t past,
                    std::optional<int64_t> sliding_window, torch::Device device) {
  const int64_t Tk = past + T;
  const bool window_active = sliding_window && Tk > *sliding_window;
  AttnMask m;
  if (!attention_mask.defined() && !window_active) {
    if (past == 0) {
      m.causal = true;
      return m;
    }
    if (T == 1) return m;
  }
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto q_pos = torch::arange(past, Tk, opts).unsqueeze(1);  // [T, 1]
  auto k_pos = torch::arange(0, Tk, opts).unsqueeze(0);     // [1, Tk]
  auto allowed = k_pos <= q_pos;
  if (window_active) allowed = allowed & ((q_pos - k_pos) < *sliding_window);
  allowed = allowed.unsqueeze(0).expand({batch, T, Tk});
  if (attention_mask.defined()) {
    OB_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == batch && attention_mask.size(1) == Tk,
             "attention_mask must be [B, past + T] = [", batch, ", ", Tk, "], got ", attention_mask.sizes());
    allowed = allowed & attention_mask.to(device).to(torch::kBool).unsqueeze(1);
    allowed = allowed | (k_pos == q_pos).unsqueeze(0);
  }
  m.mask = allowed.unsqueeze(1);
  return m;
}

Placement place(const ForwardArgs& args, int64_t T, torch::Device device) {
  Placement p;
  if (!args.cache) return p;
  if (!args.cache->is_static()) {
    p.past = args.cache->length();
    return p;
  }
  const auto& c = *args.cache;
  OB_CHECK(c.position.device() == device, "forward: the static KV cache is on ", c.position.device(),
           ", the input on ", device);
  p.slots = c.position + torch::arange(T, torch::dtype(torch::kLong).device(device));
  return p;
}

torch::Tensor default_positions(const Placement& p, int64_t B, int64_t T, torch::Device device) {
  if (p.slots.defined()) return p.slots.unsqueeze(0).expand({B, T});
  return torch::arange(p.past, p.past + T, torch::dtype(torch::kLong).device(device)).unsqueeze(0).expand({B, T});
}

AttnMask forward_mask(const Placement& p, const ForwardArgs& args, int64_t B, int64_t T,
                      std::optional<int64_t> sliding_window, torch::Device device) {
  if (!p.slots.defined()) return build_mask(args.attention_mask, B, T, p.past, sliding_window, device);
  OB_CHECK(!args.attention_mask.defined(), "forward: a static KV cache takes no attention_mask");
  const auto& c = *args.cache;
  const int64_t span = c.span > 0 ? c.span : c.capacity;
  const auto q = p.slots.unsqueeze(1);                                                        // [T, 1]
  const auto k = torch::arange(span, torch::dtype(torch::kLong).device(device)).unsqueeze(0);  // [1, span]
  auto allowed = k <= q;
  if (sliding_window) allowed = allowed & ((q - k) < *sliding_window);
  AttnMask m;
  m.mask = allowed.view({1, 1, T, span});
  m.slots = p.slots;
  return m;
}

namespace {
// Appends x [B, H, T, D] to a cache entry along dim 2. Without autograd the entry is a prefix
// view of a buffer with spare capacity (doubling), so decoding copies each key once instead of
// re-concatenating the whole cache every step.
torch::Tensor append_kv(torch::Tensor& cache, const torch::Tensor& x) {
  if (torch::GradMode::is_enabled() && (x.requires_grad() || (cache.defined() && cache.requires_grad()))) {
    cache = cache.defined() ? torch::cat({cache, x}, 2) : x;
    return cache;
  }
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  const int64_t len = cache.defined() ? cache.size(2) : 0;
  bool fits = false;
  if (cache.defined() && cache.stride(3) == 1 && cache.stride(2) == D && cache.stride(1) % D == 0 &&
      cache.stride(0) == H * cache.stride(1)) {
    const int64_t cap = cache.stride(1) / D;
    const int64_t need = cache.storage_offset() + B * cache.stride(0);
    fits = len + T <= cap && need * static_cast<int64_t>(cache.element_size()) <=
                                 static_cast<int64_t>(cache.storage().nbytes());
  }
  if (!fits) {
    const int64_t cap = std::max<int64_t>(2 * (len + T), 64);
    auto buf = torch::empty({B, H, cap, D}, x.options());
    if (len > 0) buf.narrow(2, 0, len).copy_(cache);
    cache = buf.narrow(2, 0, len);
  }
  cache = cache.as_strided({B, H, len + T, D}, cache.strides(), cache.storage_offset());
  cache.narrow(2, len, T).copy_(x);
  return cache;
}
}  // namespace

torch::Tensor attend(torch::Tensor q, torch::Tensor k, torch::Tensor v, const AttnMask& m, double scale,
                     torch::Tensor* k_cache, torch::Tensor* v_cache, const Rope* rope) {
  if (k_cache && m.slots.defined()) {  // static: write at the slots, attend to the mask's span
    if (rope) {
      q = nn::rotary_store_kv(q, k, v, rope->cos, rope->sin, *k_cache, *v_cache, m.slots);
    } else {
      k_cache->index_copy_(2, m.slots, k);
      v_cache->index_copy_(2, m.slots, v);
    }
    k = k_cache->narrow(2, 0, m.mask.size(3));
    v = v_cache->narrow(2, 0, m.mask.size(3));
  } else {
    if (rope) {
      q = nn::rotary(q, rope->cos, rope->sin);
      k = nn::rotary(k, rope->cos, rope->sin);
    }
    if (k_cache) {
      k = append_kv(*k_cache, k);
      v = append_kv(*v_cache, v);
    }
  }
  return nn::attention(q, k, v, m.mask, m.causal, scale);
}

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using LayerFn = std::function<torch::Tensor(const torch::Tensor&)>;

// Keeps the layer closure alive in the autograd context until backward.
struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(LayerFn f) : fn(std::move(f)) {}
  LayerFn fn;
};

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const LayerFn* fn, const torch::Tensor& x,
                               torch::TensorList params) {
    // apply() runs this with grad disabled, so fn keeps no activations.
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<FnHolder>(*fn));
    ctx->save_for_backward({x});
    std::vector<torch::Tensor> kept(params.begin(), params.end());
    ctx->saved_data["params"] = kept;
    // The recompute in backward must see the forward's autocast state (backward runs outside it).
    const auto ac = autocast_dtype(x.device().type());
    ctx->saved_data["autocast"] = ac ? static_cast<int64_t>(*ac) : int64_t(-1);
    // And compute what this forward computes: the op sequences (no fused inference passes).
    const nn::UnfusedScope unfused;
    return (*fn)(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto holder = c10::static_intrusive_pointer_cast<FnHolder>(ctx->saved_data["fn"].toCapsule());
    const LayerFn* fn = &holder->fn;
    auto x = ctx->get_saved_variables()[0];
    auto params = ctx->saved_data["params"].toTensorVector();
    auto x_in = x.detach().requires_grad_(x.requires_grad());
    const int64_t ac = ctx->saved_data["autocast"].toInt();
    torch::Tensor out;
    {
      torch::AutoGradMode grad_on(true);
      // Autocast only around the recompute: its gradients below run without it, as in forward.
      std::optional<AutocastGuard> autocast;
      if (ac >= 0) autocast.emplace(x.device().type(), static_cast<c10::ScalarType>(ac));
      out = (*fn)(x_in);
    }
    std::vector<torch::Tensor> inputs;
    if (x.requires_grad()) inputs.push_back(x_in);
    for (auto& p : params)
      if (p.requires_grad()) inputs.push_back(p);
    variable_list grads = inputs.empty() ? variable_list{}
                                         : torch::autograd::grad({out}, inputs, {grad_out[0]},
                                                                 /*retain_graph=*/false,
                                                                 /*create_graph=*/false, /*allow_unused=*/true);
    variable_list result;
    result.reserve(2 + params.size());
    size_t gi = 0;
    result.emplace_back();  // fn
    result.push_back(x.requires_grad() ? grads[gi++] : torch::Tensor());
    for (auto& p : params) result.push_back(p.requires_grad() ? grads[gi++] : torch::Tensor());
    return result;
  }
};
}  // namespace

torch::Tensor checkpoint(const LayerFn& fn, const torch::Tensor& x, const std::vector<torch::Tensor>& params) {
  return CheckpointFunction::apply(&fn, x, torch::TensorList(params));
}

namespace {
// A forward's cache: one slot per layer (a dynamic cache grows to L; a static one must have L).
void size_cache(int64_t L, const ForwardArgs& args) {
  if (args.cache && !args.cache->is_static()) {
    args.cache->k.resize(L);
    args.cache->v.resize(L);
  }
  OB_CHECK(!args.cache || !args.cache->is_static() || static_cast<int64_t>(args.cache->k.size()) == L,
           "forward: the static KV cache has ", args.cache ? args.cache->k.size() : 0, " layers, the model ", L);
}
torch::Tensor* cache_k(const ForwardArgs& args, int64_t i) { return args.cache ? &args.cache->k[i] : nullptr; }
torch::Tensor* cache_v(const ForwardArgs& args, int64_t i) { return args.cache ? &args.cache->v[i] : nullptr; }
// After the layers: a static cache's position moves past the T new tokens.
void advance_cache(const ForwardArgs& args, int64_t T) {
  if (args.cache && args.cache->is_static()) args.cache->position.add_(T);
}
}  // namespace

bool can_defer(const ForwardArgs& args, const LayerHooks* hooks) {
  return !torch::GradMode::is_enabled() && !args.output_hidden_states && !args.layer_inputs && hooks == nullptr;
}

std::pair<torch::Tensor, torch::Tensor> run_decoder_deferred(int64_t L, const torch::Tensor& h,
                                                             const DeferredLayerFn& layer, const ForwardArgs& args) {
  OB_CHECK(can_defer(args, nullptr), "run_decoder_deferred: not for this forward (grad, hidden states or layer inputs)");
  size_cache(L, args);
  std::pair<torch::Tensor, torch::Tensor> x{h, torch::Tensor()};
  for (int64_t i = 0; i < L; ++i) x = layer(i, x.first, x.second, cache_k(args, i), cache_v(args, i));
  advance_cache(args, h.size(1));
  return x;
}

torch::Tensor run_decoder(int64_t L, torch::Tensor h, const DecoderLayerFn& layer,
                          const std::function<std::vector<torch::Tensor>(int64_t)>& params, bool checkpointing,
                          const ForwardArgs& args, ForwardOutput& out, LayerHooks* hooks) {
  size_cache(L, args);
  const int64_t T = h.size(1);
  const bool ckpt = checkpointing && torch::GradMode::is_enabled() && !args.cache;
  OB_CHECK(!args.layer_inputs || static_cast<int64_t>(args.layer_inputs->size()) >= L, "forward: layer_inputs has ",
           args.layer_inputs ? args.layer_inputs->size() : 0, " tensors for ", L, " decoder layers");
  for (int64_t i = 0; i < L; ++i) {
    if (args.layer_inputs) h = (*args.layer_inputs)[i].detach().to(h.scalar_type());
    if (hooks) hooks->before_layer(i);
    if (ckpt) {
      // By value: backward runs this closure after forward has returned.
      h = checkpoint([layer, i](const torch::Tensor& x) { return layer(i, x, nullptr, nullptr); }, h, params(i));
    } else {
      h = layer(i, h, cache_k(args, i), cache_v(args, i));
    }
    if (hooks) hooks->after_layer(i, h);
    if (args.output_hidden_states && i + 1 < L) out.hidden_states.push_back(h);
  }
  advance_cache(args, T);
  return h;
}

void init_weights(torch::nn::Module& root, double std) {
  torch::NoGradGuard no_grad;
  for (auto& mod : root.modules(/*include_self=*/true)) {
    if (auto* lin = dynamic_cast<torch::nn::LinearImpl*>(mod.get())) {
      lin->weight.normal_(0.0, std);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(mod.get())) {
      emb->weight.normal_(0.0, std);
      if (emb->options.padding_idx()) emb->weight[*emb->options.padding_idx()].zero_();
    }
  }
}

}  // namespace onebit::models::detail
