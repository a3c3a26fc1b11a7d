#include "onebit/export/format.h"

#include <nlohmann/json.hpp>

#include "onebit/core/error.h"

namespace onebit::packed {

using nlohmann::json;

std::string dtype_name(torch::Dtype d) {
  switch (d) {
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat64: return "float64";
    case torch::kUInt8: return "uint8";
    default: return std::string(c10::toString(d));
  }
}

torch::Dtype parse_scale_dtype(const std::string& s, const std::string& where) {
  if (s == "float16" || s == "fp16") return torch::kFloat16;
  if (s == "bfloat16" || s == "bf16") return torch::kBFloat16;
  if (s == "float32" || s == "fp32") return torch::kFloat32;
  fail(where, ": unknown dtype '", s, "' (float16, bfloat16 or float32)");
}

std::string quant_config_to_json(const QuantConfig& q) {
  json j = {{"quant_method", kQuantMethod},
            {"format_version", q.version},
            {"bits", 1},
            {"bit_order", kBitOrder},
            {"sign_bit", kSignBit},
            {"packed_dim", "in"},
            {"row_padding", kRowPadding},
            {"scale_dtype", dtype_name(q.scale_dtype)},
            {"post_layernorm", q.post_layernorm},
            {"ln_eps", q.ln_eps},
            {"modules_pattern", q.modules_pattern},
            {"modules", q.modules},
            {"biased", std::vector<std::string>(q.biased.begin(), q.biased.end())}};
  return j.dump();
}

std::optional<QuantConfig> parse_quant_config(const std::string& config_json, const std::string& where) {
  json root;
  try {
    root = json::parse(config_json);
  } catch (const json::exception& e) {
    fail(where, ": invalid JSON: ", e.what());
  }
  if (!root.is_object() || !root.contains("quantization_config")) return std::nullopt;
  const json& j = root["quantization_config"];
  const std::string w = where + ": quantization_config";
  OB_CHECK(j.is_object(), w, " must be an object");
  auto str = [&](const char* key) -> std::string {
    OB_CHECK(j.contains(key) && j[key].is_string(), w, ": missing string key '", key, "'");
    return j[key].get<std::string>();
  };
  const std::string method = str("quant_method");
  OB_CHECK(method == kQuantMethod, w, ": quant_method is '", method, "', onebit reads only '", kQuantMethod, "'");
  OB_CHECK(j.contains("format_version") && j["format_version"].is_number_integer(), w,
           ": missing integer key 'format_version'");
  QuantConfig q;
  q.version = j["format_version"].get<int>();
  OB_CHECK(q.version == kFormatVersion, w, ": format_version ", q.version, " is not supported (this build reads ",
           kFormatVersion, ")");
  OB_CHECK(j.value("bits", 0) == 1, w, ": bits must be 1");
  OB_CHECK(str("bit_order") == kBitOrder, w, ": bit_order '", str("bit_order"), "' is not supported (expected '",
           kBitOrder, "')");
  OB_CHECK(str("sign_bit") == kSignBit, w, ": sign_bit '", str("sign_bit"), "' is not supported (expected '",
           kSignBit, "')");
  OB_CHECK(str("packed_dim") == "in", w, ": packed_dim must be 'in'");
  OB_CHECK(str("row_padding") == kRowPadding, w, ": row_padding '", str("row_padding"),
           "' is not supported (expected '", kRowPadding, "')");
  q.scale_dtype = parse_scale_dtype(str("scale_dtype"), w + ".scale_dtype");
  OB_CHECK(j.contains("post_layernorm") && j["post_layernorm"].is_boolean(), w,
           ": missing boolean key 'post_layernorm'");
  q.post_layernorm = j["post_layernorm"].get<bool>();
  OB_CHECK(j.contains("ln_eps") && j["ln_eps"].is_number() && j["ln_eps"].get<double>() > 0, w,
           ": ln_eps must be a positive number");
  q.ln_eps = j["ln_eps"].get<double>();
  q.modules_pattern = str("modules_pattern");
  try {
    q.modules = j.at("modules").get<std::vector<std::string>>();
    const auto b = j.value("biased", std::vector<std::string>{});
    q.biased = std::set<std::string>(b.begin(), b.end());
  } catch (const json::exception&) {
    fail(w, ": 'modules' and 'biased' must be lists of module names");
  }
  OB_CHECK(!q.modules.empty(), w, ": 'modules' is empty");
  return q;
}

}  // namespace onebit::packed
