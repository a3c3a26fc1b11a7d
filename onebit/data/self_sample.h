// Self-sampled training data (LLM-QAT scheme, method.md §4): every sample starts with one
// token drawn from the vocabulary (uniformly, or every id in turn), continues with 2-4
// greedy tokens, then samples from the full softmax up to max_length tokens or EOS.
//
// Reproducible and resumable: row j of the sample stream lies in batch j / batch_size,
// and everything about batch k (first tokens, greedy length, sampling seed) is a function
// of (seed, k) alone. A dataset of N samples is the first N rows of that stream, so an
// interrupted run, resumed with the same settings on the same device and dtype, ends
// byte-identical to an uninterrupted one (and a larger num_samples extends it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "onebit/data/token_dataset.h"
#include "onebit/models/causal_lm.h"

namespace onebit::data {

struct SampleOptions {
  int64_t num_samples = 1024;
  int64_t max_length = 2048;            // tokens per sample, first token included
  int64_t batch_size = 32;
  uint64_t seed = 0;
  std::string first_token = "uniform";  // uniform | sweep (ids in order, skipping BOS/EOS/PAD)
  int64_t greedy_min = 2, greedy_max = 4;
  double temperature = 1.0;
  int64_t top_k = 0;                    // 0 = full softmax
  double top_p = 1.0;
  bool stop_at_eos = true;              // a row ends at the model's EOS (which is not stored)
  bool progress = true;                 // ProgressBar on stderr
  // Recorded in index.json and compared on resume: what produced the samples (the model
  // folder, its dtype). Settings above are recorded too.
  GeneratorSettings provenance;
};

struct SampleReport {
  int64_t resumed_from = 0;  // samples already in the folder
  int64_t total = 0;         // samples in the folder now
  int64_t total_tokens = 0;
  double seconds = 0;        // generation time of this run
};

// Writes (or completes) a token dataset of opts.num_samples samples in out_dir, committing
// after every batch. onebit::Error if out_dir holds samples made with other settings.
SampleReport self_sample(models::CausalLMImpl& model, const std::string& out_dir, const SampleOptions& opts);

// The first tokens of the rows of batch k (batch_size of them), as self_sample uses them.
std::vector<int64_t> first_tokens_of_batch(const models::ModelConfig& cfg, const SampleOptions& opts, int64_t k);
// The number of greedy tokens of batch k, in [greedy_min, greedy_max].
int64_t greedy_tokens_of_batch(const SampleOptions& opts, int64_t k);

}  // namespace onebit::data
