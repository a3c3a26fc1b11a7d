#include "onebit/models/loader.h"

#include <torch/torch.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/layers.h"
#include "onebit/models/llama.h"
#include "onebit/models/opt.h"
#include "onebit/models/to_onebit.h"

namespace onebit::models {

namespace fs = std::filesystem;

namespace {

std::string shape_str(c10::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

// Tensors transformers may store that have no parameter here.
bool ignorable(const std::string& name, const ModelConfig& cfg) {
  if (name.size() >= 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0) return true;
  return cfg.tie_word_embeddings && name == "lm_head.weight";
}

std::string dtype_name(torch::Dtype d) {
  switch (d) {
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat64: return "float64";
    default: return std::string(c10::toString(d));
  }
}

CausalLM build_uninitialised(const ModelConfig& cfg) {
  CausalLM m = cfg.is_llama_family() ? make_llama(cfg) : make_opt(cfg);
  if (cfg.onebit) apply_student_layout(*m);
  return m;
}

}  // namespace

CausalLM build_model(const ModelConfig& cfg, const LoadOptions& opts) {
  auto m = build_uninitialised(cfg);
  m->to(opts.device, opts.dtype);  // the empty tensors move; the init runs where they live
  detail::init_weights(*m, 0.02);
  return m;
}

namespace {
// The file's name of parameter `name`: as is, or without/with the "model." prefix of the
// causal-LM class (a base model's checkpoint, as transformers maps it); "" when absent.
std::string file_name_of(const io::SafetensorsReader& reader, const std::string& name) {
  static const std::string prefix = "model.";
  if (reader.contains(name)) return name;
  if (name.rfind(prefix, 0) == 0 && reader.contains(name.substr(prefix.size()))) return name.substr(prefix.size());
  if (reader.contains(prefix + name)) return prefix + name;
  return "";
}
}  // namespace

CausalLM load_pretrained(const std::string& dir, const LoadOptions& opts) {
  const fs::path root(dir);
  OB_CHECK(fs::is_directory(root), "load_pretrained: '", dir, "' is not a directory");
  const auto cfg = load_model_config((root / "config.json").string());
  auto model = build_uninitialised(cfg);
  io::SafetensorsReader reader(dir);

  auto params = model->named_parameters(/*recurse=*/true);
  std::set<std::string> used;
  std::vector<std::string> file_names(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& name = params[i].key();
    if (opts.shared.count(name)) continue;
    file_names[i] = file_name_of(reader, name);
    OB_CHECK(!file_names[i].empty(), "load_pretrained: missing tensor '", name, "' in ", dir);
    used.insert(file_names[i]);
  }
  for (const auto& name : reader.names())
    OB_CHECK(used.count(name) || opts.shared.count(name) || ignorable(name, cfg) ||
                 (name.rfind("model.", 0) == 0 && ignorable(name.substr(6), cfg)),
             "load_pretrained: unexpected tensor '", name, "' in ", dir, " (not a parameter of this ",
             cfg.model_type, " config)");

  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& name = params[i].key();
    auto& p = params[i].value();
    if (auto it = opts.shared.find(name); it != opts.shared.end()) {
      OB_CHECK(it->second.sizes() == p.sizes(), "load_pretrained: shared tensor '", name, "' has shape ",
               shape_str(it->second.sizes()), ", the config expects ", shape_str(p.sizes()));
      p.set_data(it->second);
      continue;
    }
    const auto& info = reader.info(file_names[i]);
    OB_CHECK(c10::IntArrayRef(info.shape) == p.sizes(), "load_pretrained: tensor '", file_names[i], "' in ", dir,
             " has shape ", shape_str(info.shape), ", the config expects ", shape_str(p.sizes()));
    OB_CHECK(c10::isFloatingType(info.dtype), "load_pretrained: tensor '", file_names[i], "' in ", dir,
             " has dtype ", dtype_name(info.dtype), ", expected a floating type");
    p.set_data(reader.load(file_names[i], opts.dtype, opts.device));
  }
  return model;
}

void save_pretrained(const CausalLM& model, const std::string& dir, std::optional<torch::Dtype> dtype) {
  fs::create_directories(dir);
  auto cfg = model->config();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::optional<torch::Dtype> stored;
  for (const auto& p : model->named_parameters(/*recurse=*/true)) {
    auto t = p.value().detach();
    if (dtype && t.is_floating_point()) t = t.to(*dtype);
    if (!stored && t.is_floating_point()) stored = t.scalar_type();
    tensors.emplace_back(p.key(), t);
  }
  if (stored) cfg.torch_dtype = dtype_name(*stored);
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  io::write_file_atomic((fs::path(dir) / "config.json").string(), model_config_to_json(cfg));
}

}  // namespace onebit::models
