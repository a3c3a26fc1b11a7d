// onebit-export's library side: a trained OneBit student → a deployable folder with packed
// 1-bit signs (docs/deployment.md), and the size report measured from the written files.
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

#include "onebit/models/causal_lm.h"

namespace onebit::packed {

struct ExportOptions {
  torch::Dtype dtype = torch::kFloat16;  // g, h, bias, embeddings, lm_head, norms (fp16 | bf16 | fp32)
  int64_t max_shard_bytes = int64_t(2) << 30;  // above this, model-0000k-of-0000n.safetensors + index
  // Tokenizer files (and generation_config.json) copied from these folders in order; a later
  // folder's file replaces an earlier one's.
  std::vector<std::string> tokenizer_dirs;
  bool overwrite = false;                      // replace an existing non-empty `out` folder
};

// Storage of an export, from its files: the packed linears and the whole model.
struct ExportStats {
  int64_t layers = 0;                            // packed linears
  int64_t linear_params = 0, linear_bytes = 0;   // out·in + in + out (+ out): weights and scales
  int64_t model_params = 0, model_bytes = 0;     // every tensor (packed signs count out·in)
  int64_t file_bytes = 0;                        // sizes of the safetensors files on disk
  int64_t shards = 0;
  std::vector<std::string> tokenizer_files;
  double linear_bits() const { return linear_params ? 8.0 * double(linear_bytes) / double(linear_params) : 0; }
  double model_bits() const { return model_params ? 8.0 * double(model_bytes) / double(model_params) : 0; }
};

// Writes `out` (config.json with quantization_config, model.safetensors or shards, tokenizer
// files, modeling_onebit.py) from a student whose OneBitLinear layers hold the trained latent
// weights; atomically: everything goes to a sibling temporary folder renamed at the end.
ExportStats export_model(const models::CausalLMImpl& student, const std::string& out, const ExportOptions& opts);

// Reads the storage numbers back from an exported folder's files.
ExportStats measure_export(const std::string& dir);

// The same numbers (file_bytes less the safetensors headers) for the export of a student of `cfg`
// whose linears matching `modules_pattern` ("" = models::default_student_layers) are packed,
// from the shapes alone: what a LLaMA-7B export weighs without building one.
ExportStats plan_export(const models::ModelConfig& cfg, torch::Dtype dtype = torch::kFloat16,
                        const std::string& modules_pattern = "");

}  // namespace onebit::packed
