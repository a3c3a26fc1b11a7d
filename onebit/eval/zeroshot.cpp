#include "onebit/eval/zeroshot.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/eval/scoring.h"
#include "onebit/models/causal_lm.h"
#include "onebit/tokenizer/tokenizer.h"
#include "onebit/util/progress.h"

namespace onebit::eval {

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  OB_CHECK(in.good(), "cannot open task file '", path, "'");
  std::ostringstream os;
  os << in.rdbuf();
  OB_CHECK(!in.bad(), "cannot read task file '", path, "'");
  return os.str();
}

bool ascii_blank(const std::string& s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\v' && c != '\f') return false;
  return true;
}

// Decodes the UTF-8 code point starting at s[i] (invalid bytes decode as themselves).
char32_t decode_at(const std::string& s, size_t i, size_t* len) {
  const auto b = static_cast<unsigned char>(s[i]);
  int n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
  if (i + size_t(n) > s.size()) n = 1;
  char32_t c = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (int k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + size_t(k)]) & 0x3F);
  *len = size_t(n);
  return c;
}

// " " + text unless text already starts with whitespace (MosaicML/lm-eval target delimiter).
std::string with_delimiter(const std::string& text) {
  if (!text.empty()) {
    size_t len = 0;
    if (is_py_space(decode_at(text, 0, &len))) return text;
  }
  return " " + text;
}

std::string keys_of(const nlohmann::json& j) {
  std::string out;
  for (auto it = j.begin(); it != j.end(); ++it) out += (out.empty() ? "" : ", ") + it.key();
  return out.empty() ? "none" : out;
}

const nlohmann::json& field(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  OB_CHECK(it != j.end(), where, ": missing key \"", key, "\"");
  return *it;
}

std::string string_field(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto& v = field(j, key, where);
  OB_CHECK(v.is_string(), where, ": \"", key, "\" must be a string");
  return v.get<std::string>();
}

std::vector<std::string> string_list(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto& v = field(j, key, where);
  OB_CHECK(v.is_array(), where, ": \"", key, "\" must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : v) {
    OB_CHECK(e.is_string(), where, ": \"", key, "\" must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  OB_CHECK(out.size() >= 2, where, ": \"", key, "\" needs at least 2 entries (has ", out.size(), ")");
  return out;
}

int64_t gold_field(const nlohmann::json& j, size_t n_choices, const std::string& where) {
  const auto& v = field(j, "gold", where);
  OB_CHECK(v.is_number_integer(), where, ": \"gold\" must be an integer");
  const auto g = v.get<int64_t>();
  OB_CHECK(g >= 0 && g < int64_t(n_choices), where, ": gold ", g, " out of range for ", n_choices,
           " choices");
  return g;
}

double stderr_of(double p, int64_t n) {
  return n > 1 ? std::sqrt(p * (1 - p) / double(n - 1)) : 0.0;
}

}  // namespace

std::string task_format_name(TaskFormat f) {
  return f == TaskFormat::MultipleChoice ? "multiple_choice" : "schema";
}

bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t trailing_space_bytes(const std::string& s) {
  // Walk code points forward, remembering where the final run of whitespace starts.
  size_t i = 0, run_start = 0;
  bool in_run = false;
  while (i < s.size()) {
    size_t len = 1;
    const char32_t c = decode_at(s, i, &len);
    if (is_py_space(c)) {
      if (!in_run) run_start = i;
      in_run = true;
    } else {
      in_run = false;
    }
    i += len;
  }
  return in_run ? s.size() - run_start : 0;
}

Task load_task(const std::string& path, int64_t limit) {
  const std::string text = slurp(path);
  OB_CHECK(!ascii_blank(text), path, ": empty task file");
  Task task;
  task.path = path;
  task.name = std::filesystem::path(path).stem().string();
  bool detected = false;
  size_t pos = 0;
  for (int64_t line_no = 1; pos <= text.size(); ++line_no) {
    if (limit > 0 && int64_t(task.examples.size()) >= limit) break;
    const size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() + 1 : nl + 1;
    if (ascii_blank(line)) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": malformed JSON line (", e.what(), ")");
    }
    OB_CHECK(j.is_object(), where, ": expected a JSON object");
    if (!detected) {
      if (j.contains("query") && j.contains("choices")) {
        task.format = TaskFormat::MultipleChoice;
      } else if (j.contains("context_options") && j.contains("continuation")) {
        task.format = TaskFormat::Schema;
      } else {
        fail(where, ": unknown task format (keys: ", keys_of(j),
             "); expected {query, choices, gold} (multiple_choice) or "
             "{context_options, continuation, gold} (schema)");
      }
      detected = true;
    }
    TaskExample ex;
    ex.line = line_no;
    if (task.format == TaskFormat::MultipleChoice) {
      const std::string query = string_field(j, "query", where);
      for (auto& c : string_list(j, "choices", where)) {
        ex.contexts.push_back(query);
        ex.continuations.push_back(with_delimiter(c));
      }
    } else {
      const std::string cont = with_delimiter(string_field(j, "continuation", where));
      for (auto& c : string_list(j, "context_options", where)) {
        ex.contexts.push_back(std::move(c));
        ex.continuations.push_back(cont);
      }
    }
    ex.gold = gold_field(j, ex.contexts.size(), where);
    task.examples.push_back(std::move(ex));
  }
  OB_CHECK(!task.examples.empty(), path, ": no examples");
  return task;
}

EncodedPair encode_pair(const tokenizer::Tokenizer& tok, const std::string& context,
                        const std::string& continuation) {
  const size_t n_space = trailing_space_bytes(context);
  const std::string ctx = context.substr(0, context.size() - n_space);
  const std::string cont = context.substr(context.size() - n_space) + continuation;
  EncodedPair out;
  out.context = tok.encode_with_special(ctx);
  auto whole = tok.encode_with_special(ctx + cont);
  if (out.context.empty()) {
    // lm-eval scores a continuation without context after the end-of-text token.
    OB_CHECK(tok.eos_id() >= 0, "encode_pair: empty context and the tokenizer has no BOS/EOS");
    out.context = {tok.eos_id()};
    out.continuation = std::move(whole);
  } else {
    OB_CHECK(whole.size() > out.context.size(), "encode_pair: continuation '", continuation,
             "' adds no tokens to its context");
    out.continuation.assign(whole.begin() + int64_t(out.context.size()), whole.end());
  }
  return out;
}

ExampleResult score_example(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                            const TaskExample& ex, const ZeroShotOptions& opts,
                            int64_t* forward_tokens) {
  const size_t C = ex.contexts.size();
  OB_CHECK(C >= 1 && ex.continuations.size() == C, "score_example: ", C, " contexts but ",
           ex.continuations.size(), " continuations");
  const int64_t max_len = model.config().max_position_embeddings;
  const int64_t vocab = model.config().vocab_size;
  const torch::Device device = model_device(model);

  // Per choice: input x (full[:-1], left-truncated) and the first scored row `start`.
  std::vector<std::vector<int64_t>> x(C), y(C);
  std::vector<int64_t> start(C);
  ExampleResult res;
  res.gold = ex.gold;
  for (size_t i = 0; i < C; ++i) {
    auto enc = encode_pair(tok, ex.contexts[i], ex.continuations[i]);
    const int64_t k = int64_t(enc.continuation.size());
    OB_CHECK(max_len <= 0 || k <= max_len, "task line ", ex.line, ": continuation of ", k,
             " tokens exceeds the model's context of ", max_len);
    std::vector<int64_t> full = std::move(enc.context);
    full.insert(full.end(), enc.continuation.begin(), enc.continuation.end());
    for (int64_t id : full)
      OB_CHECK(id >= 0 && (vocab <= 0 || id < vocab), "task line ", ex.line, ": token id ", id,
               " outside the model's vocabulary of ", vocab);
    int64_t drop = max_len > 0 ? std::max<int64_t>(0, int64_t(full.size()) - (max_len + 1)) : 0;
    x[i].assign(full.begin() + drop, full.end() - 1);
    y[i].assign(full.begin() + drop + 1, full.end());
    start[i] = int64_t(x[i].size()) - k;
    res.bytes.push_back(int64_t(ex.continuations[i].size()));
    res.tokens.push_back(k);
  }

  // Longest common prefix of the inputs: run once, then the suffixes as one right-padded
  // batch on the shared cache (causal attention: padding after a row never reaches it).
  int64_t P = 0;
  if (opts.reuse_prefix && C > 1) {
    P = int64_t(x[0].size());
    for (size_t i = 1; i < C; ++i) {
      int64_t p = 0;
      while (p < P && p < int64_t(x[i].size()) && x[i][size_t(p)] == x[0][size_t(p)]) ++p;
      P = p;
    }
  }
  int64_t S = 0, n_forward = P;
  for (size_t i = 0; i < C; ++i) {
    S = std::max<int64_t>(S, int64_t(x[i].size()) - P);
    n_forward += int64_t(x[i].size()) - P;
  }
  if (forward_tokens) *forward_tokens += n_forward;

  EvalModeGuard eval_mode(model);
  torch::NoGradGuard no_grad;
  models::KVCache cache;
  torch::Tensor prefix_lp;  // fp32 log-softmax of prefix rows [r0, P)
  int64_t r0 = P;
  for (size_t i = 0; i < C; ++i) r0 = std::min(r0, start[i]);
  if (P > 0) {
    models::ForwardArgs args;
    args.cache = &cache;
    std::vector<int64_t> prefix(x[0].begin(), x[0].begin() + P);
    auto logits = model.forward(ids_tensor(prefix, device), args).logits;
    if (r0 < P) prefix_lp = torch::log_softmax(logits[0].slice(0, r0, P).to(torch::kFloat32), -1);
    for (auto* kv : {&cache.k, &cache.v})
      for (auto& t : *kv)
        if (t.defined()) t = t.expand({int64_t(C), -1, -1, -1}).contiguous();
  }
  torch::Tensor suffix_logits;
  if (S > 0) {
    std::vector<int64_t> flat;
    flat.reserve(C * size_t(S));
    for (size_t i = 0; i < C; ++i) {
      const int64_t s_i = int64_t(x[i].size()) - P;
      flat.insert(flat.end(), x[i].begin() + P, x[i].end());
      flat.insert(flat.end(), size_t(S - s_i), x[i].back());  // any valid id pads
    }
    auto ids = torch::tensor(flat, torch::kInt64).view({int64_t(C), S}).to(device);
    models::ForwardArgs args;
    if (P > 0) args.cache = &cache;
    suffix_logits = model.forward(ids, args).logits;
    OB_CHECK(suffix_logits.dim() == 3 && suffix_logits.size(0) == int64_t(C) &&
                 suffix_logits.size(1) == S,
             "score_example: model returned logits of shape ", suffix_logits.sizes(), " for input ",
             ids.sizes());
  }

  for (size_t i = 0; i < C; ++i) {
    const int64_t n = int64_t(x[i].size());
    double ll = 0;
    if (start[i] < P) {  // continuation rows inside the shared prefix
      const int64_t e = std::min(n, P);
      auto rows = torch::arange(start[i] - r0, e - r0, torch::kInt64).to(prefix_lp.device());
      auto tgt = torch::tensor(std::vector<int64_t>(y[i].begin() + start[i], y[i].begin() + e),
                               torch::kInt64).to(prefix_lp.device());
      ll += prefix_lp.index({rows, tgt}).to(torch::kFloat64).sum().item<double>();
    }
    const int64_t a = std::max(start[i], P);
    if (a < n) {
      auto tgt = torch::tensor(std::vector<int64_t>(y[i].begin() + a, y[i].end()), torch::kInt64);
      ll += target_logprobs(suffix_logits[int64_t(i)].slice(0, a - P, n - P), tgt).sum().item<double>();
    }
    res.loglik.push_back(ll);
  }
  for (size_t i = 1; i < C; ++i) {
    if (res.loglik[i] > res.loglik[size_t(res.pred)]) res.pred = int64_t(i);
    const double norm_i = res.loglik[i] / double(res.bytes[i]);
    const size_t b = size_t(res.pred_norm);
    if (norm_i > res.loglik[b] / double(res.bytes[b])) res.pred_norm = int64_t(i);
  }
  return res;
}

TaskResult evaluate_task(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                         const Task& task, const ZeroShotOptions& opts) {
  TaskResult out;
  out.name = task.name;
  out.path = task.path;
  out.format = task.format;
  out.n = int64_t(task.examples.size());
  OB_CHECK(out.n > 0, task.path, ": no examples");
  std::unique_ptr<util::ProgressBar> bar;
  if (opts.progress) bar = std::make_unique<util::ProgressBar>("task " + task.name, out.n, "examples");
  int64_t hits = 0, hits_norm = 0;
  for (const auto& ex : task.examples) {
    auto r = score_example(model, tok, ex, opts, &out.forward_tokens);
    hits += r.pred == r.gold;
    hits_norm += r.pred_norm == r.gold;
    for (int64_t k : r.tokens) out.scored_tokens += k;
    out.examples.push_back(std::move(r));
    if (bar) {
      char extra[64];
      std::snprintf(extra, sizeof extra, "acc %.4f", double(hits) / double(out.examples.size()));
      bar->update(int64_t(out.examples.size()), extra);
    }
  }
  out.acc = double(hits) / double(out.n);
  out.acc_norm = double(hits_norm) / double(out.n);
  out.acc_stderr = stderr_of(out.acc, out.n);
  out.acc_norm_stderr = stderr_of(out.acc_norm, out.n);
  if (bar) {
    char extra[64];
    std::snprintf(extra, sizeof extra, "acc %.4f acc_norm %.4f", out.acc, out.acc_norm);
    bar->finish(extra);
  }
  return out;
}

}  // namespace onebit::eval
