// Zero-shot task files turned into lm-eval requests (onebit/eval/zeroshot.h):
// - MosaicML ICL jsonl (multiple_choice / schema, detected from the keys);
// - the published Hugging Face dataset rows of the paper's tasks, one JSON object per line,
//   with lm-eval 0.4's default prompt template, preprocessing and metric for each
//   (piqa, hellaswag, winogrande, boolq, arc_easy, arc_challenge, lambada).
// Parquet files are converted first with scripts/parquet_to_jsonl.py. Templates:
// docs/evaluation.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "onebit/eval/zeroshot.h"

namespace onebit::eval {

// Names accepted by load_named_task, in the paper's order (lambada last).
const std::vector<std::string>& named_tasks();
bool is_named_task(const std::string& name);

// MosaicML ICL jsonl, format detected from the first record's keys; `limit` > 0 keeps the
// first `limit` examples. onebit::Error (file:line) on malformed lines, missing keys, bad gold,
// an empty file or an unknown format.
Task load_task(const std::string& path, int64_t limit = 0);

// HF dataset rows of task `name` (jsonl). Same errors as load_task; a .parquet path is an
// error that names the conversion script.
Task load_named_task(const std::string& name, const std::string& path, int64_t limit = 0);

// One --tasks argument: "NAME=FILE" for a named task, else a MosaicML file.
Task load_task_arg(const std::string& arg, int64_t limit = 0);

// lm-eval's HellaSwag `preprocess`: strip, " [title]" -> ". ", drop "[...]" (non-greedy, not
// across a newline), then "  " -> " " (one left-to-right pass).
std::string hellaswag_preprocess(const std::string& text);

}  // namespace onebit::eval
