// The export format's `quantization_config` (config.json of a folder written by onebit-export;
// docs/deployment.md). Parsing validates every field with a one-line onebit::Error.
#pragma once
#include <torch/types.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace onebit::packed {

constexpr int kFormatVersion = 1;
constexpr const char* kQuantMethod = "onebit";
constexpr const char* kBitOrder = "lsb_first";     // input 8k + b is bit b of byte k
constexpr const char* kSignBit = "one_is_negative";  // bit 1 = −1, bit 0 = +1 (sign(0) = +1)
constexpr const char* kRowPadding = "zero_bits_to_byte";  // rows of ⌈in/8⌉ bytes, bits past in are 0
// Tensor name suffixes of a packed layer `<module>.`: weight_packed (uint8 [out, ⌈in/8⌉]),
// g [in], h [out], bias [out] (when the layer has one), all scales in scale_dtype.
constexpr const char* kPackedSuffix = "weight_packed";

struct QuantConfig {
  int version = kFormatVersion;
  torch::Dtype scale_dtype = torch::kFloat16;  // g, h, bias
  bool post_layernorm = true;
  double ln_eps = 1e-5;
  std::string modules_pattern;       // regex over linear names (full match)
  std::vector<std::string> modules;  // the packed linears, in model order
  std::set<std::string> biased;      // those with a bias
};

// The block as JSON text (for config.json).
std::string quant_config_to_json(const QuantConfig& q);
// From a config.json text: std::nullopt when it has no quantization_config, an error when the
// block is not a valid onebit one (other methods, versions, bit orders, dtypes, missing keys).
std::optional<QuantConfig> parse_quant_config(const std::string& config_json, const std::string& where);

// "float16" | "bfloat16" | "float32" (the safetensors/transformers spelling).
std::string dtype_name(torch::Dtype d);
torch::Dtype parse_scale_dtype(const std::string& s, const std::string& where);

}  // namespace onebit::packed
