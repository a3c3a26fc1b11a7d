#include "onebit/models/to_onebit.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "onebit/core/error.h"
#include "onebit/nn/onebit_linear.h"
#include "onebit/nn/replace.h"

namespace onebit::models {

namespace {
using nlohmann::json;

nn::OneBitLinearOptions linear_options(const StudentOptions& s, int64_t in, int64_t out, bool bias) {
  return nn::OneBitLinearOptions(in, out)
      .bias(bias)
      .post_layernorm(s.post_layernorm)
      .ste(nn::parse_ste_kind(s.ste))
      .svid(nn::parse_svid_method(s.svid))
      .latent_init(nn::parse_latent_init(s.latent_init))
      .latent_scale(s.latent_scale);
}

// Only the latent W, g and h of the OneBit layers train.
void freeze_all_but_onebit(CausalLMImpl& model) {
  for (auto& p : model.parameters()) p.set_requires_grad(false);
  for (auto& m : model.modules()) {
    if (auto* ob = dynamic_cast<nn::OneBitLinearImpl*>(m.get())) {
      ob->weight.set_requires_grad(true);
      ob->g.set_requires_grad(true);
      ob->h.set_requires_grad(true);
    }
  }
}

StudentOptions options_from_json(const json& j) {
  StudentOptions s;
  s.svid = j.value("svid", s.svid);
  s.latent_init = j.value("latent_init", s.latent_init);
  s.latent_scale = j.value("latent_scale", s.latent_scale);
  s.ste = j.value("ste", s.ste);
  s.post_layernorm = j.value("post_layernorm", s.post_layernorm);
  s.keep_bias = j.value("keep_bias", s.keep_bias);
  s.layers = j.value("layers", s.layers);
  return s;
}
}  // namespace

std::string default_student_layers(const ModelConfig& cfg) {
  if (cfg.model_type == "opt") return R"(model\.decoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc1|fc2))";
  return R"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj))";
}

std::vector<std::string> to_onebit(CausalLMImpl& model, const StudentOptions& opts) {
  OB_CHECK(!model.config().onebit, "to_onebit: the model is already a OneBit student");
  const std::string pattern = opts.layers.empty() ? default_student_layers(model.config()) : opts.layers;
  std::vector<std::string> biased;
  auto replaced = nn::replace_linears(
      model, pattern, [&](const std::string& name, torch::nn::LinearImpl& lin) -> std::shared_ptr<torch::nn::Module> {
        const bool bias = opts.keep_bias && lin.bias.defined();
        if (bias) biased.push_back(name);
        auto o = linear_options(opts, lin.options.in_features(), lin.options.out_features(), bias);
        return nn::OneBitLinearImpl::from_linear(lin.weight.detach(), bias ? lin.bias.detach() : torch::Tensor(), o);
      });
  OB_CHECK(!replaced.empty(), "to_onebit: layer pattern '", pattern, "' matched no linear of the model");
  freeze_all_but_onebit(model);

  json j = {{"svid", opts.svid},           {"latent_init", opts.latent_init}, {"latent_scale", opts.latent_scale},
            {"ste", opts.ste},             {"post_layernorm", opts.post_layernorm},
            {"keep_bias", opts.keep_bias}, {"layers", pattern},
            {"replaced", replaced},        {"biased", biased}};
  auto& cfg = model.mutable_config();
  cfg.onebit = true;
  cfg.onebit_json = j.dump();
  return replaced;
}

void set_latent_dtype(CausalLMImpl& model, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  for (auto& m : model.modules())
    if (auto* ob = dynamic_cast<nn::OneBitLinearImpl*>(m.get())) ob->weight.set_data(ob->weight.to(dtype));
}

void apply_student_layout(CausalLMImpl& model) {
  const auto& cfg = model.config();
  json j;
  try {
    j = json::parse(cfg.onebit_json);
  } catch (const json::exception& e) {
    fail("config.json key 'onebit': invalid JSON: ", e.what());
  }
  const auto opts = options_from_json(j);
  OB_CHECK(!opts.layers.empty(), "config.json key 'onebit': missing 'layers'");
  const auto biased_list = j.value("biased", std::vector<std::string>{});
  const std::set<std::string> biased(biased_list.begin(), biased_list.end());
  auto replaced = nn::replace_linears(
      model, opts.layers, [&](const std::string& name, torch::nn::LinearImpl& lin) -> std::shared_ptr<torch::nn::Module> {
        auto o = linear_options(opts, lin.options.in_features(), lin.options.out_features(), biased.count(name) > 0);
        return std::make_shared<nn::OneBitLinearImpl>(o);
      });
  const auto recorded = j.value("replaced", std::vector<std::string>{});
  OB_CHECK(recorded.empty() || recorded == replaced, "config.json key 'onebit': pattern '", opts.layers,
           "' selects ", replaced.size(), " linears but ", recorded.size(), " are recorded as replaced");
  freeze_all_but_onebit(model);
}

std::vector<std::string> naive_sign_quantize(CausalLMImpl& model) {
  const std::regex re(default_student_layers(model.config()));
  std::vector<std::string> names;
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* lin = dynamic_cast<torch::nn::LinearImpl*>(item.value().get());
    if (!lin || !std::regex_match(item.key(), re)) continue;
    auto& w = lin->weight;
    const auto scale = w.abs().mean();
    w.copy_(torch::where(w >= 0, scale, -scale));
    names.push_back(item.key());
  }
  OB_CHECK(!names.empty(), "naive_sign_quantize: no decoder linear found");
  return names;
}

}  // namespace onebit::models
