// A tiny random LLaMA teacher and its OneBit student (SVID by SVD) with an fp32 training config,
// for Trainer tests in one process and in several (tests/dist).
#pragma once
#include <torch/torch.h>

#include "onebit/config/train_config.h"
#include "onebit/models/loader.h"
#include "onebit/models/to_onebit.h"
#include "tests/models/tiny.h"

namespace onebit::test {

struct TrainerSetup {
  models::CausalLM teacher, student;
  config::TrainConfig cfg;
  torch::Tensor batch;  // [2, 12] token ids
};

// The same weights for the same model config on every call (and every process).
inline TrainerSetup make_trainer_setup(const models::ModelConfig& mc = tiny_llama_config()) {
  TrainerSetup s;
  torch::manual_seed(3);
  s.teacher = models::build_model(mc);
  s.student = models::build_model(mc);
  {
    torch::NoGradGuard g;
    auto src = s.teacher->named_parameters();
    for (auto& item : s.student->named_parameters()) item.value().copy_(src[item.key()]);
  }
  models::StudentOptions so;
  so.svid = "svd";
  models::to_onebit(*s.student, so);
  s.cfg.model.dtype = "fp32";
  s.cfg.train.precision = "fp32";
  s.cfg.optim.lr = 1e-2;
  s.cfg.optim.warmup_steps = 0;
  s.cfg.optim.schedule = "constant";
  s.cfg.kd.chunk_tokens = 16;
  s.batch = torch::randint(64, {2, 12}, torch::kLong);
  return s;
}

}  // namespace onebit::test
