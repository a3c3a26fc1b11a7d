// Perplexity protocols (method.md §6; issue "Evaluation").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace onebit::models { class CausalLMImpl; }
namespace onebit::tokenizer { class Tokenizer; }

namespace onebit::eval {

enum class PplProtocol {
  Wikitext,  // join texts with "\n\n", tokenize once, non-overlapping seq_len windows
  C4,        // `windows` random seq_len windows from documents longer than seq_len (seeded)
  Docs,      // documents (blank-line separated) each with BOS, concatenated, non-overlapping windows
};
PplProtocol parse_ppl_protocol(const std::string& s);  // "wikitext" | "c4" | "docs"
std::string ppl_protocol_name(PplProtocol p);

struct PplOptions {
  PplProtocol protocol = PplProtocol::Docs;
  int64_t seq_len = 2048;
  int64_t batch_size = 1;
  int64_t windows = 256;     // C4: how many windows; others: cap on windows used (0 = all)
  uint64_t seed = 0;
  bool progress = true;      // progress bar on stderr
};

struct PplResult {
  double ppl = 0, mean_nll = 0;
  int64_t predicted_tokens = 0, windows = 0, input_tokens = 0;
};

// Documents of a plain text file (blank-line separated paragraphs for Docs/C4; the whole
// text for Wikitext) or of a .jsonl/.json (JSON lines) file's "text" fields; blank records
// are dropped except for Wikitext. onebit::Error on bad input (file:line for bad JSON).
std::vector<std::string> read_documents(const std::string& path, PplProtocol protocol);

// A non-finite model output gives a non-finite ppl (reported, not thrown).
PplResult perplexity(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok,
                     const std::vector<std::string>& documents, const PplOptions& opts);

}  // namespace onebit::eval
