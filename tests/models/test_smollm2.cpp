// onebit against transformers on a real pretrained model: SmolLM2-135M-Instruct (30 layers,
// GQA 9/3, vocab 49152, tied embeddings, byte-level BPE), fetched by scripts/fetch-smollm2.sh.
// Tokenizer ids, logits, greedy text and perplexity (tests/python/smollm2_reference.py).
#include "tests/support.h"
#include "tests/references.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "onebit/eval/perplexity.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/eval/temp_files.h"

using namespace onebit;

namespace {

constexpr double kLogitTol = 2e-3;    // absolute, fp32 logits of magnitude ~20 after 30 layers
constexpr double kNllTol = 1e-5;      // relative, mean NLL over the window
constexpr int64_t kNewTokens = 24;
constexpr int64_t kSeqLen = 256;

const char* kPrompt = "The three primary colors are";

// A plain English sample (written for this test) for the perplexity check.
const char* kText =
    "The river runs through the middle of the old town. On market days the bridges fill with people "
    "carrying baskets of bread, fruit and fish, and the air smells of smoke from the bakers' ovens. "
    "Children chase each other along the stone walls while their parents bargain over prices. In the "
    "evening the lamps are lit one by one, the shops close their shutters, and the sound of the water "
    "is the only thing left in the streets. Visitors often say that the town feels as if time had "
    "stopped a hundred years ago, but the people who live there know that it changes a little every "
    "year: a new roof here, a painted door there, a cafe where the blacksmith used to work. Most of "
    "them would not want to live anywhere else. When winter comes, the river freezes at the edges and "
    "the ducks gather in the open water under the largest bridge, waiting for the bread that the "
    "children throw to them on their way home from school.";

}  // namespace

TEST_CASE("SmolLM2-135M: tokenizer, logits, greedy text and perplexity match transformers", "[models][smollm2]") {
  OB_SMOLLM2_OR_SKIP(dir);
  const std::string py = test::python();
  OB_REFERENCE_OR_SKIP(!py.empty() && std::system((py + " -c 'import transformers' >/dev/null 2>&1").c_str()) == 0,
                       "needs Python with transformers (" + py + ")");
  const auto prompt_file = test::write_temp("smollm2_prompt.txt", kPrompt);
  const auto text_file = test::write_temp("smollm2_text.txt", kText);
  const auto out = (test::eval_tmp_dir() / "smollm2_ref.json").string();
  const std::string cmd = py + " " + (test::source_dir() / "tests/python/smollm2_reference.py").string() + " " +
                          dir.string() + " " + prompt_file + " " + text_file + " " + std::to_string(kSeqLen) + " " +
                          std::to_string(kNewTokens) + " " + out + " >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(out);
  const auto ref = nlohmann::json::parse(in);

  auto tok = tokenizer::load_tokenizer(dir.string());
  auto model = models::load_pretrained(dir.string());
  model->eval();
  CHECK(model->config().num_hidden_layers == 30);
  CHECK(model->config().vocab_size == 49152);

  const auto ids = tok->encode_with_special(kPrompt);
  REQUIRE(ids == ref["prompt_ids"].get<std::vector<int64_t>>());
  const auto text_ids = tok->encode_with_special(kText);
  const auto head = ref["text_ids_head"].get<std::vector<int64_t>>();
  REQUIRE(std::vector<int64_t>(text_ids.begin(), text_ids.begin() + int64_t(head.size())) == head);

  torch::NoGradGuard no_grad;
  auto logits = model->forward(torch::tensor(ids, torch::kInt64).unsqueeze(0)).logits[0];
  const int64_t T = logits.size(0);
  for (int64_t r = 0; r < 3; ++r) {
    auto want = torch::tensor(ref["logits_last"][size_t(r)].get<std::vector<float>>());
    const double diff = (logits[T - 3 + r] - want).abs().max().item<double>();
    INFO("row " << T - 3 + r << ": max |onebit - transformers| = " << diff);
    CHECK(diff < kLogitTol);
  }
  CHECK(logits.to(torch::kFloat64).sum().item<double>() ==
        Approx(ref["logits_sum"].get<double>()).epsilon(1e-4));

  models::GenerateOptions g;
  g.max_new_tokens = kNewTokens;
  g.temperature = 0;
  g.eos_token_id = tok->eos_id();
  auto gen = models::generate(*model, torch::tensor(ids, torch::kInt64).unsqueeze(0), g)[0];
  const auto want_gen = ref["greedy_ids"].get<std::vector<int64_t>>();
  REQUIRE(!want_gen.empty());
  std::vector<int64_t> got_gen;
  for (size_t i = 0; i < want_gen.size(); ++i) got_gen.push_back(gen[int64_t(ids.size() + i)].item<int64_t>());
  INFO("transformers: " << tok->decode(want_gen) << "\nonebit:       " << tok->decode(got_gen));
  CHECK(got_gen == want_gen);

  eval::PplOptions o;
  o.protocol = eval::PplProtocol::Wikitext;
  o.seq_len = ref["text_tokens"].get<int64_t>();
  o.windows = 1;
  o.progress = false;
  auto r = eval::perplexity(*model, *tok, {kText}, o);
  CHECK(r.mean_nll == Approx(ref["nll"].get<double>()).epsilon(kNllTol));
  CHECK(r.ppl > 1.5);  // a real model on plain English: far from 1 and from the vocabulary size
  CHECK(r.ppl < 100);
}
