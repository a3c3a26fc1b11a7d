// Which operators a decode step of an exported LLaMA-family model runs, from the profiler: the
// fused passes and grouped projections must really be taken (each has a silent fallback to the
// ATen sequence), once per layer where the docs say so.
#include <torch/torch.h>

#include <map>
#include <string>

#include "onebit/export/export.h"
#include "onebit/export/packed_linear.h"
#include "onebit/models/inference_scope.h"
#include "onebit/models/loader.h"
#include "onebit/models/step_decoder.h"
#include "onebit/models/to_onebit.h"
#include "onebit/nn/fused_ops.h"
#include "onebit/util/op_profile.h"
#include "tests/data/tmpdir.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;

namespace {
// Calls per operator name of one decode step (a token after a 5-token prompt), CPU.
std::map<std::string, int64_t> step_ops(models::CausalLMImpl& m, bool static_cache) {
  models::InferenceScope scope(m);
  const auto prompt = torch::randint(3, 60, {1, 5}, torch::kLong);
  const auto next = torch::randint(3, 60, {1, 1}, torch::kLong);
  std::map<std::string, int64_t> calls;
  auto count = [&](const std::function<void()>& step) {
    for (const auto& r : util::profile_ops(step, false)) calls[r.name] += r.calls;
  };
  if (static_cache) {
    models::StepDecoder dec(m, 1, 16, /*cuda_graph=*/false);
    dec.prefill(prompt);
    count([&] { dec.step(next.view({1})); });
  } else {
    models::KVCache cache;
    models::ForwardArgs a;
    a.cache = &cache;
    m.forward(prompt, a);
    count([&] { m.forward(next, a); });
  }
  return calls;
}
}  // namespace

TEST_CASE("a decode step of an export runs the fused ops and grouped projections once per layer", "[export]") {
  test::TempDir tmp("decode_ops");
  const auto cfg = test::tiny_llama_config();  // 2 layers, GQA
  const int64_t L = cfg.num_hidden_layers;
  torch::manual_seed(11);
  {
    auto student = models::build_model(cfg);
    models::StudentOptions so;
    so.svid = "none";
    models::to_onebit(*student, so);
    packed::export_model(*student, tmp.str("export"), {});
  }
  auto m = models::load_pretrained(tmp.str("export"));
  for (bool static_cache : {false, true}) {
    INFO((static_cache ? "static" : "dynamic") << " cache");
    auto calls = step_ops(*m, static_cache);
    // The first layer's input norm; each residual add in the pass of the norm after it: the
    // post-attention norm, the next layer's input norm, the final norm.
    CHECK(calls["onebit::rms_norm"] == 1);
    CHECK(calls["onebit::add_rms_norm"] == 2 * L);
    CHECK(calls["aten::add"] == (static_cache ? 1 : 0));  // (the static cache's slots: position + arange)
    // q and k; with a static cache both RoPEs and both cache writes are one pass
    CHECK(calls["onebit::rotary"] == (static_cache ? 0 : 2 * L));
    CHECK(calls["onebit::rotary_store_kv"] == (static_cache ? L : 0));
    CHECK(calls["aten::index_copy_"] == 0);
    CHECK(calls["onebit::attention"] == L);
    CHECK(calls["aten::scaled_dot_product_attention"] == 0);
    CHECK(calls["onebit::packed_linear_group"] == 2 * L);  // q/k/v and gate/up
    CHECK(calls["onebit::packed_linear"] == 2 * L);        // o and down, one by one
  }
  // With the switches off: the op sequences and one call per projection.
  nn::set_fused_ops(false);
  packed::set_group_calls(false);
  auto calls = step_ops(*m, false);
  nn::set_fused_ops(true);
  packed::set_group_calls(true);
  CHECK(calls["onebit::rms_norm"] == 0);
  CHECK(calls["onebit::attention"] == 0);
  CHECK(calls["aten::scaled_dot_product_attention"] == L);
  CHECK(calls["onebit::packed_linear_group"] == 0);
  CHECK(calls["onebit::packed_linear"] == 7 * L);
}
