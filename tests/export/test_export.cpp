// onebit-export's format: what the folder holds, the size report, the exported model against
// the training-time student (LLaMA, Qwen2, OPT; bias; post-LN), and loading errors.
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "onebit/export/export.h"
#include "onebit/export/format.h"
#include "onebit/export/packed_linear.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/models/to_onebit.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/data/tmpdir.h"
#include "tests/io/model_files.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/models/tiny.h"
#include "tests/references.h"
#include "tests/support.h"

using namespace onebit;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {
constexpr double kFp32Tol = 1e-4;   // fp32 export: the kernels differ in summation order (and int16 tables on AVX-512 VNNI)
constexpr double kFp16Tol = 5e-2;   // fp16 g/h/embeddings/norms against the fp32 student

models::ModelConfig tiny_qwen2_config() {
  return models::parse_model_config(R"({"model_type": "qwen2", "vocab_size": 64, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": true})");
}

// A student as training leaves it: SVID init, then latent weights moved off their init so that
// signs differ from the teacher's, h and g perturbed.
models::CausalLM tiny_student(const models::ModelConfig& cfg, bool post_ln, bool keep_bias, uint64_t seed) {
  torch::manual_seed(seed);
  auto m = models::build_model(cfg);
  models::StudentOptions so;
  so.post_layernorm = post_ln;
  so.keep_bias = keep_bias;
  models::to_onebit(*m, so);
  torch::NoGradGuard ng;
  for (auto& mod : m->modules()) {
    if (auto* ob = dynamic_cast<nn::OneBitLinearImpl*>(mod.get())) {
      ob->weight.add_(torch::randn_like(ob->weight) * 0.01);
      ob->h.mul_(torch::rand_like(ob->h) + 0.5);
      ob->g.mul_(torch::rand_like(ob->g) + 0.5);
      if (ob->bias.defined()) ob->bias.add_(torch::randn_like(ob->bias) * 0.1);
    }
  }
  m->eval();
  return m;
}

torch::Tensor logits(models::CausalLMImpl& m, const torch::Tensor& ids) {
  torch::NoGradGuard ng;
  return m.forward(ids).logits.to(torch::kFloat32);
}

torch::Tensor greedy(models::CausalLMImpl& m, const torch::Tensor& prompt) {
  models::GenerateOptions go;
  go.temperature = 0;
  go.max_new_tokens = 12;
  return models::generate(m, prompt, go);
}

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

using test::copy_dir;
using test::edit_tensors;
}  // namespace

TEST_CASE("onebit-export writes packed signs, fp16 scales, the config block and every tokenizer file", "[export]") {
  test::TempDir tmp("export_format");
  auto student = tiny_student(test::tiny_llama_config(), true, true, 1);
  const std::string src = tmp.str("student");
  models::save_pretrained(student, src);
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
    std::ofstream(src + "/" + f) << "{}";
  packed::ExportOptions o;
  o.tokenizer_dirs = {src};
  const auto stats = packed::export_model(*student, tmp.str("out"), o);
  const std::string out = tmp.str("out");

  const json cfg = json::parse(slurp(out + "/config.json"));
  REQUIRE(cfg.contains("quantization_config"));
  const auto& q = cfg["quantization_config"];
  CHECK(q["quant_method"] == "onebit");
  CHECK(q["format_version"] == 1);
  CHECK(q["bit_order"] == "lsb_first");
  CHECK(q["sign_bit"] == "one_is_negative");
  CHECK(q["scale_dtype"] == "float16");
  CHECK(q["post_layernorm"] == true);
  CHECK(q["modules"].size() == 14);
  CHECK_FALSE(cfg.contains("onebit"));
  CHECK(cfg["torch_dtype"] == "float16");
  CHECK(fs::exists(out + "/modeling_onebit.py"));
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
    CHECK(fs::exists(out + "/" + f));
  CHECK(stats.tokenizer_files.size() == 4);

  io::SafetensorsReader r(out);
  auto q_proj = std::dynamic_pointer_cast<nn::OneBitLinearImpl>(student->named_modules()["model.layers.0.self_attn.q_proj"]);
  const auto& wi = r.info("model.layers.0.self_attn.q_proj.weight_packed");
  CHECK(wi.dtype == torch::kUInt8);
  CHECK(wi.shape == std::vector<int64_t>{32, 4});  // [out, ⌈32/8⌉]
  // The bits, read by hand: bit i%8 of byte i/8 is 1 exactly where the latent weight is < 0.
  const auto bytes = r.load("model.layers.0.self_attn.q_proj.weight_packed");
  const auto w = q_proj->weight.detach();
  int mismatches = 0;
  for (int64_t o = 0; o < 32; ++o)
    for (int64_t i = 0; i < 32; ++i)
      mismatches += ((bytes[o][i / 8].item<int>() >> (i % 8)) & 1) != (w[o][i].item<float>() < 0);
  CHECK(mismatches == 0);
  CHECK(r.info("model.layers.0.self_attn.q_proj.g").dtype == torch::kFloat16);
  CHECK(r.info("model.layers.0.self_attn.q_proj.h").dtype == torch::kFloat16);
  CHECK(r.info("model.embed_tokens.weight").dtype == torch::kFloat16);
  CHECK(r.info("model.norm.weight").dtype == torch::kFloat16);
  CHECK_FALSE(r.contains("model.layers.0.self_attn.q_proj.weight"));

  // bf16 option.
  o.dtype = torch::kBFloat16;
  packed::export_model(*student, tmp.str("out_bf16"), o);
  io::SafetensorsReader rb(tmp.str("out_bf16"));
  CHECK(rb.info("model.layers.1.mlp.down_proj.h").dtype == torch::kBFloat16);
  CHECK(rb.info("lm_head.weight").dtype == torch::kBFloat16);
  // An existing non-empty folder is refused, then replaced with overwrite.
  CHECK_THROWS_WITH(packed::export_model(*student, out, {}), OB_CONTAINS("exists and is not empty"));
  packed::ExportOptions ow;
  ow.overwrite = true;
  packed::export_model(*student, out, ow);
  CHECK_FALSE(fs::exists(out + "/vocab.json"));
}

TEST_CASE("a 4096x4096 packed layer with fp16 g and h takes 1.0073 bits per weight, from the file", "[export]") {
  // One 4096x4096 OneBit projection (q_proj); the rest stays small and full precision.
  auto cfg = models::parse_model_config(R"({"model_type": "llama", "vocab_size": 16, "hidden_size": 4096,
      "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 1})");
  torch::manual_seed(0);
  auto m = models::build_model(cfg);
  models::StudentOptions so;
  so.svid = "none";
  so.layers = R"(model\.layers\.0\.self_attn\.q_proj)";
  models::to_onebit(*m, so);
  test::TempDir tmp("export_bits");
  const auto s = packed::export_model(*m, tmp.str("out"), {});
  CHECK(s.layers == 1);
  CHECK(s.linear_params == 4096 * 4096 + 2 * 4096);
  CHECK(s.linear_bytes == 4096 * 512 + 2 * 4096 * 2);
  CHECK(s.linear_bits() == Approx(16908288.0 / 16785408.0).epsilon(1e-12));
  CHECK(s.linear_bits() == Approx(1.0073).margin(5e-5));
  CHECK(s.file_bytes > s.model_bytes);  // headers on top of the tensor bytes
  CHECK(s.file_bytes < s.model_bytes + 64 * 1024);
}

TEST_CASE("plan_export gives the written files' numbers from the shapes; a LLaMA-7B export is 1.3 GB", "[export]") {
  struct Case {
    const char* what;
    models::ModelConfig cfg;
    torch::Dtype dtype;
  };
  const std::vector<Case> cases = {{"llama fp16", test::tiny_llama_config(), torch::kFloat16},
                                   {"qwen2 bf16 (biases, tied)", tiny_qwen2_config(), torch::kBFloat16},
                                   {"opt fp32 (biases)", test::tiny_opt_config(), torch::kFloat32}};
  for (const auto& c : cases) {
    INFO(c.what);
    test::TempDir tmp("export_plan");
    auto student = tiny_student(c.cfg, true, true, 4);
    packed::ExportOptions o;
    o.dtype = c.dtype;
    const auto written = packed::export_model(*student, tmp.str("out"), o);
    const auto planned = packed::plan_export(c.cfg, c.dtype);
    CHECK(planned.layers == written.layers);
    CHECK(planned.linear_params == written.linear_params);
    CHECK(planned.linear_bytes == written.linear_bytes);
    CHECK(planned.model_params == written.model_params);
    CHECK(planned.model_bytes == written.model_bytes);
  }
  // method.md §7: LLaMA-7B 13.5 GB in fp16 -> 1.3 GB at 1 bit (embeddings and lm_head stay fp16).
  const auto cfg7b = models::load_model_config((test::source_dir() / "configs/models/llama-7b/config.json").string());
  const auto s = packed::plan_export(cfg7b);
  CHECK(s.layers == 224);
  CHECK(s.model_params == Approx(6.738e9).epsilon(2e-3));
  CHECK(double(s.model_bytes) / 1e9 == Approx(1.3).margin(0.05));
  CHECK(s.linear_bits() == Approx(1.0).margin(0.01));
  WARN("LLaMA-7B export: " << double(s.model_bytes) / 1e9 << " GB, linears " << s.linear_bits()
                           << " bits/param, whole model " << s.model_bits() << " bits/param");
}

TEST_CASE("sharded exports load back", "[export]") {
  test::TempDir tmp("export_shards");
  auto student = tiny_student(test::tiny_llama_config(), true, true, 2);
  packed::ExportOptions o;
  o.dtype = torch::kFloat32;
  o.max_shard_bytes = 8 * 1024;
  const auto s = packed::export_model(*student, tmp.str("out"), o);
  CHECK(s.shards > 1);
  CHECK(fs::exists(tmp.str("out") + "/model.safetensors.index.json"));
  auto back = models::load_pretrained(tmp.str("out"));
  const auto ids = torch::randint(3, 64, {1, 9}, torch::kLong);
  CHECK((logits(*back, ids) - logits(*student, ids)).abs().max().item<double>() < kFp32Tol);
}

TEST_CASE("an exported model gives the student's logits and greedy text (LLaMA, Qwen2, OPT; bias; post-LN)",
          "[export]") {
  struct Case {
    const char* name;
    models::ModelConfig cfg;
    bool post_ln, bias;
  };
  const std::vector<Case> cases = {{"llama post-LN", test::tiny_llama_config(), true, false},
                                   {"llama no post-LN", test::tiny_llama_config(true), false, false},
                                   {"qwen2 qkv bias", tiny_qwen2_config(), true, true},
                                   {"opt bias post-LN", test::tiny_opt_config(), true, true},
                                   {"opt no bias, no post-LN", test::tiny_opt_config(), false, false}};
  test::TempDir tmp("export_logits");
  uint64_t seed = 10;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto student = tiny_student(c.cfg, c.post_ln, c.bias, seed++);
    const auto ids = torch::randint(3, 64, {2, 11}, torch::kLong);
    const auto ref = logits(*student, ids);
    const auto ref_text = greedy(*student, ids.slice(0, 0, 1).slice(1, 0, 4));
    for (torch::Dtype dt : {torch::kFloat32, torch::kFloat16}) {
      CAPTURE(dt);
      packed::ExportOptions o;
      o.dtype = dt;
      o.overwrite = true;
      const std::string dir = tmp.str(std::string(c.name) + "-" + packed::dtype_name(dt));
      packed::export_model(*student, dir, o);
      auto exported = models::load_pretrained(dir);
      exported->eval();
      size_t packed_layers = 0;
      for (auto& mod : exported->modules()) packed_layers += bool(dynamic_cast<packed::PackedOneBitLinearImpl*>(mod.get()));
      size_t onebit_layers = 0;
      for (auto& mod : student->modules()) onebit_layers += bool(dynamic_cast<nn::OneBitLinearImpl*>(mod.get()));
      CHECK(packed_layers == onebit_layers);
      CHECK(packed_layers == size_t(c.cfg.model_type == "opt" ? 12 : 14));
      const double err = (logits(*exported, ids) - ref).abs().max().item<double>();
      const double scale = ref.abs().max().item<double>();
      if (dt == torch::kFloat32) {
        CHECK(err < kFp32Tol * std::max(1.0, scale));
        CHECK(torch::equal(greedy(*exported, ids.slice(0, 0, 1).slice(1, 0, 4)), ref_text));
      } else {
        CHECK(err < kFp16Tol * std::max(1.0, scale));
      }
    }
  }
}

TEST_CASE("loading an export validates version, packed shape, padding, tensors and dtypes", "[export]") {
  test::TempDir tmp("export_bad");
  auto student = tiny_student(test::tiny_llama_config(), true, false, 3);
  const fs::path good = tmp.path / "good";
  packed::export_model(*student, good.string(), {});
  const fs::path bad = tmp.path / "bad";
  const std::string signs = "model.layers.0.self_attn.q_proj.weight_packed";

  auto with_config = [&](const std::function<void(json&)>& edit) {
    copy_dir(good, bad);
    json j = json::parse(slurp((bad / "config.json").string()));
    edit(j);
    std::ofstream((bad / "config.json").string()) << j.dump();
    return bad.string();
  };
  auto with_tensors = [&](const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit) {
    copy_dir(good, bad);
    edit_tensors(bad.string(), edit);
    return bad.string();
  };
  auto find = [&](std::vector<std::pair<std::string, torch::Tensor>>& ts, const std::string& n) -> torch::Tensor& {
    for (auto& t : ts)
      if (t.first == n) return t.second;
    FAIL("no tensor " << n);
    return ts[0].second;
  };

  CHECK_THROWS_WITH(models::load_pretrained(with_config([](json& j) { j["quantization_config"]["format_version"] = 2; })),
                    OB_CONTAINS("format_version 2 is not supported (this build reads 1)"));
  CHECK_THROWS_WITH(models::load_pretrained(with_config([](json& j) { j["quantization_config"]["quant_method"] = "gptq"; })),
                    OB_CONTAINS("quant_method is 'gptq'"));
  CHECK_THROWS_WITH(models::load_pretrained(with_config([](json& j) { j["quantization_config"]["bit_order"] = "msb_first"; })),
                    OB_CONTAINS("bit_order 'msb_first' is not supported"));
  CHECK_THROWS_WITH(models::load_pretrained(with_config([](json& j) { j["quantization_config"].erase("scale_dtype"); })),
                    OB_CONTAINS("missing string key 'scale_dtype'"));
  CHECK_THROWS_WITH(models::load_pretrained(with_config([](json& j) { j["quantization_config"]["modules"].erase(0); })),
                    OB_CONTAINS("selects 14 linears of this llama but 13 are listed"));
  CHECK_THROWS_WITH(models::load_pretrained(with_tensors([&](auto& ts) { find(ts, signs) = find(ts, signs).narrow(1, 0, 3).contiguous(); })),
                    OB_CONTAINS("packed signs have shape [32, 3], expected [32, 4] (32 inputs = 4 bytes per row)"));
  CHECK_THROWS_WITH(models::load_pretrained(with_tensors([&](auto& ts) { find(ts, signs) = find(ts, signs).to(torch::kFloat16); })),
                    OB_CONTAINS("packed signs must be uint8, got Half"));
  CHECK_THROWS_WITH(models::load_pretrained(with_tensors([&](auto& ts) {
                      auto& g = find(ts, "model.layers.1.mlp.up_proj.g");
                      g = g.to(torch::kFloat32);
                    })),
                    OB_CONTAINS("'model.layers.1.mlp.up_proj.g' in " + bad.string() +
                                " has dtype float32, quantization_config.scale_dtype says float16"));
  CHECK_THROWS_WITH(models::load_pretrained(with_tensors([&](auto& ts) {
                      ts.erase(std::remove_if(ts.begin(), ts.end(), [&](auto& t) { return t.first == "model.layers.0.mlp.gate_proj.h"; }),
                               ts.end());
                    })),
                    OB_CONTAINS("missing tensor 'model.layers.0.mlp.gate_proj.h'"));
  CHECK_THROWS_WITH(models::load_pretrained(with_tensors([&](auto& ts) { ts.emplace_back("model.layers.0.extra", torch::zeros({2})); })),
                    OB_CONTAINS("unexpected tensor 'model.layers.0.extra'"));
  CHECK_THROWS_WITH(models::load_pretrained(with_tensors([&](auto& ts) {
                      ts.emplace_back("model.layers.0.self_attn.q_proj.weight", torch::zeros({32, 32}));
                    })),
                    OB_CONTAINS("unexpected tensor 'model.layers.0.self_attn.q_proj.weight'"));
  // A packed model is not re-saved as a student.
  auto exported = models::load_pretrained(good.string());
  CHECK_THROWS_WITH(models::save_pretrained(exported, tmp.str("resaved")), OB_CONTAINS("write exports with onebit-export"));
}

TEST_CASE("onebit-export program: a run folder in, sizes out; bad arguments give one line", "[export]") {
  test::TempDir tmp("export_program");
  auto student = tiny_student(test::tiny_opt_config(), true, true, 4);
  fs::create_directories(tmp.path / "run");
  models::save_pretrained(student, tmp.str("run/student"));
  std::ofstream(tmp.str("run/student/vocab.json")) << "{}";
  auto run = [](const std::string& args) {
    const std::string cmd = (test::binary_dir() / "onebit-export").string() + " " + args + " 2>&1";
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    while (p && std::fgets(buf.data(), buf.size(), p)) out += buf.data();
    const int rc = p ? ::pclose(p) : -1;
    return std::make_pair(rc, out);
  };
  auto [rc, out] = run("--model " + tmp.str("run") + " --out " + tmp.str("exp"));
  INFO(out);
  REQUIRE(rc == 0);
  CHECK_THAT(out, OB_CONTAINS("bits/parameter"));
  CHECK_THAT(out, OB_CONTAINS("tokenizer files: vocab.json"));
  CHECK(fs::exists(tmp.str("exp/vocab.json")));
  auto [rc2, out2] = run("--model " + tmp.str("run") + " --out " + tmp.str("exp2") + " --dtype int8");
  CHECK(rc2 != 0);
  CHECK_THAT(out2, OB_CONTAINS("--dtype: unknown dtype 'int8'"));
  CHECK(std::count(out2.begin(), out2.end(), '\n') == 1);
  auto [rc3, out3] = run("--model " + tmp.str("nowhere") + " --out " + tmp.str("exp3"));
  CHECK(rc3 != 0);
  CHECK_THAT(out3, OB_CONTAINS("holds neither config.json nor student/config.json"));
}

TEST_CASE("SmolLM2-135M as a 1-bit export: the student's logits and greedy text, through the library and the programs",
          "[export][smollm2]") {
  OB_SMOLLM2_OR_SKIP(dir);
  torch::manual_seed(0);
  auto student = models::load_pretrained(dir.string());
  models::StudentOptions so;
  so.svid = "svd";
  const auto replaced = models::to_onebit(*student, so);
  CHECK(replaced.size() == 30 * 7);
  student->eval();
  test::TempDir tmp("export_smollm2");
  packed::ExportOptions o;
  o.dtype = torch::kFloat32;  // exact but for the kernels' summation order
  o.tokenizer_dirs = {dir.string()};
  const auto stats = packed::export_model(*student, tmp.str("out"), o);
  CHECK(stats.layers == 210);
  CHECK(stats.linear_bits() < 1.1);
  const auto tok = tokenizer::load_tokenizer(tmp.str("out"));
  const auto ids_vec = tok->encode_with_special("Once upon a time, a little robot");
  const auto ids = torch::tensor(ids_vec, torch::kLong).unsqueeze(0);
  const auto ls = logits(*student, ids);
  const double scale = std::max(1.0, ls.abs().max().item<double>());
  {  // The exact fp32 kernel (runtime rows): the summation order only.
    ::setenv("ONEBIT_CPU_KERNEL", "avx512", 1);
    auto exported = models::load_pretrained(tmp.str("out"));
    ::unsetenv("ONEBIT_CPU_KERNEL");
    CHECK((ls - logits(*exported, ids)).abs().max().item<double>() < 1e-4 * scale);
  }
  // This CPU's default kernel: on AVX-512 VNNI its int16 tables, 30 layers deep (docs/deployment.md).
  auto exported = models::load_pretrained(tmp.str("out"));
  const auto le = logits(*exported, ids);
  const bool tables = packed::layout_for(packed::CpuKernel::Auto) == kernels::SignLayout::Tiles;
  CAPTURE(tables);
  CHECK((ls - le).abs().max().item<double>() < (tables ? 1e-3 : 1e-4) * scale);
  const auto gs = greedy(*student, ids), ge = greedy(*exported, ids);
  CHECK(torch::equal(gs, ge));
  // The programs run the exported folder directly.
  const std::string bin = test::binary_dir().string();
  const auto [rc_gen, out_gen] = test::run_shell("OMP_NUM_THREADS=1 '" + bin + "/onebit-generate' --model '" +
                                                 tmp.str("out") + "' --prompt 'Once upon a time' --max-new-tokens 4 2>&1");
  INFO(out_gen);
  CHECK(rc_gen == 0);
  CHECK_THAT(out_gen, OB_CONTAINS("4 tokens in"));
  std::ofstream(tmp.str("text.txt")) << "Once upon a time, there was a little robot who liked to read books.\n";
  const auto [rc_eval, out_eval] = test::run_shell("OMP_NUM_THREADS=1 '" + bin + "/onebit-eval' --model '" + tmp.str("out") +
                                                   "' --ppl '" + tmp.str("text.txt") + "' --seq-len 8 --quiet --json '" +
                                                   tmp.str("eval.json") + "' 2>&1");
  INFO(out_eval);
  REQUIRE(rc_eval == 0);
  const auto j = json::parse(slurp(tmp.str("eval.json")));
  INFO(j.dump());
  const double ppl = j.at("student").at("perplexity").at(0).at("ppl").get<double>();
  CHECK(std::isfinite(ppl));
  CHECK(ppl > 1.0);
}
