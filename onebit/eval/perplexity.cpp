#include "onebit/eval/perplexity.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "onebit/core/error.h"
#include "onebit/eval/py_random.h"
#include "onebit/eval/scoring.h"
#include "onebit/models/causal_lm.h"
#include "onebit/tokenizer/tokenizer.h"
#include "onebit/util/progress.h"
#include "onebit/util/strings.h"

namespace onebit::eval {

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  OB_CHECK(in.good(), "cannot open '", path, "'");
  std::ostringstream os;
  os << in.rdbuf();
  OB_CHECK(!in.bad(), "cannot read '", path, "'");
  return os.str();
}

bool is_blank(const std::string& s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\v' && c != '\f') return false;
  return true;
}

// Lines split on '\n' with one trailing '\r' removed.
std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return lines;
}

// Maximal runs of non-blank lines, joined with '\n', verbatim.
std::vector<std::string> paragraphs(const std::string& text) {
  std::vector<std::string> docs;
  std::string cur;
  bool open = false;
  for (auto& line : split_lines(text)) {
    if (is_blank(line)) {
      if (open) docs.push_back(std::move(cur));
      cur.clear();
      open = false;
    } else {
      if (open) cur += '\n';
      cur += line;
      open = true;
    }
  }
  if (open) docs.push_back(std::move(cur));
  return docs;
}

// The "text" field of every non-blank line of a JSON-lines file, in order.
std::vector<std::string> jsonl_texts(const std::string& path, const std::string& text) {
  std::vector<std::string> out;
  auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (is_blank(lines[i])) continue;
    const std::string where = path + ":" + std::to_string(i + 1);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": malformed JSON line (", e.what(), ")");
    }
    OB_CHECK(j.is_object(), where, ": expected a JSON object with a \"text\" field");
    auto it = j.find("text");
    OB_CHECK(it != j.end(), where, ": no \"text\" field");
    OB_CHECK(it->is_string(), where, ": \"text\" is not a string");
    out.push_back(it->get<std::string>());
  }
  return out;
}

const char* protocol_name(PplProtocol p) {
  switch (p) {
    case PplProtocol::Wikitext: return "wikitext";
    case PplProtocol::C4: return "c4";
    case PplProtocol::Docs: return "docs";
  }
  return "?";
}

}  // namespace

PplProtocol parse_ppl_protocol(const std::string& s) {
  if (s == "wikitext") return PplProtocol::Wikitext;
  if (s == "c4") return PplProtocol::C4;
  if (s == "docs") return PplProtocol::Docs;
  fail("unknown perplexity protocol '", s, "' (expected wikitext, c4 or docs)");
}

std::string ppl_protocol_name(PplProtocol p) { return protocol_name(p); }

std::vector<std::string> read_documents(const std::string& path, PplProtocol protocol) {
  const std::string text = slurp(path);
  OB_CHECK(!is_blank(text), path, ": empty file (no text to evaluate)");
  std::vector<std::string> docs;
  if (ends_with(path, ".jsonl") || ends_with(path, ".json")) {
    docs = jsonl_texts(path, text);
    // Wikitext keeps empty records: the reference joins every record with "\n\n".
    if (protocol != PplProtocol::Wikitext) {
      std::vector<std::string> kept;
      for (auto& d : docs)
        if (!is_blank(d)) kept.push_back(std::move(d));
      docs = std::move(kept);
    }
  } else if (protocol == PplProtocol::Wikitext) {
    docs.push_back(text);
  } else {
    docs = paragraphs(text);
  }
  OB_CHECK(!docs.empty(), path, ": no documents");
  return docs;
}

PplResult perplexity(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                     const std::vector<std::string>& documents, const PplOptions& opts) {
  const int64_t L = opts.seq_len;
  OB_CHECK(L >= 2, "perplexity: seq_len must be >= 2 (got ", L, ")");
  OB_CHECK(opts.batch_size >= 1, "perplexity: batch_size must be >= 1 (got ", opts.batch_size, ")");
  OB_CHECK(opts.windows >= 0, "perplexity: windows must be >= 0 (got ", opts.windows, ")");
  const auto& cfg = model.config();
  OB_CHECK(cfg.max_position_embeddings <= 0 || L <= cfg.max_position_embeddings, "perplexity: seq_len ",
           L, " exceeds the model's max_position_embeddings ", cfg.max_position_embeddings);
  OB_CHECK(!documents.empty(), "perplexity: no documents");

  // ---- windows: start offsets into `stream` (wikitext/docs) or explicit token rows (c4) ----
  std::vector<std::vector<int64_t>> windows;
  PplResult res;
  switch (opts.protocol) {
    case PplProtocol::Wikitext:
    case PplProtocol::Docs: {
      std::vector<int64_t> stream;
      if (opts.protocol == PplProtocol::Wikitext) {
        std::string joined;
        for (size_t i = 0; i < documents.size(); ++i) {
          if (i) joined += "\n\n";
          joined += documents[i];
        }
        stream = tok.encode_with_special(joined);
      } else {
        for (const auto& d : documents) {
          auto ids = tok.encode_with_special(d);
          stream.insert(stream.end(), ids.begin(), ids.end());
        }
      }
      res.input_tokens = int64_t(stream.size());
      int64_t n = res.input_tokens / L;
      OB_CHECK(n >= 1, "perplexity (", protocol_name(opts.protocol), "): the text has ",
               res.input_tokens, " tokens, shorter than one window of seq_len ", L);
      if (opts.windows > 0) n = std::min(n, opts.windows);
      for (int64_t w = 0; w < n; ++w)
        windows.emplace_back(stream.begin() + w * L, stream.begin() + (w + 1) * L);
      break;
    }
    case PplProtocol::C4: {
      OB_CHECK(opts.windows >= 1, "perplexity (c4): windows must be >= 1");
      // Draw order as the GPTQ C4 loader: per window, redraw a document until its tokenization
      // is longer than seq_len, then draw the start in [0, len - seq_len - 1].
      PyRandom rng(opts.seed);
      std::unordered_map<int64_t, std::vector<int64_t>> enc;
      int64_t n_short = 0;
      const int64_t n_docs = int64_t(documents.size());
      for (int64_t w = 0; w < opts.windows; ++w) {
        const std::vector<int64_t>* ids = nullptr;
        while (true) {
          int64_t d = rng.randint(0, n_docs - 1);
          auto it = enc.find(d);
          if (it == enc.end()) {
            it = enc.emplace(d, tok.encode_with_special(documents[size_t(d)])).first;
            if (int64_t(it->second.size()) <= L) ++n_short;
          }
          if (int64_t(it->second.size()) > L) {
            ids = &it->second;
            break;
          }
          OB_CHECK(n_short < n_docs, "perplexity (c4): no document is longer than seq_len ", L,
                   " tokens");
        }
        int64_t start = rng.randint(0, int64_t(ids->size()) - L - 1);
        windows.emplace_back(ids->begin() + start, ids->begin() + start + L);
      }
      res.input_tokens = opts.windows * L;
      break;
    }
  }

  // ---- scoring ----
  const int64_t vocab = cfg.vocab_size;
  const torch::Device device = model_device(model);
  models::InferenceScope inference(model);
  const torch::Tensor W = model.lm_head_weight();
  std::unique_ptr<util::ProgressBar> bar;
  if (opts.progress)
    bar = std::make_unique<util::ProgressBar>(std::string("ppl ") + protocol_name(opts.protocol),
                                              int64_t(windows.size()), "windows");
  double total_nll = 0;
  int64_t total_pred = 0;
  const int64_t nw = int64_t(windows.size());
  for (int64_t b0 = 0; b0 < nw; b0 += opts.batch_size) {
    const int64_t b1 = std::min(nw, b0 + opts.batch_size);
    std::vector<int64_t> flat;
    flat.reserve(size_t((b1 - b0) * L));
    for (int64_t w = b0; w < b1; ++w) {
      for (int64_t id : windows[size_t(w)])
        OB_CHECK(id >= 0 && (vocab <= 0 || id < vocab), "perplexity: token id ", id,
                 " outside the model's vocabulary of ", vocab, " (tokenizer/model mismatch?)");
      flat.insert(flat.end(), windows[size_t(w)].begin(), windows[size_t(w)].end());
    }
    auto ids = torch::tensor(flat, torch::kInt64).view({b1 - b0, L}).to(device);
    models::ForwardArgs args;
    args.compute_logits = false;  // score_hidden projects a slice of rows at a time
    auto h = model.forward(ids, args).last_hidden;
    OB_CHECK(h.defined() && h.dim() == 3 && h.size(0) == b1 - b0 && h.size(1) == L,
             "perplexity: model returned hidden states of shape ", h.defined() ? h.sizes() : torch::IntArrayRef{},
             " for input ", ids.sizes());
    auto rows = h.narrow(1, 0, L - 1).reshape({(b1 - b0) * (L - 1), h.size(2)});
    auto targets = ids.narrow(1, 1, L - 1).reshape({-1});
    total_nll -= score_hidden(rows, W, targets).logprob.sum().item<double>();
    total_pred += (b1 - b0) * (L - 1);
    if (bar) {
      char extra[64];
      std::snprintf(extra, sizeof extra, "ppl %.4f", std::exp(total_nll / double(total_pred)));
      bar->update(b1, extra);
    }
  }
  res.windows = nw;
  res.predicted_tokens = total_pred;
  res.mean_nll = total_nll / double(total_pred);
  res.ppl = std::exp(res.mean_nll);
  if (bar) {
    char extra[64];
    std::snprintf(extra, sizeof extra, "ppl %.4f", res.ppl);
    bar->finish(extra);
  }
  return res;
}

}  // namespace onebit::eval
