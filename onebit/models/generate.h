// Batched autoregressive generation with the KV cache.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "onebit/models/causal_lm.h"

namespace onebit::models {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 1.0;   // <= 0 means greedy
  int64_t top_k = 0;          // 0 = off
  double top_p = 1.0;         // 1 = off
  uint64_t seed = 0;
  // The first `greedy_prefix` generated tokens of every row are chosen greedily, the rest by
  // the sampling settings above (LLM-QAT self-sampling uses 2-4; see method.md §4).
  int64_t greedy_prefix = 0;
  int64_t eos_token_id = -1;  // >= 0: a row stops after emitting it (others continue)
  // With eos_token_id: every this many tokens, rows that have stopped leave the batch (and its
  // KV cache), and generation ends once none is left. This is the only read from the device
  // while generating (B flags); everything else, sampling included, stays on the model's device.
  int64_t drop_every = 8;
  // How the steps run. Dynamic: a growing KV cache (stopped rows leave it, above). Static: a
  // cache of T0 + max_new_tokens positions allocated once, fixed shapes (stopped rows stay in
  // the batch, emitting eos; the output is the same). Graph: Static with every one-token step
  // replayed from a CUDA graph (CUDA only; onebit/models/step_decoder.h). Auto: Graph on CUDA,
  // Dynamic elsewhere.
  enum class Decode { Auto, Dynamic, Static, Graph };
  Decode decode = Decode::Auto;
};

// "auto" | "dynamic" | "static" | "graph"; `what` names the flag or key in the error.
GenerateOptions::Decode parse_decode(const std::string& s, const std::string& what);
const char* to_string(GenerateOptions::Decode d);
// The mode `d` means on `device`: Auto is Graph on CUDA, Dynamic elsewhere; others unchanged.
GenerateOptions::Decode resolve_decode(GenerateOptions::Decode d, const torch::Device& device);

// prompts: [B, T0] token ids (same length; T0 >= 1). Returns [B, T0 + n] with n <= max_new_tokens
// the length of the longest row; rows that stopped at EOS are padded with eos after it. Sampling
// draws from a generator of the model's device seeded with `seed` (the same tokens for a seed
// on the same kind of device; with eos_token_id, Dynamic draws only for the rows still in the
// batch, so once rows stop its samples differ from Static/Graph ones). Runs under NoGradGuard.
torch::Tensor generate(CausalLMImpl& model, const torch::Tensor& prompts, const GenerateOptions& opts);

}  // namespace onebit::models
