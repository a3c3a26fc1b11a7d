// Fuzz target: the zero-shot task readers (onebit/eval/tasks.h). Input: a task name, NUL, then
// the task file. A name of onebit::eval::named_tasks() (piqa, hellaswag, ...) reads the file as
// that task's Hugging Face rows; any other name reads it as a MosaicML ICL file. What loads
// must be a well-formed task: one context per continuation, a gold answer among the choices.
#include "onebit/eval/tasks.h"
#include "tests/fuzz/fuzz_input.h"

ONEBIT_FUZZ_TARGET(eval_tasks) {
  auto parts = onebit::fuzz::split_input(data, size, 2);
  const auto dir = onebit::fuzz::fresh_scratch();
  const auto file = dir / "task.jsonl";
  onebit::fuzz::write_bytes(file, parts[1]);
  return onebit::fuzz::expect_clean([&] {
    namespace ev = onebit::eval;
    const ev::Task task = ev::is_named_task(parts[0]) ? ev::load_named_task(parts[0], file.string())
                                                      : ev::load_task(file.string());
    if (task.examples.empty()) std::abort();
    for (const auto& ex : task.examples) {
      if (ex.contexts.size() != ex.continuations.size() || ex.contexts.empty()) std::abort();
      if (task.kind == ev::TaskKind::MultipleChoice &&
          (ex.choices.size() != ex.continuations.size() || ex.gold < 0 ||
           ex.gold >= static_cast<int64_t>(ex.choices.size())))
        std::abort();
      for (const auto& c : ex.choices) (void)ev::py_len(c);
    }
    (void)ev::hellaswag_preprocess(parts[1]);
  });
}
