// CausalLM: the one forward API that every architecture (LLaMA family, OPT) implements.
// Hugging Face semantics throughout: hidden_states[0] = embedding output, hidden_states[i] =
// output of decoder layer i (1..L-1), hidden_states[L] = after the final norm.
#pragma once
#include <torch/types.h>
#include <torch/nn/module.h>

#include <memory>
#include <vector>

#include "onebit/core/error.h"
#include "onebit/models/model_config.h"

namespace onebit::models {

// Per-layer key/value cache for incremental decoding. Tensors are [B, n_kv_heads, T, head_dim].
// Dynamic (the default): without autograd they are prefix views of buffers with spare capacity
// that later forwards write into: copies of a KVCache share that storage, so clone the tensors
// to branch from a common prefix.
// Static (make_static_cache): k/v are [B, n_kv_heads, capacity, head_dim] buffers allocated once
// and `position` is a one-element long tensor on their device holding how many positions are
// filled. A forward writes its T keys/values at position .. position+T−1, attends to the first
// `span` slots (all when 0) with the unfilled ones masked and advances position by T, without
// reading position on the host: shapes and addresses stay fixed, so a decode step can be
// captured in a CUDA graph (onebit/models/step_decoder.h). The caller keeps position + T within
// capacity and within span: keys written past the span are not attended to.
struct KVCache {
  std::vector<torch::Tensor> k, v;
  torch::Tensor position;  // static caches only
  int64_t capacity = 0;    // static caches only
  int64_t span = 0;        // static caches only
  bool is_static() const { return position.defined(); }
  // Positions filled (a static cache reads its position from the device).
  int64_t length() const {
    if (is_static()) return position.item<int64_t>();
    return k.empty() || !k[0].defined() ? 0 : k[0].size(2);
  }
  void clear() {
    k.clear();
    v.clear();
    position = torch::Tensor();
    capacity = span = 0;
  }
};

// A static cache for `batch` rows of up to `capacity` positions of a model with config `c`,
// zero-filled (masked slots must hold finite values: a masked NaN would still poison the sum).
KVCache make_static_cache(const ModelConfig& c, int64_t batch, int64_t capacity, const torch::TensorOptions& options);

struct ForwardArgs {
  // [B, T_past + T] with 1 = attend, 0 = padding; undefined = all ones (no padding).
  torch::Tensor attention_mask;
  // [B, T] absolute positions; undefined = cache length + arange(T) (LLaMA) or derived
  // from attention_mask (OPT, as transformers does).
  torch::Tensor position_ids;
  KVCache* cache = nullptr;            // non-null: read and append keys/values
  bool output_hidden_states = false;   // fill ForwardOutput::hidden_states (L+1 tensors)
  bool compute_logits = true;          // false: skip lm_head (see CausalLMImpl::lm_head)
  // Teacher forcing of the decoder (block-wise distillation): layer i reads layer_inputs[i]
  // (cast to the running dtype) instead of layer i−1's output, so each layer sees a given input,
  // e.g. the teacher's hidden_states[0..L−1]. At least L entries; nullptr = off.
  const std::vector<torch::Tensor>* layer_inputs = nullptr;
};

struct ForwardOutput {
  torch::Tensor logits;                      // [B, T, V] (undefined if !compute_logits)
  torch::Tensor last_hidden;                 // [B, T, H] after the final norm (and OPT project_out)
  std::vector<torch::Tensor> hidden_states;  // L+1 entries when requested
};

// Called around every decoder layer of a forward: ZeRO-3 parameter gathering
// (onebit/dist/param_sync.h) all-gathers a layer's sharded tensors before it runs and frees them
// after; a backward reaches layer i when `out`'s gradient is computed.
struct LayerHooks {
  virtual ~LayerHooks() = default;
  virtual void before_layer(int64_t i) = 0;
  virtual void after_layer(int64_t i, const torch::Tensor& out) = 0;
};

class CausalLMImpl : public torch::nn::Module {
 public:
  ~CausalLMImpl() override = default;
  virtual ForwardOutput forward(const torch::Tensor& input_ids, const ForwardArgs& args = {}) = 0;
  virtual const ModelConfig& config() const = 0;
  // For onebit's own model transformations (to_onebit marks the config as a student).
  // Models that cannot be transformed keep the default.
  virtual ModelConfig& mutable_config() { fail("this model's config cannot be modified"); }
  // The output projection weight [V, H'] (tied or not): logits = last_hidden · Wᵀ.
  virtual torch::Tensor lm_head_weight() const = 0;
  // Recompute each decoder layer in backward instead of storing its activations.
  virtual void set_gradient_checkpointing(bool on) = 0;
  // Hooks around every decoder layer of every forward (nullptr: none). Not owned.
  void set_layer_hooks(LayerHooks* hooks) { layer_hooks_ = hooks; }
  LayerHooks* layer_hooks() const { return layer_hooks_; }

 private:
  LayerHooks* layer_hooks_ = nullptr;
};
using CausalLM = std::shared_ptr<CausalLMImpl>;

}  // namespace onebit::models
