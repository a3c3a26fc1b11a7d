#include "onebit/distill/train_models.h"

#include <torch/torch.h>

#include <regex>

#include "onebit/core/error.h"
#include "onebit/models/loader.h"

namespace onebit::distill {

torch::Dtype config_dtype(const std::string& s, const std::string& key) {
  if (s == "fp32") return torch::kFloat32;
  if (s == "bf16") return torch::kBFloat16;
  if (s == "fp16") return torch::kFloat16;
  fail(key, " must be fp32, bf16 or fp16, got '", s, "'");
}

models::StudentOptions student_options(const config::StudentCfg& s) {
  models::StudentOptions so;
  so.svid = s.svid;
  so.latent_init = s.latent_init;
  so.latent_scale = s.latent_scale;
  so.ste = s.ste;
  so.post_layernorm = s.post_layernorm;
  so.keep_bias = s.keep_bias;
  so.layers = s.layers;
  return so;
}

bool shares_frozen(const config::TrainConfig& cfg) {
  return cfg.model.dtype == "fp32" || cfg.model.dtype == cfg.train.precision;
}

TrainModels load_train_models(const config::TrainConfig& cfg, torch::Device device) {
  TrainModels m;
  m.teacher = models::load_pretrained(cfg.model.teacher, {device, config_dtype(cfg.model.dtype, "model.dtype")});
  // fp32 masters for every train.precision (bf16/fp16 change only the compute); the latent W
  // then move to student.latent_dtype.
  models::LoadOptions so{device, torch::kFloat32};
  if (shares_frozen(cfg)) {
    const std::regex replaced(cfg.student.layers.empty() ? models::default_student_layers(m.teacher->config())
                                                         : cfg.student.layers);
    for (const auto& p : m.teacher->named_parameters(/*recurse=*/true)) {
      const std::string module = p.key().substr(0, p.key().rfind('.'));
      if (!std::regex_match(module, replaced)) so.shared.emplace(p.key(), p.value());
    }
  }
  m.student = models::load_pretrained(cfg.model.teacher, so);
  m.replaced = models::to_onebit(*m.student, student_options(cfg.student));
  models::set_latent_dtype(*m.student, config_dtype(cfg.student.latent_dtype, "student.latent_dtype"));
  return m;
}

}  // namespace onebit::distill
