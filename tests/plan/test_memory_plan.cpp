// The memory planner: parameter counts of the published configs (configs/models) against the
// published model sizes, byte formulas of the state components, sharding divisions, the fit
// verdict with suggestions, and the JSON.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>

#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/model_config.h"
#include "onebit/plan/memory_plan.h"
#include "tests/support.h"

using namespace onebit;

namespace {
models::ModelConfig published(const std::string& name) {
  return models::load_model_config((test::source_dir() / "configs/models" / name / "config.json").string());
}
config::TrainConfig recipe(const std::string& name, std::vector<std::string> overrides = {}) {
  return config::load_train_config((test::source_dir() / "configs" / name).string(), overrides);
}
constexpr int64_t kGiB = int64_t(1) << 30;
}  // namespace

TEST_CASE("plan: parameter counts of the published configs", "[plan]") {
  // Totals as transformers counts them (sum of numel over the model's parameters).
  const std::vector<std::pair<std::string, int64_t>> sizes = {
      {"llama-7b", 6738415616},    {"llama-13b", 13015864320},  {"llama-2-7b", 6738415616},
      {"llama-2-13b", 13015864320}, {"llama-2-70b", 68976648192}, {"llama-3-8b", 8030261248},
      {"opt-1.3b", 1315758080},    {"opt-2.7b", 2651596800},    {"opt-6.7b", 6658473984},
      {"qwen2.5-7b", 7615616512}};
  const auto cfg = recipe("llama7b.yaml");
  for (const auto& [name, total] : sizes) {
    INFO(name);
    const auto p = plan::plan_memory(cfg, published(name), {});
    CHECK(p.params_total == total);
  }
  // LLaMA-7B: 32 layers x (4·4096² + 3·4096·11008) replaced; g, h per linear.
  const auto p = plan::plan_memory(cfg, published("llama-7b"), {});
  const int64_t per_layer = 4 * 4096LL * 4096 + 3 * 4096LL * 11008;
  CHECK(p.params_replaced == 32 * per_layer);
  CHECK(p.replaced_linears == 32 * 7);
  const int64_t gh = 32 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096));
  CHECK(p.params_trainable == 32 * per_layer + gh);
}

TEST_CASE("plan: state components follow the dtypes and the sharding", "[plan]") {
  const auto m = published("llama-7b");
  auto cfg = recipe("llama7b.yaml");
  plan::PlanOptions o;
  auto p = plan::plan_memory(cfg, m, o);
  const int64_t total = p.params_total, trainable = p.params_trainable, replaced = p.params_replaced;
  CHECK(p.component("teacher").bytes == 2 * total);  // bf16
  CHECK(p.component("student_trainable").bytes == 4 * trainable);
  CHECK(p.component("student_frozen").bytes == 4 * (total - replaced));
  CHECK(p.component("optimizer").bytes == 8 * trainable);
  CHECK(p.component("comm_buffers").bytes == 0);
  // The recipe's train.global_batch (128 sequences, method.md §5) on one rank: accumulation 32.
  CHECK(p.tokens_per_step == 128 * 2048);
  CHECK(p.blocks == 132000);
  CHECK(p.steps == 50 * (132000 / 4) / 32);

  cfg.student.latent_dtype = "bf16";
  cfg.optim.state_dtype = "bf16";
  o.share_frozen = true;
  p = plan::plan_memory(cfg, m, o);
  cfg.student.latent_dtype = cfg.optim.state_dtype = "fp32";
  CHECK(p.component("student_trainable").bytes == 2 * replaced + 4 * (trainable - replaced));
  CHECK(p.component("optimizer").bytes == 4 * trainable);
  CHECK(p.component("student_frozen").bytes == 0);
  // int8 moments: a byte per value and an fp32 scale per 2048 values, for m and for v.
  cfg.optim.state_dtype = "int8";
  p = plan::plan_memory(cfg, m, o);
  cfg.optim.state_dtype = "fp32";
  CHECK(p.component("optimizer").bytes == 2 * trainable + 2 * 4 * ((trainable + 2047) / 2048));

  // 8 ranks: the DP replica's gradients are views of its allreduce buckets (no copy); ZeRO-1
  // divides the state and adds this rank's gradient shard.
  o = {};
  o.world_size = 8;
  cfg.dist.sharding = "none";
  p = plan::plan_memory(cfg, m, o);
  CHECK(p.component("comm_buffers").bytes == 0);
  CHECK(p.component("gradients").bytes == 4 * trainable);
  CHECK(p.tokens_per_step == 4 * 2048 * 4 * 8);
  cfg.dist.sharding = "optimizer";
  p = plan::plan_memory(cfg, m, o);
  CHECK(p.component("optimizer").bytes == (8 * trainable + 7) / 8);
  CHECK(p.component("comm_buffers").bytes >= (4 * trainable + 7) / 8);
  cfg.dist.sharding = "full";
  p = plan::plan_memory(cfg, m, o);
  CHECK(p.component("student_trainable").bytes == (4 * trainable + 7) / 8);
  cfg.dist.shard_teacher = true;
  const auto q = plan::plan_memory(cfg, m, o);
  CHECK(q.component("teacher").bytes < p.component("teacher").bytes / 4);
}

TEST_CASE("plan: a CPU run counts LibTorch's runtime in its peak, a GPU run the CUDA context in its margin", "[plan]") {
  const auto m = published("llama-7b");
  const auto cfg = recipe("llama7b.yaml");
  plan::PlanOptions gpu, cpu;
  cpu.cuda = false;
  const auto g = plan::plan_memory(cfg, m, gpu), c = plan::plan_memory(cfg, m, cpu);
  CHECK(c.component("runtime").bytes == 32 << 20);  // bench-memory-plan --sizes T: 27-36 MiB
  CHECK(c.peak_bytes == g.peak_bytes + (32 << 20));
  CHECK_THROWS(g.component("runtime"));
  CHECK(g.margin_bytes == g.peak_bytes / 20 + kGiB);
  CHECK(c.margin_bytes == c.peak_bytes / 20);
}

TEST_CASE("plan: checkpointing, batch and chunk size move the activations", "[plan]") {
  const auto m = published("llama-7b");
  auto cfg = recipe("llama7b.yaml");
  auto p = plan::plan_memory(cfg, m, {});
  CHECK(p.activations_other > 4 * p.component("activations").bytes);  // without checkpointing
  cfg.data.batch_size = 2;
  const auto half = plan::plan_memory(cfg, m, {});
  CHECK(half.component("activations").bytes * 2 == p.component("activations").bytes);
}

TEST_CASE("plan: the shipped LLaMA-7B recipe fits 8 x 80 GB, not one GPU, nor 8 as replicas", "[plan]") {
  const auto m = published("llama-7b");
  auto cfg = recipe("llama7b.yaml");
  CHECK(cfg.dist.sharding == "full");  // as shipped
  plan::PlanOptions o;
  o.budget_bytes = plan::parse_bytes("80GB");
  auto one = plan::plan_memory(cfg, m, o);
  CHECK_FALSE(one.fits);
  REQUIRE_FALSE(one.suggestions.empty());
  // The lean combinations measured within 2% of fp32 (docs/RESULTS.md), smallest last; only
  // changes that lower the plan are suggested.
  auto suggests = [](const plan::MemoryPlan& p, const std::string& what) {
    return std::any_of(p.suggestions.begin(), p.suggestions.end(),
                       [&](const std::string& s) { return s.rfind(what, 0) == 0; });
  };
  CHECK(suggests(one, "student.latent_dtype=bf16 optim.state_dtype=bf16: "));
  CHECK(suggests(one, "student.latent_dtype=bf16 optim.state_dtype=int8: "));
  auto lean = cfg;
  lean.student.latent_dtype = "bf16";
  lean.optim.state_dtype = "int8";
  const auto leanest = plan::plan_memory(lean, m, o);
  CHECK_FALSE(suggests(leanest, "student.latent_dtype=bf16 optim.state_dtype=bf16"));
  CHECK(leanest.total_bytes < one.total_bytes / 2);
  o.world_size = 8;
  const auto eight = plan::plan_memory(cfg, m, o);
  CHECK(eight.fits);
  CHECK(eight.total_bytes < 80'000'000'000LL);
  cfg.dist.sharding = "none";
  CHECK_FALSE(plan::plan_memory(cfg, m, o).fits);
}

TEST_CASE("plan: JSON carries every component and the verdict", "[plan]") {
  plan::PlanOptions o;
  o.budget_bytes = 80 * kGiB;
  const auto p = plan::plan_memory(recipe("llama7b.yaml"), published("llama-7b"), o);
  const auto j = nlohmann::json::parse(plan::plan_json(p));
  int64_t sum = 0;
  for (const auto& c : p.components) {
    INFO(c.key);
    REQUIRE(j["memory"]["components"].contains(c.key));
    sum += j["memory"]["components"][c.key]["bytes"].get<int64_t>();
  }
  CHECK(sum == p.peak_bytes);
  CHECK(j["memory"]["total_bytes"] == p.peak_bytes + p.margin_bytes);
  CHECK(j["fit"]["fits"] == p.fits);
  CHECK(j["params"]["total"] == 6738415616);
}

TEST_CASE("plan: memory sizes parse with binary and decimal units", "[plan]") {
  CHECK(plan::parse_bytes("80GiB") == 80 * kGiB);
  CHECK(plan::parse_bytes("80GB") == 80'000'000'000LL);
  CHECK(plan::parse_bytes("1.5 TiB") == 1536 * kGiB);
  CHECK(plan::parse_bytes("81920MiB") == 80 * kGiB);
  CHECK(plan::parse_bytes("4096") == 4096);
  CHECK_THROWS_WITH(plan::parse_bytes("80 parsecs"), OB_CONTAINS("is not a size such as 80GiB"));
  CHECK_THROWS_WITH(plan::parse_bytes("-3GB"), OB_CONTAINS("is not a size"));
}

TEST_CASE("config: dist.sharding is validated", "[plan][config]") {
  CHECK(recipe("llama7b.yaml", {"dist.sharding=full"}).dist.sharding == "full");
  CHECK_THROWS_WITH(recipe("llama7b.yaml", {"dist.sharding=zero3"}),
                    OB_CONTAINS("dist.sharding must be one of none, optimizer, gradients, full"));
}
