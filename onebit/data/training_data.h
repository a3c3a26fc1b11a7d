// The trainer's data, from a TrainConfig's `data` section: self-sampled by the teacher
// (cached and resumable), an onebit-sample folder, or a text file; packed into blocks with
// the teacher's BOS/EOS.
#pragma once
#include <memory>
#include <string>

#include "onebit/config/train_config.h"
#include "onebit/data/packed_blocks.h"
#include "onebit/models/causal_lm.h"

namespace onebit::data {

// data.source = sample: samples into data.sample_dir (default <output_dir>/samples), resuming
//   what is there; the teacher generates data.num_samples of data.sample_length tokens.
// data.source = dataset: opens data.path; its vocabulary must fit the teacher's.
// data.source = text: tokenizes data.path with the tokenizer in `tokenizer_dir`.
// Blocks are data.seq_len long. `progress` shows the sampling bar.
// Several processes: call it on rank 0 first, then (after a barrier) on the others, which
// find the samples complete and only read them (a second writer of one folder is an error).
std::shared_ptr<const PackedBlocks> training_blocks(const config::TrainConfig& cfg, models::CausalLMImpl& teacher,
                                                    const std::string& tokenizer_dir, bool progress = true);

// BatchIterator options for this config and rank.
BatchOptions batch_options(const config::TrainConfig& cfg, int64_t rank = 0, int64_t world_size = 1);

}  // namespace onebit::data
