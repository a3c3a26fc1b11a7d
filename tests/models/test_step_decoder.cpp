// The static KV cache and StepDecoder against the dynamic cache (itself tested against
// cache-free forwards in test_generate.cpp), and CUDA-graph decoding against eager decoding.
#include <torch/torch.h>

#include <initializer_list>
#include <string>

#include "onebit/core/error.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/models/step_decoder.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;
using namespace onebit::models;

namespace {
CausalLM peaked(const ModelConfig& c, uint64_t seed = 3) {
  torch::manual_seed(seed);
  auto m = build_model(c);
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters())
    if (p.dim() == 2) p.normal_(0, 0.3);
  m->eval();
  return m;
}

ModelConfig mistral_window(int64_t window) {
  return parse_model_config(R"({"model_type": "mistral", "vocab_size": 64, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
      "rms_norm_eps": 1e-5, "sliding_window": )" + std::to_string(window) + "}");
}

// Logits [B, V] of every position after the prompt, fed one token at a time: through a dynamic
// cache, and through a StepDecoder of `capacity` positions (eager static cache or graph).
std::pair<torch::Tensor, torch::Tensor> both_ways(CausalLMImpl& m, const torch::Tensor& prompt,
                                                  const torch::Tensor& feed, int64_t capacity, bool graph) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> dyn, fix;
  KVCache cache;
  ForwardArgs a;
  a.cache = &cache;
  dyn.push_back(m.forward(prompt, a).logits.select(1, -1).to(torch::kFloat32));
  StepDecoder dec(m, prompt.size(0), capacity, graph);
  fix.push_back(dec.prefill(prompt).clone());
  for (int64_t t = 0; t < feed.size(1); ++t) {
    const auto tok = feed.select(1, t);
    dyn.push_back(m.forward(tok.unsqueeze(1), a).logits.select(1, -1).to(torch::kFloat32));
    fix.push_back(dec.step(tok).clone());
  }
  CHECK(dec.length() == prompt.size(1) + feed.size(1));
  return {torch::stack(dyn).cpu(), torch::stack(fix).cpu()};
}

// generate() in each of `modes` gives the Dynamic tokens, greedy and sampled.
void check_same_tokens(CausalLMImpl& m, const torch::Tensor& prompt, GenerateOptions o,
                       std::initializer_list<GenerateOptions::Decode> modes) {
  for (double temperature : {0.0, 1.0}) {
    o.temperature = temperature;
    o.decode = GenerateOptions::Decode::Dynamic;
    const auto ref = generate(m, prompt, o);
    for (auto mode : modes) {
      o.decode = mode;
      INFO("temperature " << temperature << ", mode " << static_cast<int>(mode));
      CHECK(torch::equal(generate(m, prompt, o), ref));
    }
  }
}

void check_static_matches(const ModelConfig& c, int64_t B, int64_t T0, int64_t steps, int64_t capacity) {
  auto m = peaked(c);
  const auto prompt = torch::randint(3, 64, {B, T0}, torch::kLong);
  const auto feed = torch::randint(3, 64, {B, steps}, torch::kLong);
  auto [dyn, fix] = both_ways(*m, prompt, feed, capacity, false);
  INFO(c.model_type << " B=" << B << " T0=" << T0 << " steps=" << steps << " capacity=" << capacity);
  CHECK(torch::allclose(fix, dyn, 1e-5, 1e-5));
}
}  // namespace

TEST_CASE("static KV cache gives the dynamic cache's logits", "[models][decode]") {
  torch::manual_seed(0);
  check_static_matches(test::tiny_llama_config(), 3, 5, 9, 20);       // GQA, untied
  check_static_matches(test::tiny_llama_config(true), 1, 1, 6, 7);    // tied, capacity exactly used
  check_static_matches(test::tiny_opt_config(), 2, 4, 8, 16);         // learned positions, project_in/out
  check_static_matches(mistral_window(6), 2, 5, 12, 40);              // sliding window passed mid-way
  // Past the 64- and 128-slot spans: the span grows with the sequence (and stays 64 at first).
  check_static_matches(test::tiny_llama_config(), 2, 60, 80, 300);
}

TEST_CASE("static cache: the position lives on the device and advances per forward", "[models][decode]") {
  auto m = peaked(test::tiny_llama_config());
  torch::NoGradGuard no_grad;
  auto cache = make_static_cache(m->config(), 2, 10, torch::TensorOptions());
  CHECK(cache.is_static());
  CHECK(cache.k.size() == 2);
  CHECK(cache.k[0].sizes() == torch::IntArrayRef({2, 2, 10, 8}));  // [B, kv heads, capacity, head_dim]
  ForwardArgs a;
  a.cache = &cache;
  m->forward(torch::randint(3, 64, {2, 4}, torch::kLong), a);
  CHECK(cache.length() == 4);
  m->forward(torch::randint(3, 64, {2, 1}, torch::kLong), a);
  CHECK(cache.length() == 5);
  // The slots past the position are untouched zeros.
  CHECK(cache.k[1].narrow(2, 5, 5).abs().sum().item<float>() == 0.f);
  CHECK(cache.k[1].narrow(2, 0, 5).abs().sum().item<float>() > 0.f);

  ForwardArgs masked = a;
  masked.attention_mask = torch::ones({2, 6}, torch::kLong);
  CHECK_THROWS_WITH(m->forward(torch::randint(3, 64, {2, 1}, torch::kLong), masked),
                    OB_CONTAINS("static KV cache takes no attention_mask"));
  auto small = make_static_cache(m->config(), 2, 10, torch::TensorOptions());
  small.k.pop_back();
  small.v.pop_back();
  a.cache = &small;
  CHECK_THROWS_WITH(m->forward(torch::randint(3, 64, {2, 1}, torch::kLong), a), OB_CONTAINS("has 1 layers"));
  CHECK_THROWS_WITH(make_static_cache(m->config(), 0, 10, torch::TensorOptions()), OB_CONTAINS("batch and capacity"));
}

TEST_CASE("generate: static decoding gives the dynamic tokens, sampling and eos included", "[models][decode]") {
  auto m = peaked(test::tiny_llama_config(), 11);
  const auto prompt = torch::randint(3, 64, {4, 3}, torch::kLong);
  GenerateOptions o;
  o.max_new_tokens = 20;
  o.seed = 7;
  o.greedy_prefix = 2;
  o.top_k = 20;
  check_same_tokens(*m, prompt, o, {GenerateOptions::Decode::Static, GenerateOptions::Decode::Auto});
  // With eos, the dynamic path drops stopped rows from the batch; the static one keeps them
  // (greedy: a sampled step draws for the rows in the batch, so the draws differ once rows leave).
  o.temperature = 0;
  o.decode = GenerateOptions::Decode::Dynamic;
  const auto free_run = generate(*m, prompt, o);
  o.eos_token_id = free_run[1][3 + 4].item<int64_t>();
  o.drop_every = 2;
  const auto dyn = generate(*m, prompt, o);
  o.decode = GenerateOptions::Decode::Static;
  CHECK(torch::equal(generate(*m, prompt, o), dyn));
}

TEST_CASE("StepDecoder and decode modes: bad use is a clear error", "[models][decode]") {
  auto m = peaked(test::tiny_llama_config());
  StepDecoder dec(*m, 2, 6, false);
  CHECK_THROWS_WITH(dec.step(torch::zeros({2}, torch::kLong)), OB_CONTAINS("call prefill first"));
  CHECK_THROWS_WITH(dec.prefill(torch::zeros({3, 2}, torch::kLong)), OB_CONTAINS("prompts must be [2, T0]"));
  CHECK_THROWS_WITH(dec.prefill(torch::zeros({2, 7}, torch::kLong)), OB_CONTAINS("exceed its capacity of 6"));
  dec.prefill(torch::ones({2, 4}, torch::kLong));
  CHECK_THROWS_WITH(dec.step(torch::zeros({3}, torch::kLong)), OB_CONTAINS("tokens must be [2]"));
  dec.step(torch::ones({2}, torch::kLong));
  dec.step(torch::ones({2, 1}, torch::kLong));
  CHECK_THROWS_WITH(dec.step(torch::ones({2}, torch::kLong)), OB_CONTAINS("6 + 1 positions exceed its capacity of 6"));
  // Prefill starts over.
  dec.prefill(torch::ones({2, 2}, torch::kLong));
  CHECK(dec.length() == 2);

  CHECK_THROWS_WITH(StepDecoder(*m, 1, 8, true), OB_CONTAINS("CUDA"));
  GenerateOptions o;
  o.decode = GenerateOptions::Decode::Graph;
  CHECK_THROWS_WITH(generate(*m, torch::ones({1, 2}, torch::kLong), o), OB_CONTAINS("CUDA"));
  using D = GenerateOptions::Decode;
  for (D d : {D::Auto, D::Dynamic, D::Static, D::Graph}) CHECK(parse_decode(to_string(d), "--decode") == d);
  CHECK(resolve_decode(D::Auto, torch::kCPU) == D::Dynamic);
  CHECK(resolve_decode(D::Auto, torch::Device(torch::kCUDA, 0)) == D::Graph);
  CHECK(resolve_decode(D::Static, torch::Device(torch::kCUDA, 0)) == D::Static);
  CHECK_THROWS_WITH(parse_decode("fast", "--decode"), OB_CONTAINS("--decode: unknown decode mode 'fast'"));
}

TEST_CASE("CUDA graph decoding gives eager decoding's logits and tokens", "[models][decode][cuda]") {
  if (!torch::cuda::is_available()) return test::skip("no CUDA device");
  torch::manual_seed(0);
  for (const auto& c : {test::tiny_llama_config(), test::tiny_opt_config(), mistral_window(6)}) {
    auto m = peaked(c);
    m->to(torch::kCUDA);
    const auto prompt = torch::randint(3, 64, {2, 5}, torch::kLong).cuda();
    const auto feed = torch::randint(3, 64, {2, 70}, torch::kLong).cuda();  // crosses the 64-slot span
    auto [dyn, fix] = both_ways(*m, prompt, feed, 100, true);
    INFO(c.model_type);
    CHECK(torch::allclose(fix, dyn, 1e-4, 1e-4));

    GenerateOptions o;
    o.max_new_tokens = 40;
    o.seed = 3;
    o.top_k = 10;
    check_same_tokens(*m, prompt, o, {GenerateOptions::Decode::Auto});  // Auto: graphs on CUDA
    // bf16, as deployed.
    m->to(torch::kBFloat16);
    auto [dyn16, fix16] = both_ways(*m, prompt, feed.narrow(1, 0, 10), 32, true);
    CHECK(torch::allclose(fix16, dyn16, 2e-2, 2e-2));
  }
}
