// TrainConfig: the typed recipe of one onebit-train run (configs/*.yaml). Filled once by
// load_train_config(path, overrides): YAML file, then `a.b=c` overrides, then validate().
// Unknown keys are errors with a hint: "unknown key 'kd.aplha' (did you mean 'kd.alpha'?)".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace onebit::config {

struct ModelCfg {
  std::string teacher;           // HF folder of the FP teacher, or "embedded" (quickstart teacher)
  std::string dtype = "bf16";    // teacher weights/compute: fp32 | bf16 | fp16
  std::string device = "auto";   // auto (cuda if available) | cpu | cuda | cuda:N
  bool gradient_checkpointing = false;
};

struct StudentCfg {
  std::string svid = "nmf";           // nmf | svd | none
  std::string latent_init = "scaled"; // scaled (sign(W)·latent_scale) | keep
  double latent_scale = 0.01;
  std::string ste = "tanh";           // tanh | identity | clipped
  bool post_layernorm = true;
  bool keep_bias = true;              // OPT: keep the original bias (before the norm)
  std::string layers = "";            // regex of linears to replace; "" = all decoder linears
  std::string latent_dtype = "fp32";  // latent W: fp32 | bf16 (AdamW writes it back by stochastic rounding)
  int64_t progressive_steps = 0;      // > 0: decoder layers become 1-bit one after another over these steps
  std::string progressive_order = "first_to_last";  // first_to_last | last_to_first
};

// Pretraining of the embedded teacher (quickstart only: model.teacher = embedded).
struct EmbeddedCfg {
  int64_t hidden_size = 128, intermediate_size = 352, num_layers = 4, num_heads = 4, num_kv_heads = 2;
  int64_t train_tokens = 2'000'000;   // synthetic-language tokens seen in pretraining
  int64_t batch_size = 16, seq_len = 128;
  double lr = 3e-3;
  uint64_t seed = 1234;
};

// The teacher's self-sampling (method.md §4; onebit/data/self_sample.h): keys data.* of
// data.source=sample, and the options of onebit-sample. Key names in brackets.
struct SampleCfg {
  int64_t num_samples = 1024;           // [data.num_samples]
  int64_t max_length = 256;             // [data.sample_length] tokens per sample, first token included
  int64_t batch_size = 32;              // [data.sample_batch] rows generated together
  std::string first_token = "uniform";  // [data.first_token] uniform | sweep (ids in order, skipping BOS/EOS/PAD)
  int64_t greedy_min = 2, greedy_max = 4;  // [data.greedy_min/max] greedy tokens after the first
  double temperature = 1.0;             // [data.temperature] 0 = greedy
  int64_t top_k = 0;                    // [data.top_k] 0 = full softmax
  double top_p = 1.0;                   // [data.top_p] 1 = off
  bool stop_at_eos = true;              // [data.stop_at_eos] a row ends at the model's EOS (not stored)
};

struct DataCfg {
  std::string source = "sample";  // sample (self-sampled by the teacher) | dataset | text
  std::string path;               // dataset: onebit-sample output dir; text: a .txt/.jsonl file
  std::string sample_dir;         // source=sample: where samples are cached (default run/samples)
  SampleCfg sample;               // source=sample: what the teacher samples
  int64_t seq_len = 2048;         // training block length
  int64_t batch_size = 4;         // per device, per micro-step
  uint64_t seed = 0;              // shuffling (per epoch) and sampling
  std::string mix_text;           // a .txt/.jsonl file of real text mixed into the blocks
  double mix_fraction = 0;        // share of the training blocks taken from mix_text, in [0, 1)
};

struct KdCfg {
  double kd_loss_scale = 0.01;  // weight of KL(teacher‖student), batchmean
  double alpha = 1.0;           // weight of the hidden-state term
  double ce_weight = 0.0;       // weight of CE on next-token labels
  int64_t chunk_tokens = 1024;  // KL computed over this many tokens at a time
  double temperature = 1.0;     // KD softmax temperature τ (KL scaled by τ²); the paper: 1
  int64_t block_warmup_steps = 0;  // first steps: each block alone reproduces its teacher block
  int64_t top_k = 0;            // > 0: KL on the teacher's k largest logits per token (renormalised)
};

struct OptimCfg {
  double lr = 4e-4;
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-8;
  double weight_decay = 0.01;
  int64_t warmup_steps = 500;
  std::string schedule = "cosine";  // cosine | constant | linear
  double min_lr_ratio = 0.0;        // final lr = lr · min_lr_ratio
  double grad_clip = 1.0;           // <= 0: off
  int64_t grad_accum = 1;           // 0 = derived from train.global_batch (see grad_accum_for)
  std::string state_dtype = "fp32"; // AdamW moments: fp32 | bf16 | int8 (8-bit blockwise); stochastic rounding
  double gh_lr_scale = 1.0;         // learning rate of the OneBit g and h vectors = lr · this
};

struct TrainCfg {
  int64_t epochs = 1;
  int64_t max_steps = 0;            // > 0: stop after this many optimizer steps (overrides epochs)
  int64_t global_batch = 0;         // > 0: sequences per optimizer step, all ranks (checked by grad_accum_for)
  std::string precision = "bf16";   // compute: fp32 | bf16 (autocast) | fp16 (autocast + loss scaling)
  double loss_scale_init = 65536;   // fp16: initial dynamic loss scale (2^16)
  int64_t loss_scale_growth_interval = 2000;  // fp16: finite steps in a row before the scale doubles
  uint64_t seed = 42;
  bool deterministic = false;
  int64_t log_every = 10;
  int64_t save_every = 500;         // optimizer steps; 0 = only at the end
  int64_t keep_last = 3;
  std::string resume = "auto";      // auto | never | <checkpoint dir>
  int64_t max_bad_steps = 10;       // stop after this many NaN/inf steps in a row
  int64_t eval_every = 0;           // optimizer steps; 0 = only at the end (when eval_text set)
  std::string eval_text;            // held-out text file for periodic perplexity
  int64_t eval_seq_len = 512;
  int64_t eval_windows = 32;        // windows used for periodic eval (0 = all)
};

// Multi-process runs (torchrun / srun; onebit/dist/c10d_sync.h). Unused by a single process.
struct DistCfg {
  std::string backend = "auto";  // auto (nccl on CUDA, gloo on CPU) | gloo | nccl
  int64_t timeout_s = 300;       // joining, each collective and barrier; then one error line
  std::string sharding = "none"; // none | optimizer | gradients | full (ZeRO-1/2/3); onebit/dist/param_sync.h
  bool shard_teacher = false;    // shard the frozen teacher's decoder layers too (planned; not yet trained)
  double bucket_mb = 25;         // gradients are reduced in flat buckets of about this many MiB
};

struct TrainConfig {
  ModelCfg model;
  StudentCfg student;
  EmbeddedCfg embedded;
  DataCfg data;
  KdCfg kd;
  OptimCfg optim;
  TrainCfg train;
  DistCfg dist;
  std::string output_dir = "runs/onebit";

  void validate() const;        // ranges and enumerations; onebit::Error naming the key
  std::string to_yaml() const;  // every key, resolved (saved as <output_dir>/config.yaml)
};

// Parses YAML text (where = file name for messages) then applies overrides "a.b=value".
TrainConfig parse_train_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                               const std::string& where = "<config>");
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The micro-steps per optimizer step of a run on `world_size` ranks. Without train.global_batch:
// optim.grad_accum. With it: optim.grad_accum when data.batch_size × optim.grad_accum × world_size
// equals it, global_batch / (data.batch_size × world_size) when optim.grad_accum is 0, and
// otherwise onebit::Error naming the three numbers.
int64_t grad_accum_for(const TrainConfig& cfg, int64_t world_size);

// Keys that make a checkpoint written under `saved` meaningless for `now`, one
// "key: was X, now Y" each: model.* (but device, gradient_checkpointing), student.*,
// embedded.*, data.*, optim.state_dtype, dist.sharding, dist.bucket_mb. Optimizer, loss weights and train.* may change on resume.
std::vector<std::string> resume_conflicts(const TrainConfig& saved, const TrainConfig& now);

}  // namespace onebit::config
