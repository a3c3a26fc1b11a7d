// Trainer on a tiny random LLaMA (CPU, fp32): the KD loss falls, NaN streaks stop the run.
#include <torch/torch.h>

#include "onebit/config/train_config.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/distill/trainer.h"
#include "onebit/models/loader.h"
#include "onebit/models/model_config.h"
#include "onebit/models/to_onebit.h"
#include "tests/support.h"

namespace {

onebit::models::ModelConfig tiny() {
  return onebit::models::parse_model_config(R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false})");
}

struct Setup {
  onebit::models::CausalLM teacher, student;
  onebit::config::TrainConfig cfg;
  torch::Tensor batch;
};

Setup make_setup() {
  Setup s;
  torch::manual_seed(3);
  s.teacher = onebit::models::build_model(tiny());
  s.student = onebit::models::build_model(tiny());
  {
    torch::NoGradGuard g;
    auto src = s.teacher->named_parameters();
    for (auto& item : s.student->named_parameters()) item.value().copy_(src[item.key()]);
  }
  onebit::models::StudentOptions so;
  so.svid = "svd";
  onebit::models::to_onebit(*s.student, so);
  s.cfg.model.dtype = "fp32";
  s.cfg.train.precision = "fp32";
  s.cfg.optim.lr = 1e-2;
  s.cfg.optim.warmup_steps = 0;
  s.cfg.optim.schedule = "constant";
  s.cfg.kd.chunk_tokens = 16;
  s.batch = torch::randint(64, {2, 12}, torch::kLong);
  return s;
}

}  // namespace

TEST_CASE("trainer: distillation loss falls on a fixed batch", "[distill]") {
  Setup s = make_setup();
  onebit::dist::NoSync sync;
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
  const auto first = tr.step();
  onebit::distill::StepStats last;
  for (int i = 0; i < 29; ++i) last = tr.step();
  CHECK(last.step == 30);
  CHECK(last.tokens == 24);
  CHECK(first.kl > 0);
  CHECK(last.loss < 0.7 * first.loss);
  CHECK(last.grad_norm > 0);
  CHECK(!tr.trainable().empty());
  // Only latent W, g, h train.
  for (const auto& [name, t] : tr.trainable()) CHECK(name.find("embed") == std::string::npos);
}

TEST_CASE("trainer: a NaN loss streak stops with a clear error", "[distill]") {
  Setup s = make_setup();
  {
    torch::NoGradGuard g;
    for (auto& p : s.teacher->parameters()) p.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  s.cfg.train.max_bad_steps = 3;
  onebit::dist::NoSync sync;
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 10);
  CHECK(tr.step().skipped);
  CHECK(tr.step().skipped);
  CHECK_THROWS_WITH(tr.step(), OB_CONTAINS("NaN/inf for 3 steps in a row"));
  CHECK(tr.steps_done() == 0);
}
