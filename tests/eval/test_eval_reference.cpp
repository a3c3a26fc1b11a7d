// onebit's evaluators against an independent transformers implementation of the same
// protocols (tests/eval/eval_reference.py) on stories260K and the shared data.
#include "tests/support.h"
#include "tests/references.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>

#include "onebit/eval/perplexity.h"
#include "onebit/eval/tasks.h"
#include "onebit/eval/zeroshot.h"
#include "onebit/models/loader.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/eval/temp_files.h"

using namespace onebit;

namespace {
constexpr double kNllRelTol = 1e-6;  // same fp32 math, different kernels
constexpr double kLoglikTol = 1e-4;  // absolute, summed fp32 log-probs
constexpr int64_t kSeqLen = 128, kWindows = 6, kLimit = 8;
constexpr uint64_t kSeed = 5;
}  // namespace

TEST_CASE("perplexity and task scores match an independent transformers implementation", "[eval]") {
  OB_SHARED_OR_SKIP(model_dir, "models/stories260K");
  OB_SHARED_OR_SKIP(data, "data");
  const std::string py = test::python();
  OB_REFERENCE_OR_SKIP(!py.empty() && std::system((py + " -c 'import transformers, sentencepiece' >/dev/null 2>&1").c_str()) == 0,
                     "needs Python with transformers + sentencepiece (" + py + ")");

  // The first ~60 paragraphs of the TinyStories text keep both sides fast.
  std::string head;
  {
    auto docs = eval::read_documents((data / "tinystories_val.txt").string(), eval::PplProtocol::Docs);
    for (size_t i = 0; i < 60 && i < docs.size(); ++i) head += docs[i] + "\n\n";
  }
  const auto text = test::write_temp("ref_text.txt", head);
  const auto out = (test::eval_tmp_dir() / "ref.json").string();
  const std::vector<std::string> tasks = {(data / "tasks/piqa_sample.jsonl").string(),
                                          (data / "tasks/winogrande_sample.jsonl").string()};
  std::string cmd = py + " " + (test::source_dir() / "tests/eval/eval_reference.py").string() + " " +
                    model_dir.string() + " " + text + " " + std::to_string(kSeqLen) + " " +
                    std::to_string(kWindows) + " " + std::to_string(kSeed) + " " + out;
  for (const auto& t : tasks) cmd += " " + t;
  cmd += " --limit " + std::to_string(kLimit) + " >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(out);
  const auto ref = nlohmann::json::parse(in);

  auto tok = tokenizer::load_tokenizer(model_dir.string());
  auto model = models::load_pretrained(model_dir.string());
  for (const char* p : {"wikitext", "docs", "c4"}) {
    INFO("protocol " << p);
    eval::PplOptions o;
    o.protocol = eval::parse_ppl_protocol(p);
    o.seq_len = kSeqLen;
    o.windows = kWindows;
    o.seed = kSeed;
    o.batch_size = 3;
    o.progress = false;
    auto r = eval::perplexity(*model, *tok, eval::read_documents(text, o.protocol), o);
    CHECK(r.windows == ref["ppl"][p]["windows"].get<int64_t>());
    CHECK(r.mean_nll == Approx(ref["ppl"][p]["mean_nll"].get<double>()).epsilon(kNllRelTol));
  }

  eval::ZeroShotOptions zo;
  zo.progress = false;
  for (const auto& f : tasks) {
    INFO("task " << f);
    const auto& t = ref["tasks"][f];
    auto res = eval::evaluate_task(*model, *tok, eval::load_task(f, kLimit), zo);
    REQUIRE(res.n == t["n"].get<int64_t>());
    CHECK(res.acc == Approx(t["acc"].get<double>()));
    CHECK(res.acc_norm == Approx(t["acc_norm"].get<double>()));
    CHECK(res.acc_bytes == Approx(t["acc_bytes"].get<double>()));
    for (size_t e = 0; e < res.examples.size(); ++e)
      for (size_t i = 0; i < res.examples[e].loglik.size(); ++i)
        CHECK(res.examples[e].loglik[i] == Approx(t["loglik"][e][i].get<double>()).margin(kLoglikTol));
  }
}
