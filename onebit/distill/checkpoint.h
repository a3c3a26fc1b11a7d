// CheckpointManager: atomic, self-validating training checkpoints under <output_dir>/checkpoints.
// A checkpoint is a folder step-NNNNNNNN with one shard file per owner of training state,
// shard-RRRRR-of-SSSSS.pt (a ParamSync's state(): parameter shard and AdamW state; one file in
// dist.sharding=none, one per rank otherwise), rng.pt, state.json (step, data position,
// counters) and, written last, manifest.json listing every file with its size, the world size
// and the sharding. save() and load() are collective: every rank calls them. Each rank writes
// its own shard in parallel into a temp folder; only after every rank reported its shard
// complete does rank 0 write the manifest and rename the folder into place. A crash leaves
// the previous checkpoints or a complete new one; a checkpoint with a shard missing is skipped
// for the previous complete one. The last K are kept. The output folder must be shared by all
// ranks (one filesystem).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "onebit/dist/param_sync.h"

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

  // Writes step-<state.step> (state and RNG from rank 0, each shard from its rank).
  std::filesystem::path save(dist::ParamSync& params, const TrainState& state) const;

  // Newest complete checkpoint; incomplete or corrupt ones are skipped with a warning on stderr.
  std::optional<std::filesystem::path> latest_valid() const;

  // Restores this rank's shard (in place, by name, onto the tensors' own device), gathers the
  // parameters, restores the RNG and returns the state. Throws onebit::Error naming the
  // checkpoint if it is incomplete or corrupt, or was written at another world size or sharding.
  TrainState load(const std::filesystem::path& checkpoint, dist::ParamSync& params) const;

  // Why a checkpoint cannot continue a run of `world_size` ranks with `sharding`; empty if it can.
  static std::string layout_mismatch(const std::filesystem::path& checkpoint, int world_size,
                                     const std::string& sharding);

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
