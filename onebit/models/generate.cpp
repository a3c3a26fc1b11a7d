#include "onebit/models/generate.h"

#include <torch/torch.h>

#include <limits>
#include <memory>
#include <mutex>

#include "onebit/core/error.h"
#include "onebit/models/inference_scope.h"
#include "onebit/models/step_decoder.h"

namespace onebit::models {

namespace {

// Next token per row from the last position's logits [B, V] (fp32), on their device.
torch::Tensor pick(torch::Tensor logits, bool greedy, const GenerateOptions& o, at::Generator& gen) {
  if (greedy) return logits.argmax(-1);
  logits = logits / o.temperature;
  const auto V = logits.size(-1);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (o.top_k > 0 && o.top_k < V) {
    auto kth = std::get<0>(logits.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    // Keep the smallest set of most likely tokens whose probability reaches top_p.
    auto [sorted, idx] = logits.sort(-1, /*descending=*/true);
    auto cum = sorted.softmax(-1).cumsum(-1);
    auto drop_sorted = (cum - sorted.softmax(-1)) >= o.top_p;  // mass before this token already enough
    auto drop = torch::zeros_like(drop_sorted).scatter(-1, idx, drop_sorted);
    logits = logits.masked_fill(drop, neg_inf);
  }
  // A draw from softmax(logits) without leaving the device: argmax(logits - log E) with
  // E ~ Exp(1) per token (the exponential race; torch.multinomial's own fast path). E is kept
  // above 0 so that a masked -inf logit never becomes NaN.
  auto e = torch::empty_like(logits).exponential_(1.0, gen).clamp_min_(std::numeric_limits<float>::min());
  return (logits - e.log()).argmax(-1);
}

}  // namespace

const char* to_string(GenerateOptions::Decode d) {
  using D = GenerateOptions::Decode;
  switch (d) {
    case D::Auto: return "auto";
    case D::Dynamic: return "dynamic";
    case D::Static: return "static";
    case D::Graph: return "graph";
  }
  return "?";
}

GenerateOptions::Decode parse_decode(const std::string& s, const std::string& what) {
  using D = GenerateOptions::Decode;
  for (D d : {D::Auto, D::Dynamic, D::Static, D::Graph})
    if (s == to_string(d)) return d;
  fail(what, ": unknown decode mode '", s, "' (expected auto, dynamic, static or graph)");
}

GenerateOptions::Decode resolve_decode(GenerateOptions::Decode d, const torch::Device& device) {
  using D = GenerateOptions::Decode;
  if (d != D::Auto) return d;
  return device.is_cuda() ? D::Graph : D::Dynamic;
}

torch::Tensor generate(CausalLMImpl& model, const torch::Tensor& prompts, const GenerateOptions& opts) {
  OB_CHECK(prompts.dim() == 2 && prompts.size(1) >= 1, "generate: prompts must be [B, T0] with T0 >= 1, got ",
           prompts.sizes());
  OB_CHECK(opts.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");
  OB_CHECK(opts.top_k >= 0, "generate: top_k must be >= 0");
  OB_CHECK(opts.top_p > 0.0 && opts.top_p <= 1.0, "generate: top_p must be in (0, 1]");
  OB_CHECK(opts.drop_every >= 1, "generate: drop_every must be >= 1, got ", opts.drop_every);
  InferenceScope inference(model);  // (nested in the caller's, it reuses that one's packed weights)
  const auto weight = model.lm_head_weight();
  const auto device = weight.device();
  at::Generator gen = at::globalContext().defaultGenerator(device).clone();
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(opts.seed);
  }

  const auto prompt = prompts.to(device, torch::kLong);
  const int64_t B = prompt.size(0), T0 = prompt.size(1), N = opts.max_new_tokens;
  const int64_t eos = opts.eos_token_id;
  const auto longs = torch::dtype(torch::kLong).device(device);
  // out[r] is output row r; the batch holds the rows `rows` that have not been dropped.
  auto out = torch::full({B, T0 + N}, eos >= 0 ? eos : 0, longs);
  out.narrow(1, 0, T0).copy_(prompt);
  auto length = torch::full({B}, T0, longs);  // per output row, EOS included
  auto rows = torch::arange(B, longs);
  auto done = torch::zeros({B}, torch::dtype(torch::kBool).device(device));

  using Decode = GenerateOptions::Decode;
  const Decode mode = resolve_decode(opts.decode, device);
  std::unique_ptr<StepDecoder> fixed;  // Static, Graph
  if (mode != Decode::Dynamic && N > 0) fixed = std::make_unique<StepDecoder>(model, B, T0 + N, mode == Decode::Graph);
  KVCache cache;
  // The last position's logits [B, V] (fp32) after feeding `input`.
  auto logits_after = [&](const torch::Tensor& input, int64_t step) {
    if (fixed) return step == 0 ? fixed->prefill(input) : fixed->step(input);
    return last_position_logits(model, input, cache);
  };
  auto input = prompt;
  for (int64_t step = 0; step < N; ++step) {
    auto logits = logits_after(input, step);
    const bool greedy = step < opts.greedy_prefix || opts.temperature <= 0;
    auto next = pick(logits, greedy, opts, gen);
    length.index_add_(0, rows, (~done).to(torch::kLong));
    if (eos >= 0) {
      next = torch::where(done, torch::full_like(next, eos), next);
      done = done | (next == eos);
    }
    out.select(1, T0 + step).index_copy_(0, rows, next);
    input = next.unsqueeze(1);
    if (fixed || eos < 0 || (step + 1) % opts.drop_every != 0 || step + 1 == N) continue;
    // Drop the rows that have stopped: they would only produce padding.
    const auto keep = (~done).nonzero().squeeze(1);
    if (keep.size(0) == 0) break;
    if (keep.size(0) == rows.size(0)) continue;
    rows = rows.index_select(0, keep);
    done = done.index_select(0, keep);
    input = input.index_select(0, keep);
    for (auto* kv : {&cache.k, &cache.v})
      for (auto& t : *kv) t = t.index_select(0, keep);
  }
  return out.narrow(1, 0, length.max().item<int64_t>());
}

}  // namespace onebit::models
