// Self-sampled training data (LLM-QAT scheme, method.md §4): every sample starts with one
// token drawn from the vocabulary (uniformly, or every id in turn), continues with 2-4
// greedy tokens, then samples from the full softmax up to max_length tokens or EOS.
//
// Reproducible and resumable: row j of the sample stream lies in batch j / batch_size,
// and everything about batch k (first tokens, greedy length, sampling seed) is a function
// of (seed, k) alone. A dataset of N samples is the first N rows of that stream, so an
// interrupted run, resumed with the same settings on the same kind of device and dtype,
// ends byte-identical to an uninterrupted one (and a larger num_samples extends it).
//
// Several processes sample one dataset together: in each round rank r generates batch
// k0 + r, the ranks exchange their rows, and rank 0 alone appends them in stream order and
// commits. The dataset is therefore byte-identical for any number of ranks.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "onebit/config/train_config.h"
#include "onebit/data/token_dataset.h"
#include "onebit/models/causal_lm.h"

namespace onebit::data {

// The processes that sample one dataset (one process: the defaults). The programs fill
// all_gather from their c10d group (onebit/dist/c10d_sync.h).
struct SampleRanks {
  int rank = 0, world_size = 1;
  // Every rank's `t` (an int64 CPU tensor of the same shape on every rank), in rank order,
  // returned on every rank. Needed when world_size > 1.
  std::function<std::vector<torch::Tensor>(const torch::Tensor& t)> all_gather;
};

struct SampleOptions {
  config::SampleCfg sampling;  // what to sample (the data.* keys; docs/configuration.md)
  uint64_t seed = 0;           // data.seed
  bool progress = true;        // ProgressBar on stderr (rank 0)
  // Recorded in index.json and compared on resume: what produced the samples (the model
  // folder, its dtype, the device type). The sampling settings are recorded too.
  GeneratorSettings provenance;
  SampleRanks ranks;
};

struct SampleReport {
  int64_t resumed_from = 0;  // samples already in the folder
  int64_t total = 0;         // samples in the folder now
  int64_t total_tokens = 0;
  double seconds = 0;        // generation time of this run
};

// Writes (or completes) a token dataset of sampling.num_samples samples in out_dir, committing
// after every round (one batch per rank). onebit::Error if out_dir holds samples made with
// other settings. With several ranks every rank must call it; it returns on all of them once
// rank 0 has committed the whole dataset (the report is rank 0's).
SampleReport self_sample(models::CausalLMImpl& model, const std::string& out_dir, const SampleOptions& opts);

// The first tokens of the rows of batch k (batch_size of them), as self_sample uses them.
std::vector<int64_t> first_tokens_of_batch(const models::ModelConfig& cfg, const SampleOptions& opts, int64_t k);
// The number of greedy tokens of batch k, in [greedy_min, greedy_max].
int64_t greedy_tokens_of_batch(const SampleOptions& opts, int64_t k);

}  // namespace onebit::data
