// Zero-shot evaluation (method.md §6) scored exactly as lm-evaluation-harness 0.4 scores it
// with its Hugging Face backend: per-request log-likelihoods of (context, continuation) pairs;
// acc / acc_norm / acc_bytes for multiple-choice tasks, greedy acc and perplexity for
// log-likelihood tasks (LAMBADA). Task files: onebit/eval/tasks.h. Conventions:
// docs/evaluation.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace onebit::models { class CausalLMImpl; }
namespace onebit::tokenizer { class Tokenizer; }

namespace onebit::eval {

enum class TaskKind {
  MultipleChoice,  // one request per choice; argmax metrics
  Loglikelihood,   // one request per example (LAMBADA): greedy acc, perplexity
};

// BOS policy of every encoding: Auto = lm-eval's HF default (the tokenizer's own
// add_special_tokens=True behaviour), Yes = always prepend BOS, No = never.
enum class AddBos { Auto, Yes, No };
AddBos parse_add_bos(const std::string& s);  // "auto" | "yes" | "no"
std::string add_bos_name(AddBos b);

// One question: lm-eval's request arguments, one (context, continuation) pair per choice,
// continuations with their target delimiter; `choices` are lm-eval's doc_to_choice strings,
// whose lengths normalise acc_norm (characters) and acc_bytes (UTF-8 bytes).
struct TaskExample {
  std::vector<std::string> contexts, continuations, choices;
  int64_t gold = 0;
  int64_t line = 0;  // 1-based record number in the task file
};

struct Task {
  std::string name;    // file stem, or the lm-eval task name
  std::string path;
  std::string format;  // "multiple_choice" / "schema" (MosaicML ICL) or the lm-eval task name
  TaskKind kind = TaskKind::MultipleChoice;
  std::vector<TaskExample> examples;
};

// Python str.isspace() for one code point; len(s) - len(s.rstrip()) and
// len(s) - len(s.lstrip()) in bytes for UTF-8 s.
bool is_py_space(char32_t c);
size_t trailing_space_bytes(const std::string& s);
size_t leading_space_bytes(const std::string& s);
// Python len(s): code points of UTF-8 s.
int64_t py_len(const std::string& s);

// Token ids of `text` under the BOS policy.
std::vector<int64_t> encode_text(const tokenizer::Tokenizer& tok, const std::string& text, AddBos bos);
// lm-eval's prefix_token_id: BOS when the tokenizer has one, else EOS.
int64_t prefix_token_id(const tokenizer::Tokenizer& tok);

// lm-eval `loglikelihood` + `_encode_pair`. Empty context: continuation_enc = encode without
// special tokens, context_enc = [prefix_token_id] (or the continuation's first token when that
// is the prefix token). Otherwise trailing whitespace of the context moves to the
// continuation; context_enc = encode_text(context); continuation_enc =
// encode_text(context + continuation)[len(context_enc):].
struct EncodedPair {
  std::vector<int64_t> context, continuation;
};
EncodedPair encode_pair(const tokenizer::Tokenizer& tok, const std::string& context,
                        const std::string& continuation, AddBos bos = AddBos::Auto);

struct RequestScore {
  double loglik = 0;    // sum of continuation token log-probs
  bool greedy = false;  // every continuation token is the argmax of its row
};

struct ZeroShotOptions {
  bool reuse_prefix = true;    // run the choices' common token prefix once (KV cache)
  int64_t batch_tokens = 4096; // at most this many tokens (rows × padded length) per forward
  AddBos add_bos = AddBos::Auto;
  int64_t max_length = 0;      // left truncation length; 0 = the model's max_position_embeddings
  bool progress = true;
};

struct ScoreStats {
  int64_t forward_tokens = 0;  // tokens run through the model (a shared prefix once, no padding)
  int64_t padded_tokens = 0;   // padding positions run through the model
  int64_t forwards = 0;        // model calls
  int64_t truncated = 0;       // requests left-truncated to the model's context
};

// Scores every request of every question. The model input of a request is
// (context_enc + continuation_enc)[-(max_length+1):][:-1]; the common prefix of a question's
// inputs runs once (reuse_prefix). Questions, longest first (as lm-eval), go in windows whose
// stored prefix KV caches stay within 2 × batch_tokens tokens. In a window, the prefixes run
// sorted by length, then every request's remaining tokens (across questions) sorted by length
// on a cache gathered from the prefixes, both cut into right-padded forwards of at most
// `batch_tokens` tokens by cut_sorted (onebit/eval/batching.h). The output projection runs
// only at the rows that predict a continuation token.
std::vector<std::vector<RequestScore>> score_requests(models::CausalLMImpl& model,
                                                      const std::vector<std::vector<EncodedPair>>& questions,
                                                      const ZeroShotOptions& opts = {},
                                                      ScoreStats* stats = nullptr);

struct ExampleResult {
  std::vector<double> loglik;   // per choice (request)
  std::vector<bool> greedy;     // per choice: continuation is the greedy decode
  std::vector<int64_t> chars;   // per choice: len(choice), code points
  std::vector<int64_t> bytes;   // per choice: UTF-8 bytes of the choice
  std::vector<int64_t> tokens;  // per choice: continuation tokens scored
  int64_t gold = 0, pred = 0, pred_norm = 0, pred_bytes = 0;  // numpy argmax (first maximum)
};

struct TaskResult {
  std::string name, path, format;
  TaskKind kind = TaskKind::MultipleChoice;
  int64_t n = 0;
  // Multiple choice: acc, acc_norm, acc_bytes. Log-likelihood: acc (greedy) and ppl =
  // exp(-mean loglik); acc_norm/acc_bytes NaN. *_stderr: sample std / sqrt(n) (lm-eval's
  // mean_stderr), NaN when n < 2 (lm-eval's "N/A") or for ppl.
  double acc = 0, acc_norm = 0, acc_bytes = 0, ppl = 0;
  double acc_stderr = 0, acc_norm_stderr = 0, acc_bytes_stderr = 0;
  int64_t scored_tokens = 0;  // continuation tokens over all requests
  ScoreStats stats;
  std::vector<ExampleResult> examples;
};

// Scores one question (tests and tools); same numbers as evaluate_task. Each call opens an
// models::InferenceScope, which packs the model's dense weights on CPU: around a loop of calls,
// hold one InferenceScope (onebit/models/inference_scope.h) so that they are packed once.
ExampleResult score_example(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                            const TaskExample& ex, const ZeroShotOptions& opts = {},
                            ScoreStats* stats = nullptr);

TaskResult evaluate_task(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                         const Task& task, const ZeroShotOptions& opts = {});

}  // namespace onebit::eval
