// bench-packed-decode: greedy KV-cache decode tokens/s of an onebit export (packed 1-bit
// layers) against the full-precision model it came from, same run, same threads/device, with
// the device's default decoding (CUDA graphs on a GPU, the dynamic cache on the CPU) and the
// other mode beside it (dynamic on a GPU, the static cache on the CPU).
//   bench-packed-decode --threads 2                           (random LLaMA, hidden 2048)
//   bench-packed-decode --model SMOLLM2_DIR                   (a real model: its student layout)
//   bench-packed-decode --device cuda --layers 32 --hidden 4096 --ffn 11008 --json
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/llama_config.h"
#ifdef ONEBIT_WITH_CUDA
#include "kernels/cuda/launch.h"
#endif
#include "onebit/util/op_profile.h"
#include "onebit/core/error.h"
#include "onebit/export/export.h"
#include "onebit/export/packed_linear.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/generate.h"
#include "onebit/models/inference_scope.h"
#include "onebit/models/loader.h"
#include "onebit/models/step_decoder.h"
#include "onebit/models/to_onebit.h"
#include "onebit/nn/fused_ops.h"
#include "onebit/util/fs.h"

using namespace onebit;
namespace fs = std::filesystem;

namespace {
using Decode = models::GenerateOptions::Decode;

// A greedy decode after a random prompt of `prompt` tokens, in an InferenceScope (as generate
// runs: on CPU the dense weights packed for oneDNN). Dynamic: the forward loop with a growing
// KV cache; Static / Graph: one StepDecoder reused by every start() (its graphs are captured once).
class GreedyDecode {
 public:
  GreedyDecode(models::CausalLMImpl& m, int64_t prompt, int64_t capacity, const torch::Device& dev, Decode mode)
      : m_(m), dev_(dev), scope_(m) {
    ids_ = torch::randint(3, std::min<int64_t>(m.config().vocab_size, 1000), {1, prompt},
                          torch::TensorOptions().dtype(torch::kLong).device(dev));
    if (mode != Decode::Dynamic) dec_ = std::make_unique<models::StepDecoder>(m, 1, capacity, mode == Decode::Graph);
  }
  // Prefill and two steps (the warm-up and, with graphs, the capture), then waits for the device.
  void start() {
    cache_.clear();
    next_ = logits(ids_, true).argmax(-1);
    for (int w = 0; w < 2; ++w) step();
    sync();
  }
  void step() { next_ = logits(next_, false).argmax(-1); }
  void sync() const {
    if (dev_.is_cuda()) torch::cuda::synchronize();
  }

 private:
  torch::Tensor logits(const torch::Tensor& ids, bool first) {
    if (dec_) return first ? dec_->prefill(ids) : dec_->step(ids);
    return models::last_position_logits(m_, first ? ids : ids.view({1, 1}), cache_);
  }
  models::CausalLMImpl& m_;
  torch::Device dev_;
  models::InferenceScope scope_;
  torch::Tensor ids_, next_;
  std::unique_ptr<models::StepDecoder> dec_;
  models::KVCache cache_;
};

// Tokens/s of `tokens` timed steps after start(), the best of `repeats`.
double decode_tps(models::CausalLMImpl& m, int64_t prompt, int64_t tokens, int repeats, const torch::Device& dev,
                  Decode mode) {
  GreedyDecode run(m, prompt, prompt + tokens + 2, dev, mode);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    run.start();
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t t = 0; t < tokens; ++t) run.step();
    run.sync();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(tokens) / s);
  }
  return best;
}

// The `top` operators (CPU) and kernels (GPU) of `tokens` decode steps by self time, per token.
nlohmann::json decode_profile(models::CausalLMImpl& m, int64_t prompt, int64_t tokens, const torch::Device& dev,
                              Decode mode, int top) {
  GreedyDecode run(m, prompt, prompt + tokens + 2, dev, mode);
  run.start();
  const auto rows = util::profile_ops(
      [&] {
        for (int64_t t = 0; t < tokens; ++t) run.step();
        run.sync();
      },
      dev.is_cuda());
  nlohmann::json j = {{"mode", models::to_string(mode)}, {"tokens", tokens}};
  for (bool gpu : {false, true}) {
    if (gpu && !dev.is_cuda()) continue;
    double calls = 0, us = 0;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& r : rows) {
      if (r.gpu != gpu) continue;
      calls += double(r.calls) / double(tokens);
      us += r.self_us / double(tokens);
      if (int(list.size()) < top)
        list.push_back({{"name", r.name}, {"calls_per_token", double(r.calls) / double(tokens)},
                        {"us_per_token", r.self_us / double(tokens)}});
    }
    j[gpu ? "gpu" : "cpu"] = {{"calls_per_token", calls}, {"us_per_token", us}, {"top", list}};
  }
  return j;
}
}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-packed-decode", [&] {
    CLI::App app{"Decode tokens/s: onebit export (packed 1-bit) vs the full-precision model, same run"};
    int threads = 0, repeats = 3;
    int64_t layers = 4, hidden = 2048, ffn = 5632, vocab = 32000, prompt = 16, tokens = 32;
    std::string model_dir, device = "cpu", work = "build/bench_packed_decode";
    bool json_out = false;
    int profile_top = 0;
    app.add_option("--model", model_dir, "full-precision HF folder (default: a random LLaMA of the sizes below)");
    app.add_option("--layers", layers, "random model: decoder layers")->capture_default_str();
    app.add_option("--hidden", hidden, "random model: hidden size")->capture_default_str();
    app.add_option("--ffn", ffn, "random model: intermediate size")->capture_default_str();
    app.add_option("--vocab", vocab, "random model: vocabulary")->capture_default_str();
    app.add_option("--prompt", prompt, "prompt tokens (prefill, not timed)")->capture_default_str();
    app.add_option("--tokens", tokens, "decoded tokens (timed)")->capture_default_str();
    app.add_option("--repeats", repeats, "runs per model (best reported)")->capture_default_str();
    app.add_option("--threads", threads, "torch intra-op threads (0: leave default)");
    app.add_option("--device", device, "cpu | cuda | cuda:N")->capture_default_str();
    app.add_option("--work", work, "scratch folder for the export")->capture_default_str();
    app.add_flag("--json", json_out, "print JSON: one line after each dtype (bf16, then fp32 too), the last complete");
    app.add_option("--profile", profile_top,
                   "also profile the onebit model's decode in each dtype (default mode): operators and GPU kernels "
                   "per token, the N largest by self time")
        ->check(CLI::NonNegativeNumber);
    CLI11_PARSE(app, argc, argv);
    if (threads > 0) torch::set_num_threads(threads);
    const torch::Device dev(device);
    OB_CHECK(!dev.is_cuda() || torch::cuda::is_available(), "--device ", device, ": no CUDA device");

    auto make = [&] {
      if (!model_dir.empty()) return models::load_pretrained(model_dir);
      torch::manual_seed(0);  // the same random weights on every call
      return models::build_model(models::parse_model_config(bench::llama_config(layers, hidden, ffn, vocab).dump()));
    };
    auto fp = make();
    // Student of the same model (svid none: the signs and scales, not their quality, matter here).
    const fs::path dir = fs::path(work) / "export";
    {
      auto student = make();
      models::StudentOptions so;
      so.svid = "none";
      models::to_onebit(*student, so);
      packed::ExportOptions eo;
      eo.overwrite = true;
      eo.dtype = torch::kBFloat16;
      fs::create_directories(work);
      packed::export_model(*student, dir.string(), eo);
    }
    const auto stats = packed::measure_export(dir.string());
    nlohmann::json j = {{"bench", "packed_decode"}, {"device", device}, {"threads", torch::get_num_threads()},
                        {"params", stats.model_params}, {"export_mb", stats.file_bytes / 1e6},
                        {"prompt", prompt}, {"tokens", tokens}};
    // The default decoding of the device (generate's Auto: CUDA graphs on a GPU, the dynamic
    // cache on the CPU) gives the main keys; the other mode is measured beside it.
    const Decode main_mode = models::resolve_decode(Decode::Auto, dev);
    const Decode other_mode = dev.is_cuda() ? Decode::Dynamic : Decode::Static;
    j["decode"] = models::to_string(main_mode);
    // bf16 first: with --json a line after each dtype, so a run cut short keeps the bf16 numbers.
    for (torch::Dtype dt : {torch::kBFloat16, torch::kFloat32}) {
      const std::string tag = dt == torch::kFloat32 ? "fp32" : "bf16";
      fp->to(dev, dt);
      fp->eval();
      auto ex = models::load_pretrained(dir.string(), {dev, dt});
      ex->eval();
      for (Decode mode : {main_mode, other_mode}) {
        const std::string key = mode == main_mode ? tag : tag + "_" + models::to_string(mode);
        j["fp_" + key + "_tps"] = decode_tps(*fp, prompt, tokens, repeats, dev, mode);
        j["onebit_" + key + "_tps"] = decode_tps(*ex, prompt, tokens, repeats, dev, mode);
        j["speedup_" + key] = j["onebit_" + key + "_tps"].get<double>() / j["fp_" + key + "_tps"].get<double>();
      }
      // The 1-bit model with each projection called alone (q/k/v and gate/up not grouped), and
      // with the decode step's ATen op sequences too (no fused ops either).
      packed::set_group_calls(false);
      j["onebit_" + tag + "_ungrouped_tps"] = decode_tps(*ex, prompt, tokens, repeats, dev, main_mode);
      nn::set_fused_ops(false);
      j["onebit_" + tag + "_unfused_tps"] = decode_tps(*ex, prompt, tokens, repeats, dev, main_mode);
      nn::set_fused_ops(true);
      packed::set_group_calls(true);
#ifdef ONEBIT_WITH_CUDA
      if (dev.is_cuda()) {  // each kernel launched after the previous one ends (no programmatic launch)
        kernels::cuda::set_programmatic_launch(false);
        j["onebit_" + tag + "_nopdl_tps"] = decode_tps(*ex, prompt, tokens, repeats, dev, main_mode);
        j["fp_" + tag + "_nopdl_tps"] = decode_tps(*fp, prompt, tokens, repeats, dev, main_mode);
        kernels::cuda::set_programmatic_launch(true);
      }
#endif
      if (profile_top > 0) {
        j["profile_fp_" + tag] = decode_profile(*fp, prompt, tokens, dev, main_mode, profile_top);
        j["profile_onebit_" + tag] = decode_profile(*ex, prompt, tokens, dev, main_mode, profile_top);
      }
      if (json_out) {
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
      }
    }
    util::remove_tree(dir);
    if (!json_out) std::printf("%s\n", j.dump(2).c_str());
    return 0;
  });
}
