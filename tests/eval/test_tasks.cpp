// Named tasks from hand-made Hugging Face dataset rows: the requests must be the ones that
// lm-eval 0.4's default task configs build (templates written out by hand from those configs).
#include "tests/support.h"

#include "onebit/core/error.h"
#include "onebit/eval/tasks.h"
#include "tests/eval/temp_files.h"

using namespace onebit;

namespace {
using Strings = std::vector<std::string>;

eval::Task named(const std::string& name, const std::string& rows) {
  return eval::load_named_task(name, test::write_temp(name + "_rows.jsonl", rows));
}
}  // namespace

TEST_CASE("piqa, boolq, arc and lambada rows become lm-eval's requests", "[eval]") {
  auto piqa = named("piqa", R"({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "hit it", "label": 1})" "\n");
  REQUIRE(piqa.examples.size() == 1);
  CHECK(piqa.format == "piqa");
  CHECK(piqa.kind == eval::TaskKind::MultipleChoice);
  const auto& p = piqa.examples[0];
  CHECK(p.contexts == Strings{"Question: Open a jar\nAnswer:", "Question: Open a jar\nAnswer:"});
  CHECK(p.continuations == Strings{" twist the lid", " hit it"});
  CHECK(p.choices == Strings{"twist the lid", "hit it"});
  CHECK(p.gold == 1);

  // super_glue rows ("label") and google/boolq rows ("answer": bool).
  auto boolq = named("boolq", R"({"passage": "Cats purr.", "question": "do cats purr", "label": 1})" "\n"
                              R"({"passage": "P", "question": "q", "answer": false})" "\n");
  CHECK(boolq.examples[0].contexts[0] == "Cats purr.\nQuestion: do cats purr?\nAnswer:");
  CHECK(boolq.examples[0].continuations == Strings{" no", " yes"});
  CHECK(boolq.examples[0].gold == 1);
  CHECK(boolq.examples[1].gold == 0);

  auto arc = named("arc_challenge",
                   R"({"question": "Which is hot?", "choices": {"text": ["ice", "fire", "snow"], "label": ["1", "2", "3"]}, "answerKey": "2"})" "\n");
  CHECK(arc.format == "arc_challenge");
  CHECK(arc.examples[0].contexts[2] == "Question: Which is hot?\nAnswer:");
  CHECK(arc.examples[0].continuations == Strings{" ice", " fire", " snow"});
  CHECK(arc.examples[0].gold == 1);

  // lambada_openai: context = text.split(' ')[:-1] joined, target = ' ' + last word.
  auto lam = named("lambada", R"({"text": "he opened  the door"})" "\n" R"({"text": "word"})" "\n");
  CHECK(lam.format == "lambada_openai");
  CHECK(lam.kind == eval::TaskKind::Loglikelihood);
  CHECK(lam.examples[0].contexts == Strings{"he opened  the"});
  CHECK(lam.examples[0].continuations == Strings{" door"});
  CHECK(lam.examples[1].contexts == Strings{""});  // scored after the prefix token
  CHECK(lam.examples[1].continuations == Strings{" word"});
  CHECK(eval::load_task_arg("lambada_openai=" + lam.path).examples.size() == 2);
}

TEST_CASE("hellaswag preprocessing and winogrande's partial sentences", "[eval]") {
  CHECK(eval::hellaswag_preprocess("  Roof shingle removal: A man [header] is sitting [title] on a roof.  ") ==
        "Roof shingle removal: A man is sitting. on a roof.");
  CHECK(eval::hellaswag_preprocess("a [b\nc] d") == "a [b\nc] d");  // '.' does not cross a newline
  CHECK(eval::hellaswag_preprocess("x   y") == "x  y");               // one pass of "  " -> " "
  auto hs = named("hellaswag",
                  R"({"activity_label": "Baking cookies", "ctx_a": "A woman mixes dough.", "ctx_b": "she ROLLS it", )"
                  R"("endings": ["flat. [step]", " bakes it.", "eats it.", "[title] sings."], "label": "2"})" "\n");
  const auto& h = hs.examples[0];
  CHECK(h.contexts[0] == "Baking cookies: A woman mixes dough. She rolls it");  // str.capitalize()
  // strip() runs before the bracket removal, so "[step]" leaves a trailing space.
  CHECK(h.choices == Strings{"flat. ", "bakes it.", "eats it.", " sings."});
  CHECK(h.continuations[3] == "  sings.");
  CHECK(h.gold == 2);

  auto wg = named("winogrande",
                  R"({"sentence": "Sarah gave Maria a gift because _ was kind.", "option1": "Sarah", "option2": "Maria", "answer": "1"})" "\n");
  const auto& w = wg.examples[0];
  CHECK(w.contexts == Strings{"Sarah gave Maria a gift because Sarah", "Sarah gave Maria a gift because Maria"});
  CHECK(w.continuations == Strings{" was kind.", " was kind."});
  CHECK(w.choices == w.contexts);  // lm-eval's multiple-input choices
  CHECK(w.gold == 0);
}

TEST_CASE("named task rows: bad input is a one-line error", "[eval]") {
  CHECK_THROWS_WITH(named("piqa", R"({"goal": "g", "sol1": "a", "label": 0})" "\n"),
                    OB_CONTAINS("piqa_rows.jsonl:1: missing key \"sol2\""));
  CHECK_THROWS_WITH(named("piqa", R"({"goal": "g", "sol1": "a", "sol2": "b", "label": 2})" "\n"),
                    OB_CONTAINS("label 2 out of range for 2 choices"));
  CHECK_THROWS_WITH(named("arc_easy", R"({"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "C"})" "\n"),
                    OB_CONTAINS("answerKey \"C\" is not in choices.label"));
  CHECK_THROWS_WITH(named("winogrande", R"({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})" "\n"),
                    OB_CONTAINS("has no \"_\" blank"));
  CHECK_THROWS_WITH(named("winogrande", R"({"sentence": "a _ b", "option1": "a", "option2": "b", "answer": ""})" "\n"),
                    OB_CONTAINS("\"answer\" must be \"1\" or \"2\""));
  CHECK_THROWS_WITH(eval::load_named_task("piqa", "/tmp/x.parquet"), OB_CONTAINS("scripts/parquet_to_jsonl.py"));
  CHECK_THROWS_WITH(eval::load_task_arg("mmlu=/tmp/x.jsonl"), OB_CONTAINS("unknown task 'mmlu' (known: piqa, hellaswag"));
  CHECK_THROWS_WITH(eval::load_named_task("piqa", "/nonexistent/rows.jsonl"), OB_CONTAINS("/nonexistent/rows.jsonl"));
}
