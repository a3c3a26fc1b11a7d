#include "onebit/config/train_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <variant>

#include "onebit/core/error.h"

namespace onebit::config {

namespace {

// ---------------------------------------------------------------------------------------
// The key table: every config key once, with its storage and a one-line meaning. Parsing,
// overrides, to_yaml() and the unknown-key hints all walk this table, so a field added
// here is complete everywhere.
// ---------------------------------------------------------------------------------------
using Slot = std::variant<bool*, int64_t*, uint64_t*, double*, std::string*>;
struct Field {
  std::string key;  // "section.name" or "name" at top level
  Slot slot;
  const char* help;
};

std::vector<Field> fields_of(TrainConfig& c) {
  return {
      {"model.teacher", &c.model.teacher, "HF folder of the full-precision teacher, or 'embedded'"},
      {"model.dtype", &c.model.dtype, "teacher weights/compute: fp32 | bf16 | fp16"},
      {"model.device", &c.model.device, "auto | cpu | cuda | cuda:N"},
      {"model.gradient_checkpointing", &c.model.gradient_checkpointing, "recompute student layers in backward"},

      {"student.svid", &c.student.svid, "sign-value-independent decomposition init: nmf | svd | none"},
      {"student.latent_init", &c.student.latent_init, "latent W init: scaled (sign(W)*latent_scale) | keep"},
      {"student.latent_scale", &c.student.latent_scale, "magnitude of the scaled latent init"},
      {"student.ste", &c.student.ste, "sign straight-through estimator: tanh | identity | clipped"},
      {"student.post_layernorm", &c.student.post_layernorm, "LayerNorm after each 1-bit linear"},
      {"student.keep_bias", &c.student.keep_bias, "OPT: keep the original bias (before the norm)"},
      {"student.layers", &c.student.layers, "regex of linears to replace; empty = all decoder linears"},
      {"student.latent_dtype", &c.student.latent_dtype,
       "latent W storage: fp32 | bf16 (updated in fp32, stored by stochastic rounding)"},
      {"student.progressive_steps", &c.student.progressive_steps,
       "> 0: decoder layers start as the teacher's and become 1-bit one by one over these steps (0 = all at once)"},
      {"student.progressive_order", &c.student.progressive_order,
       "order of progressive replacement: first_to_last | last_to_first"},

      {"embedded.hidden_size", &c.embedded.hidden_size, "embedded teacher: hidden size"},
      {"embedded.intermediate_size", &c.embedded.intermediate_size, "embedded teacher: MLP size"},
      {"embedded.num_layers", &c.embedded.num_layers, "embedded teacher: decoder layers"},
      {"embedded.num_heads", &c.embedded.num_heads, "embedded teacher: attention heads"},
      {"embedded.num_kv_heads", &c.embedded.num_kv_heads, "embedded teacher: key/value heads"},
      {"embedded.train_tokens", &c.embedded.train_tokens, "synthetic-language tokens seen in pretraining"},
      {"embedded.batch_size", &c.embedded.batch_size, "embedded teacher pretraining batch"},
      {"embedded.seq_len", &c.embedded.seq_len, "embedded teacher pretraining block length"},
      {"embedded.lr", &c.embedded.lr, "embedded teacher pretraining learning rate"},
      {"embedded.seed", &c.embedded.seed, "seed of the synthetic language and the teacher init"},

      {"data.source", &c.data.source, "sample (self-sampled by the teacher) | dataset | text"},
      {"data.path", &c.data.path, "dataset: onebit-sample output folder; text: a .txt/.jsonl file"},
      {"data.mix_text", &c.data.mix_text, "sample/dataset: a .txt/.jsonl file of real text mixed into the blocks"},
      {"data.mix_fraction", &c.data.mix_fraction, "share of the training blocks taken from data.mix_text, in [0, 1)"},
      {"data.sample_dir", &c.data.sample_dir, "source=sample: sample cache folder (empty = <output_dir>/samples)"},
      {"data.num_samples", &c.data.sample.num_samples, "source=sample: number of sequences to sample"},
      {"data.sample_length", &c.data.sample.max_length, "source=sample: max tokens per sample"},
      {"data.sample_batch", &c.data.sample.batch_size, "source=sample: generation batch size"},
      {"data.first_token", &c.data.sample.first_token,
       "source=sample: first token uniform over the vocabulary | sweep (every id in turn)"},
      {"data.greedy_min", &c.data.sample.greedy_min, "source=sample: fewest greedy tokens after the first"},
      {"data.greedy_max", &c.data.sample.greedy_max, "source=sample: most greedy tokens after the first"},
      {"data.temperature", &c.data.sample.temperature, "source=sample: softmax temperature after the greedy ones (0 = greedy)"},
      {"data.top_k", &c.data.sample.top_k, "source=sample: sample from the k most likely tokens (0 = all)"},
      {"data.top_p", &c.data.sample.top_p, "source=sample: nucleus sampling mass (1 = off)"},
      {"data.stop_at_eos", &c.data.sample.stop_at_eos, "source=sample: a sample ends at the teacher's EOS"},
      {"data.seq_len", &c.data.seq_len, "training block length (tokens)"},
      {"data.batch_size", &c.data.batch_size, "blocks per device per micro-step"},
      {"data.seed", &c.data.seed, "seed of block shuffling (per epoch) and sampling"},

      {"kd.kd_loss_scale", &c.kd.kd_loss_scale, "weight of KL(teacher||student), batchmean"},
      {"kd.alpha", &c.kd.alpha, "weight of the hidden-state (MSE) term"},
      {"kd.ce_weight", &c.kd.ce_weight, "weight of cross-entropy on next-token labels"},
      {"kd.chunk_tokens", &c.kd.chunk_tokens, "KL computed over this many tokens at a time"},
      {"kd.block_warmup_steps", &c.kd.block_warmup_steps,
       "first optimizer steps that train each block alone on the teacher's inputs (block_loss)"},
      {"kd.temperature", &c.kd.temperature, "softmax temperature of the KL term, scaled by its square (1 = the paper)"},
      {"kd.top_k", &c.kd.top_k, "> 0: the KL term uses the teacher's k largest logits per token, renormalised (0 = all)"},

      {"optim.lr", &c.optim.lr, "peak learning rate (AdamW)"},
      {"optim.beta1", &c.optim.beta1, "AdamW beta1"},
      {"optim.beta2", &c.optim.beta2, "AdamW beta2"},
      {"optim.eps", &c.optim.eps, "AdamW epsilon"},
      {"optim.weight_decay", &c.optim.weight_decay, "AdamW decoupled weight decay"},
      {"optim.warmup_steps", &c.optim.warmup_steps, "linear warm-up steps"},
      {"optim.schedule", &c.optim.schedule, "lr schedule after warm-up: cosine | constant | linear"},
      {"optim.min_lr_ratio", &c.optim.min_lr_ratio, "final lr = lr * min_lr_ratio"},
      {"optim.grad_clip", &c.optim.grad_clip, "global gradient-norm clip; <= 0 = off"},
      {"optim.grad_accum", &c.optim.grad_accum, "micro-steps per optimizer step; 0 = from train.global_batch"},
      {"optim.state_dtype", &c.optim.state_dtype,
       "AdamW moments storage: fp32 | bf16 | int8 (8-bit blockwise codes); stochastic rounding"},
      {"optim.gh_lr_scale", &c.optim.gh_lr_scale, "learning rate of the OneBit g and h vectors = optim.lr * this"},

      {"train.epochs", &c.train.epochs, "passes over the packed blocks"},
      {"train.max_steps", &c.train.max_steps, "> 0: stop after this many optimizer steps (overrides epochs)"},
      {"train.global_batch", &c.train.global_batch,
       "sequences per optimizer step over all ranks (batch_size * grad_accum * ranks); 0 = not checked"},
      {"train.precision", &c.train.precision,
       "teacher/student compute: fp32 | bf16 (autocast) | fp16 (autocast + loss scaling)"},
      {"train.loss_scale_init", &c.train.loss_scale_init, "fp16: initial dynamic loss scale"},
      {"train.loss_scale_growth_interval", &c.train.loss_scale_growth_interval,
       "fp16: finite steps in a row before the loss scale doubles"},
      {"train.seed", &c.train.seed, "seed of training-time randomness (student init, sampling noise)"},
      {"train.deterministic", &c.train.deterministic, "deterministic kernels (slower)"},
      {"train.log_every", &c.train.log_every, "optimizer steps between log lines"},
      {"train.save_every", &c.train.save_every, "optimizer steps between checkpoints; 0 = only at the end"},
      {"train.keep_last", &c.train.keep_last, "checkpoints kept"},
      {"train.resume", &c.train.resume, "auto | never | <checkpoint folder>"},
      {"train.max_bad_steps", &c.train.max_bad_steps, "stop after this many NaN/inf steps in a row"},
      {"train.eval_every", &c.train.eval_every, "optimizer steps between evaluations; 0 = only at the end"},
      {"train.eval_text", &c.train.eval_text, "held-out text file for periodic perplexity (empty = none)"},
      {"train.eval_seq_len", &c.train.eval_seq_len, "perplexity window length"},
      {"train.eval_windows", &c.train.eval_windows, "windows per periodic evaluation; 0 = all"},

      {"dist.backend", &c.dist.backend, "multi-process: auto (nccl on CUDA, gloo on CPU) | gloo | nccl"},
      {"dist.timeout_s", &c.dist.timeout_s, "multi-process: seconds to join, per collective and barrier"},
      {"dist.sharding", &c.dist.sharding, "none | optimizer (ZeRO-1) | gradients (ZeRO-2) | full (ZeRO-3): what each rank keeps"},
      {"dist.shard_teacher", &c.dist.shard_teacher, "shard the frozen teacher's decoder layers over ranks too"},
      {"dist.bucket_mb", &c.dist.bucket_mb, "MiB per flat gradient bucket (one reduction each)"},

      {"output_dir", &c.output_dir, "run folder: checkpoints, logs, config.yaml, final model"},
  };
}

std::vector<std::string> all_keys() {
  TrainConfig c;
  std::vector<std::string> keys;
  for (auto& f : fields_of(c)) keys.push_back(f.key);
  return keys;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

[[noreturn]] void unknown_key(const std::string& where, const std::string& key) {
  std::vector<std::string> best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& k : all_keys()) {
    // Compare the full key, and for a bare name also each key's last component ("lr"
    // finds optim.lr and embedded.lr), so both kinds of slip find their key.
    size_t d = edit_distance(key, k);
    auto dot = k.find('.');
    if (dot != std::string::npos && key.find('.') == std::string::npos)
      d = std::min(d, edit_distance(key, k.substr(dot + 1)));
    if (d < best_d) best_d = d, best.clear();
    if (d == best_d) best.push_back(k);
  }
  const size_t limit = std::max<size_t>(2, key.size() / 3);
  if (best_d > limit || best.size() > 3) fail(where, ": unknown key '", key, "'");
  std::string hint = "'" + best[0] + "'";
  for (size_t i = 1; i < best.size(); ++i) hint += (i + 1 == best.size() ? " or '" : ", '") + best[i] + "'";
  fail(where, ": unknown key '", key, "' (did you mean ", hint, "?)");
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  return s;
}

// Typed parsing of one scalar text into a slot; errors name key and value.
void assign(const Field& f, const std::string& text, const std::string& where) {
  auto bad = [&](const char* expects) {
    fail(where, ": key '", f.key, "' expects ", expects, ", got '", text, "'");
  };
  auto parse_double = [&](double& out) {
    if (text.empty()) return false;
    errno = 0;
    char* end = nullptr;
    out = std::strtod(text.c_str(), &end);
    return end == text.c_str() + text.size() && errno != ERANGE && std::isfinite(out);
  };
  // Integers also accept an integral float spelling ("2e6") for token counts.
  auto parse_int = [&](long double lo, long double hi, int64_t& out) {
    std::string t;
    for (char ch : text)
      if (ch != '_') t.push_back(ch);  // 2_000_000
    if (t.empty()) return false;
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(t.c_str(), &end, 10);
    if (end == t.c_str() + t.size() && errno != ERANGE) {
      if (v < lo || v > hi) return false;
      out = v;
      return true;
    }
    double d;
    end = nullptr;
    d = std::strtod(t.c_str(), &end);
    if (end != t.c_str() + t.size() || !std::isfinite(d) || d != std::floor(d) || d < lo || d > hi) return false;
    out = static_cast<int64_t>(d);
    return true;
  };

  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, bool>) {
          const std::string t = lower(text);
          if (t == "true" || t == "yes" || t == "on" || t == "1") *p = true;
          else if (t == "false" || t == "no" || t == "off" || t == "0") *p = false;
          else bad("true or false");
        } else if constexpr (std::is_same_v<T, int64_t>) {
          int64_t v;
          if (!parse_int(-9.2e18L, 9.2e18L, v)) bad("an integer");
          *p = v;
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          // Seeds: non-negative, within int64 so they survive YAML tools that read int64.
          int64_t v;
          if (!parse_int(0, 9.2e18L, v)) bad("a non-negative integer");
          *p = static_cast<uint64_t>(v);
        } else if constexpr (std::is_same_v<T, double>) {
          double v;
          if (!parse_double(v)) bad("a number");
          *p = v;
        } else {
          *p = text;
        }
      },
      f.slot);
}

Field* find_field(std::vector<Field>& fields, const std::string& key) {
  for (auto& f : fields)
    if (f.key == key) return &f;
  return nullptr;
}

const char* node_kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "nothing";
    default: return "a scalar";
  }
}

// A mapping key as text: keys are plain names, never a list or a mapping (`[a, b]: 1`).
std::string key_text(const YAML::Node& key, const std::string& where) {
  OB_CHECK(key.IsScalar(), where, ": a key must be a plain name, got ", node_kind(key), " at line ",
           key.Mark().line + 1);
  return key.Scalar();
}

void set_from_node(std::vector<Field>& fields, const std::string& key, const YAML::Node& value,
                   const std::string& where) {
  Field* f = find_field(fields, key);
  if (!f) unknown_key(where, key);
  if (value.IsNull()) {
    // `path:` with nothing after it: an empty string; other types need a value.
    OB_CHECK(std::holds_alternative<std::string*>(f->slot), where, ": key '", key, "' has no value");
    *std::get<std::string*>(f->slot) = "";
    return;
  }
  OB_CHECK(value.IsScalar(), where, ": key '", key, "' expects a single value, got ", node_kind(value));
  assign(*f, value.Scalar(), where);
}

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// ---------------------------------------------------------------------------------------
// validate() helpers: messages "<key> must be ..., got <value>".
// ---------------------------------------------------------------------------------------
template <class T>
std::string show(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void need(bool ok, const std::string& key, const std::string& rule, const std::string& got) {
  OB_CHECK(ok, "config: ", key, " must be ", rule, ", got ", got);
}
void positive(int64_t v, const std::string& key) { need(v > 0, key, "> 0", show(v)); }
void non_negative(int64_t v, const std::string& key) { need(v >= 0, key, ">= 0", show(v)); }
void positive(double v, const std::string& key) { need(std::isfinite(v) && v > 0, key, "> 0", show(v)); }
void non_negative(double v, const std::string& key) { need(std::isfinite(v) && v >= 0, key, ">= 0", show(v)); }
void one_of(const std::string& v, const std::string& key, const std::vector<std::string>& allowed) {
  std::string list;
  for (const auto& a : allowed) {
    if (a == v) return;
    list += (list.empty() ? "" : ", ") + a;
  }
  fail("config: ", key, " must be one of ", list, "; got '", v, "'");
}

// Shortest decimal that reads back to exactly `v` (4e-4 stays 0.0004, not 0.00040000000000000002).
std::string format_double(double v) {
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  // Keep it a float in YAML's eyes, so that a reader never confuses 1 with an integer.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default: out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

void TrainConfig::validate() const {
  need(!model.teacher.empty(), "model.teacher", "set (a Hugging Face model folder or 'embedded')", "''");
  one_of(model.dtype, "model.dtype", {"fp32", "bf16", "fp16"});
  need(model.device == "auto" || model.device == "cpu" || model.device == "cuda" ||
           std::regex_match(model.device, std::regex("cuda:[0-9]+")),
       "model.device", "auto, cpu, cuda or cuda:N", "'" + model.device + "'");

  one_of(student.svid, "student.svid", {"nmf", "svd", "none"});
  one_of(student.latent_init, "student.latent_init", {"scaled", "keep"});
  positive(student.latent_scale, "student.latent_scale");
  one_of(student.ste, "student.ste", {"tanh", "identity", "clipped"});
  one_of(student.latent_dtype, "student.latent_dtype", {"fp32", "bf16"});
  non_negative(student.progressive_steps, "student.progressive_steps");
  one_of(student.progressive_order, "student.progressive_order", {"first_to_last", "last_to_first"});
  need(student.progressive_steps == 0 || !dist.shard_teacher, "student.progressive_steps",
       "0 with dist.shard_teacher (the layers not yet replaced run the teacher's tensors, which are then sharded)",
       show(student.progressive_steps));
  try {
    std::regex re(student.layers);
  } catch (const std::regex_error& e) {
    fail("config: student.layers is not a valid regular expression: '", student.layers, "' (", e.what(), ")");
  }

  positive(embedded.hidden_size, "embedded.hidden_size");
  positive(embedded.intermediate_size, "embedded.intermediate_size");
  positive(embedded.num_layers, "embedded.num_layers");
  positive(embedded.num_heads, "embedded.num_heads");
  positive(embedded.num_kv_heads, "embedded.num_kv_heads");
  need(embedded.hidden_size % embedded.num_heads == 0 && (embedded.hidden_size / embedded.num_heads) % 2 == 0,
       "embedded.hidden_size", "an even multiple of embedded.num_heads (" + show(embedded.num_heads) + ")",
       show(embedded.hidden_size));
  need(embedded.num_heads % embedded.num_kv_heads == 0, "embedded.num_kv_heads",
       "a divisor of embedded.num_heads (" + show(embedded.num_heads) + ")", show(embedded.num_kv_heads));
  positive(embedded.train_tokens, "embedded.train_tokens");
  positive(embedded.batch_size, "embedded.batch_size");
  positive(embedded.seq_len, "embedded.seq_len");
  positive(embedded.lr, "embedded.lr");

  one_of(data.source, "data.source", {"sample", "dataset", "text"});
  need(data.source == "sample" || !data.path.empty(), "data.path",
       "set when data.source is '" + data.source + "'", "''");
  need(std::isfinite(data.mix_fraction) && data.mix_fraction >= 0 && data.mix_fraction < 1, "data.mix_fraction",
       "in [0, 1)", show(data.mix_fraction));
  need(data.mix_fraction == 0 || !data.mix_text.empty(), "data.mix_text", "set when data.mix_fraction > 0", "''");
  need(data.mix_fraction == 0 || data.source != "text", "data.mix_fraction",
       "0 when data.source is 'text' (the blocks are all text already)", show(data.mix_fraction));
  const SampleCfg& smp = data.sample;
  positive(smp.num_samples, "data.num_samples");
  need(smp.max_length >= 2, "data.sample_length", ">= 2", show(smp.max_length));
  positive(smp.batch_size, "data.sample_batch");
  one_of(smp.first_token, "data.first_token", {"uniform", "sweep"});
  non_negative(smp.greedy_min, "data.greedy_min");
  need(smp.greedy_max >= smp.greedy_min, "data.greedy_max", ">= data.greedy_min (" + show(smp.greedy_min) + ")",
       show(smp.greedy_max));
  non_negative(smp.temperature, "data.temperature");
  non_negative(smp.top_k, "data.top_k");
  need(std::isfinite(smp.top_p) && smp.top_p > 0 && smp.top_p <= 1, "data.top_p", "in (0, 1]", show(smp.top_p));
  positive(data.seq_len, "data.seq_len");
  positive(data.batch_size, "data.batch_size");

  non_negative(kd.kd_loss_scale, "kd.kd_loss_scale");
  non_negative(kd.alpha, "kd.alpha");
  non_negative(kd.ce_weight, "kd.ce_weight");
  need(kd.kd_loss_scale > 0 || kd.alpha > 0 || kd.ce_weight > 0, "kd.kd_loss_scale, kd.alpha or kd.ce_weight",
       "> 0 (the loss would be zero)", "all 0");
  positive(kd.chunk_tokens, "kd.chunk_tokens");
  non_negative(kd.block_warmup_steps, "kd.block_warmup_steps");
  need(std::isfinite(kd.temperature) && kd.temperature > 0, "kd.temperature", "> 0", show(kd.temperature));
  non_negative(kd.top_k, "kd.top_k");

  positive(optim.lr, "optim.lr");
  need(std::isfinite(optim.beta1) && optim.beta1 >= 0 && optim.beta1 < 1, "optim.beta1", "in [0, 1)", show(optim.beta1));
  need(std::isfinite(optim.beta2) && optim.beta2 >= 0 && optim.beta2 < 1, "optim.beta2", "in [0, 1)", show(optim.beta2));
  positive(optim.eps, "optim.eps");
  non_negative(optim.weight_decay, "optim.weight_decay");
  non_negative(optim.warmup_steps, "optim.warmup_steps");
  one_of(optim.schedule, "optim.schedule", {"cosine", "constant", "linear"});
  need(std::isfinite(optim.min_lr_ratio) && optim.min_lr_ratio >= 0 && optim.min_lr_ratio <= 1, "optim.min_lr_ratio",
       "in [0, 1]", show(optim.min_lr_ratio));
  need(std::isfinite(optim.grad_clip), "optim.grad_clip", "finite", show(optim.grad_clip));
  non_negative(optim.grad_accum, "optim.grad_accum");
  need(optim.grad_accum > 0 || train.global_batch > 0, "optim.grad_accum", "> 0 unless train.global_batch is set", "0");
  one_of(optim.state_dtype, "optim.state_dtype", {"fp32", "bf16", "int8"});
  need(std::isfinite(optim.gh_lr_scale) && optim.gh_lr_scale > 0, "optim.gh_lr_scale", "> 0", show(optim.gh_lr_scale));

  positive(train.epochs, "train.epochs");
  non_negative(train.max_steps, "train.max_steps");
  non_negative(train.global_batch, "train.global_batch");
  one_of(train.precision, "train.precision", {"fp32", "bf16", "fp16"});
  positive(train.loss_scale_init, "train.loss_scale_init");
  positive(train.loss_scale_growth_interval, "train.loss_scale_growth_interval");
  positive(train.log_every, "train.log_every");
  non_negative(train.save_every, "train.save_every");
  positive(train.keep_last, "train.keep_last");
  need(!train.resume.empty(), "train.resume", "auto, never or a checkpoint folder", "''");
  positive(train.max_bad_steps, "train.max_bad_steps");
  non_negative(train.eval_every, "train.eval_every");
  positive(train.eval_seq_len, "train.eval_seq_len");
  non_negative(train.eval_windows, "train.eval_windows");

  one_of(dist.backend, "dist.backend", {"auto", "gloo", "nccl"});
  positive(dist.timeout_s, "dist.timeout_s");
  one_of(dist.sharding, "dist.sharding", {"none", "optimizer", "gradients", "full"});
  positive(dist.bucket_mb, "dist.bucket_mb");

  need(!output_dir.empty(), "output_dir", "set", "''");
}

int64_t grad_accum_for(const TrainConfig& cfg, int64_t world_size) {
  OB_CHECK(world_size >= 1, "grad_accum_for: world size must be >= 1, got ", world_size);
  const int64_t global = cfg.train.global_batch, per_device = cfg.data.batch_size, accum = cfg.optim.grad_accum;
  if (global <= 0) return accum;
  const int64_t per_step = per_device * world_size;
  if (accum == 0 && global % per_step == 0) return global / per_step;
  if (accum * per_step == global) return accum;
  if (accum == 0)
    fail("config: train.global_batch=", global, " is not a multiple of data.batch_size (", per_device,
         ") x world size (", world_size, ") = ", per_step, "; change data.batch_size or the number of ranks");
  const std::string hint = global % per_step == 0
                               ? "; set optim.grad_accum=" + std::to_string(global / per_step) + " (or 0 to derive it)"
                               : "";
  fail("config: train.global_batch=", global, " but data.batch_size (", per_device, ") x optim.grad_accum (", accum,
       ") x world size (", world_size, ") = ", accum * per_step, hint);
}

namespace {
std::string value_text(const Field& f) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, bool>) return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, double>) return format_double(*p);
        else if constexpr (std::is_same_v<T, std::string>) return quote(*p);
        else return std::to_string(*p);
      },
      f.slot);
}

// Keys that define what a checkpoint's tensors and data position mean: the teacher, the
// student's structure and init, the data stream, the sharded state's layout. Optimizer, loss weights, length and
// bookkeeping may change on resume (e.g. a lower lr after a divergence).
bool defines_checkpoint(const std::string& key) {
  if (key == "model.device" || key == "model.gradient_checkpointing") return false;
  // The layout and dtypes of the optimizer state.
  if (key == "dist.sharding" || key == "dist.bucket_mb" || key == "optim.state_dtype" || key == "optim.gh_lr_scale")
    return true;
  for (const char* prefix : {"model.", "student.", "embedded.", "data."})
    if (key.rfind(prefix, 0) == 0) return true;
  return false;
}
}  // namespace

std::vector<std::string> resume_conflicts(const TrainConfig& saved, const TrainConfig& now) {
  TrainConfig a = saved, b = now;
  const auto fa = fields_of(a), fb = fields_of(b);
  std::vector<std::string> out;
  for (size_t i = 0; i < fa.size(); ++i) {
    if (!defines_checkpoint(fa[i].key)) continue;
    const std::string va = value_text(fa[i]), vb = value_text(fb[i]);
    if (va != vb) out.push_back(fa[i].key + ": was " + va + ", now " + vb);
  }
  return out;
}

std::string TrainConfig::to_yaml() const {
  // fields_of needs a mutable config for parsing; here it is only read.
  auto fields = fields_of(const_cast<TrainConfig&>(*this));
  std::ostringstream os;
  os << "# onebit TrainConfig: every key, resolved\n";
  std::string section;
  for (const auto& f : fields) {
    const auto dot = f.key.find('.');
    const std::string sec = dot == std::string::npos ? "" : f.key.substr(0, dot);
    const std::string name = dot == std::string::npos ? f.key : f.key.substr(dot + 1);
    if (sec != section) {
      section = sec;
      if (!sec.empty()) os << sec << ":\n";
    }
    os << (sec.empty() ? "" : "  ") << name << ": " << value_text(f) << "  # " << f.help << "\n";
  }
  return os.str();
}

TrainConfig parse_train_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                               const std::string& where) {
  TrainConfig cfg;
  auto fields = fields_of(cfg);

  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(where, ": invalid YAML at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg);
  }
  if (!root.IsNull()) {
    OB_CHECK(root.IsMap(), where, ": expected a mapping of sections at the top level, got ", node_kind(root));
    for (const auto& kv : root) {
      const std::string sec = key_text(kv.first, where);
      const YAML::Node& val = kv.second;
      // A known section name holds a mapping; anything else is a top-level key.
      const bool is_section = std::any_of(fields.begin(), fields.end(),
                                          [&](const Field& f) { return f.key.rfind(sec + ".", 0) == 0; });
      if (val.IsMap()) {
        for (const auto& kv2 : val) set_from_node(fields, sec + "." + key_text(kv2.first, where), kv2.second, where);
      } else if (is_section) {
        OB_CHECK(val.IsNull(), where, ": section '", sec, "' expects a mapping of keys, got ", node_kind(val));
      } else {
        set_from_node(fields, sec, val, where);
      }
    }
  }

  for (const auto& ov : overrides) {
    const auto eq = ov.find('=');
    OB_CHECK(eq != std::string::npos && eq > 0, "override '", ov, "' is not of the form key=value");
    const std::string key = strip(ov.substr(0, eq));
    std::string value = strip(ov.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
      value = value.substr(1, value.size() - 2);
    const std::string ow = "override '" + ov + "'";
    Field* f = find_field(fields, key);
    if (!f) unknown_key(ow, key);
    assign(*f, value, ow);
  }

  cfg.validate();
  return cfg;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  OB_CHECK(in, "cannot open config file '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_train_config(ss.str(), overrides, path);
}

}  // namespace onebit::config
