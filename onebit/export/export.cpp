#include "onebit/export/export.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "onebit/core/error.h"
#include "onebit/export/format.h"
#include "onebit/export/modeling_py.h"
#include "onebit/export/packed_linear.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/model_config.h"
#include "onebit/models/param_shapes.h"
#include "onebit/models/to_onebit.h"
#include "onebit/nn/onebit_linear.h"
#include "onebit/tokenizer/tokenizer.h"
#include "onebit/util/fs.h"

namespace onebit::packed {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
using Named = std::vector<std::pair<std::string, torch::Tensor>>;

// The student's OneBit layers by name, in model order.
std::vector<std::pair<std::string, std::shared_ptr<nn::OneBitLinearImpl>>> onebit_layers(
    const models::CausalLMImpl& m) {
  std::vector<std::pair<std::string, std::shared_ptr<nn::OneBitLinearImpl>>> layers;
  for (const auto& item : m.named_modules("", /*include_self=*/false))
    if (auto ob = std::dynamic_pointer_cast<nn::OneBitLinearImpl>(item.value())) layers.emplace_back(item.key(), ob);
  return layers;
}

// Every tensor of the export, in model order: the packed form in place of each OneBit layer.
Named export_tensors(const models::CausalLMImpl& student, torch::Dtype dtype) {
  const auto layers = onebit_layers(student);
  std::map<std::string, std::shared_ptr<nn::OneBitLinearImpl>> by_weight;
  for (const auto& [name, layer] : layers) by_weight[name + ".weight"] = layer;
  std::set<std::string> owned;  // parameter names of OneBit layers
  for (const auto& [name, layer] : layers)
    for (const auto& p : layer->named_parameters(false)) owned.insert(name + "." + p.key());
  Named out;
  torch::NoGradGuard no_grad;
  for (const auto& p : student.named_parameters(/*recurse=*/true)) {
    if (auto it = by_weight.find(p.key()); it != by_weight.end()) {
      const std::string prefix = p.key().substr(0, p.key().size() - std::string("weight").size());
      const auto& layer = *it->second;
      out.emplace_back(prefix + kPackedSuffix, pack_signs(layer.weight).cpu());
      out.emplace_back(prefix + "g", layer.g.detach().to(torch::kCPU, dtype));
      out.emplace_back(prefix + "h", layer.h.detach().to(torch::kCPU, dtype));
      if (layer.bias.defined()) out.emplace_back(prefix + "bias", layer.bias.detach().to(torch::kCPU, dtype));
      continue;
    }
    if (owned.count(p.key())) continue;
    const torch::Tensor t = p.value().detach().to(torch::kCPU);
    out.emplace_back(p.key(), t.is_floating_point() ? t.to(dtype) : t);
  }
  return out;
}

QuantConfig quant_config_of(const models::CausalLMImpl& student, torch::Dtype dtype) {
  const auto layers = onebit_layers(student);
  OB_CHECK(!layers.empty(), "export: the model has no OneBitLinear layer (is it a OneBit student?)");
  QuantConfig q;
  q.scale_dtype = dtype;
  q.post_layernorm = layers.front().second->options.post_layernorm();
  q.ln_eps = layers.front().second->options.ln_eps();
  for (const auto& [name, layer] : layers) {
    OB_CHECK(layer->options.post_layernorm() == q.post_layernorm && layer->options.ln_eps() == q.ln_eps,
             "export: layer '", name, "' differs from '", layers.front().first,
             "' in post_layernorm/ln_eps; the format has one setting for all layers");
    q.modules.push_back(name);
    if (layer->bias.defined()) q.biased.insert(name);
  }
  const auto& cfg = student.config();
  OB_CHECK(cfg.onebit, "export: the model config is not marked as a OneBit student");
  q.modules_pattern = json::parse(cfg.onebit_json).value("layers", std::string());
  OB_CHECK(!q.modules_pattern.empty(), "export: the student config's 'onebit' key has no 'layers' pattern");
  return q;
}

std::string export_config_json(const models::CausalLMImpl& student, const QuantConfig& q) {
  models::ModelConfig cfg = student.config();
  cfg.onebit = false;
  cfg.onebit_json.clear();
  cfg.torch_dtype = dtype_name(q.scale_dtype);
  json j = json::parse(models::model_config_to_json(cfg));
  j["quantization_config"] = json::parse(quant_config_to_json(q));
  j["auto_map"] = {{"AutoModelForCausalLM", std::string(kModelingModule) + "." + kModelingClass}};
  return j.dump(2) + "\n";
}

void write_shards(const fs::path& dir, const Named& tensors, int64_t max_shard_bytes) {
  std::vector<Named> shards(1);
  int64_t size = 0, total = 0;
  for (const auto& t : tensors) {
    const int64_t bytes = t.second.numel() * int64_t(t.second.element_size());
    if (size > 0 && size + bytes > max_shard_bytes) {
      shards.emplace_back();
      size = 0;
    }
    shards.back().push_back(t);
    size += bytes;
    total += bytes;
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"onebit_format", std::to_string(kFormatVersion)}};
  if (shards.size() == 1) {
    io::write_safetensors((dir / "model.safetensors").string(), shards[0], meta);
    return;
  }
  json weight_map = json::object();
  char name[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    io::write_safetensors((dir / name).string(), shards[i], meta);
    for (const auto& t : shards[i]) weight_map[t.first] = name;
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  io::write_file_atomic((dir / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}
}  // namespace

ExportStats export_model(const models::CausalLMImpl& student, const std::string& out, const ExportOptions& opts) {
  OB_CHECK(opts.dtype == torch::kFloat16 || opts.dtype == torch::kBFloat16 || opts.dtype == torch::kFloat32,
           "export: dtype must be fp16, bf16 or fp32, got ", opts.dtype);
  OB_CHECK(opts.max_shard_bytes > 0, "export: max shard size must be positive");
  const fs::path dst = fs::absolute(out).lexically_normal();
  if (fs::exists(dst)) {
    OB_CHECK(fs::is_directory(dst), "export: '", out, "' exists and is not a folder");
    OB_CHECK(opts.overwrite || fs::is_empty(dst), "export: '", out,
             "' exists and is not empty (pass --overwrite to replace it)");
  }
  const QuantConfig q = quant_config_of(student, opts.dtype);
  const Named tensors = export_tensors(student, opts.dtype);

  const fs::path tmp = dst.parent_path() / ("." + dst.filename().string() + ".export-tmp");
  util::remove_tree(tmp);
  fs::create_directories(tmp);
  try {
    write_shards(tmp, tensors, opts.max_shard_bytes);
    io::write_file_atomic((tmp / "config.json").string(), export_config_json(student, q));
    io::write_file_atomic((tmp / (std::string(kModelingModule) + ".py")).string(), modeling_onebit_py());
    for (const auto& from : opts.tokenizer_dirs) {
      tokenizer::copy_tokenizer_files(from, tmp.string());
      if (fs::exists(fs::path(from) / "generation_config.json"))
        fs::copy_file(fs::path(from) / "generation_config.json", tmp / "generation_config.json",
                      fs::copy_options::overwrite_existing);
    }
  } catch (...) {
    util::remove_tree(tmp);
    throw;
  }
  util::remove_tree(dst);
  fs::rename(tmp, dst);
  return measure_export(dst.string());
}

ExportStats plan_export(const models::ModelConfig& cfg, torch::Dtype dtype, const std::string& modules_pattern) {
  const std::regex packed(modules_pattern.empty() ? models::default_student_layers(cfg) : modules_pattern);
  const int64_t scale = int64_t(c10::elementSize(dtype));
  auto module_of = [](const std::string& name) { return name.substr(0, name.rfind('.')); };
  const auto shapes = models::param_shapes(cfg);
  std::set<std::string> packed_modules;
  for (const auto& p : shapes)
    if (p.linear_weight && std::regex_match(module_of(p.name), packed)) packed_modules.insert(module_of(p.name));
  ExportStats s;
  for (const auto& p : shapes) {
    const bool in_packed = packed_modules.count(module_of(p.name)) > 0;
    if (in_packed && p.linear_weight) {  // signs [out, ⌈in/8⌉] uint8, g [in], h [out]
      const int64_t out = p.shape.at(0), in = p.shape.at(1);
      const int64_t bytes = out * ((in + 7) / 8) + (in + out) * scale;
      s.linear_params += out * in + in + out;
      s.linear_bytes += bytes;
      s.model_params += out * in + in + out;
      s.model_bytes += bytes;
      ++s.layers;
      continue;
    }
    const int64_t n = p.numel();
    if (in_packed) {  // a packed layer's bias
      s.linear_params += n;
      s.linear_bytes += n * scale;
    }
    s.model_params += n;
    s.model_bytes += n * scale;
  }
  s.file_bytes = s.model_bytes;
  s.shards = 1;
  return s;
}

ExportStats measure_export(const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const auto q = parse_quant_config(io::read_file(cfg_path), cfg_path);
  OB_CHECK(q.has_value(), cfg_path, ": no quantization_config (not a onebit export)");
  io::SafetensorsReader reader(dir);
  ExportStats s;
  std::set<std::string> files;
  std::map<std::string, int64_t> packed_in;  // tensor name of a packed weight → in
  for (const auto& m : q->modules) {
    const std::string w = m + "." + kPackedSuffix, g = m + ".g";
    OB_CHECK(reader.contains(w) && reader.contains(g), dir, ": packed layer '", m, "' has no ", w, " / ", g);
    packed_in[w] = reader.info(g).shape.at(0);
  }
  for (const auto& name : reader.names()) {
    const auto& info = reader.info(name);
    int64_t numel = 1;
    for (int64_t d : info.shape) numel *= d;
    const int64_t bytes = numel * int64_t(c10::elementSize(info.dtype));
    int64_t params = numel;
    if (auto it = packed_in.find(name); it != packed_in.end()) params = info.shape.at(0) * it->second;
    s.model_params += params;
    s.model_bytes += bytes;
    files.insert(info.file);
  }
  for (const auto& m : q->modules) {
    for (const char* part : {kPackedSuffix, "g", "h", "bias"}) {
      const std::string name = m + "." + part;
      if (!reader.contains(name)) continue;
      const auto& info = reader.info(name);
      int64_t numel = 1;
      for (int64_t d : info.shape) numel *= d;
      s.linear_bytes += numel * int64_t(c10::elementSize(info.dtype));
      s.linear_params += packed_in.count(name) ? info.shape.at(0) * packed_in[name] : numel;
    }
  }
  s.layers = int64_t(q->modules.size());
  s.shards = int64_t(files.size());
  for (const auto& f : files) s.file_bytes += int64_t(fs::file_size(f));
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n != "config.json" && n.find("safetensors") == std::string::npos && n.find(".py") == std::string::npos &&
        n != "generation_config.json")
      s.tokenizer_files.push_back(n);
  }
  std::sort(s.tokenizer_files.begin(), s.tokenizer_files.end());
  return s;
}

}  // namespace onebit::packed
