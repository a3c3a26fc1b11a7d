#include "onebit/eval/zeroshot.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <numeric>

#include "onebit/core/error.h"
#include "onebit/eval/batching.h"
#include "onebit/eval/scoring.h"
#include "onebit/models/causal_lm.h"
#include "onebit/tokenizer/tokenizer.h"
#include "onebit/util/progress.h"

namespace onebit::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Batching (docs/evaluation.md): the fixed cost of one forward in tokens, which cut_sorted
// weighs against padding (SmolLM2-135M on 2 CPU cores: about 30 tokens' time per call), and
// the prefix store's size in batches of tokens.
constexpr int64_t kForwardCostTokens = 32;
constexpr int64_t kWindowBatches = 2;

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

// numpy.argmax: the first NaN if any, else the first maximum.
int64_t np_argmax(const std::vector<double>& v) {
  int64_t best = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) return int64_t(i);
    if (v[i] > v[size_t(best)]) best = int64_t(i);
  }
  return best;
}

// lm-eval's mean_stderr of 0/1 items with mean p: sample std / sqrt(n).
double stderr_of(double p, int64_t n) {
  return n > 1 ? std::sqrt(p * (1 - p) / double(n - 1)) : kNaN;
}

// One request as the model sees it: input x, targets y, first scored row.
struct Prepared {
  std::vector<int64_t> x, y;
  int64_t start = 0;
};

// One row of hidden states to score: where it is in the batch output, and its target.
struct ScoredRow {
  int64_t flat_row;  // row of the [B*T, H] hidden states
  int64_t target;
  size_t q, r;       // question, request
};

}  // namespace

AddBos parse_add_bos(const std::string& s) {
  if (s == "auto") return AddBos::Auto;
  if (s == "yes") return AddBos::Yes;
  if (s == "no") return AddBos::No;
  fail("unknown --add-bos value '", s, "' (expected yes, no or auto)");
}

std::string add_bos_name(AddBos b) {
  return b == AddBos::Auto ? "auto" : b == AddBos::Yes ? "yes" : "no";
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

size_t leading_space_bytes(const std::string& s) {
  size_t i = 0, len = 1;
  while (i < s.size() && is_py_space(decode_at(s, i, &len))) i += len;
  return i;
}

int64_t py_len(const std::string& s) {
  int64_t n = 0;
  for (size_t i = 0, len = 1; i < s.size(); i += len, ++n) decode_at(s, i, &len);
  return n;
}

std::vector<int64_t> encode_text(const tokenizer::Tokenizer& tok, const std::string& text, AddBos bos) {
  switch (bos) {
    case AddBos::Auto: return tok.encode_with_special(text);
    case AddBos::No: return tok.encode(text);
    case AddBos::Yes: {
      OB_CHECK(tok.bos_id() >= 0, "--add-bos yes: the tokenizer has no BOS token");
      auto ids = tok.encode(text);
      ids.insert(ids.begin(), tok.bos_id());
      return ids;
    }
  }
  return {};
}

int64_t prefix_token_id(const tokenizer::Tokenizer& tok) {
  return tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
}

EncodedPair encode_pair(const tokenizer::Tokenizer& tok, const std::string& context,
                        const std::string& continuation, AddBos bos) {
  EncodedPair out;
  if (context.empty()) {
    auto cont = tok.encode(continuation);
    OB_CHECK(!cont.empty(), "encode_pair: continuation '", continuation, "' encodes to no tokens");
    const int64_t prefix = prefix_token_id(tok);
    OB_CHECK(prefix >= 0, "encode_pair: empty context and the tokenizer has no BOS/EOS token");
    if (cont[0] != prefix) {
      out.context = {prefix};
      out.continuation = std::move(cont);
    } else {
      out.context = {cont[0]};
      out.continuation.assign(cont.begin() + 1, cont.end());
    }
  } else {
    const size_t n_space = trailing_space_bytes(context);
    const std::string ctx = context.substr(0, context.size() - n_space);
    const std::string cont = context.substr(context.size() - n_space) + continuation;
    out.context = encode_text(tok, ctx, bos);
    auto whole = encode_text(tok, ctx + cont, bos);
    OB_CHECK(whole.size() > out.context.size(), "encode_pair: continuation '", continuation,
             "' adds no tokens to its context");
    out.continuation.assign(whole.begin() + int64_t(out.context.size()), whole.end());
  }
  OB_CHECK(!out.context.empty(), "encode_pair: context '", context,
           "' encodes to no tokens (a whitespace-only context without BOS)");
  OB_CHECK(!out.continuation.empty(), "encode_pair: continuation '", continuation, "' encodes to no tokens");
  return out;
}

namespace {

// The scoring of one score_requests call: requests prepared, questions' shared prefix lengths,
// the scores being summed.
struct Scorer {
  models::CausalLMImpl& model;
  const ZeroShotOptions& opts;
  ScoreStats& st;
  const std::vector<std::vector<Prepared>>& prep;
  const std::vector<int64_t>& plen;
  std::vector<std::vector<RequestScore>>& out;
  torch::Device device;
  torch::Tensor W;  // lm_head weight
  // Prefix stage of the window: each question's slot in the prefix cache store (-1: none), and
  // the store, per layer [slots, kv_heads, longest prefix, head_dim], zero beyond each prefix.
  std::vector<int64_t> slot;
  std::vector<torch::Tensor> store_k, store_v;

  // Runs one forward over `flat` as [B, T] and returns its last hidden states as [B*T, H].
  torch::Tensor run(const std::vector<int64_t>& flat, int64_t B, int64_t T, const models::ForwardArgs& args) {
    auto ids = torch::tensor(flat, torch::kInt64).view({B, T}).to(device);
    auto h = model.forward(ids, args).last_hidden;
    ++st.forwards;
    OB_CHECK(h.defined() && h.dim() == 3 && h.size(0) == B && h.size(1) == T,
             "score_requests: model returned hidden states of shape ", h.defined() ? h.sizes() : torch::IntArrayRef{},
             " for input ", ids.sizes());
    return h.reshape({B * T, -1});
  }

  // Output projection of the scored rows: fp32 log-softmax, fp64 sums, greedy check.
  void add_scores(const torch::Tensor& hidden, const std::vector<ScoredRow>& rows) {
    if (rows.empty()) return;
    std::vector<int64_t> idx, tgt;
    for (const auto& r : rows) {
      idx.push_back(r.flat_row);
      tgt.push_back(r.target);
    }
    auto h = hidden.index_select(0, torch::tensor(idx, torch::kInt64).to(hidden.device()));
    const auto scores = score_hidden(h, W, torch::tensor(tgt, torch::kInt64));
    auto lp_a = scores.logprob.accessor<double, 1>();
    auto g_a = scores.greedy.accessor<bool, 1>();
    for (size_t i = 0; i < rows.size(); ++i) {
      auto& s = out[rows[i].q][rows[i].r];
      s.loglik += lp_a[int64_t(i)];
      s.greedy = s.greedy && g_a[int64_t(i)];
    }
  }

  // Prefix stage: the shared prefixes of the window's questions, longest first, as
  // right-padded rows (padding comes after every real token: the causal mask hides it) into
  // the KV cache, then into the store.
  void prefixes(const std::vector<size_t>& window) {
    std::vector<size_t> qs;
    for (size_t q : window)
      if (plen[q] > 0) qs.push_back(q);
    std::stable_sort(qs.begin(), qs.end(), [&](size_t a, size_t b) { return plen[a] > plen[b]; });
    store_k.clear();
    store_v.clear();
    if (qs.empty()) return;
    std::vector<int64_t> lengths;
    for (size_t i = 0; i < qs.size(); ++i) {
      slot[qs[i]] = int64_t(i);
      lengths.push_back(plen[qs[i]]);
    }
    for (auto [a, b] : cut_sorted(lengths, opts.batch_tokens, kForwardCostTokens)) {
      const int64_t n = int64_t(b - a), T = lengths[a];
      std::vector<int64_t> flat(size_t(n * T), 0);
      std::vector<ScoredRow> rows;
      for (int64_t j = 0; j < n; ++j) {
        const size_t q = qs[a + size_t(j)];
        std::copy(prep[q][0].x.begin(), prep[q][0].x.begin() + plen[q], flat.begin() + j * T);
        st.forward_tokens += plen[q];
        st.padded_tokens += T - plen[q];
        for (size_t r = 0; r < prep[q].size(); ++r) {  // continuation tokens inside the prefix
          const auto& p = prep[q][r];
          for (int64_t t = p.start; t < std::min<int64_t>(int64_t(p.x.size()), plen[q]); ++t)
            rows.push_back({j * T + t, p.y[size_t(t)], q, r});
        }
      }
      models::KVCache cache;
      models::ForwardArgs args;
      args.cache = &cache;
      args.compute_logits = false;
      auto hidden = run(flat, n, T, args);
      for (auto [kv, store] : {std::pair{&cache.k, &store_k}, std::pair{&cache.v, &store_v}}) {
        if (store->empty())
          for (const auto& t : *kv)
            store->push_back(torch::zeros({int64_t(qs.size()), t.size(1), lengths[0], t.size(3)}, t.options()));
        OB_CHECK(store->size() == kv->size(), "score_requests: the model's KV cache changed its layer count");
        for (size_t l = 0; l < kv->size(); ++l) (*store)[l].narrow(0, int64_t(a), n).narrow(2, 0, T).copy_((*kv)[l]);
      }
      add_scores(hidden, rows);
    }
  }

  // Suffix stage: every request's tokens after its question's prefix, longest first, as
  // right-padded rows with explicit positions on a cache gathered from the store. Rows whose
  // prefix is shorter than the batch's longest get an attention mask over the cache gap.
  void suffixes(const std::vector<size_t>& window) {
    struct Item {
      size_t q, r;
      int64_t s;  // tokens after the prefix
    };
    std::vector<Item> items;
    for (size_t q : window)
      for (size_t r = 0; r < prep[q].size(); ++r) {
        const int64_t s = int64_t(prep[q][r].x.size()) - plen[q];
        if (s > 0) items.push_back({q, r, s});
      }
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.s > b.s; });
    std::vector<int64_t> lengths;
    for (const auto& it : items) lengths.push_back(it.s);
    for (auto [a, b] : cut_sorted(lengths, opts.batch_tokens, kForwardCostTokens)) {
      const int64_t R = int64_t(b - a), T = lengths[a];
      int64_t Pmax = 0;
      bool ragged = false;
      for (size_t i = a; i < b; ++i) Pmax = std::max(Pmax, plen[items[i].q]);
      for (size_t i = a; i < b; ++i) ragged = ragged || plen[items[i].q] != Pmax;
      std::vector<int64_t> flat(size_t(R * T), 0), slots, pos, mask;
      std::vector<ScoredRow> rows;
      for (int64_t i = 0; i < R; ++i) {
        const auto& it = items[a + size_t(i)];
        const auto& p = prep[it.q][it.r];
        const int64_t P = plen[it.q];
        std::copy(p.x.begin() + P, p.x.end(), flat.begin() + i * T);
        st.forward_tokens += it.s;
        st.padded_tokens += T - it.s;
        slots.push_back(P > 0 ? slot[it.q] : 0);  // a question without prefix: masked anyway
        if (ragged) {
          for (int64_t c = 0; c < Pmax; ++c) mask.push_back(c < P);
          for (int64_t c = 0; c < T; ++c) mask.push_back(c < it.s);
        }
        // Padding repeats the last real position: within learned position tables (OPT).
        for (int64_t c = 0; c < T; ++c) pos.push_back(P + std::min(c, it.s - 1));
        for (int64_t t = std::max(p.start, P); t < int64_t(p.x.size()); ++t)
          rows.push_back({i * T + (t - P), p.y[size_t(t)], it.q, it.r});
      }
      models::KVCache cache;
      models::ForwardArgs args;
      args.compute_logits = false;
      if (Pmax > 0) {
        // Buffers with room for the suffix, so that the model appends in place.
        auto idx = torch::tensor(slots, torch::kInt64).to(device);
        for (auto [kv, store] : {std::pair{&cache.k, &store_k}, std::pair{&cache.v, &store_v}})
          for (const auto& s : *store) {
            auto buf = torch::empty({R, s.size(1), Pmax + T, s.size(3)}, s.options());
            buf.narrow(2, 0, Pmax).copy_(s.narrow(2, 0, Pmax).index_select(0, idx));
            kv->push_back(buf.narrow(2, 0, Pmax));
          }
        args.cache = &cache;
      }
      if (ragged) args.attention_mask = torch::tensor(mask, torch::kInt64).view({R, Pmax + T}).to(device);
      args.position_ids = torch::tensor(pos, torch::kInt64).view({R, T}).to(device);
      add_scores(run(flat, R, T, args), rows);
    }
  }
};

}  // namespace

std::vector<std::vector<RequestScore>> score_requests(models::CausalLMImpl& model,
                                                      const std::vector<std::vector<EncodedPair>>& questions,
                                                      const ZeroShotOptions& opts, ScoreStats* stats) {
  OB_CHECK(opts.batch_tokens >= 1, "score_requests: batch_tokens must be >= 1 (got ", opts.batch_tokens, ")");
  const int64_t max_len = opts.max_length > 0 ? opts.max_length : model.config().max_position_embeddings;
  const int64_t vocab = model.config().vocab_size;
  ScoreStats local;
  ScoreStats& st = stats ? *stats : local;

  // ---- prepare: inputs, shared prefix length, total length per question ----
  const size_t Q = questions.size();
  std::vector<std::vector<Prepared>> prep(Q);
  std::vector<int64_t> plen(Q, 0), longest(Q, 0);
  for (size_t q = 0; q < Q; ++q) {
    OB_CHECK(!questions[q].empty(), "score_requests: question ", q, " has no requests");
    for (const auto& pair : questions[q]) {
      const int64_t k = int64_t(pair.continuation.size());
      OB_CHECK(k >= 1 && !pair.context.empty(), "score_requests: empty context or continuation encoding");
      OB_CHECK(max_len <= 0 || k <= max_len, "continuation of ", k, " tokens exceeds the model's context of ",
               max_len);
      std::vector<int64_t> full = pair.context;
      full.insert(full.end(), pair.continuation.begin(), pair.continuation.end());
      for (int64_t id : full)
        OB_CHECK(id >= 0 && (vocab <= 0 || id < vocab), "token id ", id, " outside the model's vocabulary of ",
                 vocab, " (tokenizer/model mismatch?)");
      const int64_t drop = max_len > 0 ? std::max<int64_t>(0, int64_t(full.size()) - (max_len + 1)) : 0;
      st.truncated += drop > 0;
      Prepared p;
      p.x.assign(full.begin() + drop, full.end() - 1);
      p.y.assign(full.begin() + drop + 1, full.end());
      p.start = int64_t(p.x.size()) - k;
      longest[q] = std::max<int64_t>(longest[q], int64_t(p.x.size()));
      prep[q].push_back(std::move(p));
    }
    auto& rs = prep[q];
    if (opts.reuse_prefix && rs.size() > 1) {
      int64_t P = int64_t(rs[0].x.size());
      for (size_t i = 1; i < rs.size(); ++i) {
        int64_t p = 0;
        while (p < P && p < int64_t(rs[i].x.size()) && rs[i].x[size_t(p)] == rs[0].x[size_t(p)]) ++p;
        P = p;
      }
      plen[q] = P;
    }
  }

  // ---- windows of questions, longest first (as lm-eval's Collator), whose prefix store
  // (questions × longest prefix) holds at most kWindowBatches batches of tokens ----
  std::vector<size_t> order(Q);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return longest[a] > longest[b]; });

  std::vector<std::vector<RequestScore>> out(Q);
  for (size_t q = 0; q < Q; ++q) out[q].assign(questions[q].size(), RequestScore{0.0, true});

  models::InferenceScope inference(model);
  Scorer sc{model, opts, st, prep, plen, out, model_device(model), model.lm_head_weight(),
            std::vector<int64_t>(Q, -1), {}, {}};
  const int64_t window_tokens = kWindowBatches * opts.batch_tokens;
  for (size_t w0 = 0; w0 < Q;) {
    std::vector<size_t> window;
    int64_t slots = 0, longest_prefix = 0;
    for (; w0 < Q; ++w0) {
      const int64_t P = plen[order[w0]];
      if (P > 0) {
        if (slots > 0 && (slots + 1) * std::max(longest_prefix, P) > window_tokens) break;
        ++slots;
        longest_prefix = std::max(longest_prefix, P);
      }
      window.push_back(order[w0]);
    }
    sc.prefixes(window);
    sc.suffixes(window);
  }
  return out;
}

namespace {

ExampleResult make_result(const TaskExample& ex, const std::vector<RequestScore>& scores,
                          const std::vector<EncodedPair>& pairs) {
  ExampleResult res;
  res.gold = ex.gold;
  std::vector<double> norm, per_byte;
  for (size_t i = 0; i < scores.size(); ++i) {
    res.loglik.push_back(scores[i].loglik);
    res.greedy.push_back(scores[i].greedy);
    res.tokens.push_back(int64_t(pairs[i].continuation.size()));
    const std::string& choice = i < ex.choices.size() ? ex.choices[i] : ex.continuations[i];
    res.chars.push_back(py_len(choice));
    res.bytes.push_back(int64_t(choice.size()));
    norm.push_back(scores[i].loglik / double(res.chars.back()));
    per_byte.push_back(scores[i].loglik / double(res.bytes.back()));
  }
  res.pred = np_argmax(res.loglik);
  res.pred_norm = np_argmax(norm);
  res.pred_bytes = np_argmax(per_byte);
  return res;
}

std::vector<EncodedPair> encode_example(const tokenizer::Tokenizer& tok, const TaskExample& ex, AddBos bos) {
  OB_CHECK(!ex.contexts.empty() && ex.continuations.size() == ex.contexts.size(), "task record ", ex.line, ": ",
           ex.contexts.size(), " contexts but ", ex.continuations.size(), " continuations");
  std::vector<EncodedPair> pairs;
  try {
    for (size_t i = 0; i < ex.contexts.size(); ++i)
      pairs.push_back(encode_pair(tok, ex.contexts[i], ex.continuations[i], bos));
  } catch (const Error& e) {
    fail("task record ", ex.line, ": ", e.what());
  }
  return pairs;
}

}  // namespace

ExampleResult score_example(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                            const TaskExample& ex, const ZeroShotOptions& opts, ScoreStats* stats) {
  auto pairs = encode_example(tok, ex, opts.add_bos);
  auto scores = score_requests(model, {pairs}, opts, stats);
  return make_result(ex, scores[0], pairs);
}

TaskResult evaluate_task(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                         const Task& task, const ZeroShotOptions& opts) {
  TaskResult out;
  out.name = task.name;
  out.path = task.path;
  out.format = task.format;
  out.kind = task.kind;
  out.n = int64_t(task.examples.size());
  OB_CHECK(out.n > 0, task.path, ": no examples");
  models::InferenceScope inference(model);  // the slices' own scopes reuse its packed weights
  std::vector<std::vector<EncodedPair>> pairs;
  for (const auto& ex : task.examples) pairs.push_back(encode_example(tok, ex, opts.add_bos));

  // Score in slices of questions so that the progress bar moves; each slice is batched.
  std::unique_ptr<util::ProgressBar> bar;
  if (opts.progress) bar = std::make_unique<util::ProgressBar>("task " + task.name, out.n, "examples");
  const int64_t slice = 256;
  for (int64_t e0 = 0; e0 < out.n; e0 += slice) {
    const int64_t e1 = std::min(out.n, e0 + slice);
    std::vector<std::vector<EncodedPair>> part(pairs.begin() + e0, pairs.begin() + e1);
    auto scores = score_requests(model, part, opts, &out.stats);
    for (int64_t e = e0; e < e1; ++e)
      out.examples.push_back(make_result(task.examples[size_t(e)], scores[size_t(e - e0)], pairs[size_t(e)]));
    if (bar) bar->update(e1);
  }

  double hits = 0, hits_norm = 0, hits_bytes = 0, ll_sum = 0;
  for (const auto& r : out.examples) {
    for (int64_t k : r.tokens) out.scored_tokens += k;
    if (task.kind == TaskKind::Loglikelihood) {
      hits += r.greedy[0];
      ll_sum += r.loglik[0];
    } else {
      hits += r.pred == r.gold;
      hits_norm += r.pred_norm == r.gold;
      hits_bytes += r.pred_bytes == r.gold;
    }
  }
  const double n = double(out.n);
  out.acc = hits / n;
  out.acc_stderr = stderr_of(out.acc, out.n);
  if (task.kind == TaskKind::Loglikelihood) {
    out.ppl = std::exp(-ll_sum / n);
    out.acc_norm = out.acc_bytes = out.acc_norm_stderr = out.acc_bytes_stderr = kNaN;
  } else {
    out.ppl = kNaN;
    out.acc_norm = hits_norm / n;
    out.acc_bytes = hits_bytes / n;
    out.acc_norm_stderr = stderr_of(out.acc_norm, out.n);
    out.acc_bytes_stderr = stderr_of(out.acc_bytes, out.n);
  }
  if (bar) {
    char extra[96];
    if (task.kind == TaskKind::Loglikelihood)
      std::snprintf(extra, sizeof extra, "acc %.4f ppl %.4f", out.acc, out.ppl);
    else
      std::snprintf(extra, sizeof extra, "acc %.4f acc_norm %.4f", out.acc, out.acc_norm);
    bar->finish(extra);
  }
  return out;
}

}  // namespace onebit::eval
