// The memory planner behind `onebit-train --dry-run`: from a resolved TrainConfig and the
// teacher's config.json alone (no weights), the model's parameter counts, the run's length,
// and the memory one rank needs, by component, for the world size, sharding and precision.
// docs/training.md ("Will it fit?") explains every component; bench/bench_memory_plan.cpp
// checks the plan against the measured peak of a training step.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "onebit/config/train_config.h"
#include "onebit/models/model_config.h"

namespace onebit::plan {

// What the plan depends on besides the config: where and how the run executes.
struct PlanOptions {
  int64_t world_size = 1;
  bool cuda = true;                   // GPU run: the CUDA context in the margin; CPU: a runtime component
  bool share_frozen = false;          // the student uses the teacher's embeddings, lm_head, norms
  int64_t budget_bytes = 0;           // memory of one device; 0 = unknown (no fit verdict)
};

struct Component {
  std::string key;    // JSON key: "teacher", "activations", ...
  std::string label;  // table row
  int64_t bytes = 0;
  std::string note;   // how it was counted
};

struct MemoryPlan {
  models::ModelConfig model;
  PlanOptions options;
  std::string sharding;  // none | optimizer | gradients | full
  std::string latent_dtype, state_dtype;  // student.latent_dtype, optim.state_dtype
  bool shard_teacher = false;
  // Parameters (elements).
  int64_t params_total = 0;      // the teacher
  int64_t params_replaced = 0;   // weights of the linears replaced by OneBitLinear
  int64_t params_trainable = 0;  // latent W, g, h of the student
  int64_t replaced_linears = 0;
  // Run length.
  int64_t tokens_per_step = 0;  // all ranks, all micro-steps of one optimizer step
  int64_t blocks = -1;          // training blocks (-1: unknown until the data is tokenized)
  int64_t steps = -1;           // optimizer steps (-1: unknown)
  double epochs = 0;
  // Memory of one rank.
  std::vector<Component> components;   // live at the step's peak, margin excluded
  bool checkpointing = false;          // model.gradient_checkpointing
  int64_t activations_other = 0;       // activations with the other gradient_checkpointing setting
  int64_t peak_bytes = 0;              // sum of components
  int64_t margin_bytes = 0;            // allocator margin (named in margin_note)
  std::string margin_note;
  int64_t total_bytes = 0;             // peak + margin
  // Fit against options.budget_bytes (when known).
  bool fits = true;
  std::vector<std::string> suggestions;  // what would make it fit, each a config change and its total

  const Component& component(const std::string& key) const;
};

// The plan of `cfg` with the teacher described by `teacher` (its config.json).
MemoryPlan plan_memory(const config::TrainConfig& cfg, const models::ModelConfig& teacher,
                       const PlanOptions& options);

// The teacher architecture `cfg` names: model.teacher's config.json (nothing else is read),
// or the embedded teacher's settings.
models::ModelConfig teacher_model_config(const config::TrainConfig& cfg);

// Plan options of a run of `cfg` over `world_size` ranks on CUDA or CPU, with the student
// sharing the teacher's frozen tensors as load_train_models does; budget 0 (unknown).
PlanOptions run_options(const config::TrainConfig& cfg, int64_t world_size, bool cuda);

// The human table that --dry-run prints, and the JSON that --json writes.
std::string format_plan(const MemoryPlan& plan);
std::string plan_json(const MemoryPlan& plan);

// "80GiB", "80GB" (10^9), "81920MiB", "1.5TiB", "123456" (bytes) -> bytes; onebit::Error otherwise.
int64_t parse_bytes(const std::string& text);
std::string format_bytes(int64_t bytes);  // "12.34 GiB"

}  // namespace onebit::plan
