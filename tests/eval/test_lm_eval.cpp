// onebit-eval's named tasks against lm-evaluation-harness itself (pip lm_eval, pinned in
// scripts/setup.sh; tests/eval/run_lm_eval.py runs lm-eval's own default task configs on the
// hand-made rows in tests/eval/data/hf_rows). Model: stories260K (context 512), so one BoolQ
// passage is left-truncated and one LAMBADA row has an empty context.
#include "tests/support.h"
#include "tests/references.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "onebit/eval/tasks.h"
#include "onebit/eval/zeroshot.h"
#include "onebit/models/loader.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/eval/temp_files.h"

using namespace onebit;

namespace {
constexpr double kLoglikTol = 1e-4;  // absolute, per request (the bound)
}  // namespace

TEST_CASE("named tasks match lm-evaluation-harness: per-request log-likelihoods and every metric", "[eval][lm_eval]") {
  OB_SHARED_OR_SKIP(model_dir, "models/stories260K");
  const std::string py = test::python();
  OB_REFERENCE_OR_SKIP(!py.empty() && std::system((py + " -c 'import lm_eval' >/dev/null 2>&1").c_str()) == 0,
                       "needs Python with lm_eval (scripts/setup.sh installs it; " + py + ")");
  const auto rows = test::source_dir() / "tests/eval/data/hf_rows";
  const auto work = test::eval_tmp_dir() / "lm_eval";
  const auto out = (test::eval_tmp_dir() / "lm_eval.json").string();
  const std::string cmd = py + " " + (test::source_dir() / "tests/eval/run_lm_eval.py").string() + " " +
                          model_dir.string() + " " + rows.string() + " " + work.string() + " " + out + " > " +
                          (test::eval_tmp_dir() / "lm_eval.log").string() + " 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(out);
  const auto ref = nlohmann::json::parse(in);

  auto tok = tokenizer::load_tokenizer(model_dir.string());
  auto model = models::load_pretrained(model_dir.string());
  eval::ZeroShotOptions o;
  o.progress = false;
  o.batch_tokens = 2048;  // several questions per forward
  int64_t truncated = 0;
  for (const auto& name : eval::named_tasks()) {
    INFO("task " << name);
    const auto& t = ref.at(name);
    auto res = eval::evaluate_task(*model, *tok, eval::load_named_task(name, (rows / (name + ".jsonl")).string()), o);
    truncated += res.stats.truncated;
    REQUIRE(res.n == int64_t(t["loglik"].size()));
    for (size_t e = 0; e < res.examples.size(); ++e) {
      REQUIRE(res.examples[e].loglik.size() == t["loglik"][e].size());
      for (size_t i = 0; i < res.examples[e].loglik.size(); ++i) {
        CHECK(res.examples[e].loglik[i] == Approx(t["loglik"][e][i].get<double>()).margin(kLoglikTol));
        CHECK(res.examples[e].greedy[i] == t["greedy"][e][i].get<bool>());
      }
    }
    const auto& m = t["metrics"];
    CHECK(res.acc == Approx(m["acc"].get<double>()));
    CHECK(res.acc_stderr == Approx(m["acc_stderr"].get<double>()));
    if (m.contains("acc_norm")) {
      CHECK(res.acc_norm == Approx(m["acc_norm"].get<double>()));
      CHECK(res.acc_norm_stderr == Approx(m["acc_norm_stderr"].get<double>()));
    }
    if (m.contains("perplexity")) CHECK(res.ppl == Approx(m["perplexity"].get<double>()).epsilon(1e-5));
  }
  CHECK(truncated == 2);  // the long BoolQ passage, both choices
}
