#include "onebit/models/param_shapes.h"

#include <regex>

namespace onebit::models {

int64_t ParamShape::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

int64_t decoder_layer_of(const std::string& name) {
  static const std::regex layer_re(R"((^|\.)layers\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(name, m, layer_re) ? std::stoll(m[2].str()) : -1;
}

namespace {

struct Lister {
  std::vector<ParamShape> out;
  void add(const std::string& name, std::vector<int64_t> shape, int64_t layer = -1) {
    out.push_back({name, std::move(shape), layer, false});
  }
  void linear(const std::string& prefix, int64_t in, int64_t outf, bool bias, int64_t layer) {
    out.push_back({prefix + ".weight", {outf, in}, layer, true});
    if (bias) add(prefix + ".bias", {outf}, layer);
  }
};

void llama_family(const ModelConfig& c, Lister& l) {
  const int64_t H = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  l.add("model.embed_tokens.weight", {c.vocab_size, H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    l.linear(p + "self_attn.q_proj", H, q, c.attention_bias, i);
    l.linear(p + "self_attn.k_proj", H, kv, c.attention_bias, i);
    l.linear(p + "self_attn.v_proj", H, kv, c.attention_bias, i);
    l.linear(p + "self_attn.o_proj", q, H, c.attention_bias && c.model_type != "qwen2", i);
    l.linear(p + "mlp.gate_proj", H, c.intermediate_size, c.mlp_bias, i);
    l.linear(p + "mlp.up_proj", H, c.intermediate_size, c.mlp_bias, i);
    l.linear(p + "mlp.down_proj", c.intermediate_size, H, c.mlp_bias, i);
    l.add(p + "input_layernorm.weight", {H}, i);
    l.add(p + "post_attention_layernorm.weight", {H}, i);
  }
  l.add("model.norm.weight", {H});
  if (!c.tie_word_embeddings) l.linear("lm_head", H, c.vocab_size, false, -1);
}

void opt(const ModelConfig& c, Lister& l) {
  const int64_t H = c.hidden_size, P = c.word_embed_proj_dim;
  const bool b = c.enable_bias;
  auto ln = [&](const std::string& p, int64_t layer) {
    if (!c.layer_norm_elementwise_affine) return;
    l.add(p + ".weight", {H}, layer);
    l.add(p + ".bias", {H}, layer);
  };
  l.add("model.decoder.embed_tokens.weight", {c.vocab_size, P});
  l.add("model.decoder.embed_positions.weight", {c.max_position_embeddings + 2, H});
  if (c.do_layer_norm_before) ln("model.decoder.final_layer_norm", -1);
  if (P != H) {
    l.linear("model.decoder.project_out", H, P, false, -1);
    l.linear("model.decoder.project_in", P, H, false, -1);
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.decoder.layers." + std::to_string(i) + ".";
    for (const char* n : {"k_proj", "v_proj", "q_proj", "out_proj"}) l.linear(p + "self_attn." + n, H, H, b, i);
    ln(p + "self_attn_layer_norm", i);
    l.linear(p + "fc1", H, c.intermediate_size, b, i);
    l.linear(p + "fc2", c.intermediate_size, H, b, i);
    ln(p + "final_layer_norm", i);
  }
  if (!c.tie_word_embeddings) l.linear("lm_head", P, c.vocab_size, false, -1);
}

}  // namespace

std::vector<ParamShape> param_shapes(const ModelConfig& cfg) {
  Lister l;
  if (cfg.is_llama_family()) llama_family(cfg, l);
  else opt(cfg, l);
  return l.out;
}

}  // namespace onebit::models
