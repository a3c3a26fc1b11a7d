// The evaluators on a real model: stories260K with its TinyStories validation text and the
// shared piqa/winogrande samples. Skips when ../shared is absent.
#include "tests/support.h"
#include "tests/references.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "onebit/eval/perplexity.h"
#include "onebit/eval/tasks.h"
#include "onebit/eval/zeroshot.h"
#include "onebit/models/loader.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/eval/temp_files.h"

using namespace onebit;

namespace {

constexpr int64_t kSeqLen = 512;
constexpr int64_t kWindows = 8;          // keeps the suite fast
constexpr size_t kDocs = 200;            // first paragraphs of tinystories_val.txt
constexpr double kBatchTol = 1e-5;       // relative: batch 1 vs 8 differ only by fp32 reduction order
constexpr double kReloadTol = 1e-9;      // relative: a saved fp32 copy is bit-identical
constexpr double kBf16NllTol = 0.02;     // absolute in mean NLL (nats/token), bf16 vs fp32
constexpr double kLoglikTol = 1e-4;      // absolute, sums of ~10-60 fp32 log-probs
constexpr int64_t kTaskLimit = 12;
constexpr double kBf16RetentionTol = 0.02;  // ppl ratio of bf16-rounded weights vs fp32

std::vector<std::string> first_docs(const std::filesystem::path& file) {
  auto docs = eval::read_documents(file.string(), eval::PplProtocol::Docs);
  if (docs.size() > kDocs) docs.resize(kDocs);
  return docs;
}

eval::PplOptions docs_opts(int64_t batch) {
  eval::PplOptions o;
  o.protocol = eval::PplProtocol::Docs;
  o.seq_len = kSeqLen;
  o.windows = kWindows;
  o.batch_size = batch;
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("stories260K perplexity (docs, seq_len 512): range, batching, bf16, reload", "[eval]") {
  OB_SHARED_OR_SKIP(model_dir, "models/stories260K");
  OB_SHARED_OR_SKIP(text, "data/tinystories_val.txt");
  auto tok = tokenizer::load_tokenizer(model_dir.string());
  auto model = models::load_pretrained(model_dir.string());
  const auto docs = first_docs(text);

  auto r1 = eval::perplexity(*model, *tok, docs, docs_opts(1));
  CHECK(r1.windows == kWindows);
  CHECK(r1.predicted_tokens == kWindows * (kSeqLen - 1));
  REQUIRE(std::isfinite(r1.ppl));
  CHECK(r1.mean_nll > 1.2);
  CHECK(r1.mean_nll < 2.0);
  CHECK(r1.ppl == Approx(std::exp(r1.mean_nll)));

  auto r8 = eval::perplexity(*model, *tok, docs, docs_opts(8));
  CHECK(r8.mean_nll == Approx(r1.mean_nll).epsilon(kBatchTol));

  auto bf16 = models::load_pretrained(model_dir.string(), {torch::kCPU, torch::kBFloat16});
  auto rb = eval::perplexity(*bf16, *tok, docs, docs_opts(4));
  CHECK(std::abs(rb.mean_nll - r1.mean_nll) < kBf16NllTol);

  auto copy = (test::eval_tmp_dir() / "stories260K_copy").string();
  models::save_pretrained(model, copy);
  auto reloaded = models::load_pretrained(copy);
  auto rr = eval::perplexity(*reloaded, *tok, docs, docs_opts(1));
  CHECK(rr.mean_nll == Approx(r1.mean_nll).epsilon(kReloadTol));
}

TEST_CASE("stories260K zero-shot on the shared samples: batching and prefix reuse equal plain forwards", "[eval]") {
  OB_SHARED_OR_SKIP(model_dir, "models/stories260K");
  OB_SHARED_OR_SKIP(tasks_dir, "data/tasks");
  auto tok = tokenizer::load_tokenizer(model_dir.string());
  auto model = models::load_pretrained(model_dir.string());
  model->eval();
  eval::ZeroShotOptions o;
  o.progress = false;
  for (const char* name : {"piqa_sample.jsonl", "winogrande_sample.jsonl"}) {
    auto task = eval::load_task((tasks_dir / name).string(), kTaskLimit);
    REQUIRE(task.examples.size() == size_t(kTaskLimit));
    auto res = eval::evaluate_task(*model, *tok, task, o);
    CHECK(res.n == kTaskLimit);
    CHECK(res.acc >= 0);
    CHECK(res.acc <= 1);
    CHECK(res.acc_norm >= 0);
    CHECK(res.acc_norm <= 1);
    eval::ZeroShotOptions one_by_one = o;  // a batch per question, no prefix reuse
    one_by_one.batch_tokens = 1;
    one_by_one.reuse_prefix = false;
    auto again = eval::evaluate_task(*model, *tok, task, one_by_one);

    // Reference: one plain forward per choice over context_enc + continuation_enc, no cache.
    torch::NoGradGuard no_grad;
    for (size_t e = 0; e < task.examples.size(); ++e) {
      const auto& ex = task.examples[e];
      for (size_t i = 0; i < ex.contexts.size(); ++i)
        CHECK(again.examples[e].loglik[i] == Approx(res.examples[e].loglik[i]).margin(kLoglikTol));
      for (size_t i = 0; i < ex.contexts.size(); ++i) {
        auto p = eval::encode_pair(*tok, ex.contexts[i], ex.continuations[i]);
        std::vector<int64_t> full = p.context;
        full.insert(full.end(), p.continuation.begin(), p.continuation.end());
        REQUIRE(int64_t(full.size()) <= kSeqLen + 1);
        auto ids = torch::tensor(full, torch::kInt64).unsqueeze(0);
        auto logits = model->forward(ids.slice(1, 0, -1)).logits[0];
        auto lp = torch::log_softmax(logits.to(torch::kFloat64), -1);
        double ll = 0;
        for (size_t j = full.size() - 1 - p.continuation.size(); j + 1 < full.size(); ++j)
          ll += lp[int64_t(j)][full[j + 1]].item<double>();
        CHECK(res.examples[e].loglik[i] == Approx(ll).margin(kLoglikTol));
        CHECK(res.examples[e].bytes[i] == int64_t(ex.choices[i].size()));
      }
    }
  }
}

TEST_CASE("onebit-eval program: table, JSON and a bad task file", "[eval]") {
  OB_SHARED_OR_SKIP(model_dir, "models/stories260K");
  OB_SHARED_OR_SKIP(shared, "data");
  const auto exe = test::binary_dir() / "onebit-eval";
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(exe), "onebit-eval not built: " + exe.string());
  const auto dir = test::eval_tmp_dir();
  const auto json = dir / "eval.json";
  auto docs = test::write_temp("stories_head.txt", [&] {
    std::string s;
    for (const auto& d : first_docs(shared / "tinystories_val.txt")) s += d + "\n\n";
    return s;
  }());
  // The "student": a bf16-rounded copy without tokenizer files (the teacher's tokenizer is used).
  const auto student = (dir / "student_bf16").string();
  models::save_pretrained(models::load_pretrained(model_dir.string()), student, torch::kBFloat16);
  const std::string cmd = exe.string() + " --model " + student + " --compare " + model_dir.string() +
                          " --ppl " + docs + " --ppl-protocol docs --seq-len 512 --windows 2 --tasks " +
                          (shared / "tasks/piqa_sample.jsonl").string() + " --limit 3 --device cpu --quiet --json " +
                          json.string() + " > " + (dir / "out.txt").string() + " 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(json);
  auto j = nlohmann::json::parse(in);
  CHECK(j["format"] == "onebit-eval/1");
  CHECK(j["settings"]["ppl_protocol"] == "docs");
  CHECK(j["settings"]["seq_len"] == 512);
  CHECK(j["student"]["model"] == student);
  CHECK(j["teacher"]["model"] == model_dir.string());
  CHECK(j["student"]["perplexity"][0]["windows"] == 2);
  CHECK(j["student"]["perplexity"][0]["predicted_tokens"] == 2 * 511);
  CHECK(j["student"]["tasks"][0]["n"] == 3);
  CHECK(j["student"]["tasks"][0]["examples"].size() == 3);
  // bf16 rounding of the weights barely moves the numbers: retention close to 1, not exactly.
  const double t_over_s = j["retention"]["perplexity"][0]["teacher_over_student"].get<double>();
  CHECK(t_over_s == Approx(j["teacher"]["perplexity"][0]["ppl"].get<double>() /
                           j["student"]["perplexity"][0]["ppl"].get<double>()));
  CHECK(std::abs(t_over_s - 1) < kBf16RetentionTol);
  CHECK(t_over_s != 1.0);
  CHECK(j["retention"]["acc"].get<double>() ==
        Approx(j["student"]["average"]["acc"].get<double>() / j["teacher"]["average"]["acc"].get<double>()));

  auto bad = test::write_temp("bad_task.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 5}\n");
  const auto err = dir / "err.txt";
  const std::string bad_cmd = exe.string() + " --model " + model_dir.string() + " --tasks " + bad +
                              " --device cpu --quiet > " + err.string() + " 2>&1";
  CHECK(std::system(bad_cmd.c_str()) != 0);
  std::ifstream ein(err);
  std::string msg((std::istreambuf_iterator<char>(ein)), std::istreambuf_iterator<char>());
  CHECK_THAT(msg, OB_CONTAINS("onebit-eval: error: ") && OB_CONTAINS("bad_task.jsonl:1: gold 5 out of range for 2 choices"));
}
