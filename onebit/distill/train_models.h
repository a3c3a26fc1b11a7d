// The two models of a distillation run, as onebit-train builds them from a TrainConfig:
// the frozen teacher (model.dtype) and its OneBit student (latent W in student.latent_dtype; g, h fp32).
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

#include "onebit/config/train_config.h"
#include "onebit/models/causal_lm.h"
#include "onebit/models/to_onebit.h"

namespace onebit::distill {

struct TrainModels {
  models::CausalLM teacher, student;
  std::vector<std::string> replaced;  // the linears the student holds as OneBitLinear
};

// A dtype key's value (fp32 | bf16 | fp16) as a torch dtype; anything else an error naming `key`.
torch::Dtype config_dtype(const std::string& name, const std::string& key);

// The student section as to_onebit's options.
models::StudentOptions student_options(const config::StudentCfg& s);

// Whether the student uses the teacher's frozen tensors (embeddings, lm_head, norms, and any
// linear it keeps) instead of fp32 copies: when the teacher is fp32, or when train.precision
// computes in the teacher's dtype anyway (bf16 with bf16, fp16 with fp16).
bool shares_frozen(const config::TrainConfig& cfg);

// Loads cfg.model.teacher (a Hugging Face folder) on `device` as the teacher; the student is
// a second load of only the linears it replaces (fp32), converted on `device` (SVID init;
// only W, g, h train; W then stored in student.latent_dtype), with the teacher's frozen
// tensors when shares_frozen(cfg).
TrainModels load_train_models(const config::TrainConfig& cfg, torch::Device device);

}  // namespace onebit::distill
