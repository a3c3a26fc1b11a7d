#include "onebit/data/self_sample.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "onebit/core/error.h"
#include "onebit/data/seed.h"
#include "onebit/models/generate.h"
#include "onebit/util/progress.h"

namespace onebit::data {

namespace {

void check_options(const SampleOptions& o) {
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
BatchPlan plan_batch(const std::vector<int64_t>& cand, const SampleOptions& o, int64_t k) {
  SplitMix rng(mix_seed(o.seed, uint64_t(k)));
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

// Shortest decimal that reads back exactly (0.7, not 0.69999999999999996).
std::string num(double v) {
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
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

SampleReport self_sample(models::CausalLMImpl& model, const std::string& out_dir, const SampleOptions& o) {
  check_options(o);
  const models::ModelConfig& cfg = model.config();
  const auto cand = candidates(cfg);
  const int64_t eos = o.stop_at_eos ? cfg.eos_token_id : -1;

  GeneratorSettings settings = o.provenance;
  settings["program"] = "onebit self-sampling (LLM-QAT)";
  settings["seed"] = std::to_string(o.seed);
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

  SampleReport rep;
  // Already complete with these settings: read only (other ranks may be reading it too).
  if (std::filesystem::exists(out_dir + "/index.json")) {
    const TokenDataset have = TokenDataset::open(out_dir);
    if (have.size() >= o.num_samples && have.generator() == settings && have.vocab_size() == cfg.vocab_size) {
      rep.resumed_from = rep.total = have.size();
      rep.total_tokens = have.num_tokens();
      return rep;
    }
  }
  TokenDatasetWriter writer(out_dir, cfg.vocab_size, settings);
  rep.resumed_from = writer.committed();
  model.eval();

  std::unique_ptr<util::ProgressBar> bar;
  if (o.progress) bar = std::make_unique<util::ProgressBar>("sampling", o.num_samples, "samples");
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  // Resume inside the stream: skip the rows of the first batch that are already on disk.
  for (int64_t k = writer.committed() / o.batch_size; writer.committed() < o.num_samples; ++k) {
    const BatchPlan plan = plan_batch(cand, o, k);
    models::GenerateOptions g;
    g.max_new_tokens = o.max_length - 1;
    g.temperature = o.temperature;
    g.top_k = o.top_k;
    g.top_p = o.top_p;
    g.seed = plan.generate_seed;
    g.greedy_prefix = plan.greedy;
    g.eos_token_id = eos;
    const auto prompts = torch::tensor(plan.first, torch::kInt64).unsqueeze(1);
    const auto out = models::generate(model, prompts, g).to(torch::kCPU).contiguous();
    const int64_t T = out.size(1);
    const int64_t* data = out.data_ptr<int64_t>();
    for (int64_t r = writer.committed() - k * o.batch_size; r < o.batch_size; ++r) {
      if (k * o.batch_size + r >= o.num_samples) break;
      const int64_t* row = data + r * T;
      int64_t len = 1;
      while (len < T && !(eos >= 0 && row[len] == eos)) ++len;
      writer.append(std::vector<int64_t>(row, row + len));
      tokens += len;
    }
    writer.commit();
    if (bar) {
      char extra[48];
      std::snprintf(extra, sizeof extra, "%.0f tok/s", double(tokens) / std::max(elapsed(), 1e-9));
      bar->update(writer.committed(), extra);
    }
  }
  if (bar) bar->finish();
  rep.total = writer.committed();
  rep.seconds = elapsed();
  rep.total_tokens = TokenDataset::open(out_dir).num_tokens();
  return rep;
}

}  // namespace onebit::data
