// Evaluation report: the numbers of one run (student, optional teacher) as a readable table
// and as JSON (schema in docs/evaluation.md).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "onebit/eval/perplexity.h"
#include "onebit/eval/zeroshot.h"

namespace onebit::eval {

struct PplEntry {
  std::string file;
  std::string label;  // "wiki2" / "c4" for --wiki2 / --c4 (the --paper rows), else empty
  PplOptions options;
  PplResult result;
};

struct ModelEval {
  std::string model;  // model folder
  std::vector<PplEntry> ppl;
  std::vector<TaskResult> tasks;
};

struct EvalSettings {
  std::string ppl_protocol = "wikitext", dtype = "fp32", device = "cpu";
  std::string add_bos = "auto";
  int64_t seq_len = 2048, windows = 0, batch_size = 1, limit = 0, task_batch_tokens = 4096;
  uint64_t seed = 0;
  bool paper = false;  // print the paper's table layout (format_paper_table)
};

struct EvalReport {
  EvalSettings settings;
  ModelEval student;
  std::optional<ModelEval> teacher;
};

// Unweighted mean of acc (or acc_norm) over the multiple-choice tasks; NaN without any.
double average_accuracy(const ModelEval& m, bool norm);

// The metric a paper row reports for an lm-eval task name ("acc_norm" for hellaswag, piqa,
// arc_easy, arc_challenge; "acc" otherwise), and that metric of a result.
std::string paper_metric(const std::string& task_format);
double paper_value(const TaskResult& t);

std::string format_table(const EvalReport& r);
// The paper's layout: Wiki2 and C4 perplexity, the six zero-shot accuracies (each with its
// paper metric), their average; with a teacher, one row per model and a retention row.
std::string format_paper_table(const EvalReport& r);
std::string report_json(const EvalReport& r);  // pretty-printed, ends with a newline

}  // namespace onebit::eval
