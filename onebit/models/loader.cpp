#include "onebit/models/loader.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/export/format.h"
#include "onebit/export/packed_linear.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/layers.h"
#include "onebit/models/llama.h"
#include "onebit/models/opt.h"
#include "onebit/models/param_shapes.h"
#include "onebit/models/to_onebit.h"
#include "onebit/nn/replace.h"
#include "onebit/util/strings.h"

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
  if (ends_with(name, "rotary_emb.inv_freq")) return true;
  return cfg.tie_word_embeddings && name == "lm_head.weight";
}

using packed::dtype_name;

CausalLM build_uninitialised(const ModelConfig& cfg) {
  CausalLM m = cfg.is_llama_family() ? make_llama(cfg) : make_opt(cfg);
  if (cfg.onebit) apply_student_layout(*m);
  return m;
}

// An onebit-export folder (docs/deployment.md): PackedOneBitLinear in place of the packed
// linears, every tensor checked (names, shapes, dtypes, packed row length and padding).
CausalLM load_export(const fs::path& root, const ModelConfig& cfg, const packed::QuantConfig& q,
                     const LoadOptions& opts) {
  const std::string dir = root.string();
  OB_CHECK(!cfg.onebit, "load_pretrained: ", dir, "/config.json has both 'onebit' and 'quantization_config'");
  CausalLM model = cfg.is_llama_family() ? make_llama(cfg) : make_opt(cfg);
  std::map<std::string, std::shared_ptr<packed::PackedOneBitLinearImpl>> layers;
  const auto replaced = nn::replace_linears(
      *model, q.modules_pattern,
      [&](const std::string& name, torch::nn::LinearImpl& lin) -> std::shared_ptr<torch::nn::Module> {
        auto m = std::make_shared<packed::PackedOneBitLinearImpl>(
            packed::PackedOneBitLinearOptions(lin.options.in_features(), lin.options.out_features())
                .bias(q.biased.count(name) > 0)
                .post_layernorm(q.post_layernorm)
                .ln_eps(q.ln_eps));
        layers[name] = m;
        return m;
      });
  OB_CHECK(replaced == q.modules, "load_pretrained: ", dir, "/config.json quantization_config: modules_pattern '",
           q.modules_pattern, "' selects ", replaced.size(), " linears of this ", cfg.model_type, " but ",
           q.modules.size(), " are listed in 'modules'");
  io::SafetensorsReader reader(dir);
  auto params = model->named_parameters(/*recurse=*/true);
  std::set<std::string> expected;
  for (const auto& p : params) expected.insert(p.key());
  for (const auto& [name, m] : layers)
    for (const auto& b : m->named_buffers(false)) expected.insert(name + "." + b.key());
  for (const auto& name : reader.names())
    OB_CHECK(expected.count(name) || ignorable(name, cfg), "load_pretrained: unexpected tensor '", name, "' in ", dir,
             " (not part of this ", cfg.model_type, " export)");
  auto require = [&](const std::string& name) -> const io::TensorInfo& {
    OB_CHECK(reader.contains(name), "load_pretrained: missing tensor '", name, "' in ", dir);
    return reader.info(name);
  };

  torch::NoGradGuard no_grad;
  for (auto& p : params) {
    const auto& info = require(p.key());
    OB_CHECK(c10::IntArrayRef(info.shape) == p.value().sizes(), "load_pretrained: tensor '", p.key(), "' in ", dir,
             " has shape ", shape_str(info.shape), ", the config expects ", shape_str(p.value().sizes()));
    OB_CHECK(c10::isFloatingType(info.dtype), "load_pretrained: tensor '", p.key(), "' in ", dir, " has dtype ",
             dtype_name(info.dtype), ", expected a floating type");
    p.value().set_data(reader.load(p.key(), opts.dtype, opts.device));
  }
  for (auto& [name, m] : layers) {
    const std::string signs = name + "." + packed::kPackedSuffix;
    require(signs);
    m->set_file_signs(reader.load(signs), "load_pretrained: tensor '" + signs + "' in " + dir);
    for (const auto& b : m->named_buffers(false)) {
      if (b.key() == packed::kPackedSuffix) continue;
      const std::string t = name + "." + b.key();
      const auto& info = require(t);
      OB_CHECK(info.dtype == q.scale_dtype, "load_pretrained: tensor '", t, "' in ", dir, " has dtype ",
               dtype_name(info.dtype), ", quantization_config.scale_dtype says ", dtype_name(q.scale_dtype));
      OB_CHECK(c10::IntArrayRef(info.shape) == b.value().sizes(), "load_pretrained: tensor '", t, "' in ", dir,
               " has shape ", shape_str(info.shape), ", expected ", shape_str(b.value().sizes()));
      b.value().set_data(reader.load(t, torch::kFloat32));
    }
    m->to(opts.device);
  }
  return model;
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
  if (const auto q = packed::parse_quant_config(cfg.raw_json, (root / "config.json").string()))
    return load_export(root, cfg, *q, opts);
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

void save_pretrained(const CausalLM& model, const std::string& dir, std::optional<torch::Dtype> dtype,
                     const LayerByLayer* layers) {
  for (const auto& m : model->modules())
    OB_CHECK(!std::dynamic_pointer_cast<packed::PackedOneBitLinearImpl>(m),
             "save_pretrained: the model holds packed 1-bit layers (an export); write exports with onebit-export");
  fs::create_directories(dir);
  auto cfg = model->config();
  auto stored_dtype = [&](const torch::Tensor& t) {
    return dtype && t.is_floating_point() ? *dtype : t.scalar_type();
  };
  // The parameters themselves: a layer gathered by layers->hold changes their data in place.
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model->named_parameters(/*recurse=*/true)) tensors.emplace_back(p.key(), p.value());
  for (const auto& [name, t] : tensors)
    if (t.is_floating_point()) {
      cfg.torch_dtype = dtype_name(stored_dtype(t));
      break;
    }
  const std::string file = (fs::path(dir) / "model.safetensors").string();
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (!layers) {
    for (auto& [name, t] : tensors) t = t.detach().to(stored_dtype(t));
    io::write_safetensors(file, tensors, meta);
  } else {
    // Tensors outside the decoder layers first, then layer by layer; within a group larger
    // dtypes first, then by name.
    std::vector<int64_t> layer(tensors.size());
    std::vector<size_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); ++i) {
      order[i] = i;
      layer[i] = decoder_layer_of(tensors[i].first);
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (layer[a] != layer[b]) return layer[a] < layer[b];
      const auto sa = c10::elementSize(stored_dtype(tensors[a].second)),
                 sb = c10::elementSize(stored_dtype(tensors[b].second));
      if (sa != sb) return sa > sb;
      return tensors[a].first < tensors[b].first;
    });
    std::vector<io::TensorSpec> specs;
    for (size_t i : order) {
      const auto& [name, t] = tensors[i];
      const auto it = layers->shapes.find(name);
      specs.push_back({name, stored_dtype(t), it != layers->shapes.end() ? it->second : t.sizes().vec()});
    }
    int64_t held = -1;
    io::write_safetensors_streamed(
        file, specs,
        [&](size_t i) {
          while (held < layer[order[i]]) layers->hold(++held);  // every layer once, ascending, even one without tensors
          return tensors[order[i]].second.detach().to(specs[i].dtype);
        },
        meta);
    while (held + 1 < cfg.num_hidden_layers) layers->hold(++held);
    layers->hold(-1);
  }
  io::write_file_atomic((fs::path(dir) / "config.json").string(), model_config_to_json(cfg));
}

}  // namespace onebit::models
