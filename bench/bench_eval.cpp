// bench-eval: zero-shot scoring throughput of onebit (batched across questions, shared-prefix
// reuse) against lm-evaluation-harness's HF backend (HFLM.loglikelihood) on the same requests,
// model and device, measured in the same run (bench/py/lm_eval_loglik.py).
//
//   build/bench-eval --model ~/.cache/onebit/models/SmolLM2-135M-Instruct-Q4_1 \
//                    --tasks piqa=rows.jsonl winogrande=rows.jsonl --threads 2
//
// --dense aten onednn times onebit with each dense matmul backend in turn (nn::dense_linear).
// Throughput = request tokens (len(context_enc) + len(continuation_enc), summed over all
// requests: the same count for both sides) per second of wall time, model load excluded.
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "bench/python.h"
#include "onebit/core/error.h"
#include "onebit/eval/tasks.h"
#include "onebit/eval/zeroshot.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/nn/dense_linear.h"
#include "onebit/tokenizer/tokenizer.h"

using namespace onebit;

int main(int argc, char** argv) {
  return guarded_main("bench-eval", [&]() -> int {
    CLI::App app{"bench-eval: zero-shot request throughput, onebit vs lm-eval's HF backend (CPU)"};
    std::string model_dir, python = bench::default_python(), dir = "build/bench_eval";
    std::vector<std::string> task_args;
    int64_t limit = 0, task_tokens = 4096, threads = 2, repeats = 3, hf_repeats = 1;
    std::vector<int64_t> hf_batches = {1, 16};
    app.add_option("--model", model_dir, "Hugging Face model folder")->required();
    app.add_option("--tasks", task_args, "NAME=FILE (or MosaicML files), as onebit-eval --tasks")->required();
    app.add_option("--limit", limit, "first N examples per task (0 = all)")->capture_default_str();
    app.add_option("--task-batch-tokens", task_tokens, "onebit's tokens per forward")->capture_default_str();
    bool no_baseline = false;
    app.add_option("--hf-batch-sizes", hf_batches, "lm-eval HFLM batch sizes to run")->capture_default_str();
    app.add_flag("--no-baseline", no_baseline, "time onebit alone (no lm-eval runs)");
    app.add_option("--threads", threads, "torch intra-op threads (both sides)")->capture_default_str();
    app.add_option("--repeats", repeats, "onebit runs (the median is reported)")->capture_default_str();
    app.add_option("--hf-repeats", hf_repeats, "lm-eval runs per batch size (the median is reported)")
        ->capture_default_str();
    std::vector<std::string> dense = {nn::to_string(nn::dense_backend())};
    app.add_option("--dense", dense, "onebit's dense matmul backends to time, in turn (aten, onednn)")
        ->capture_default_str();
    app.add_option("--python", python, "Python with lm_eval")->capture_default_str();
    app.add_option("--dir", dir, "scratch folder (the request list)")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    torch::set_num_threads(int(threads));

    auto tok = tokenizer::load_tokenizer(model_dir);
    std::vector<eval::Task> tasks;
    for (const auto& a : task_args) tasks.push_back(eval::load_task_arg(a, limit));
    // All requests of all tasks, as questions (onebit) and as a flat list (lm-eval).
    std::vector<std::vector<eval::EncodedPair>> questions;
    nlohmann::json pairs = nlohmann::json::array();
    int64_t request_tokens = 0, n_requests = 0;
    for (const auto& t : tasks)
      for (const auto& ex : t.examples) {
        questions.emplace_back();
        for (size_t i = 0; i < ex.contexts.size(); ++i) {
          questions.back().push_back(eval::encode_pair(*tok, ex.contexts[i], ex.continuations[i]));
          request_tokens += int64_t(questions.back().back().context.size() + questions.back().back().continuation.size());
          pairs.push_back({ex.contexts[i], ex.continuations[i]});
          ++n_requests;
        }
      }
    std::filesystem::create_directories(dir);
    const std::string req_file = (std::filesystem::path(dir) / "requests.json").string();
    io::write_file_atomic(req_file, pairs.dump());

    auto model = models::load_pretrained(model_dir);
    eval::ZeroShotOptions o;
    o.progress = false;
    o.batch_tokens = task_tokens;
    std::printf("model %s, %lld questions, %lld requests, %lld request tokens, %lld threads\n", model_dir.c_str(),
                (long long)questions.size(), (long long)n_requests, (long long)request_tokens, (long long)threads);
    // Per backend, the median of `repeats` runs; the first backend's log-likelihoods are the
    // ones compared with lm-eval.
    std::vector<std::pair<std::string, double>> timed;
    std::vector<double> ours;
    for (const auto& name : dense) {
      nn::set_dense_backend(nn::parse_dense_backend(name, "--dense backend"));
      std::vector<double> secs;
      eval::ScoreStats st;
      for (int64_t r = 0; r < std::max<int64_t>(1, repeats); ++r) {
        st = {};
        const auto t0 = std::chrono::steady_clock::now();
        auto scores = eval::score_requests(*model, questions, o, &st);
        secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (ours.empty())
          for (const auto& q : scores)
            for (const auto& s : q) ours.push_back(s.loglik);
      }
      std::sort(secs.begin(), secs.end());
      timed.emplace_back(name, secs[secs.size() / 2]);
      std::printf("onebit  (dense %s, batch_tokens %lld): %8.3f s  %9.1f tokens/s  (%lld forwards, %lld model tokens, "
                  "%lld padding)\n",
                  name.c_str(), (long long)task_tokens, timed.back().second, double(request_tokens) / timed.back().second,
                  (long long)st.forwards, (long long)st.forward_tokens, (long long)st.padded_tokens);
    }
    if (no_baseline) hf_batches.clear();
    for (int64_t b : hf_batches) {
      const std::string cmd = python + " " + bench::py_script("lm_eval_loglik.py") + " " + model_dir + " " +
                              req_file + " " + std::to_string(b) + " " + std::to_string(threads) + " 2>/dev/null";
      std::vector<double> hf_secs;
      nlohmann::json j;
      for (int64_t r = 0; r < std::max<int64_t>(1, hf_repeats); ++r) {
        j = bench::last_json(bench::run_capture(cmd), cmd);
        hf_secs.push_back(j["seconds"].get<double>());
      }
      std::sort(hf_secs.begin(), hf_secs.end());
      const double t_hf = hf_secs[hf_secs.size() / 2];
      double max_diff = 0;
      for (size_t i = 0; i < ours.size(); ++i)
        max_diff = std::max(max_diff, std::abs(ours[i] - j["loglik"][i].get<double>()));
      std::printf("lm-eval HFLM (batch_size %3lld): %8.3f s  %9.1f tokens/s   onebit/lm-eval", (long long)b, t_hf,
                  double(request_tokens) / t_hf);
      for (const auto& [name, t] : timed) std::printf(" %.2fx (%s)", t_hf / t, name.c_str());
      std::printf("  (max |dloglik| %.2e)\n", max_diff);
    }
    return 0;
  });
}
