// Tokenizers: SentencePiece (stories260K vs transformers), byte-level BPE and WordLevel
// tokenizer.json (vs the Python `tokenizers` library), BOS/EOS config, error messages.
#include <nlohmann/json.hpp>
#include <thread>

#include "onebit/core/error.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/io/test_util.h"
#include "tests/support.h"
#include "tests/references.h"

using nlohmann::json;
using onebit::test::TempDir;
using onebit::test::write_text;
using onebit::tokenizer::load_tokenizer;

namespace {

// Strings where tokenizers usually disagree: whitespace runs, newlines, digits, unicode,
// emoji, contractions, special tokens in the text; one long piece (merge order at scale).
const std::vector<std::string> kTricky = {
    std::string(3000, ' ') + "x" + std::string(2000, '7') + std::string(1000, 'a'),
    "Hello world",
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "  leading and trailing  ",
    "multiple   spaces\tand\ttabs\t\t",
    "line1\nline2\r\n\r\nline3\n\n\n",
    "Numbers: 1234567 3.14159 1,000,000 2024-05-01",
    "Emoji 😀🚀👍🏽 and 中文字符 and Привет мир",
    "don't can't I'm we'll they've she'd it's",
    "DON'T SHOUT IT'S",
    "café naïve résumé Straße",
    "<|endoftext|> special <|begin_of_text|>middle<|end_of_text|>",
    "<custom> added <custom>token",
    "<s> literal </s> and <unk>",
    "<s>Hello",
    "<|im_start|>user\nHi<|im_end|>\n",
    "",
    " ",
    "\n",
    "a",
    "x    ",
    "mixed😀text123abc!!!???...",
    "The quick brown fox jumps over the lazy dog 1234567890 times!",
};

std::vector<int64_t> ids_of(const json& j) { return j.get<std::vector<int64_t>>(); }

// Builds a tokenizer.json of `kind` with tests/python/make_tokenizers.py into `dir`; returns the
// Python ids/decodes for kTricky.
json make_with_python(const std::string& kind, const TempDir& dir) {
  write_text(dir / "strings.json", json(kTricky).dump());
  const std::string script =
      (onebit::test::source_dir() / "tests/python/make_tokenizers.py").string();
  const std::string cmd = "'" + onebit::test::python() + "' '" + script + "' " + kind + " '" +
                          dir.path.string() + "' '" + (dir / "strings.json") + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return json::parse(onebit::test::read_text(dir / "expected.json"));
}

void check_against_python(const std::string& kind, bool compare_with_special) {
  TempDir dir;
  const json want = make_with_python(kind, dir);
  auto tok = load_tokenizer(dir.path.string());
  for (size_t i = 0; i < kTricky.size(); ++i) {
    INFO(kind << " string #" << i << ": " << json(kTricky[i]).dump());
    const auto ids = tok->encode(kTricky[i]);
    CHECK(ids == ids_of(want["ids"][i]));
    CHECK(tok->decode(ids) == want["decoded"][i].get<std::string>());
    if (compare_with_special)
      CHECK(tok->encode_with_special(kTricky[i]) == ids_of(want["with_special"][i]));
  }
}

}  // namespace

TEST_CASE("byte-level BPE (GPT-2 regex, 'a b' merges) matches tokenizers", "[tokenizer]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("tokenizers"),
                     "needs Python with the tokenizers library (" + onebit::test::python() + ")");
  check_against_python("gpt2", /*compare_with_special=*/true);
  TempDir dir;
  make_with_python("gpt2", dir);
  auto tok = load_tokenizer(dir.path.string());
  CHECK(tok->bos_id() == 0);  // <|endoftext|>, from tokenizer_config.json
  CHECK(tok->eos_id() == 0);
  CHECK_FALSE(tok->add_bos());
  // Byte-level BPE is lossless on text without special tokens.
  for (const auto& s : kTricky)
    if (s.find("<|") == std::string::npos) CHECK(tok->decode(tok->encode(s)) == s);
  // Invalid UTF-8 is replaced by U+FFFD, never a crash.
  CHECK(tok->decode(tok->encode("bad \xff\xfe byte")) == "bad \xEF\xBF\xBD\xEF\xBF\xBD byte");
  CHECK_THROWS_WITH(tok->decode({tok->vocab_size()}), OB_CONTAINS("is not in the vocabulary"));
}

TEST_CASE("one BPE tokenizer shared by threads gives the sequential ids", "[tokenizer]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("tokenizers"),
                     "needs Python with the tokenizers library (" + onebit::test::python() + ")");
  TempDir dir;
  make_with_python("llama3", dir);
  auto tok = load_tokenizer(dir.path.string());
  std::vector<std::vector<int64_t>> want;
  {
    auto fresh = load_tokenizer(dir.path.string());  // cold cache, one thread
    for (const auto& s : kTricky) want.push_back(fresh->encode(s));
  }
  constexpr int kThreads = 4;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep)
        for (size_t i = 0; i < kTricky.size(); ++i)
          mismatches[t] += tok->encode(kTricky[(i + t) % kTricky.size()]) !=
                           want[(i + t) % kTricky.size()];
    });
  for (auto& th : threads) th.join();
  CHECK(mismatches == std::vector<int>(kThreads, 0));
}

TEST_CASE("byte-level BPE with add_prefix_space matches tokenizers", "[tokenizer]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("tokenizers"),
                     "needs Python with the tokenizers library (" + onebit::test::python() + ")");
  check_against_python("gpt2_prefix", /*compare_with_special=*/true);
}

TEST_CASE("GPT-2 vocab.json + merges.txt matches tokenizers", "[tokenizer]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("tokenizers"),
                     "needs Python with the tokenizers library (" + onebit::test::python() + ")");
  check_against_python("gpt2_files", /*compare_with_special=*/true);
}

TEST_CASE("byte-level BPE (LLaMA-3 Split regex, special tokens) matches tokenizers",
          "[tokenizer]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("tokenizers"),
                     "needs Python with the tokenizers library (" + onebit::test::python() + ")");
  check_against_python("llama3", /*compare_with_special=*/true);
  TempDir dir;
  make_with_python("llama3", dir);
  auto tok = load_tokenizer(dir.path.string());
  CHECK(tok->bos_id() == 0);  // <|begin_of_text|>
  CHECK(tok->eos_id() == 1);  // <|end_of_text|>, given as {"content": ...}
  CHECK(tok->add_bos());      // from the TemplateProcessing post-processor
  CHECK(tok->encode("<|end_of_text|>") == std::vector<int64_t>{1});
}

TEST_CASE("byte-level BPE (Qwen2 Split regex, NFC) matches tokenizers", "[tokenizer]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("tokenizers"),
                     "needs Python with the tokenizers library (" + onebit::test::python() + ")");
  check_against_python("qwen2", /*compare_with_special=*/true);
  TempDir dir;
  make_with_python("qwen2", dir);
  auto tok = load_tokenizer(dir.path.string());
  CHECK(tok->bos_id() == -1);  // bos_token null, no config.json
  CHECK(tok->eos_id() == 2);   // <|im_end|>
  std::vector<int64_t> want{1};
  for (int64_t id : tok->encode("user")) want.push_back(id);
  CHECK(tok->encode("<|im_start|>user") == want);
}

TEST_CASE("WordLevel tokenizer.json matches tokenizers", "[tokenizer]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("tokenizers"),
                     "needs Python with the tokenizers library (" + onebit::test::python() + ")");
  check_against_python("wordlevel", /*compare_with_special=*/false);
  check_against_python("wordlevel_ws", /*compare_with_special=*/false);
}

TEST_CASE("WordLevel tokenizer written by hand", "[tokenizer]") {
  TempDir dir;
  write_text(dir / "tokenizer.json", R"({
    "version": "1.0", "normalizer": null, "post_processor": null, "decoder": null,
    "added_tokens": [{"id": 0, "content": "<bos>", "special": true},
                     {"id": 1, "content": "<eos>", "special": true}],
    "pre_tokenizer": {"type": "WhitespaceSplit"},
    "model": {"type": "WordLevel", "unk_token": "<unk>",
              "vocab": {"<bos>": 0, "<eos>": 1, "<unk>": 2, "ka": 3, "lo": 4, "mi.": 5}}})");
  write_text(dir / "config.json", R"({"bos_token_id": 0, "eos_token_id": [1, 7]})");
  auto tok = load_tokenizer(dir.path.string());
  CHECK(tok->vocab_size() == 6);
  CHECK(tok->bos_id() == 0);
  CHECK(tok->eos_id() == 1);
  CHECK_FALSE(tok->add_bos());
  CHECK(tok->encode("  ka lo\n\tmi. zz<eos>ka") == std::vector<int64_t>{3, 4, 5, 2, 1, 3});
  CHECK(tok->decode({0, 3, 4, 2, 5, 1}) == "ka lo <unk> mi.");
  write_text(dir / "tokenizer_config.json", R"({"add_bos_token": true, "bos_token": "<bos>"})");
  tok = load_tokenizer(dir.path.string());
  CHECK(tok->encode_with_special("ka") == std::vector<int64_t>{0, 3});
}

TEST_CASE("byte-level BPE written by hand merges by rank", "[tokenizer]") {
  TempDir dir;
  // "Ġ" (U+0120) is the byte-level stand-in for a space.
  write_text(dir / "tokenizer.json", R"({
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE",
      "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "he": 5, "ll": 6, "hell": 7,
                "hello": 8, "Ġh": 9},
      "merges": ["h e", ["l", "l"], "he ll", ["hell", "o"], "Ġ h"]}})");
  auto tok = load_tokenizer(dir.path.string());
  // "hello" merges fully; in "Ġhello" the cheaper "h e" wins over "Ġ h", so Ġ stays apart.
  CHECK(tok->encode("hello hello") == std::vector<int64_t>{8, 4, 8});
  CHECK(tok->encode("hole") == std::vector<int64_t>{0, 3, 2, 1});
  CHECK(tok->decode({8, 4, 8}) == "hello hello");
  CHECK(tok->bos_id() == -1);
  CHECK_FALSE(tok->add_bos());
}

TEST_CASE("load_tokenizer errors name the folder and the problem", "[tokenizer]") {
  CHECK_THROWS_WITH(load_tokenizer("/nonexistent/model"),
                    OB_CONTAINS("/nonexistent/model: not a folder"));
  TempDir dir;
  CHECK_THROWS_WITH(
      load_tokenizer(dir.path.string()),
      OB_CONTAINS("no tokenizer.json, tokenizer.model or vocab.json + merges.txt in this folder"));
  write_text(dir / "tokenizer.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  CHECK_THROWS_WITH(
      load_tokenizer(dir.path.string()),
      OB_CONTAINS("tokenizer.json uses model type 'Unigram', which onebit does not support"));
  write_text(dir / "tokenizer.json", R"({"model": {"type": "WordLevel", )");
  CHECK_THROWS_WITH(load_tokenizer(dir.path.string()), OB_CONTAINS("tokenizer.json: invalid JSON"));
  write_text(
      dir / "tokenizer.json",
      R"({"model": {"type": "WordLevel", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "Metaspace"}})");
  CHECK_THROWS_WITH(load_tokenizer(dir.path.string()), OB_CONTAINS("pre_tokenizer 'Metaspace'"));
  write_text(dir / "tokenizer.json", R"({"model": {"type": "WordLevel", "vocab": {"a": 0}}})");
  write_text(dir / "tokenizer_config.json", R"({"bos_token": "<s>"})");
  CHECK_THROWS_WITH(load_tokenizer(dir.path.string()),
                    OB_CONTAINS("tokenizer_config.json: bos_token '<s>' is not in the vocabulary"));
  write_text(dir / "tokenizer_config.json", "{}");
  auto tok = load_tokenizer(dir.path.string());
  CHECK_THROWS_WITH(tok->encode("b"), OB_CONTAINS("word 'b' is not in the vocabulary"));
  write_text(dir / "tokenizer.json",
             R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},
      "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}})");
  CHECK_THROWS_WITH(load_tokenizer(dir.path.string()),
                    OB_CONTAINS("merge token 'b' is not in the vocabulary"));
  // A token id far past the file's token count (a fuzzing find: it sized the id table to it,
  // std::length_error or gigabytes); dense ids with holes stay accepted.
  write_text(dir / "tokenizer.json", R"({"model": {"type": "WordLevel", "vocab": {"a": 0, "b": 4000000000000}}})");
  CHECK_THROWS_WITH(load_tokenizer(dir.path.string()),
                    OB_CONTAINS("token id 4000000000000 is out of range for a file of 2 tokens (at most 259)"));
  write_text(dir / "tokenizer.json", R"({"model": {"type": "WordLevel", "vocab": {"a": 0}},
      "added_tokens": [{"id": 1000, "content": "<x>", "special": true}]})");
  CHECK_THROWS_WITH(load_tokenizer(dir.path.string()), OB_CONTAINS("token id 1000 is out of range"));
  write_text(dir / "tokenizer.json", R"({"model": {"type": "WordLevel", "vocab": {"a": 0, "b": 200}}})");
  CHECK(load_tokenizer(dir.path.string())->vocab_size() == 201);
}

TEST_CASE("SentencePiece stories260K tokenizer", "[tokenizer]") {
  OB_SHARED_OR_SKIP(dir, "models/stories260K");
  auto tok = load_tokenizer(dir.string());
  CHECK(tok->vocab_size() == 512);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK(tok->add_bos());
  // Ids as transformers' LlamaTokenizer gives them for this folder.
  CHECK(tok->encode("Hello world") == std::vector<int64_t>{346, 306, 414, 263, 304, 341});
  CHECK(tok->encode_with_special("Hello") == std::vector<int64_t>{1, 346, 306, 414});
  CHECK(tok->encode("<s>Hello") == std::vector<int64_t>{1, 440, 411, 306, 414});
  CHECK(tok->encode("") == std::vector<int64_t>{});
  for (const auto& s : {"Once upon a time, there was a little girl named Lily.", "a\nb\n\nc",
                        "Emoji 😀 and 中文", "x  y   z"})
    CHECK(tok->decode(tok->encode(s)) == s);
  CHECK_THROWS_WITH(tok->decode({512}), OB_CONTAINS("token id 512 out of range"));
  CHECK(tok->encode("a\xff") == tok->encode("a\xEF\xBF\xBD"));  // invalid UTF-8: U+FFFD
}

TEST_CASE("SentencePiece stories260K matches transformers AutoTokenizer", "[tokenizer]") {
  OB_SHARED_OR_SKIP(dir, "models/stories260K");
  OB_REFERENCE_OR_SKIP(
      onebit::test::python_has("transformers, sentencepiece, google.protobuf"),
      "needs Python with transformers + sentencepiece + protobuf (" + onebit::test::python() + ")");
  TempDir tmp;
  write_text(tmp / "strings.json", json(kTricky).dump());
  const char* code = R"PY(
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
strings = json.load(open(sys.argv[2], encoding="utf-8"))
ids = [tok.encode(s, add_special_tokens=False) for s in strings]
out = {"ids": ids, "decoded": [tok.decode(i, skip_special_tokens=True) for i in ids],
       "with_special": [tok.encode(s) for s in strings]}
json.dump(out, open(sys.argv[3], "w", encoding="utf-8"))
)PY";
  REQUIRE(onebit::test::run_python(code, "'" + dir.string() + "' '" + (tmp / "strings.json") +
                                             "' '" + (tmp / "expected.json") + "'"));
  const json want = json::parse(onebit::test::read_text(tmp / "expected.json"));
  auto tok = load_tokenizer(dir.string());
  for (size_t i = 0; i < kTricky.size(); ++i) {
    INFO("string #" << i << ": " << json(kTricky[i]).dump());
    const auto ids = tok->encode(kTricky[i]);
    CHECK(ids == ids_of(want["ids"][i]));
    CHECK(tok->decode(ids) == want["decoded"][i].get<std::string>());
    CHECK(tok->encode_with_special(kTricky[i]) == ids_of(want["with_special"][i]));
  }
}

TEST_CASE("SentencePiece stories260K matches transformers on TinyStories text", "[tokenizer]") {
  OB_SHARED_OR_SKIP(dir, "models/stories260K");
  OB_SHARED_OR_SKIP(val, "data/tinystories_val.txt");
  OB_REFERENCE_OR_SKIP(
      onebit::test::python_has("transformers, sentencepiece, google.protobuf"),
      "needs Python with transformers + sentencepiece + protobuf (" + onebit::test::python() + ")");
  constexpr size_t kBytes = 100000;  // the first ~100 KB: hundreds of stories, a fast test
  TempDir tmp;
  const char* code = R"PY(
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
text = open(sys.argv[2], "rb").read()[:int(sys.argv[3])].decode("utf-8", "ignore")
json.dump(tok.encode(text, add_special_tokens=False), open(sys.argv[4], "w"))
)PY";
  REQUIRE(onebit::test::run_python(code, "'" + dir.string() + "' '" + val.string() + "' " +
                                             std::to_string(kBytes) + " '" + (tmp / "ids.json") +
                                             "'"));
  std::string text = onebit::test::read_text(val.string()).substr(0, kBytes);
  while (!text.empty() && (uint8_t(text.back()) & 0xC0) == 0x80) text.pop_back();  // whole chars
  if (!text.empty() && uint8_t(text.back()) >= 0xC0) text.pop_back();
  auto tok = load_tokenizer(dir.string());
  const auto ids = tok->encode(text);
  const auto want = ids_of(json::parse(onebit::test::read_text(tmp / "ids.json")));
  CHECK(ids.size() == want.size());
  CHECK(ids == want);
  CHECK(tok->decode(ids) == text);
}
