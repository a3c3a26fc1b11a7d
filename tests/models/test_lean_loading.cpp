// Lean loading: no default init while building (the global RNG is untouched), a sharded
// model.safetensors.index.json and a base-model checkpoint without the "model." prefix load
// to the same logits, and the student shares the teacher's frozen tensors (same storage).
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "onebit/config/train_config.h"
#include "onebit/distill/train_models.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/models/reference.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;
namespace fs = std::filesystem;

namespace {
torch::Tensor logits_of(models::CausalLMImpl& m, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  return m.forward(ids).logits;
}

// The tensors of dir/model.safetensors, by name.
std::vector<std::pair<std::string, torch::Tensor>> tensors_of(const fs::path& dir) {
  io::SafetensorsReader r(dir.string());
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& n : r.names()) out.emplace_back(n, r.load(n));
  return out;
}

void copy_config(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  fs::copy_file(from / "config.json", to / "config.json", fs::copy_options::overwrite_existing);
}

config::TrainConfig train_config(const std::string& teacher, const std::string& dtype, const std::string& precision) {
  config::TrainConfig cfg;
  cfg.model.teacher = teacher;
  cfg.model.dtype = dtype;
  cfg.train.precision = precision;
  cfg.validate();
  return cfg;
}
}  // namespace

TEST_CASE("lean loading: no default init runs over the weights", "[models][loading]") {
  // A default init draws one random number per weight element, so the generator would end in a
  // different state after models of different sizes. Lean building draws the same (a 1x1
  // placeholder init per module) whatever the shapes.
  auto config = [](int64_t hidden) {
    return models::parse_model_config(R"({"model_type": "llama", "vocab_size": 64, "hidden_size": )" +
                                      std::to_string(hidden) + R"(, "intermediate_size": )" +
                                      std::to_string(3 * hidden) + R"(, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": false})");
  };
  std::vector<torch::Tensor> after_load, after_student;
  for (int64_t hidden : {32, 128}) {
    const auto dir = test::scratch_dir("lean_rng_" + std::to_string(hidden));
    torch::manual_seed(1);
    models::save_pretrained(models::build_model(config(hidden)), dir.string());
    torch::manual_seed(5);
    auto m = models::load_pretrained(dir.string());
    after_load.push_back(torch::rand({4}));
    // The student's conversion neither: from_linear fills W, g, h without any init.
    torch::manual_seed(5);
    auto tm = distill::load_train_models(train_config(dir.string(), "fp32", "fp32"), torch::kCPU);
    after_student.push_back(torch::rand({4}));
  }
  CHECK(torch::equal(after_load[0], after_load[1]));
  CHECK(torch::equal(after_student[0], after_student[1]));
}

TEST_CASE("lean loading: a sharded index loads to the same logits as the single file", "[models][loading]") {
  const auto dir = test::scratch_dir("lean_sharded"), sharded = test::scratch_dir("lean_sharded_index");
  torch::manual_seed(2);
  auto model = models::build_model(test::tiny_opt_config());
  models::save_pretrained(model, dir.string());
  const auto all = tensors_of(dir);
  copy_config(dir, sharded);
  // Two shards, alternating tensors, and the index transformers writes.
  std::vector<std::pair<std::string, torch::Tensor>> a, b;
  nlohmann::json map = nlohmann::json::object();
  for (size_t i = 0; i < all.size(); ++i) {
    const std::string file = i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    (i % 2 ? b : a).push_back(all[i]);
    map[all[i].first] = file;
  }
  io::write_safetensors((sharded / "model-00001-of-00002.safetensors").string(), a);
  io::write_safetensors((sharded / "model-00002-of-00002.safetensors").string(), b);
  std::ofstream(sharded / "model.safetensors.index.json") << nlohmann::json{{"metadata", {{"total_size", 0}}},
                                                                            {"weight_map", map}}.dump(2);
  const auto ids = torch::randint(3, 64, {2, 7}, torch::kLong);
  auto back = models::load_pretrained(sharded.string());
  CHECK(torch::equal(logits_of(*model, ids), logits_of(*back, ids)));
  // bf16 straight from the shards.
  auto bf = models::load_pretrained(sharded.string(), {torch::kCPU, torch::kBFloat16});
  for (const auto& p : bf->parameters()) CHECK(p.scalar_type() == torch::kBFloat16);
}

TEST_CASE("lean loading: tensor names without the model. prefix (a base-model checkpoint)", "[models][loading]") {
  const auto dir = test::scratch_dir("lean_prefix"), base = test::scratch_dir("lean_prefix_base");
  torch::manual_seed(3);
  auto model = models::build_model(test::tiny_llama_config(/*tied=*/false));
  models::save_pretrained(model, dir.string());
  copy_config(dir, base);
  auto all = tensors_of(dir);
  int stripped = 0;
  for (auto& [name, t] : all)
    if (name.rfind("model.", 0) == 0) name = name.substr(6), ++stripped;
  CHECK(stripped == static_cast<int>(all.size()) - 1);  // all but lm_head.weight
  io::write_safetensors((base / "model.safetensors").string(), all);
  const auto ids = torch::randint(3, 64, {2, 7}, torch::kLong);
  CHECK(torch::equal(logits_of(*model, ids), logits_of(*models::load_pretrained(base.string()), ids)));

  // A tensor of neither spelling is still an error naming it.
  all.erase(std::remove_if(all.begin(), all.end(), [](const auto& kv) { return kv.first == "norm.weight"; }),
            all.end());
  io::write_safetensors((base / "model.safetensors").string(), all);
  CHECK_THROWS_WITH(models::load_pretrained(base.string()), OB_CONTAINS("missing tensor 'model.norm.weight'"));
}

TEST_CASE("lean loading: the student shares the teacher's frozen tensors", "[models][loading]") {
  const auto dir = test::scratch_dir("lean_share");
  torch::manual_seed(4);
  models::save_pretrained(models::build_model(test::tiny_llama_config()), dir.string());
  auto same_storage = [](const torch::Tensor& x, const torch::Tensor& y) { return x.data_ptr() == y.data_ptr(); };

  for (const auto& [dtype, precision] : {std::pair{"fp32", "fp32"}, std::pair{"bf16", "bf16"}}) {
    INFO(dtype << " teacher, " << precision << " compute");
    auto tm = distill::load_train_models(train_config(dir.string(), dtype, precision), torch::kCPU);
    auto t = tm.teacher->named_parameters(), s = tm.student->named_parameters();
    for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                             "model.layers.0.input_layernorm.weight"}) {
      INFO(name);
      CHECK(same_storage(t[name], s[name]));
      CHECK_FALSE(s[name].requires_grad());
    }
    CHECK(s["model.layers.1.mlp.up_proj.weight"].scalar_type() == torch::kFloat32);  // the latent W
    CHECK(s["model.layers.1.mlp.up_proj.weight"].requires_grad());
  }
  // A bf16 teacher under fp32 compute: the student keeps fp32 copies.
  auto tm = distill::load_train_models(train_config(dir.string(), "bf16", "fp32"), torch::kCPU);
  const auto t = tm.teacher->named_parameters()["model.embed_tokens.weight"];
  const auto s = tm.student->named_parameters()["model.embed_tokens.weight"];
  CHECK_FALSE(t.data_ptr() == s.data_ptr());
  CHECK(s.scalar_type() == torch::kFloat32);
  CHECK(torch::equal(s.to(torch::kBFloat16), t));
}

TEST_CASE("lean loading: the student is converted on the GPU", "[models][loading][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA GPU");
  const auto dir = test::scratch_dir("lean_cuda");
  torch::manual_seed(6);
  models::save_pretrained(models::build_model(test::tiny_llama_config()), dir.string());
  auto tm = distill::load_train_models(train_config(dir.string(), "bf16", "bf16"), torch::Device("cuda:0"));
  for (const auto& p : tm.student->parameters()) CHECK(p.is_cuda());
  auto cpu = distill::load_train_models(train_config(dir.string(), "bf16", "bf16"), torch::kCPU);
  const auto g = tm.student->named_parameters()["model.layers.0.self_attn.q_proj.g"].cpu();
  CHECK(torch::allclose(g, cpu.student->named_parameters()["model.layers.0.self_attn.q_proj.g"], 1e-4, 1e-5));
}
