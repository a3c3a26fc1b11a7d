#include "onebit/models/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "onebit/core/error.h"

namespace onebit::models {

namespace {

// Next token per row from the last position's logits [B, V] (fp32).
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
  // Sampled on the CPU so that a seed gives the same tokens on every device.
  auto probs = logits.softmax(-1).to(torch::kCPU);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).squeeze(-1).to(logits.device());
}

}  // namespace

torch::Tensor generate(CausalLMImpl& model, const torch::Tensor& prompts, const GenerateOptions& opts) {
  OB_CHECK(prompts.dim() == 2 && prompts.size(1) >= 1, "generate: prompts must be [B, T0] with T0 >= 1, got ",
           prompts.sizes());
  OB_CHECK(opts.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");
  OB_CHECK(opts.top_k >= 0, "generate: top_k must be >= 0");
  OB_CHECK(opts.top_p > 0.0 && opts.top_p <= 1.0, "generate: top_p must be in (0, 1]");
  torch::NoGradGuard no_grad;
  const auto weight = model.lm_head_weight();
  const auto device = weight.device();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);

  auto tokens = prompts.to(device, torch::kLong);
  const auto B = tokens.size(0);
  std::vector<torch::Tensor> generated;
  auto done = torch::zeros({B}, torch::dtype(torch::kBool).device(device));

  KVCache cache;
  ForwardArgs args;
  args.cache = &cache;
  args.compute_logits = false;  // only the last position needs the vocabulary projection
  auto input = tokens;
  for (int64_t step = 0; step < opts.max_new_tokens; ++step) {
    auto out = model.forward(input, args);
    auto last = out.last_hidden.select(1, out.last_hidden.size(1) - 1);
    auto logits = torch::nn::functional::linear(last, weight).to(torch::kFloat32);
    const bool greedy = step < opts.greedy_prefix || opts.temperature <= 0;
    auto next = pick(logits, greedy, opts, gen);
    if (opts.eos_token_id >= 0) {
      next = torch::where(done, torch::full_like(next, opts.eos_token_id), next);
      done = done | (next == opts.eos_token_id);
    }
    generated.push_back(next.unsqueeze(1));
    if (opts.eos_token_id >= 0 && done.all().item<bool>()) break;
    input = next.unsqueeze(1);
  }
  if (generated.empty()) return tokens;
  generated.insert(generated.begin(), tokens);
  return torch::cat(generated, 1);
}

}  // namespace onebit::models
