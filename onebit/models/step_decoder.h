// Decoding one token at a time at fixed shapes: a static KV cache (causal_lm.h) and, on CUDA,
// each one-token step captured once in a CUDA graph and replayed. A 1-bit layer reads its
// weights in about a microsecond, so launching the few hundred kernels of a decode step one by
// one costs more than the step's arithmetic; a graph launches them all at once.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>

#include "onebit/models/causal_lm.h"

namespace onebit::models {

// Feeds `ids` [B, T] through `model` with `cache` (read and appended) and returns the last
// position's logits [B, V] in fp32: the vocabulary projection of that position only. One
// decode step of every mode (generate's dynamic cache, StepDecoder's static one).
torch::Tensor last_position_logits(CausalLMImpl& model, const torch::Tensor& ids, KVCache& cache);

class StepDecoder {
 public:
  // `batch` rows of up to `capacity` positions (prompt + generated) for `model`, on the device
  // and in the dtype of its output projection. Attention reads the first `span` slots of the
  // cache, span = the filled length rounded up to a power of two (at least 64, at most the
  // capacity), so a step costs what the sequence needs, not the capacity. cuda_graph: replay
  // steps from CUDA graphs, one per span, captured when first needed (the model must be on a
  // CUDA device; the very first step runs eagerly as the warm-up). The model must stay
  // unchanged while the decoder lives.
  StepDecoder(CausalLMImpl& model, int64_t batch, int64_t capacity, bool cuda_graph);
  ~StepDecoder();
  StepDecoder(const StepDecoder&) = delete;
  StepDecoder& operator=(const StepDecoder&) = delete;

  // Runs the prompts [batch, T0] (eagerly) from an empty cache; returns the last position's
  // logits [batch, V] in fp32.
  torch::Tensor prefill(const torch::Tensor& prompts);
  // Feeds one token per row ([batch] or [batch, 1]) and returns the logits [batch, V] (fp32) of
  // the new position. With a graph the result is the graph's output buffer: valid until the
  // next step.
  torch::Tensor step(const torch::Tensor& tokens);

  int64_t length() const { return length_; }  // positions filled (host count, no device read)
  int64_t capacity() const { return cache_.capacity; }
  bool uses_graph() const { return graph_ != nullptr; }

 private:
  void check_room(int64_t T) const;
  int64_t span_for(int64_t length) const;

  struct Graph;
  CausalLMImpl& model_;
  KVCache cache_;
  torch::Tensor ids_;  // [batch, 1]: the step's input, fixed address (the graphs read it)
  int64_t batch_, length_ = 0, steps_ = 0;
  std::unique_ptr<Graph> graph_;
};

}  // namespace onebit::models
