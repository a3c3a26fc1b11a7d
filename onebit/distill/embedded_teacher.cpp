#include "onebit/distill/embedded_teacher.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/data/packed_blocks.h"
#include "onebit/data/synthetic_language.h"
#include "onebit/distill/schedule.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/util/progress.h"

namespace fs = std::filesystem;

namespace onebit::distill {

namespace {

constexpr const char* kMarker = "embedded.json";
// Held-out stories come from another stream than the training ones.
constexpr uint64_t kHeldoutSeedOffset = 1'000'003;
constexpr double kAvgTokensPerStory = 100.0;  // stories average ~110 tokens; err on more stories

nlohmann::json settings(const config::EmbeddedCfg& c) {
  return {{"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
          {"num_layers", c.num_layers},   {"num_heads", c.num_heads},
          {"num_kv_heads", c.num_kv_heads}, {"train_tokens", c.train_tokens},
          {"batch_size", c.batch_size},   {"seq_len", c.seq_len},
          {"lr", c.lr},                   {"seed", c.seed},
          {"vocab_size", data::synthetic::vocab_size()}};
}

bool complete_teacher(const fs::path& dir, const nlohmann::json& want) {
  std::ifstream f(dir / kMarker);
  if (!f) return false;
  try {
    nlohmann::json have = nlohmann::json::parse(f);
    return have.contains("settings") && have["settings"] == want && fs::exists(dir / "config.json") &&
           fs::exists(dir / "model.safetensors") && fs::exists(dir / "tokenizer.json");
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}


}  // namespace

models::ModelConfig embedded_teacher_config(const config::EmbeddedCfg& c) {
  models::ModelConfig m;
  m.model_type = "llama";
  m.vocab_size = data::synthetic::vocab_size();
  m.hidden_size = c.hidden_size;
  m.intermediate_size = c.intermediate_size;
  m.num_hidden_layers = c.num_layers;
  m.num_attention_heads = c.num_heads;
  m.num_key_value_heads = c.num_kv_heads;
  m.head_dim = c.hidden_size / c.num_heads;
  m.max_position_embeddings = std::max<int64_t>(2048, c.seq_len);
  m.rms_norm_eps = 1e-5;
  m.tie_word_embeddings = true;
  m.bos_token_id = data::synthetic::kBosId;
  m.eos_token_id = data::synthetic::kEosId;
  m.torch_dtype = "float32";
  // config.json gets the special ids through raw_json (model_config_to_json keeps its keys).
  m.raw_json = nlohmann::json{{"architectures", {"LlamaForCausalLM"}},
                              {"bos_token_id", m.bos_token_id},
                              {"eos_token_id", m.eos_token_id},
                              {"attention_bias", false},
                              {"mlp_bias", false}}
                   .dump();
  return m;
}

EmbeddedTeacher ensure_embedded_teacher(const config::EmbeddedCfg& cfg, const std::string& output_dir,
                                        torch::Device device, bool progress, int64_t heldout_docs) {
  OB_CHECK(cfg.train_tokens > 0, "embedded.train_tokens must be > 0, got ", cfg.train_tokens);
  OB_CHECK(heldout_docs > 0, "embedded teacher: heldout_docs must be > 0, got ", heldout_docs);
  EmbeddedTeacher r;
  const fs::path out = output_dir;
  const fs::path dir = out / "teacher";
  r.dir = dir.string();
  r.heldout_text = (out / "heldout.txt").string();
  const nlohmann::json want = settings(cfg);

  if (!fs::exists(r.heldout_text) || !complete_teacher(dir, want)) {
    fs::create_directories(out);
    data::synthetic::write_documents(
        r.heldout_text, data::synthetic::generate_documents(heldout_docs, cfg.seed + kHeldoutSeedOffset));
  }
  if (complete_teacher(dir, want)) {
    r.reused = true;
    return r;
  }

  torch::AutoGradMode grad_on(true);  // callers may hold a NoGradGuard
  torch::manual_seed(cfg.seed);
  auto model = models::build_model(embedded_teacher_config(cfg), models::LoadOptions{device, torch::kFloat32});
  model->train();

  const int64_t tokens_per_step = cfg.batch_size * cfg.seq_len;
  const int64_t steps = std::max<int64_t>(1, (cfg.train_tokens + tokens_per_step - 1) / tokens_per_step);
  const int64_t stories =
      static_cast<int64_t>(static_cast<double>(cfg.train_tokens + 2 * tokens_per_step) / kAvgTokensPerStory) + 1;
  auto blocks = std::make_shared<const data::PackedBlocks>(
      data::synthetic::token_dataset(stories, cfg.seed),
      data::PackOptions{cfg.seq_len, data::synthetic::kBosId, data::synthetic::kEosId});
  OB_CHECK(blocks->num_blocks() >= cfg.batch_size, "embedded teacher: ", blocks->num_blocks(), " blocks of ",
           cfg.seq_len, " tokens are fewer than one batch of embedded.batch_size=", cfg.batch_size);
  data::BatchOptions bo;
  bo.batch_size = cfg.batch_size;
  bo.seed = cfg.seed;
  data::BatchIterator batches(blocks, bo);

  torch::optim::AdamW opt(model->parameters(),
                          torch::optim::AdamWOptions(cfg.lr).betas({0.9, 0.95}).weight_decay(0.01));
  ScheduleOptions so;
  so.kind = "cosine";
  so.warmup_steps = std::min<int64_t>(100, std::max<int64_t>(1, steps / 10));
  so.total_steps = steps;
  so.min_lr_ratio = 0.1;

  // Loss averaged over the first and last `window` steps: a fair "did it learn" signal.
  const int64_t window = std::max<int64_t>(1, std::min<int64_t>(20, steps / 4));
  double first_sum = 0, last_sum = 0;
  std::optional<util::ProgressBar> bar;
  if (progress) bar.emplace("pretrain embedded teacher", steps, "steps");
  for (int64_t s = 0; s < steps; ++s) {
    const torch::Tensor ids = batches.next().to(device);
    const double lr = cfg.lr * lr_factor(s + 1, so);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    opt.zero_grad();
    const torch::Tensor logits = model->forward(ids.slice(1, 0, -1)).logits;
    const torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}), ids.slice(1, 1).reshape({-1}));
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt.step();
    const double l = loss.item<double>();
    OB_CHECK(std::isfinite(l), "embedded teacher pretraining: loss is ", l, " at step ", s + 1,
             " (lower embedded.lr)");
    if (s < window) first_sum += l;
    if (s >= steps - window) last_sum += l;
    if (progress) {
      char extra[48];
      std::snprintf(extra, sizeof extra, "loss %.4f", l);
      bar->update(s + 1, extra);
    }
  }
  if (bar) bar->finish();
  r.steps = steps;
  r.first_loss = first_sum / static_cast<double>(window);
  r.last_loss = last_sum / static_cast<double>(window);

  model->eval();
  models::save_pretrained(model, dir.string());
  data::synthetic::write_tokenizer(dir.string());
  io::write_file_atomic((dir / kMarker).string(),
                        nlohmann::json{{"settings", want},
                                       {"steps", steps},
                                       {"first_loss", r.first_loss},
                                       {"last_loss", r.last_loss}}
                                .dump(2) +
                            "\n");
  if (progress)
    std::cerr << "embedded teacher: loss " << r.first_loss << " -> " << r.last_loss << " in " << steps
              << " steps, saved to " << r.dir << std::endl;
  return r;
}

}  // namespace onebit::distill
