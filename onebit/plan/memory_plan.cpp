#include "onebit/plan/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/data/packed_blocks.h"
#include "onebit/distill/embedded_teacher.h"
#include "onebit/distill/train_models.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/param_shapes.h"
#include "onebit/models/to_onebit.h"
#include "onebit/optim/quantized_moment.h"

namespace onebit::plan {

namespace {

int64_t dtype_bytes(const std::string& d, const std::string& key) {
  if (d == "fp32") return 4;
  if (d == "bf16" || d == "fp16") return 2;
  fail("plan: ", key, " must be fp32, bf16 or fp16, got '", d, "'");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int64_t kBucketBytes = 25 << 20;  // C10dOptions::bucket_bytes
constexpr int64_t kGiB = int64_t(1) << 30;
constexpr int64_t kCpuRuntimeBytes = int64_t(32) << 20;

// What the model holds, split the ways the plan needs (elements).
struct Inventory {
  int64_t total = 0, replaced = 0, trainable = 0, replaced_linears = 0;
  int64_t latent = 0;            // latent W elements (of `trainable`)
  int64_t frozen = 0;            // student tensors that do not train (embeddings, lm_head, norms, biases, kept linears)
  int64_t layer_params = 0;      // teacher elements inside the decoder layers
  int64_t max_layer_trainable = 0;     // the largest decoder layer's trainable elements
  int64_t max_layer_latent = 0;        // ... of which latent W
  int64_t max_linear = 0;        // largest replaced weight (out·in)
  int64_t max_param = 0;         // largest trainable tensor
};

Inventory count(const models::ModelConfig& m, const std::string& layers_regex) {
  const std::string pattern = layers_regex.empty() ? models::default_student_layers(m) : layers_regex;
  const std::regex re(pattern, std::regex::ECMAScript);
  Inventory inv;
  std::vector<int64_t> layer_trainable(m.num_hidden_layers, 0), layer_latent(m.num_hidden_layers, 0);
  for (const auto& p : models::param_shapes(m)) {
    const int64_t n = p.numel();
    inv.total += n;
    if (p.layer >= 0) inv.layer_params += n;
    const std::string module = p.name.substr(0, p.name.rfind('.'));
    if (p.linear_weight && std::regex_match(module, re)) {
      const int64_t out = p.shape[0], in = p.shape[1];
      ++inv.replaced_linears;
      inv.replaced += n;
      inv.latent += n;
      inv.trainable += n + in + out;  // W, g, h
      inv.max_linear = std::max(inv.max_linear, n);
      inv.max_param = std::max(inv.max_param, n);
      if (p.layer >= 0) {
        layer_trainable[p.layer] += n + in + out;
        layer_latent[p.layer] += n;
      }
    } else {
      inv.frozen += n;
    }
  }
  OB_CHECK(inv.replaced_linears > 0, "plan: student.layers pattern '", pattern, "' matches no linear of this ",
           m.model_type, " model");
  for (int64_t i = 0; i < m.num_hidden_layers; ++i) {
    inv.max_layer_trainable = std::max(inv.max_layer_trainable, layer_trainable[i]);
    inv.max_layer_latent = std::max(inv.max_layer_latent, layer_latent[i]);
  }
  return inv;
}

// Bytes one student decoder layer saves for backward, per token (docs/training.md lists the
// tensors): c = compute dtype bytes, r = residual-stream dtype bytes (the student's embedding).
int64_t layer_saved_per_token(const models::ModelConfig& m, int64_t c, int64_t r) {
  const int64_t H = m.hidden_size, I = m.intermediate_size;
  const int64_t q = m.num_attention_heads * m.head_dim, kv = m.num_key_value_heads * m.head_dim;
  const bool cast = c != r;  // each linear casts its input to the autocast dtype (one copy each)
  if (m.is_llama_family()) {
    // RMSNorm: fp32 input of pow (the residual itself when fp32), the normalised fp32 h.
    const int64_t norms = (r < 4 ? 4 * H : 0) + 4 * H + 4 * H + 4 * H;
    const int64_t inputs = cast ? 5 * c * H : 2 * r * H;
    // u of q,k,v,o; v; rotated q,k (in c for SDPA); SDPA out; its [B,T,H] copy (o_proj input).
    const int64_t attn = c * (q + 2 * kv) + c * kv + c * (q + kv) + 2 * c * q + c * H;
    // u of gate, up; gate out; silu out; up out; product (down input); u of down.
    const int64_t mlp = 6 * c * I + c * H;
    return norms + inputs + attn + mlp;
  }
  // OPT (pre-LN): LayerNorm inputs are the residuals (hidden state, mid residual r·H).
  const int64_t inputs = cast ? 4 * c * H : 2 * r * H;
  const int64_t attn = 3 * c * H + c * H + 2 * c * H + 2 * c * H + c * H;  // u q,k,v; q scaled; k, v; out, copy; u o
  const int64_t mlp = 2 * c * I + c * H;  // u fc1, activation out (fc2 input), u fc2
  return r * H + inputs + attn + mlp;
}

// Everything the plan computes, for one (cfg, options); plan_memory adds the suggestions.
MemoryPlan compute(const config::TrainConfig& cfg, const models::ModelConfig& m, const PlanOptions& o) {
  OB_CHECK(o.world_size >= 1, "plan: world size must be >= 1, got ", o.world_size);
  MemoryPlan p;
  p.model = m;
  p.options = o;
  p.sharding = cfg.dist.sharding;
  p.shard_teacher = cfg.dist.shard_teacher;
  p.latent_dtype = cfg.student.latent_dtype;
  p.state_dtype = cfg.optim.state_dtype;
  const int64_t W = o.world_size;
  const Inventory inv = count(m, cfg.student.layers);
  p.params_total = inv.total;
  p.params_replaced = inv.replaced;
  p.params_trainable = inv.trainable;
  p.replaced_linears = inv.replaced_linears;

  // ---- run length (optim.grad_accum 0: derived from train.global_batch for this world) ----
  const int64_t B = cfg.data.batch_size, T = cfg.data.seq_len, accum = cfg.optim.grad_accum > 0 ? cfg.optim.grad_accum : config::grad_accum_for(cfg, W);
  p.tokens_per_step = B * T * accum * W;
  if (cfg.data.source == "sample") {
    p.blocks = cfg.data.sample.num_samples * cfg.data.sample.max_length / T;
    p.blocks += data::mixed_text_blocks(p.blocks, cfg.data.mix_fraction);  // data.mix_text
  }
  const int64_t per_epoch = p.blocks >= 0 ? p.blocks / (B * W) : -1;  // batches per epoch
  if (cfg.train.max_steps > 0) {
    p.steps = cfg.train.max_steps;
    if (per_epoch > 0) p.epochs = double(p.steps * accum) / double(per_epoch);
  } else if (per_epoch >= 0) {
    p.steps = std::max<int64_t>(1, cfg.train.epochs * per_epoch / accum);
    p.epochs = double(cfg.train.epochs);
  } else {
    p.epochs = double(cfg.train.epochs);
  }

  // ---- dtypes ----
  const int64_t tdt = dtype_bytes(cfg.model.dtype, "model.dtype");
  const int64_t c = dtype_bytes(cfg.train.precision, "train.precision");
  const int64_t lat = dtype_bytes(p.latent_dtype, "student.latent_dtype");
  // AdamW moments: bytes per value (int8: one-byte codes, plus an fp32 scale per block below).
  const int64_t st = p.state_dtype == "int8" ? 1 : dtype_bytes(p.state_dtype, "optim.state_dtype");
  const int64_t frozen_bytes_each = o.share_frozen ? tdt : 4;
  const int64_t r = frozen_bytes_each;  // residual stream: the dtype of the student's embedding
  const int64_t N = B * T;              // tokens per micro-step on this rank
  const int64_t H = m.hidden_size, L = m.num_hidden_layers, V = m.vocab_size;
  const int64_t Hout = m.is_llama_family() ? H : m.word_embed_proj_dim;  // last_hidden width
  const std::string& mode = p.sharding;
  const bool shard_opt = mode != "none", shard_grad = mode == "gradients" || mode == "full",
             shard_params = mode == "full";

  // ---- static state ----
  const int64_t gh = inv.trainable - inv.latent;  // g, h elements (fp32)
  const int64_t trainable_bytes = inv.latent * lat + gh * 4;
  const int64_t layer_trainable_bytes = inv.max_layer_latent * lat + (inv.max_layer_trainable - inv.max_layer_latent) * 4;
  int64_t teacher = inv.total * tdt;
  std::string teacher_note = cfg.model.dtype + ", replicated";
  if (p.shard_teacher && W > 1) {
    const int64_t layer_bytes = inv.layer_params / std::max<int64_t>(1, L) * tdt;
    teacher = (inv.total - inv.layer_params) * tdt + ceil_div(inv.layer_params * tdt, W) + 2 * layer_bytes;
    teacher_note = cfg.model.dtype + ", decoder layers 1/" + std::to_string(W) + " + 2 gathered layers";
  }
  int64_t trainable = trainable_bytes;
  std::string trainable_note = "latent W " + p.latent_dtype + ", g and h fp32";
  if (shard_params && W > 1) {
    trainable = ceil_div(trainable_bytes, W);
    trainable_note += ", 1/" + std::to_string(W);
  }
  const int64_t frozen = o.share_frozen ? 0 : inv.frozen * frozen_bytes_each;
  const std::string frozen_note = o.share_frozen ? "embeddings, lm_head, norms: the teacher's tensors"
                                                 : "embeddings, lm_head, norms, biases: fp32 copies";
  const int64_t grad_full = trainable_bytes;  // gradients have their parameter's dtype
  const int64_t grads = shard_grad && W > 1 ? ceil_div(grad_full, W) : grad_full;
  const int64_t opt_full = 2 * inv.trainable * st + (st == 1 ? 2 * 4 * ceil_div(inv.trainable, optim::kQuantBlock) : 0);
  const int64_t optim = shard_opt && W > 1 ? ceil_div(opt_full, W) : opt_full;
  int64_t comm = 0;
  std::string comm_note = "none (one process)";
  if (W > 1) {
    if (mode == "none") {
      comm_note = "none beyond the gradients: they are views of the allreduce buckets";
    } else if (mode == "optimizer") {
      comm = ceil_div(grad_full, W) + 2 * std::max(kBucketBytes, layer_trainable_bytes);
      comm_note = "this rank's gradient shard (reduce-scatter output), 2 buckets";
    } else if (mode == "full") {
      comm = 2 * layer_trainable_bytes + layer_trainable_bytes + 2 * kBucketBytes;
      comm_note = "2 gathered layers (prefetch), 1 layer of gradients to reduce-scatter, 2 buckets";
    } else {
      comm = 2 * std::max(kBucketBytes, layer_trainable_bytes);
      comm_note = "2 buckets of a layer's gradients or parameters";
    }
  }

  // ---- activations (one micro-step) ----
  const int64_t saved_layer = layer_saved_per_token(m, c, r) * N;
  const int64_t hidden_s = (L + 1) * r * H * N;    // the student's hidden states (layer inputs)
  const int64_t hidden_t = (L + 1) * tdt * H * N;  // the teacher's, kept for the loss
  // The hidden-state term saves no copies of its own (distill::normalized_mse).
  const bool ckpt = cfg.model.gradient_checkpointing;
  const int64_t act_ckpt = hidden_s + hidden_t + saved_layer;
  const int64_t act_full = hidden_s + hidden_t + L * saved_layer;
  const int64_t activations = ckpt ? act_ckpt : act_full;
  p.activations_other = ckpt ? act_full : act_ckpt;
  p.checkpointing = ckpt;

  // ---- transients at the three candidate peaks ----
  // The KD loss: two [chunk, V] fp32 buffers, fp32 copies of bf16/fp16 lm_heads, dL/dh of the
  // last hidden state [N, H] fp32 (kept until backward) and the chunk's upcast states.
  const int64_t chunk = std::min(cfg.kd.chunk_tokens, N);
  const int64_t lm_head = V * Hout;
  const int64_t kd_chunks = 2 * chunk * V * 4 + (tdt != 4 ? lm_head * 4 : 0) + (r != 4 ? lm_head * 4 : 0) +
                            N * Hout * 4 + 2 * chunk * Hout * 4;
  // Backward of a layer: sign(W) / dS buffer of the largest linear (compute dtype), its new
  // fp32 gradient, and the activation gradients in flight ([N, I] and [N, H] tensors).
  const int64_t I = m.intermediate_size;
  const int64_t backward_ws = inv.max_linear * c + (c != lat ? inv.max_linear * lat : 0) + N * (3 * c * I + 2 * 4 * H);
  // The optimizer step: AdamW's sqrt(v) and denominator of the largest tensor (fp32). Lean
  // precision updates one bucket at a time in fp32 copies of what it stores in bf16 (tensors and
  // their gradients, moments): at most 4 copies of a bucket (a tensor larger than a bucket is one).
  // int8 moments: their two fp32 copies and the encoder's temporaries (levels, neighbours,
  // probabilities and the int64 hash of the random bits: 12-18 fp32 copies at once, measured).
  // A bucket holds at most one decoder layer's tensors (ParamSync never spans two layers).
  const int64_t lean_copies = (lat == 2 ? 2 : 0) + (st == 2 ? 2 : st == 1 ? 14 : 0);
  const int64_t lean_bucket =
      std::max(inv.max_param, std::min(kBucketBytes / (lat == 2 ? 2 : 4), inv.max_layer_latent));
  const int64_t optim_ws = std::max(2 * inv.max_param * 4, lean_copies * lean_bucket * 4);

  // LibTorch's own CPU memory after the first step (thread pools, oneDNN and BLAS caches, malloc
  // arenas of the autograd engine's small blocks): bench-memory-plan measures 27-36 MiB for a
  // 1-layer, 64-wide model (--sizes T). Process RSS counts it; on a GPU its counterpart (the CUDA
  // context, cuBLAS and NCCL workspaces) lies outside the caching allocator, so it is in the margin.
  const int64_t runtime = o.cuda ? 0 : kCpuRuntimeBytes;
  const int64_t static_bytes = teacher + trainable + frozen + optim + comm + runtime;
  // ParamSync keeps its gradient buffers (none, optimizer) or shards (gradients, full) from one
  // step to the next: they are live at every moment, not only from the backward on.
  const int64_t grads_in_fwd = grads;
  const int64_t fwd = static_bytes + grads_in_fwd + activations + kd_chunks;
  const int64_t bwd = static_bytes + grads_in_fwd + activations + backward_ws;
  const int64_t upd = static_bytes + grads + optim_ws;
  const int64_t peak = std::max({fwd, bwd, upd});
  const bool at_update = peak == upd;

  auto add = [&](const char* key, const char* label, int64_t bytes, const std::string& note) {
    p.components.push_back({key, label, bytes, note});
  };
  add("teacher", "teacher weights", teacher, teacher_note);
  add("student_trainable", "student trainable (W, g, h)", trainable, trainable_note);
  add("student_frozen", "student frozen tensors", frozen, frozen_note);
  add("gradients", "gradients", at_update ? grads : grads_in_fwd,
      std::string(shard_grad && W > 1 ? "1/" + std::to_string(W) + ", " : "") +
          "kept between steps (ParamSync's flat buffers)");
  add("optimizer", "optimizer state (AdamW m, v)", optim,
      p.state_dtype + (shard_opt && W > 1 ? ", 1/" + std::to_string(W) : ""));
  add("activations", "activations", at_update ? 0 : activations,
      std::string(ckpt ? "checkpointed" : "all layers saved") + ", " + std::to_string(N) + " tokens" +
          (at_update ? "; freed before the optimizer step" : ""));
  add("kd_chunks", "KD-loss chunks", !at_update && peak == fwd ? kd_chunks : 0,
      std::to_string(chunk) + " tokens x " + std::to_string(V) + " vocabulary, fp32");
  add("comm_buffers", "communication buffers", comm, comm_note);
  if (runtime) add("runtime", "LibTorch CPU runtime", runtime, "thread pools, kernel caches, malloc arenas");
  add("workspace", "step workspace", at_update ? optim_ws : peak == bwd ? backward_ws : 0,
      at_update ? (lean_copies ? "AdamW's fp32 copies of one bucket (lean precision)" : "AdamW temporaries of the largest tensor")
                : "backward buffers of the largest layer");
  p.peak_bytes = peak;
  // The margin: fragmentation of the caching allocator (or malloc), plus on a GPU the CUDA
  // context and the cuBLAS/NCCL workspaces outside the allocator.
  p.margin_bytes = peak / 20 + (o.cuda ? kGiB : 0);
  p.margin_note = o.cuda ? "allocator margin: 5% fragmentation + 1 GiB CUDA context and workspaces"
                         : "allocator margin: 5% malloc fragmentation";
  p.total_bytes = peak + p.margin_bytes;
  p.fits = o.budget_bytes <= 0 || p.total_bytes <= o.budget_bytes;
  return p;
}

}  // namespace

const Component& MemoryPlan::component(const std::string& key) const {
  for (const auto& c : components)
    if (c.key == key) return c;
  fail("plan: no component '", key, "'");
}

models::ModelConfig teacher_model_config(const config::TrainConfig& cfg) {
  if (cfg.model.teacher == "embedded") return distill::embedded_teacher_config(cfg.embedded);
  const std::string path = cfg.model.teacher + "/config.json";
  return models::parse_model_config(io::read_file(path), path);
}

PlanOptions run_options(const config::TrainConfig& cfg, int64_t world_size, bool cuda) {
  PlanOptions o;
  o.world_size = world_size;
  o.cuda = cuda;
  o.share_frozen = distill::shares_frozen(cfg);
  return o;
}

MemoryPlan plan_memory(const config::TrainConfig& cfg, const models::ModelConfig& teacher, const PlanOptions& o) {
  MemoryPlan p = compute(cfg, teacher, o);
  if (p.fits) return p;
  // What would make it fit: single changes first, then the lean combination.
  struct Try {
    std::string what;
    config::TrainConfig cfg;
    PlanOptions opts;
  };
  std::vector<Try> tries;
  auto with = [&](const std::string& what, auto edit) {
    Try t{what, cfg, o};
    edit(t.cfg, t.opts);
    tries.push_back(t);
  };
  if (!cfg.model.gradient_checkpointing)
    with("model.gradient_checkpointing=true", [](auto& c, auto&) { c.model.gradient_checkpointing = true; });
  if (o.world_size > 1)
    for (const char* mode : {"optimizer", "gradients", "full"})
      if (cfg.dist.sharding != mode)
        with(std::string("dist.sharding=") + mode, [mode](auto& c, auto&) { c.dist.sharding = mode; });
  if (cfg.data.batch_size > 1)
    with("data.batch_size=" + std::to_string(cfg.data.batch_size / 2) +
             " optim.grad_accum=" + std::to_string(cfg.optim.grad_accum * 2),
         [](auto& c, auto&) {
           c.data.batch_size /= 2;
           c.optim.grad_accum *= 2;
         });
  // The lean combinations measured within 2% of fp32's quality (docs/RESULTS.md).
  for (const char* state : {"bf16", "int8"})
    if (cfg.student.latent_dtype != "bf16" || cfg.optim.state_dtype != state)
      with(std::string("student.latent_dtype=bf16 optim.state_dtype=") + state, [state](auto& c, auto&) {
        c.student.latent_dtype = "bf16";
        c.optim.state_dtype = state;
      });
  for (const auto& t : tries) {
    const MemoryPlan q = compute(t.cfg, teacher, t.opts);
    if (q.total_bytes >= p.total_bytes) continue;  // e.g. bf16 moments when they are int8 already
    p.suggestions.push_back(t.what + ": " + format_bytes(q.total_bytes) + (q.fits ? " (fits)" : " (does not fit)"));
  }
  // More GPUs with full sharding: the fewest (doubling, up to 1024) that fit, else the most tried.
  Try more{"", cfg, o};
  more.cfg.dist.sharding = "full";
  MemoryPlan q;
  for (more.opts.world_size = o.world_size * 2;; more.opts.world_size *= 2) {
    q = compute(more.cfg, teacher, more.opts);
    if (q.fits || more.opts.world_size >= 1024) break;
  }
  p.suggestions.push_back(std::to_string(more.opts.world_size) + " GPUs with dist.sharding=full: " +
                          format_bytes(q.total_bytes) + (q.fits ? " (fits)" : " (does not fit)"));
  return p;
}

int64_t parse_bytes(const std::string& text) {
  const auto bad = [&] { fail("memory size '", text, "' is not a size such as 80GiB, 80GB or 81920MiB"); };
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !std::isfinite(v) || v <= 0) bad();
  std::string unit(end);
  unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
  for (auto& ch : unit) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  double mult = 0;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "kib" || unit == "k") mult = 1024.0;
  else if (unit == "mib" || unit == "m") mult = 1024.0 * 1024;
  else if (unit == "gib" || unit == "g") mult = double(kGiB);
  else if (unit == "tib" || unit == "t") mult = double(kGiB) * 1024;
  else if (unit == "kb") mult = 1e3;
  else if (unit == "mb") mult = 1e6;
  else if (unit == "gb") mult = 1e9;
  else if (unit == "tb") mult = 1e12;
  else bad();
  return static_cast<int64_t>(v * mult);
}

std::string format_bytes(int64_t bytes) {
  char buf[32];
  const double b = double(bytes);
  if (bytes >= kGiB) std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(kGiB));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", b / double(1 << 20));
  return buf;
}

namespace {
std::string count_text(int64_t n) {
  char buf[32];
  if (n >= 1'000'000'000) std::snprintf(buf, sizeof buf, "%.3fB", double(n) / 1e9);
  else if (n >= 1'000'000) std::snprintf(buf, sizeof buf, "%.2fM", double(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}
}  // namespace

std::string format_plan(const MemoryPlan& p) {
  const auto& m = p.model;
  std::ostringstream os;
  char line[256];
  os << "model: " << m.model_type << ", " << m.num_hidden_layers << " layers, hidden " << m.hidden_size << ", ffn "
     << m.intermediate_size << ", heads " << m.num_attention_heads << " (kv " << m.num_key_value_heads << "), vocab "
     << m.vocab_size << "\n";
  os << "parameters: " << count_text(p.params_total) << " total, " << count_text(p.params_replaced) << " in "
     << p.replaced_linears << " linears replaced by OneBit, " << count_text(p.params_trainable) << " trainable\n";
  os << "run: " << p.tokens_per_step << " tokens per step";
  if (p.blocks >= 0) os << ", " << p.blocks << " blocks (at most)";
  if (p.steps >= 0) {
    std::snprintf(line, sizeof line, ", %lld steps, %.2f epochs", static_cast<long long>(p.steps), p.epochs);
    os << line;
  } else {
    os << ", steps known once the data is tokenized";
  }
  os << "\n";
  os << "per GPU: world size " << p.options.world_size << ", sharding " << p.sharding
     << (p.shard_teacher ? " (+teacher)" : "") << ", latent " << p.latent_dtype << ", optimizer state "
     << p.state_dtype << "\n";
  for (const auto& c : p.components) {
    std::snprintf(line, sizeof line, "  %-30s %12s  %s\n", c.label.c_str(), format_bytes(c.bytes).c_str(),
                  c.note.c_str());
    os << line;
  }
  std::snprintf(line, sizeof line, "  %-30s %12s\n", "peak of the step", format_bytes(p.peak_bytes).c_str());
  os << line;
  std::snprintf(line, sizeof line, "  %-30s %12s  %s\n", "margin", format_bytes(p.margin_bytes).c_str(),
                p.margin_note.c_str());
  os << line;
  std::snprintf(line, sizeof line, "  %-30s %12s\n", "total", format_bytes(p.total_bytes).c_str());
  os << line;
  std::snprintf(line, sizeof line, "  (activations with model.gradient_checkpointing=%s: %s)\n",
                p.checkpointing ? "false" : "true", format_bytes(p.activations_other).c_str());
  os << line;
  if (p.options.budget_bytes > 0) {
    os << (p.fits ? "fits" : "does NOT fit") << " in " << format_bytes(p.options.budget_bytes) << " per GPU\n";
    for (const auto& s : p.suggestions) os << "  try " << s << "\n";
  }
  return os.str();
}

std::string plan_json(const MemoryPlan& p) {
  using nlohmann::json;
  json comps = json::object();
  for (const auto& c : p.components) comps[c.key] = {{"bytes", c.bytes}, {"note", c.note}};
  const auto& m = p.model;
  json j = {
      {"model",
       {{"model_type", m.model_type},
        {"num_hidden_layers", m.num_hidden_layers},
        {"hidden_size", m.hidden_size},
        {"intermediate_size", m.intermediate_size},
        {"num_attention_heads", m.num_attention_heads},
        {"num_key_value_heads", m.num_key_value_heads},
        {"vocab_size", m.vocab_size}}},
      {"params", {{"total", p.params_total}, {"replaced", p.params_replaced}, {"trainable", p.params_trainable},
                  {"replaced_linears", p.replaced_linears}}},
      {"run", {{"tokens_per_step", p.tokens_per_step}, {"blocks", p.blocks}, {"steps", p.steps}, {"epochs", p.epochs}}},
      {"setup",
       {{"world_size", p.options.world_size},
        {"sharding", p.sharding},
        {"shard_teacher", p.shard_teacher},
        {"latent_dtype", p.latent_dtype},
        {"state_dtype", p.state_dtype},
        {"share_frozen", p.options.share_frozen},
        {"cuda", p.options.cuda}}},
      {"memory",
       {{"components", comps},
        {"activations_other_checkpointing", p.activations_other},
        {"peak_bytes", p.peak_bytes},
        {"margin", {{"bytes", p.margin_bytes}, {"note", p.margin_note}}},
        {"total_bytes", p.total_bytes}}},
  };
  if (p.options.budget_bytes > 0)
    j["fit"] = {{"budget_bytes", p.options.budget_bytes}, {"fits", p.fits}, {"suggestions", p.suggestions}};
  return j.dump(2) + "\n";
}

}  // namespace onebit::plan
