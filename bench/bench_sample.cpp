// bench-sample: LLM-QAT self-sampling (onebit::data::self_sample, method.md §4) against the same
// sampling with transformers.generate (bench/py/self_sample.py): the same model, first tokens,
// greedy prefixes, temperature 1, full softmax, EOS stop, fp32, the same CPU threads.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/llama_config.h"
#include "bench/python.h"
#include "onebit/core/error.h"
#include "onebit/data/self_sample.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/util/fs.h"

using namespace onebit;

int main(int argc, char** argv) {
  return guarded_main("bench-sample", [&] {
    CLI::App app{"self-sampling samples/s: onebit (device sampling, finished rows leave the batch) vs transformers.generate"};
    int threads = 2;
    int64_t layers = 4, hidden = 256, ffn = 688, vocab = 4096;
    std::string model_dir, python = bench::default_python(), dir = "build/bench_sample";
    data::SampleOptions o;
    o.sampling.num_samples = 64;
    o.sampling.batch_size = 16;
    o.sampling.max_length = 128;
    o.seed = 1;
    o.progress = false;
    app.add_option("--model", model_dir, "Hugging Face model folder (default: a random LLaMA saved in --dir)");
    app.add_option("--threads", threads, "CPU threads for both sides")->capture_default_str();
    app.add_option("--num-samples", o.sampling.num_samples, "samples per side")->capture_default_str();
    app.add_option("--batch", o.sampling.batch_size, "rows generated together")->capture_default_str();
    app.add_option("--max-length", o.sampling.max_length, "max tokens per sample")->capture_default_str();
    app.add_option("--seed", o.seed, "sampling seed (first tokens, greedy prefixes)")->capture_default_str();
    app.add_option("--layers", layers, "random model: decoder layers")->capture_default_str();
    app.add_option("--hidden", hidden, "random model: hidden size (heads of 64)")->capture_default_str();
    app.add_option("--ffn", ffn, "random model: intermediate size")->capture_default_str();
    app.add_option("--vocab", vocab, "random model: vocabulary size")->capture_default_str();
    app.add_option("--python", python, "Python with torch + transformers")->capture_default_str();
    app.add_option("--dir", dir, "work folder (random model, plan, samples)")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    at::set_num_threads(threads);
    std::filesystem::create_directories(dir);
    if (model_dir.empty()) {
      torch::manual_seed(0);
      auto m = models::build_model(models::parse_model_config(bench::llama_config(layers, hidden, ffn, vocab).dump()));
      model_dir = dir + "/model";
      models::save_pretrained(m, model_dir);
    }
    auto model = models::load_pretrained(model_dir, {torch::kCPU, torch::kFloat32});
    model->eval();
    const auto& mc = model->config();
    int64_t n_params = 0;
    for (const auto& p : model->parameters()) n_params += p.numel();

    // The plan both sides follow: first tokens and greedy prefix of every batch.
    const auto& s = o.sampling;
    OB_CHECK(s.num_samples % s.batch_size == 0, "--num-samples must be a multiple of --batch (whole batches on both sides)");
    nlohmann::json plan = {{"max_length", s.max_length}, {"eos", s.stop_at_eos ? mc.eos_token_id : -1}};
    for (int64_t k = 0; k * s.batch_size < s.num_samples; ++k)
      plan["batches"].push_back({{"first", data::first_tokens_of_batch(mc, o, k)},
                                 {"greedy", data::greedy_tokens_of_batch(o, k)}});
    const std::string plan_path = dir + "/plan.json";
    std::ofstream(plan_path) << plan.dump();

    const std::string cmd = python + " " + bench::py_script("self_sample.py") + " " + model_dir + " " +
                            std::to_string(threads) + " " + plan_path + " 2>/dev/null";
    const auto py = bench::last_json(bench::run_capture(cmd), cmd);

    models::generate(*model, torch::tensor({{int64_t(3)}}), {4});  // warm-up
    const std::string out = dir + "/samples";
    util::remove_tree(out);
    const auto rep = data::self_sample(*model, out, o);

    const double ours = double(rep.total) / rep.seconds, theirs = py["samples"].get<double>() / py["seconds"].get<double>();
    std::printf("model: %s (%.2fM parameters, vocab %lld), fp32, %d threads; %lld samples, batch %lld, max %lld tokens\n",
                model_dir.c_str(), n_params / 1e6, static_cast<long long>(mc.vocab_size), threads,
                static_cast<long long>(s.num_samples), static_cast<long long>(s.batch_size),
                static_cast<long long>(s.max_length));
    std::printf("%-28s %12s %12s %16s\n", "", "samples/s", "seconds", "tokens/sample");
    std::printf("%-28s %12.2f %12.2f %16.1f\n", "onebit self_sample", ours, rep.seconds,
                double(rep.total_tokens) / double(rep.total));
    std::printf("%-28s %12.2f %12.2f %16.1f\n", "transformers.generate", theirs, py["seconds"].get<double>(),
                py["tokens"].get<double>() / py["samples"].get<double>());
    std::printf("ratio (onebit / transformers): %.2fx samples/s\n", ours / theirs);
    return 0;
  });
}
