// The synthetic language of the quickstart's embedded teacher: short stories from a seeded
// probabilistic grammar with real structure a small transformer can learn and a bigram
// model cannot: characters introduced by name and referred back to (he/she/they), subject-
// verb agreement (singular -s, plural base form, is/are, has/have), a/an before vowels,
// adjectives and prepositional phrases, objects whose colour stays fixed within a story and
// that change hands, places visited and left. Lower-case words and punctuation tokens
// separated by single spaces; documents separated by blank lines.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "onebit/data/token_dataset.h"

namespace onebit::data::synthetic {

// The words the grammar can emit (punctuation included), sorted, without special tokens.
const std::vector<std::string>& words();

// Token ids: 0 "<unk>", 1 "<s>", 2 "</s>", then words() in order.
inline constexpr int64_t kUnkId = 0, kBosId = 1, kEosId = 2;
std::vector<std::string> token_vocabulary();
int64_t vocab_size();  // words().size() + 3

// Verb forms used with singular and plural subjects: {"runs", "run"}, {"is", "are"}, ...
const std::vector<std::pair<std::string, std::string>>& verb_forms();
const std::vector<std::string>& male_names();
const std::vector<std::string>& female_names();
const std::vector<std::string>& colors();
const std::vector<std::string>& objects();

// Document `index` of the stream seeded by `seed` (depends on nothing else).
std::string generate_document(uint64_t seed, int64_t index);
// Documents first, first+1, ..., first+n-1 of that stream.
std::vector<std::string> generate_documents(int64_t n, uint64_t seed, int64_t first = 0);

// Ids of a document (whitespace split, unknown words -> kUnkId), no BOS/EOS.
std::vector<int64_t> encode(const std::string& text);

// Documents first..first+n-1 encoded, one sample each (vocab_size() ids): pack them with
// PackOptions{seq_len, kBosId, kEosId} to pretrain the embedded teacher.
TokenDataset token_dataset(int64_t n, uint64_t seed, int64_t first = 0);

// Writes documents to a text file, separated by blank lines (read_documents reads it back),
// atomically. For held-out perplexity text (train.eval_text).
void write_documents(const std::string& path, const std::vector<std::string>& docs);

// Writes a Hugging Face tokenizer for the language into `dir` (created): tokenizer.json
// (WordLevel model, WhitespaceSplit pre-tokenizer, "<unk>"/"<s>"/"</s>" added tokens, a
// template post-processor prepending "<s>") and tokenizer_config.json (bos/eos/unk,
// add_bos_token true). Files are written atomically.
void write_tokenizer(const std::string& dir);

}  // namespace onebit::data::synthetic
