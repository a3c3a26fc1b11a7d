// The trainer's data, from a TrainConfig's `data` section: self-sampled by the teacher
// (cached and resumable), an onebit-sample folder, or a text file; packed into blocks with
// the teacher's BOS/EOS.
#pragma once
#include <memory>
#include <string>

#include "onebit/config/train_config.h"
#include "onebit/data/packed_blocks.h"
#include "onebit/data/self_sample.h"
#include "onebit/models/causal_lm.h"

namespace onebit::data {

// data.source = sample: samples into data.sample_dir (default <output_dir>/samples), resuming
//   what is there; the teacher generates data.num_samples of data.sample_length tokens with
//   the data.* sampling keys. With several ranks every rank calls this: they sample together
//   (rank 0 writes, self_sample.h) and all open the result.
// data.source = dataset: opens data.path; its vocabulary must fit the teacher's.
// data.source = text: tokenizes data.path with the tokenizer in `tokenizer_dir`.
// data.mix_text (sample or dataset): the first mixed_text_blocks(own, data.mix_fraction)
//   blocks of that text (the teacher's tokenizer) follow the own blocks.
// Blocks are data.seq_len long. `progress` shows the sampling bar.
std::shared_ptr<const PackedBlocks> training_blocks(const config::TrainConfig& cfg, models::CausalLMImpl& teacher,
                                                    const std::string& tokenizer_dir, bool progress = true,
                                                    const SampleRanks& ranks = {});

// BatchIterator options for this config and rank.
BatchOptions batch_options(const config::TrainConfig& cfg, int64_t rank = 0, int64_t world_size = 1);

}  // namespace onebit::data
