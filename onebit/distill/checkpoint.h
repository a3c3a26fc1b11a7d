// CheckpointManager: atomic, self-validating training checkpoints under <output_dir>/checkpoints.
// A checkpoint is a folder step-NNNNNNNN with tensors.pt (trainable tensors), optimizer.pt,
// rng.pt, state.json (step, data position, counters) and, written last, manifest.json listing
// every file with its size. Saving writes a temp folder, fsyncs, then renames it into place, so
// a crash leaves either the previous checkpoints or a complete new one; the last K are kept.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace onebit::distill {

// Everything besides tensors needed to continue a run exactly.
struct TrainState {
  int64_t step = 0;                        // optimizer steps done
  std::map<std::string, int64_t> counters; // e.g. data position, epoch, bad-step streak
  std::map<std::string, double> scalars;   // e.g. fp16 loss scale
  std::string config_yaml;                 // the run's resolved config (resume checks it matches)
};

class CheckpointManager {
 public:
  CheckpointManager(std::filesystem::path dir, int64_t keep_last);

  // Writes step-<state.step>; tensors are saved by name (values copied to CPU).
  std::filesystem::path save(const std::map<std::string, torch::Tensor>& tensors, torch::optim::Optimizer& optimizer,
                             const TrainState& state) const;

  // Newest complete checkpoint; incomplete or corrupt ones are skipped with a warning on stderr.
  std::optional<std::filesystem::path> latest_valid() const;

  // Restores tensors (in place, by name: every name must be present), optimizer, RNG and
  // returns the state. Throws onebit::Error naming the checkpoint if it is incomplete or corrupt.
  TrainState load(const std::filesystem::path& checkpoint, const std::map<std::string, torch::Tensor>& tensors,
                  torch::optim::Optimizer& optimizer) const;

  // The state of a valid checkpoint without touching tensors (to vet a resume early).
  static TrainState read_state(const std::filesystem::path& checkpoint);

  // Empty string when valid, otherwise why not.
  static std::string check(const std::filesystem::path& checkpoint);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  int64_t keep_last_;
};

}  // namespace onebit::distill
