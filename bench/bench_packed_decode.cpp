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
#include "onebit/core/error.h"
#include "onebit/export/export.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/models/step_decoder.h"
#include "onebit/models/to_onebit.h"
#include "onebit/util/fs.h"

using namespace onebit;
namespace fs = std::filesystem;

namespace {
using Decode = models::GenerateOptions::Decode;

// Greedy decode tokens/s after a prompt of `prompt` tokens, the best of `repeats`: two steps
// untimed (the warm-up and, with graphs, the capture), then `tokens` steps timed. Dynamic: the
// forward loop with a growing KV cache; Static / Graph: one StepDecoder reused by every repeat
// (its graphs are captured once).
double decode_tps(models::CausalLMImpl& m, int64_t prompt, int64_t tokens, int repeats, const torch::Device& dev,
                  Decode mode) {
  torch::NoGradGuard ng;
  const auto ids = torch::randint(3, std::min<int64_t>(m.config().vocab_size, 1000), {1, prompt},
                                  torch::TensorOptions().dtype(torch::kLong).device(dev));
  std::unique_ptr<models::StepDecoder> dec;
  if (mode != Decode::Dynamic) dec = std::make_unique<models::StepDecoder>(m, 1, prompt + tokens + 2, mode == Decode::Graph);
  models::KVCache cache;
  models::ForwardArgs a;
  a.cache = &cache;
  auto next_logits = [&](const torch::Tensor& next, bool first) {
    if (dec) return first ? dec->prefill(next) : dec->step(next);
    return m.forward(first ? next : next.view({1, 1}), a).logits.select(1, -1);
  };
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    cache.clear();
    auto next = next_logits(ids, true).argmax(-1);
    for (int w = 0; w < 2; ++w) next = next_logits(next, false).argmax(-1);
    if (dev.is_cuda()) torch::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t t = 0; t < tokens; ++t) next = next_logits(next, false).argmax(-1);
    next.cpu();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(tokens) / s);
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-packed-decode", [&] {
    CLI::App app{"Decode tokens/s: onebit export (packed 1-bit) vs the full-precision model, same run"};
    int threads = 0, repeats = 3;
    int64_t layers = 4, hidden = 2048, ffn = 5632, vocab = 32000, prompt = 16, tokens = 32;
    std::string model_dir, device = "cpu", work = "build/bench_packed_decode";
    bool json_out = false;
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
    app.add_flag("--json", json_out, "print one JSON object");
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
    for (torch::Dtype dt : {torch::kFloat32, torch::kBFloat16}) {
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
    }
    util::remove_tree(dir);
    if (json_out) {
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s\n", j.dump(2).c_str());
    }
    return 0;
  });
}
