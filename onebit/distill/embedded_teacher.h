// The quickstart's embedded teacher (model.teacher = embedded): a tiny LLaMA pretrained on
// the synthetic language (onebit/data/synthetic_language.h) so that onebit-train can run a
// real distillation on a fresh machine with nothing downloaded.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>

#include "onebit/config/train_config.h"
#include "onebit/models/model_config.h"

namespace onebit::distill {

struct EmbeddedTeacher {
  std::string dir;           // <output_dir>/teacher: config.json, model.safetensors, tokenizer
  std::string heldout_text;  // <output_dir>/heldout.txt: stories of another seed
  bool reused = false;       // true: a complete teacher with the same settings was found
  int64_t steps = 0;         // pretraining optimizer steps (0 when reused)
  double first_loss = 0;     // mean next-token CE of the first steps (0 when reused)
  double last_loss = 0;      // mean next-token CE of the last steps (0 when reused)
};

// The architecture of the embedded teacher `cfg` describes (what its config.json will say).
models::ModelConfig embedded_teacher_config(const config::EmbeddedCfg& cfg);

// Returns the embedded teacher of `output_dir`, pretraining it first unless
// <output_dir>/teacher holds a complete one made with the same `cfg` (the marker
// embedded.json is written last). Pretraining: next-token cross-entropy on packed
// synthetic-language blocks, AdamW (cfg.lr, warm-up then cosine), grad clip 1, until
// cfg.train_tokens tokens were seen. `heldout_docs` stories are written to heldout.txt.
EmbeddedTeacher ensure_embedded_teacher(const config::EmbeddedCfg& cfg, const std::string& output_dir,
                                        torch::Device device = torch::kCPU, bool progress = true,
                                        int64_t heldout_docs = 200);

}  // namespace onebit::distill
