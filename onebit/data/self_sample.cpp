#include "onebit/data/self_sample.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "onebit/core/error.h"
#include "onebit/data/seed.h"
#include "onebit/models/generate.h"
#include "onebit/models/inference_scope.h"
#include "onebit/util/progress.h"

namespace onebit::data {

namespace {

void check_options(const SampleOptions& opts) {
  const config::SampleCfg& o = opts.sampling;
  OB_CHECK(o.num_samples > 0, "self-sampling: num_samples must be > 0, got ", o.num_samples);
  OB_CHECK(o.max_length >= 1, "self-sampling: max_length must be >= 1, got ", o.max_length);
  OB_CHECK(o.batch_size > 0, "self-sampling: batch_size must be > 0, got ", o.batch_size);
  OB_CHECK(o.first_token == "uniform" || o.first_token == "sweep",
           "self-sampling: first_token must be 'uniform' or 'sweep', got '", o.first_token, "'");
  OB_CHECK(o.greedy_min >= 0 && o.greedy_min <= o.greedy_max, "self-sampling: need 0 <= greedy_min <= greedy_max, got ",
           o.greedy_min, " and ", o.greedy_max);
  OB_CHECK(o.temperature >= 0, "self-sampling: temperature must be >= 0 (0 = greedy), got ", o.temperature);
  OB_CHECK(o.top_k >= 0, "self-sampling: top_k must be >= 0, got ", o.top_k);
  OB_CHECK(o.top_p > 0 && o.top_p <= 1, "self-sampling: top_p must be in (0, 1], got ", o.top_p);
  const SampleRanks& r = opts.ranks;
  OB_CHECK(r.world_size >= 1 && r.rank >= 0 && r.rank < r.world_size, "self-sampling: rank ", r.rank,
           " is outside world size ", r.world_size);
  OB_CHECK(r.world_size == 1 || r.all_gather, "self-sampling: ", r.world_size, " ranks but no all_gather");
}

// Ids a sample may start with: the vocabulary less BOS, EOS and PAD.
std::vector<int64_t> candidates(const models::ModelConfig& cfg) {
  OB_CHECK(cfg.vocab_size > 0, "self-sampling: model has no vocabulary (vocab_size ", cfg.vocab_size, ")");
  std::vector<int64_t> ids;
  for (int64_t id = 0; id < cfg.vocab_size; ++id)
    if (id != cfg.bos_token_id && id != cfg.eos_token_id && id != cfg.pad_token_id) ids.push_back(id);
  OB_CHECK(!ids.empty(), "self-sampling: no ordinary token ids to start samples with");
  return ids;
}

struct BatchPlan {
  int64_t greedy = 0;
  std::vector<int64_t> first;
  uint64_t generate_seed = 0;
};

// Everything random about batch k, from (seed, k) alone; draws in a fixed order.
BatchPlan plan_batch(const std::vector<int64_t>& cand, const SampleOptions& opts, int64_t k) {
  const config::SampleCfg& o = opts.sampling;
  SplitMix rng(mix_seed(opts.seed, uint64_t(k)));
  BatchPlan p;
  p.greedy = o.greedy_min + int64_t(rng.below(uint64_t(o.greedy_max - o.greedy_min + 1)));
  const auto C = uint64_t(cand.size());
  for (int64_t r = 0; r < o.batch_size; ++r) {
    const uint64_t row = uint64_t(k * o.batch_size + r);
    p.first.push_back(cand[size_t(o.first_token == "sweep" ? row % C : rng.below(C))]);
  }
  p.generate_seed = rng.next();
  return p;
}

// Batch k as a [batch_size, 1 + max_length] int64 CPU tensor: column 0 the length of each
// row (EOS not counted), then its tokens.
torch::Tensor sample_batch(models::CausalLMImpl& model, const std::vector<int64_t>& cand, const SampleOptions& opts,
                           int64_t k, int64_t eos) {
  const config::SampleCfg& o = opts.sampling;
  const BatchPlan plan = plan_batch(cand, opts, k);
  models::GenerateOptions g;
  g.max_new_tokens = o.max_length - 1;
  g.temperature = o.temperature;
  g.top_k = o.top_k;
  g.top_p = o.top_p;
  g.seed = plan.generate_seed;
  g.greedy_prefix = plan.greedy;
  g.eos_token_id = eos;
  // Rows that stop leave the batch (long samples, large batches: a static cache would attend
  // over finished rows and padding), and the tokens stay those of every earlier release.
  g.decode = models::GenerateOptions::Decode::Dynamic;
  const auto prompts = torch::tensor(plan.first, torch::kInt64).unsqueeze(1);
  const auto out = models::generate(model, prompts, g).to(torch::kCPU);
  const int64_t T = out.size(1);
  // Length: up to (not including) the first EOS after the first token.
  auto length = torch::full({o.batch_size}, T, torch::kInt64);
  if (eos >= 0 && T > 1) {
    const auto is_eos = out.narrow(1, 1, T - 1) == eos;
    const auto first = is_eos.to(torch::kInt64).argmax(1) + 1;
    length = torch::where(is_eos.any(1), first, length);
  }
  auto rows = torch::zeros({o.batch_size, 1 + o.max_length}, torch::kInt64);
  rows.select(1, 0).copy_(length);
  rows.narrow(1, 1, T).copy_(out);
  return rows;
}

// Every rank's `t`, in rank order (one process: itself).
std::vector<torch::Tensor> exchange(const SampleRanks& ranks, const torch::Tensor& t) {
  if (ranks.world_size == 1) return {t};
  auto all = ranks.all_gather(t);
  OB_CHECK(int64_t(all.size()) == ranks.world_size, "self-sampling: all_gather returned ", all.size(),
           " tensors for ", ranks.world_size, " ranks");
  return all;
}

// Shortest decimal that reads back exactly (0.7, not 0.69999999999999996).
std::string num(double v) {
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

GeneratorSettings settings_of(const SampleOptions& opts, const models::CausalLMImpl& model, int64_t eos) {
  const config::SampleCfg& o = opts.sampling;
  const models::ModelConfig& cfg = model.config();
  GeneratorSettings settings = opts.provenance;
  // Sampling draws from the device's generator: another kind of device gives other samples.
  settings["device"] = c10::DeviceTypeName(model.lm_head_weight().device().type(), /*lower_case=*/true);
  settings["program"] = "onebit self-sampling (LLM-QAT)";
  settings["seed"] = std::to_string(opts.seed);
  settings["batch_size"] = std::to_string(o.batch_size);
  settings["max_length"] = std::to_string(o.max_length);
  settings["first_token"] = o.first_token;
  settings["greedy_min"] = std::to_string(o.greedy_min);
  settings["greedy_max"] = std::to_string(o.greedy_max);
  settings["temperature"] = num(o.temperature);
  settings["top_k"] = std::to_string(o.top_k);
  settings["top_p"] = num(o.top_p);
  settings["eos_token_id"] = std::to_string(eos);
  settings["bos_token_id"] = std::to_string(cfg.bos_token_id);
  return settings;
}

}  // namespace

std::vector<int64_t> first_tokens_of_batch(const models::ModelConfig& cfg, const SampleOptions& opts, int64_t k) {
  check_options(opts);
  return plan_batch(candidates(cfg), opts, k).first;
}

int64_t greedy_tokens_of_batch(const SampleOptions& opts, int64_t k) {
  check_options(opts);
  return plan_batch({0}, opts, k).greedy;
}

SampleReport self_sample(models::CausalLMImpl& model, const std::string& out_dir, const SampleOptions& opts) {
  check_options(opts);
  const config::SampleCfg& o = opts.sampling;
  const models::ModelConfig& cfg = model.config();
  const auto cand = candidates(cfg);
  const int64_t eos = o.stop_at_eos ? cfg.eos_token_id : -1;
  const GeneratorSettings settings = settings_of(opts, model, eos);
  const SampleRanks& ranks = opts.ranks;
  const bool lead = ranks.rank == 0;

  // Rank 0 alone touches the folder: a complete dataset with these settings is only read
  // (other processes may be reading it too), otherwise it is opened for appending.
  std::unique_ptr<TokenDatasetWriter> writer;
  int64_t have = 0;
  if (lead) {
    bool complete = false;
    if (std::filesystem::exists(out_dir + "/index.json")) {
      const TokenDataset ds = TokenDataset::open(out_dir);
      complete = ds.size() >= o.num_samples && ds.generator() == settings && ds.vocab_size() == cfg.vocab_size;
      if (complete) have = ds.size();
    }
    if (!complete) {
      writer = std::make_unique<TokenDatasetWriter>(out_dir, cfg.vocab_size, settings);
      have = writer->committed();
    }
  }
  have = exchange(ranks, torch::full({1}, have, torch::kInt64))[0].item<int64_t>();  // rank 0's
  SampleReport rep;
  rep.resumed_from = have;
  models::InferenceScope inference(model);  // its generate calls reuse the packed weights

  std::unique_ptr<util::ProgressBar> bar;
  if (opts.progress && lead && have < o.num_samples)
    bar = std::make_unique<util::ProgressBar>("sampling", o.num_samples, "samples");
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  // Rounds of one batch per rank, from the batch holding the first missing row.
  const int64_t B = o.batch_size, W = ranks.world_size;
  for (int64_t k0 = have / B; have < o.num_samples; k0 += W) {
    const int64_t k = k0 + ranks.rank;
    const auto mine = k * B < o.num_samples ? sample_batch(model, cand, opts, k, eos)
                                            : torch::zeros({B, 1 + o.max_length}, torch::kInt64);
    const auto all = exchange(ranks, mine);
    // Rank 0 appends the rows it lacks in stream order; every rank counts them.
    for (int64_t r = 0; r < W; ++r) {
      const auto rows = all[size_t(r)].contiguous();
      const int64_t* data = rows.data_ptr<int64_t>();
      for (int64_t i = 0; i < B; ++i) {
        const int64_t j = (k0 + r) * B + i;
        if (j < have) continue;
        if (j >= o.num_samples) break;
        const int64_t* row = data + i * (1 + o.max_length);
        if (writer) writer->append(std::vector<int64_t>(row + 1, row + 1 + row[0]));
        tokens += row[0];
        ++have;
      }
    }
    if (writer) writer->commit();
    if (bar) {
      char extra[48];
      std::snprintf(extra, sizeof extra, "%.0f tok/s", double(tokens) / std::max(elapsed(), 1e-9));
      bar->update(have, extra);
    }
  }
  if (bar) bar->finish();
  rep.seconds = elapsed();
  // Everyone returns only after rank 0's last commit (the others may open the folder next).
  const int64_t total = lead ? TokenDataset::open(out_dir).num_tokens() : 0;
  rep.total_tokens = exchange(ranks, torch::full({1}, total, torch::kInt64))[0].item<int64_t>();
  rep.total = have;
  return rep;
}

}  // namespace onebit::data
