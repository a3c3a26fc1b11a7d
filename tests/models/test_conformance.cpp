// Conformance with Hugging Face transformers: logits, hidden states, padding, KV cache, greedy
// generation, on tiny random-weight models of each family (tests/python/make_reference_models.py).
#include <torch/torch.h>

#include "onebit/io/safetensors.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "tests/models/reference.h"
#include "tests/support.h"

using namespace onebit;
using namespace onebit::models;

namespace {
constexpr double kLogitTol = 1e-4;   // fp32, max |Δ| against transformers
constexpr double kHiddenTol = 1e-4;
const char* const kFamilies[] = {"llama_gqa", "qwen2_bias", "mistral_window", "opt_pre", "opt_post_proj"};

// Logits at positions where mask == 1, flattened [N, V].
torch::Tensor kept(const torch::Tensor& logits, const torch::Tensor& mask) {
  return logits.index({mask.to(torch::kBool)});
}

// Runs check(model, ref) under NoGradGuard for each family: its model (loaded with `load`) and its
// transformers reference tensors.
template <class Check>
void for_each_family(const std::filesystem::path& refs, Check check, const LoadOptions& load = {}) {
  for (const char* family : kFamilies) {
    INFO(family);
    auto model = load_pretrained((refs / family).string(), load);
    io::SafetensorsReader ref((refs / family / "reference.safetensors").string());
    torch::NoGradGuard no_grad;
    check(model, ref);
  }
}
}  // namespace

TEST_CASE("forward matches transformers in logits and every hidden state", "[models]") {
  OB_REFS_OR_SKIP(refs);
  for_each_family(refs, [&](CausalLM& model, io::SafetensorsReader& ref) {
    ForwardArgs args;
    args.output_hidden_states = true;
    auto out = model->forward(ref.load("input_ids"), args);
    CHECK(test::max_abs_diff(out.logits, ref.load("logits")) <= kLogitTol);
    const auto L = model->config().num_hidden_layers;
    REQUIRE(static_cast<int64_t>(out.hidden_states.size()) == L + 1);
    for (int64_t i = 0; i <= L; ++i) {
      INFO("hidden_" << i);
      CHECK(test::max_abs_diff(out.hidden_states[i], ref.load("hidden_" + std::to_string(i))) <= kHiddenTol);
    }
    CHECK(test::max_abs_diff(out.last_hidden, out.hidden_states.back()) == 0.0);
  });
}

TEST_CASE("left padding with an attention mask matches transformers", "[models]") {
  OB_REFS_OR_SKIP(refs);
  for_each_family(refs, [&](CausalLM& model, io::SafetensorsReader& ref) {
    const auto mask = ref.load("attention_mask");
    ForwardArgs args;
    args.attention_mask = mask;
    auto out = model->forward(ref.load("input_ids"), args);
    CHECK(test::max_abs_diff(kept(out.logits, mask), kept(ref.load("logits_padded"), mask)) <= kLogitTol);
    // The unpadded row is unaffected by the other row's padding.
    CHECK(test::max_abs_diff(out.logits[0], ref.load("logits")[0]) <= kLogitTol);
  });
}

TEST_CASE("KV-cache incremental logits equal the full forward", "[models]") {
  OB_REFS_OR_SKIP(refs);
  for_each_family(refs, [&](CausalLM& model, io::SafetensorsReader& ref) {
    const auto ids = ref.load("input_ids");
    const auto mask = ref.load("attention_mask");
    for (bool padded : {false, true}) {
      INFO("padded " << padded);
      KVCache cache;
      std::vector<torch::Tensor> parts;
      // Chunks of 5, 2, then single tokens.
      int64_t t = 0;
      for (int64_t len : {5, 2, 1, 1, 1, 1, 1}) {
        ForwardArgs args;
        args.cache = &cache;
        if (padded) args.attention_mask = mask.narrow(1, 0, t + len);
        parts.push_back(model->forward(ids.narrow(1, t, len), args).logits);
        t += len;
      }
      REQUIRE(t == ids.size(1));
      REQUIRE(cache.length() == t);
      auto inc = torch::cat(parts, 1);
      if (padded)
        CHECK(test::max_abs_diff(kept(inc, mask), kept(ref.load("logits_padded"), mask)) <= kLogitTol);
      else
        CHECK(test::max_abs_diff(inc, ref.load("logits")) <= kLogitTol);
    }
  });
}

TEST_CASE("greedy generation reproduces transformers.generate token for token", "[models]") {
  OB_REFS_OR_SKIP(refs);
  for_each_family(refs, [&](CausalLM& model, io::SafetensorsReader& ref) {
    GenerateOptions o;
    o.max_new_tokens = 32;
    o.temperature = 0;
    auto out = generate(*model, ref.load("gen_prompt"), o);
    CHECK(torch::equal(out, ref.load("gen_out")));
  });
}

TEST_CASE("bf16 models stay close to the fp32 reference", "[models]") {
  OB_REFS_OR_SKIP(refs);
  constexpr double kBf16RelTol = 0.05;  // max |Δlogits| relative to max |logits|
  for_each_family(refs, [&](CausalLM& model, io::SafetensorsReader& ref) {
    auto logits = model->forward(ref.load("input_ids")).logits;
    REQUIRE(logits.scalar_type() == torch::kBFloat16);
    const auto expect = ref.load("logits");
    CHECK(test::max_abs_diff(logits, expect) <= kBf16RelTol * expect.abs().max().item<double>());
    GenerateOptions o;
    o.max_new_tokens = 4;
    o.temperature = 0;
    CHECK(generate(*model, ref.load("gen_prompt"), o).size(1) == 5 + 4);
  }, {torch::kCPU, torch::kBFloat16});
}
