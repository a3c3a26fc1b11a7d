// Building, loading and saving models in the Hugging Face folder layout.
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <optional>
#include <vector>
#include <string>

#include "onebit/models/causal_lm.h"

namespace onebit::models {

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;  // parameters are created/converted to this dtype
  // Parameters taken as they are instead of read from the file (same name and shape; their
  // own dtype and device): the student shares the teacher's frozen tensors this way.
  std::map<std::string, torch::Tensor> shared;
};

// A model of cfg.model_type with freshly initialised weights (HF init: normal(0, 0.02)).
// A cfg with `onebit` set builds the OneBit student layout (OneBitLinear in decoder layers).
CausalLM build_model(const ModelConfig& cfg, const LoadOptions& opts = {});

// Loads config.json + model.safetensors (or the sharded index) from `dir`. The model is built
// without initialising its weights; each parameter is then read straight from the
// memory-mapped file into a tensor of the target dtype on the target device. Tied lm_head is
// taken from the embeddings as transformers does; names, shapes and dtypes are checked.
// Names may lack or carry the "model." prefix of the causal-LM class (a base model's
// checkpoint), as transformers accepts. OneBit students saved by save_pretrained load back
// with their latent W, g, h. A folder written by onebit-export (config.json with a onebit
// quantization_config) loads with PackedOneBitLinear layers (docs/deployment.md); opts.dtype
// applies to its other tensors.
CausalLM load_pretrained(const std::string& dir, const LoadOptions& opts = {});

// A model whose decoder layers' tensors are present one layer at a time (dist.sharding=full):
// hold(i) makes layer i's tensors present (i ascending over every layer, then hold(-1), which
// releases the last); `shapes` gives the full shape of every tensor that may be absent.
struct LayerByLayer {
  std::function<void(int64_t)> hold;
  std::map<std::string, std::vector<int64_t>> shapes;
};

// Writes config.json and model.safetensors under `dir` (created), atomically, HF names.
// `dtype` converts floating tensors on the way (undefined: keep as they are). With `layers`,
// the file is written layer by layer (tensors outside the decoder layers first), each layer
// held only while its tensors are written.
void save_pretrained(const CausalLM& model, const std::string& dir,
                     std::optional<torch::Dtype> dtype = std::nullopt, const LayerByLayer* layers = nullptr);

}  // namespace onebit::models
