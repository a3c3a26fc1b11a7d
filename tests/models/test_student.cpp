// OneBit students: to_onebit, freezing, save/load round trip, checkpointing; naive sign baseline.
#include <torch/torch.h>

#include <functional>

#include <nlohmann/json.hpp>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/models/to_onebit.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/models/reference.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;
using namespace onebit::models;

namespace {
constexpr double kGradTol = 1e-6;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

torch::Tensor logits_of(CausalLMImpl& m, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  return m.forward(ids).logits;
}
}  // namespace

TEST_CASE("to_onebit replaces every decoder linear and trains only W g h", "[models]") {
  torch::manual_seed(1);
  auto model = build_model(test::tiny_llama_config());
  const auto ids = torch::randint(3, 64, {2, 7}, torch::kLong);
  const auto teacher = logits_of(*model, ids);
  auto replaced = to_onebit(*model);
  REQUIRE(replaced.size() == 2 * 7);
  CHECK(replaced.front() == "model.layers.0.self_attn.q_proj");
  CHECK(model->config().onebit);
  for (auto& p : model->named_parameters()) {
    INFO(p.key());
    const bool onebit_param = p.key().find("_proj.") != std::string::npos &&
                              (ends_with(p.key(), ".weight") || ends_with(p.key(), ".g") || ends_with(p.key(), ".h"));
    CHECK(p.value().requires_grad() == onebit_param);
  }
  auto student = logits_of(*model, ids);
  CHECK(torch::isfinite(student).all().item<bool>());
  CHECK_FALSE(torch::allclose(student, teacher));

  // The decoder calls the new modules: changing a OneBit h changes the logits.
  auto q = std::dynamic_pointer_cast<nn::OneBitLinearImpl>(
      model->named_modules()["model.layers.0.self_attn.q_proj"]);
  REQUIRE(q);
  {
    torch::NoGradGuard no_grad;
    q->h.mul_(3.0);
  }
  CHECK_FALSE(torch::allclose(logits_of(*model, ids), student));
  CHECK_THROWS_WITH(to_onebit(*model), OB_CONTAINS("already a OneBit student"));
}

TEST_CASE("a saved student loads back with its latent W g h", "[models]") {
  for (const auto& cfg : {test::tiny_llama_config(true), test::tiny_opt_config()}) {
    INFO(cfg.model_type);
    torch::manual_seed(2);
    auto model = build_model(cfg);
    StudentOptions so;
    so.svid = "svd";
    so.ste = "identity";
    auto replaced = to_onebit(*model, so);
    CHECK(replaced.size() == 2 * (cfg.model_type == "opt" ? 6 : 7));
    const auto dir = test::scratch_dir("student");
    save_pretrained(model, dir.string());
    io::SafetensorsReader reader(dir.string());
    const std::string first = replaced.front();
    CHECK(reader.contains(first + ".g"));
    CHECK(reader.contains(first + ".h"));
    CHECK(reader.contains(first + ".weight"));
    CHECK(reader.contains(first + ".bias") == (cfg.model_type == "opt"));  // keep_bias on OPT's biased linears

    auto back = load_pretrained(dir.string());
    CHECK(back->config().onebit);
    auto j = nlohmann::json::parse(back->config().onebit_json);
    CHECK(j["ste"] == "identity");
    CHECK(j["replaced"].size() == replaced.size());
    const auto ids = torch::randint(3, 64, {2, 6}, torch::kLong);
    CHECK(torch::equal(logits_of(*model, ids), logits_of(*back, ids)));
    auto a = model->named_parameters(), b = back->named_parameters();
    REQUIRE(a.size() == b.size());
    for (auto& p : a) CHECK(b[p.key()].requires_grad() == p.value().requires_grad());
    auto ob = std::dynamic_pointer_cast<nn::OneBitLinearImpl>(back->named_modules()[first]);
    REQUIRE(ob);
    CHECK(ob->options.ste() == nn::SteKind::Identity);
  }
}

namespace {
// Gradients of the trainable (W, g, h) parameters by name, copied.
std::map<std::string, torch::Tensor> trainable_grads(torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> g;
  for (auto& p : model.named_parameters())
    if (p.value().requires_grad()) g[p.key()] = p.value().grad().clone();
  return g;
}

// W g h gradients of loss(model, ids) on a tiny OneBit LLaMA: [0] without, [1] with checkpointing.
std::vector<std::map<std::string, torch::Tensor>> checkpointing_grads(
    uint64_t seed, const std::function<torch::Tensor(CausalLMImpl&, const torch::Tensor&)>& loss) {
  torch::manual_seed(seed);
  auto model = build_model(test::tiny_llama_config());
  to_onebit(*model);
  model->train();
  const auto ids = torch::randint(3, 64, {2, 8}, torch::kLong);
  std::vector<std::map<std::string, torch::Tensor>> runs;
  for (bool ckpt : {false, true}) {
    model->zero_grad();
    model->set_gradient_checkpointing(ckpt);
    loss(*model, ids).backward();
    runs.push_back(trainable_grads(*model));
  }
  REQUIRE(runs[0].size() == 2 * 7 * 3);
  return runs;
}
}  // namespace

TEST_CASE("gradient checkpointing of a student gives the same W g h gradients", "[models]") {
  const auto runs = checkpointing_grads(
      4, [](CausalLMImpl& m, const torch::Tensor& ids) { return m.forward(ids).logits.square().mean(); });
  for (auto& [name, g] : runs[0]) {
    INFO(name);
    CHECK((g - runs[1].at(name)).abs().max().item<double>() <= kGradTol);
  }
}

TEST_CASE("gradient checkpointing under bf16 autocast recomputes in bf16", "[models][autocast]") {
  // The recompute runs in backward, outside the autocast region: it must re-enter it, or the
  // gradients would be those of an fp32 forward (a relative difference of ~1e-2).
  const auto runs = checkpointing_grads(5, [](CausalLMImpl& m, const torch::Tensor& ids) {
    torch::Tensor logits;
    {
      AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
      logits = m.forward(ids).logits;
    }
    CHECK(logits.scalar_type() == torch::kBFloat16);
    return logits.to(torch::kFloat32).square().mean();
  });
  for (auto& [name, g] : runs[0]) {
    INFO(name);
    CHECK(g.scalar_type() == torch::kFloat32);
    CHECK((g - runs[1].at(name)).abs().max().item<double>() <= kGradTol * g.abs().max().item<double>());
  }
}

TEST_CASE("naive_sign_quantize: W becomes sign(W) times mean |W|", "[models]") {
  torch::manual_seed(5);
  auto model = build_model(test::tiny_opt_config());
  auto before = model->named_parameters();
  std::map<std::string, torch::Tensor> orig;
  for (auto& p : before) orig[p.key()] = p.value().clone();
  auto names = naive_sign_quantize(*model);
  REQUIRE(names.size() == 2 * 6);
  auto after = model->named_parameters();
  for (const auto& n : names) {
    INFO(n);
    const auto& w0 = orig[n + ".weight"];
    auto expect = torch::where(w0 >= 0, 1.0, -1.0) * w0.abs().mean();
    CHECK(torch::allclose(after[n + ".weight"], expect));
    CHECK(torch::equal(after[n + ".bias"], orig[n + ".bias"]));
  }
  CHECK(torch::equal(after["model.decoder.embed_tokens.weight"], orig["model.decoder.embed_tokens.weight"]));
  CHECK(torch::equal(after["model.decoder.project_in.weight"], orig["model.decoder.project_in.weight"]));
}

TEST_CASE("to_onebit with a layer regex and bad patterns", "[models]") {
  auto model = build_model(test::tiny_llama_config());
  StudentOptions so;
  so.layers = R"(model\.layers\.1\.mlp\..*)";
  auto replaced = to_onebit(*model, so);
  CHECK(replaced == std::vector<std::string>{"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj",
                                             "model.layers.1.mlp.down_proj"});
  auto other = build_model(test::tiny_llama_config());
  so.layers = "nothing";
  CHECK_THROWS_WITH(to_onebit(*other, so), OB_CONTAINS("matched no linear"));
}
