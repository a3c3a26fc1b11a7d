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
  int64_t seq_len = 2048, windows = 0, batch_size = 1, limit = 0;
  uint64_t seed = 0;
};

struct EvalReport {
  EvalSettings settings;
  ModelEval student;
  std::optional<ModelEval> teacher;
};

// Unweighted mean over tasks of acc (or acc_norm); NaN without tasks.
double average_accuracy(const ModelEval& m, bool norm);

std::string format_table(const EvalReport& r);
std::string report_json(const EvalReport& r);  // pretty-printed, ends with a newline

}  // namespace onebit::eval
