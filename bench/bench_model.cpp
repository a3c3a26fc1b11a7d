// bench-model: forward and KV-cache greedy generation throughput of onebit's LLaMA vs
// Hugging Face transformers (bench/py/bench_transformers.py), same model, fp32, same threads.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/llama_config.h"
#include "bench/python.h"
#include "onebit/core/error.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"

using namespace onebit;
using bench::default_python;
using bench::run_capture;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-model", [&] {
    CLI::App app{"onebit vs transformers: forward tokens/s and KV-cache greedy generation tokens/s (fp32, CPU)"};
    int threads = 2;
    int64_t batch = 1, seq = 256, new_tokens = 64, repeats = 3, layers = 12, hidden = 768, ffn = 2048, vocab = 8192;
    std::string python = default_python(), dir = "build/bench_model_llama";
    app.add_option("--threads", threads, "CPU threads for both sides");
    app.add_option("--batch", batch, "batch size");
    app.add_option("--seq", seq, "forward sequence length");
    app.add_option("--new-tokens", new_tokens, "generated tokens per row");
    app.add_option("--repeats", repeats, "timed forward repeats");
    app.add_option("--layers", layers, "decoder layers");
    app.add_option("--hidden", hidden, "hidden size (heads of 64)");
    app.add_option("--ffn", ffn, "intermediate size");
    app.add_option("--vocab", vocab, "vocabulary size");
    app.add_option("--python", python, "Python with torch + transformers");
    app.add_option("--dir", dir, "where the random model is saved");
    CLI11_PARSE(app, argc, argv);

    at::set_num_threads(threads);
    const nlohmann::json cfg_json = bench::llama_config(layers, hidden, ffn, vocab);
    torch::manual_seed(0);
    auto model = models::build_model(models::parse_model_config(cfg_json.dump()));
    model->eval();
    int64_t n_params = 0;
    for (auto& p : model->parameters()) n_params += p.numel();
    models::save_pretrained(model, dir);
    std::cout << "model: random LLaMA " << layers << "x" << hidden << ", ffn " << ffn << ", vocab " << vocab << ", "
              << n_params / 1e6 << "M parameters, fp32, " << threads << " threads\n";

    const std::string script = bench::py_script("bench_transformers.py");
    const std::string cmd = python + " " + script + " " + dir + " " + std::to_string(threads) + " " +
                            std::to_string(batch) + " " + std::to_string(seq) + " " + std::to_string(new_tokens) +
                            " " + std::to_string(repeats) + " 2>/dev/null";
    const auto py = bench::last_json(run_capture(cmd), cmd);

    torch::NoGradGuard no_grad;
    auto gen = torch::make_generator<at::CPUGeneratorImpl>(0);
    auto ids = torch::randint(3, vocab, {batch, seq}, gen, torch::kLong);
    model->forward(ids);  // warm-up
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < repeats; ++i) model->forward(ids);
    const double fwd = batch * seq * repeats / seconds_since(t0);

    models::GenerateOptions go;
    go.temperature = 0;
    go.max_new_tokens = new_tokens;
    auto prompt = ids.narrow(1, 0, 8);
    models::generate(*model, prompt, {4, 0.0});  // warm-up
    t0 = std::chrono::steady_clock::now();
    auto out = models::generate(*model, prompt, go);
    const double gen_s = batch * new_tokens / seconds_since(t0);

    std::vector<int64_t> ours(out[0].data_ptr<int64_t>() + 8, out[0].data_ptr<int64_t>() + out.size(1));
    const bool same = ours == py["gen_tokens"].get<std::vector<int64_t>>();
    const double py_fwd = py["forward_tok_s"], py_gen = py["generate_tok_s"];
    std::printf("%-34s %12s %14s %8s\n", "", "onebit tok/s", "transformers", "ratio");
    std::printf("%-34s %12.1f %14.1f %7.2fx\n", ("forward (batch " + std::to_string(batch) + " x " +
                                                 std::to_string(seq) + ")").c_str(), fwd, py_fwd, fwd / py_fwd);
    std::printf("%-34s %12.1f %14.1f %7.2fx\n", ("greedy generate (" + std::to_string(new_tokens) + " new)").c_str(),
                gen_s, py_gen, gen_s / py_gen);
    std::printf("greedy tokens identical to transformers: %s\n", same ? "yes" : "NO");
    return 0;
  });
}
