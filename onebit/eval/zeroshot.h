// Zero-shot multiple-choice evaluation (method.md §6) on MosaicML ICL jsonl tasks, scored as
// lm-evaluation-harness does: summed continuation log-likelihood (acc) and its per-byte
// normalised form (acc_norm). Conventions: docs/evaluation.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace onebit::models { class CausalLMImpl; }
namespace onebit::tokenizer { class Tokenizer; }

namespace onebit::eval {

enum class TaskFormat {
  MultipleChoice,  // {"query", "choices": [...], "gold"}: one context, one continuation per choice
  Schema,          // {"context_options": [...], "continuation", "gold"}: shared continuation
};
std::string task_format_name(TaskFormat f);  // "multiple_choice" | "schema"

// One question as (context, continuation) pairs, one per choice; continuations already carry
// their leading " " (added unless the text starts with whitespace).
struct TaskExample {
  std::vector<std::string> contexts, continuations;
  int64_t gold = 0;
  int64_t line = 0;  // 1-based line in the task file
};

struct Task {
  std::string name;  // file stem
  std::string path;
  TaskFormat format = TaskFormat::MultipleChoice;
  std::vector<TaskExample> examples;
};

// Reads a task file, detecting the format from the first record's keys; `limit` > 0 keeps the
// first `limit` examples. onebit::Error (file:line) on malformed lines, missing keys, bad gold,
// an empty file or an unknown format.
Task load_task(const std::string& path, int64_t limit = 0);

// Python str.isspace() for one code point, and len(s) - len(s.rstrip()) in bytes for UTF-8 s.
bool is_py_space(char32_t c);
size_t trailing_space_bytes(const std::string& s);

// lm-evaluation-harness `_encode_pair`: trailing whitespace of the context moves to the
// continuation; context = encode_with_special(context); continuation =
// encode_with_special(context + continuation)[len(context):].
struct EncodedPair {
  std::vector<int64_t> context, continuation;
};
EncodedPair encode_pair(const tokenizer::Tokenizer& tok, const std::string& context,
                        const std::string& continuation);

struct ExampleResult {
  std::vector<double> loglik;          // per choice: sum of continuation token log-probs
  std::vector<int64_t> bytes;          // per choice: UTF-8 bytes of the continuation string
  std::vector<int64_t> tokens;         // per choice: continuation tokens scored
  int64_t gold = 0, pred = 0, pred_norm = 0;  // argmax (ties -> lowest index)
};

struct TaskResult {
  std::string name, path;
  TaskFormat format = TaskFormat::MultipleChoice;
  int64_t n = 0;
  double acc = 0, acc_norm = 0;
  double acc_stderr = 0, acc_norm_stderr = 0;  // sample std / sqrt(n), as lm-eval
  int64_t scored_tokens = 0;                   // continuation tokens over all choices
  int64_t forward_tokens = 0;                  // tokens run through the model (prefix reuse counted once)
  std::vector<ExampleResult> examples;
};

struct ZeroShotOptions {
  bool reuse_prefix = true;  // run the choices' common token prefix once (KV cache)
  bool progress = true;
};

// Log-likelihoods of one example's choices. The model input of a choice is
// context_enc + continuation_enc, left-truncated to max_position_embeddings + 1 tokens.
ExampleResult score_example(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                            const TaskExample& ex, const ZeroShotOptions& opts = {},
                            int64_t* forward_tokens = nullptr);

TaskResult evaluate_task(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                         const Task& task, const ZeroShotOptions& opts = {});

}  // namespace onebit::eval
