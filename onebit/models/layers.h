// Building blocks shared by the LLaMA family and OPT: swappable projections, RMSNorm,
// attention masks, scaled-dot-product attention with a KV cache, activation checkpointing.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "onebit/models/causal_lm.h"

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace onebit::models::detail {

// A projection child held by name: replace_linears swaps the child (Linear -> OneBitLinear or
// PackedOneBitLinear)
// and the owner's rebind_slots() calls bind() again so the call reaches the new module.
class Proj {
 public:
  void bind(torch::nn::Module& owner, const std::string& name);
  torch::Tensor operator()(const torch::Tensor& x) const { return fn_(x); }
  const std::shared_ptr<torch::nn::Module>& module() const { return mod_; }

 private:
  std::shared_ptr<torch::nn::Module> mod_;
  std::function<torch::Tensor(const torch::Tensor&)> fn_;
};

// The projections of one input x: in one call where they can share it (all PackedOneBitLinear:
// packed::forward_group), else one by one. Same results either way.
std::vector<torch::Tensor> project(const torch::Tensor& x, std::initializer_list<const Proj*> projs);

// torch::nn::Linear / Embedding of the given shape whose tensors are allocated but not
// initialised (torch::empty: on CPU no page is touched until a value is written), so building
// a model costs neither a default init pass nor resident memory. The loader fills them from
// the file; build_model initialises them with init_weights.
torch::nn::Linear empty_linear(int64_t in, int64_t out, bool bias);
torch::nn::Embedding empty_embedding(int64_t num, int64_t dim, std::optional<int64_t> padding_idx = std::nullopt);

// Registers an empty_linear child `name` [out, in] (bias optional) and returns it as a Proj.
Proj make_linear(torch::nn::Module& owner, const std::string& name, int64_t in, int64_t out, bool bias);

// HF LlamaRMSNorm: computed in fp32, weight applied after casting back to the input dtype
// (nn::rms_norm: one pass when grad mode is off).
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};

// Attention mask for one forward: either `causal` (no past, no padding: SDPA's is_causal),
// none (a single new token with nothing masked), or an explicit boolean mask [B, 1, T, Tk]
// (true = attend).
// With a static KV cache, `slots` [T] (long, on the device) are the cache positions this
// forward's keys and values are written to, and the mask [1, 1, T, span] covers the first
// `span` slots of the cache, which attention then reads.
struct AttnMask {
  bool causal = false;
  torch::Tensor mask;
  torch::Tensor slots;
};

// Where a forward's T new tokens sit: after `past` positions of a dynamic cache (0 without
// one), or, with a static cache, at `slots` = its position + arange(T) on the device (no host
// read; `past` is then unknown and 0).
struct Placement {
  int64_t past = 0;
  torch::Tensor slots;
};
Placement place(const ForwardArgs& args, int64_t T, torch::Device device);
// Default position ids [B, T]: past + arange(T), or the static slots.
torch::Tensor default_positions(const Placement& p, int64_t B, int64_t T, torch::Device device);
// The forward's mask: build_mask below for a dynamic cache or none; for a static cache
// [1, 1, T, span]: each new token attends to the slots up to itself (and within the sliding
// window). A static cache takes no attention_mask (its rows are all real tokens).
AttnMask forward_mask(const Placement& p, const ForwardArgs& args, int64_t B, int64_t T,
                      std::optional<int64_t> sliding_window, torch::Device device);
// attention_mask: [B, past + T] of 1/0 or undefined. Padded query rows attend to themselves
// so that no softmax row is empty (their outputs are never used).
AttnMask build_mask(const torch::Tensor& attention_mask, int64_t batch, int64_t T, int64_t past,
                    std::optional<int64_t> sliding_window, torch::Device device);

// RoPE tables of a forward's positions, cos and sin [B or 1, 1, T, D] (LLaMA family).
struct Rope {
  torch::Tensor cos, sin;
};

// q [B, H, T, D]; k, v [B, Hkv, T, D] of the new tokens. Appends k, v to the cache slots when
// given (a static cache: writes them at m.slots), then attends (grouped-query when Hkv < H).
// With `rope`, q and k are still unrotated and get RoPE here (with a static cache in the same
// pass as both cache writes: nn::rotary_store_kv). Returns [B, T, H·D].
torch::Tensor attend(torch::Tensor q, torch::Tensor k, torch::Tensor v, const AttnMask& m, double scale,
                     torch::Tensor* k_cache, torch::Tensor* v_cache, const Rope* rope = nullptr);

// Runs fn(x) without keeping its activations; backward recomputes fn with grad enabled and
// returns gradients for x and for every tensor in `params` that requires grad.
torch::Tensor checkpoint(const std::function<torch::Tensor(const torch::Tensor&)>& fn,
                         const torch::Tensor& x, const std::vector<torch::Tensor>& params);

// One decoder layer: layer(i, x, k_cache, v_cache) -> output (caches null when not caching).
// It must own what it captures (copy it; checkpointing calls it again in backward).
using DecoderLayerFn =
    std::function<torch::Tensor(int64_t i, const torch::Tensor& x, torch::Tensor* k, torch::Tensor* v)>;

// Runs the L decoder layers on h, shared by every architecture: sizes args.cache to L slots
// (a static cache: advances its position by T after the layers),
// checkpoints each layer when `checkpointing` (and grad is on and no cache is used; params(i)
// gives layer i's parameters), appends hidden states 1..L-1 to out when requested, and calls
// `hooks` (when set) around each layer.
torch::Tensor run_decoder(int64_t L, torch::Tensor h, const DecoderLayerFn& layer,
                          const std::function<std::vector<torch::Tensor>(int64_t)>& params, bool checkpointing,
                          const ForwardArgs& args, ForwardOutput& out, LayerHooks* hooks = nullptr);

// A decoder layer whose output h + delta is returned unsummed: layer(i, x, pending, k, v) ->
// {h, delta} for the input x + pending (pending undefined: x alone). The next layer adds the two
// in its input norm (nn::add_rms_norm: one pass for the add and the norm), the model in its
// final norm.
using DeferredLayerFn = std::function<std::pair<torch::Tensor, torch::Tensor>(
    int64_t i, const torch::Tensor& x, const torch::Tensor& pending, torch::Tensor* k, torch::Tensor* v)>;
// Whether a forward may run its layers deferred: inference (grad off) that asks for no hidden
// states, feeds no layer inputs and has no layer hooks.
bool can_defer(const ForwardArgs& args, const LayerHooks* hooks);
// run_decoder for such layers (and such a forward): {h, delta} of the last layer.
std::pair<torch::Tensor, torch::Tensor> run_decoder_deferred(int64_t L, const torch::Tensor& h,
                                                             const DeferredLayerFn& layer, const ForwardArgs& args);

// HF weight init: normal(0, std) for linears/embeddings, zero biases (norms keep ones).
void init_weights(torch::nn::Module& root, double std);

}  // namespace onebit::models::detail
