#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "tests/models/reference.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using namespace onebit;
using namespace onebit::models;
namespace fs = std::filesystem;

namespace {
// Rewrites one key of dir/config.json.
void edit_config(const fs::path& dir, const std::string& key, const nlohmann::json& value) {
  std::ifstream in(dir / "config.json");
  auto j = nlohmann::json::parse(in);
  j[key] = value;
  std::ofstream(dir / "config.json") << j.dump(2);
}

torch::Tensor logits_of(CausalLMImpl& m, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  return m.forward(ids).logits;
}
}  // namespace

TEST_CASE("save_pretrained then load_pretrained round trip: fp32 bf16 tied OPT", "[models]") {
  const auto ids = torch::randint(3, 64, {2, 9}, torch::kLong);
  for (const auto& cfg : {test::tiny_llama_config(false), test::tiny_llama_config(true), test::tiny_opt_config()}) {
    INFO(cfg.model_type << " tied " << cfg.tie_word_embeddings);
    torch::manual_seed(3);
    auto model = build_model(cfg);
    const auto dir = test::scratch_dir("roundtrip");
    save_pretrained(model, dir.string());
    io::SafetensorsReader reader(dir.string());
    CHECK(reader.contains("lm_head.weight") == !cfg.tie_word_embeddings);
    auto back = load_pretrained(dir.string());
    CHECK(torch::equal(logits_of(*model, ids), logits_of(*back, ids)));

    save_pretrained(model, dir.string(), torch::kBFloat16);
    CHECK(io::SafetensorsReader(dir.string()).info(cfg.model_type == "opt" ? "model.decoder.embed_tokens.weight"
                                                                          : "model.embed_tokens.weight")
              .dtype == torch::kBFloat16);
    auto bf = load_pretrained(dir.string(), {torch::kCPU, torch::kBFloat16});
    CHECK(bf->lm_head_weight().scalar_type() == torch::kBFloat16);
    auto f32 = load_pretrained(dir.string());  // bf16 file into fp32 parameters
    CHECK(f32->lm_head_weight().scalar_type() == torch::kFloat32);
  }
}

TEST_CASE("load_pretrained reports missing or unexpected tensors and wrong shapes", "[models]") {
  const auto dir = test::scratch_dir("bad_inputs");
  auto model = build_model(test::tiny_llama_config());
  save_pretrained(model, dir.string());

  edit_config(dir, "num_hidden_layers", 3);
  CHECK_THROWS_WITH(load_pretrained(dir.string()), OB_CONTAINS("missing tensor 'model.layers.2."));
  edit_config(dir, "num_hidden_layers", 1);
  CHECK_THROWS_WITH(load_pretrained(dir.string()), OB_CONTAINS("unexpected tensor 'model.layers.1."));
  edit_config(dir, "num_hidden_layers", 2);
  edit_config(dir, "intermediate_size", 40);
  CHECK_THROWS_WITH(load_pretrained(dir.string()),
                    OB_CONTAINS("tensor 'model.layers.0.mlp.gate_proj.weight' in " + dir.string() +
                                " has shape [48, 32], the config expects [40, 32]"));
  edit_config(dir, "intermediate_size", 48);
  edit_config(dir, "model_type", "gpt2");
  CHECK_THROWS_WITH(load_pretrained(dir.string()), OB_CONTAINS("unsupported model_type 'gpt2'"));
  edit_config(dir, "model_type", "llama");
  CHECK_NOTHROW(load_pretrained(dir.string()));
  CHECK_THROWS_WITH(load_pretrained((dir / "nope").string()), OB_CONTAINS("is not a directory"));
}

TEST_CASE("tied lm_head is the embedding matrix", "[models]") {
  auto model = build_model(test::tiny_llama_config(true));
  auto names = model->named_parameters().keys();
  CHECK(std::find(names.begin(), names.end(), "lm_head.weight") == names.end());
  CHECK(model->lm_head_weight().data_ptr() == model->named_parameters()["model.embed_tokens.weight"].data_ptr());
}

TEST_CASE("HF parameter names", "[models]") {
  auto llama = build_model(test::tiny_llama_config());
  auto p = llama->named_parameters();
  for (const char* n : {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight",
                        "model.layers.1.mlp.gate_proj.weight", "model.layers.0.input_layernorm.weight",
                        "model.layers.0.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight"})
    CHECK(p.contains(n));
  CHECK(p.size() == 3 + 2 * 9);
  auto opt = build_model(test::tiny_opt_config());
  auto q = opt->named_parameters();
  for (const char* n : {"model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight",
                        "model.decoder.project_in.weight", "model.decoder.project_out.weight",
                        "model.decoder.layers.0.fc1.weight", "model.decoder.layers.0.self_attn.out_proj.bias",
                        "model.decoder.layers.1.self_attn_layer_norm.weight"})
    CHECK(q.contains(n));
  CHECK_FALSE(q.contains("model.decoder.final_layer_norm.weight"));  // post-LN OPT has none
  CHECK(q["model.decoder.embed_positions.weight"].size(0) == 64 + 2);
}
