// The bad-input catalogue (docs/RELIABILITY.md): one row per bad input, each run through the
// real program, each expecting its exit code and its one error line "onebit-X: error: ...",
// never a trace, an abort or a crash. The inputs are made from a real tiny run: an embedded
// teacher (onebit-teacher), a 2-step distillation with checkpoints (onebit-train), its export
// (onebit-export) and a self-sampled dataset (onebit-sample), then broken one way per row.
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "onebit/io/safetensors.h"
#include "tests/io/model_files.h"
#include "tests/io/test_util.h"
#include "tests/support.h"

namespace {

namespace fs = std::filesystem;
using onebit::test::read_text;
using onebit::test::write_text;
using json = nlohmann::json;

struct Row {
  std::string what;     // the bad input
  std::string command;  // shell command in the fixture folder; the programs are on PATH
  int rc;               // expected exit code
  std::string message;  // part of the one error line (with rc 0: of a warning line)
  std::function<void(const fs::path&)> setup = {};
};

// The tiny run every row starts from, made once per test process (ctest: once per case).
class Fixture {
 public:
  Fixture() {
    write_text(dir_ / "tiny.yaml",
               "output_dir: run\n"
               "model: {teacher: teach/teacher, dtype: fp32, device: cpu}\n"
               "embedded: {hidden_size: 16, intermediate_size: 24, num_layers: 1, num_heads: 2, num_kv_heads: 1,\n"
               "           train_tokens: 2048, batch_size: 4, seq_len: 16, lr: 3.0e-3, seed: 7}\n"
               "data: {source: sample, num_samples: 8, sample_length: 16, sample_batch: 8, seq_len: 16,\n"
               "       batch_size: 4}\n"
               "train: {max_steps: 2, precision: fp32, log_every: 1, save_every: 1, eval_every: 0,\n"
               "        eval_text: teach/heldout.txt, eval_seq_len: 16, eval_windows: 2}\n");
    must("onebit-teacher --config tiny.yaml --out teach model.teacher=embedded --quiet");
  }
  const fs::path& dir() const { return dir_.path; }
  void need_run() {
    if (!fs::exists(dir() / "run" / "student")) must("onebit-train --config tiny.yaml");
  }
  void need_export() {
    need_run();
    if (!fs::exists(dir() / "export")) must("onebit-export --model run/student --out export");
  }
  void need_data() {
    if (!fs::exists(dir() / "data")) must("onebit-sample --model teach/teacher --out data --num-samples 8 --max-length 16 --quiet");
  }
  std::pair<int, std::string> run(const std::string& command) const {
    return onebit::test::run_shell("cd '" + dir().string() + "' && PATH='" + onebit::test::binary_dir().string() +
                                   "':\"$PATH\" OMP_NUM_THREADS=1 " + command + " 2>&1");
  }

 private:
  void must(const std::string& command) {
    const auto [rc, out] = run(command);
    INFO(command << "\n" << out);
    REQUIRE(rc == 0);
  }
  onebit::test::TempDir dir_;
};

using onebit::test::copy_dir;
using onebit::test::edit_tensors;

void edit_json(const fs::path& file, const std::function<void(json&)>& edit) {
  json j = json::parse(read_text(file.string()));
  edit(j);
  write_text(file.string(), j.dump(1));
}

void erase_tensor(std::vector<std::pair<std::string, torch::Tensor>>& t, const std::string& name) {
  const auto it = std::find_if(t.begin(), t.end(), [&](const auto& p) { return p.first == name; });
  REQUIRE(it != t.end());
  t.erase(it);
}

torch::Tensor& tensor(std::vector<std::pair<std::string, torch::Tensor>>& t, const std::string& name) {
  for (auto& p : t)
    if (p.first == name) return p.second;
  FAIL("no tensor " << name);
  throw;
}

// What no bad input may print: a trace, an abort, a crash, a sanitizer or Python report.
const char* const kCrashMarks[] = {"terminate called", "Aborted", "Segmentation fault", "core dumped",
                                   "Exception raised from", "Traceback", "AddressSanitizer", "runtime error:"};

void check_rows(Fixture& fx, const std::vector<Row>& rows) {
  for (const auto& row : rows) {
    if (row.setup) row.setup(fx.dir());
    const auto [rc, out] = fx.run(row.command);
    INFO("case: " << row.what << "\n$ " << row.command << "\n" << out);
    CHECK(rc == row.rc);
    for (const char* mark : kCrashMarks) CHECK(out.find(mark) == std::string::npos);
    std::vector<std::string> errors;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      if (line.find("error:") != std::string::npos) errors.push_back(line);
    if (row.rc == 0) {
      CHECK(errors.empty());
      CHECK(out.find(row.message) != std::string::npos);
      continue;
    }
    REQUIRE(errors.size() == 1);  // one line, the program's own
    CHECK(std::regex_search(errors[0], std::regex("^onebit-[a-z]+: error: ")));
    CHECK(errors[0].find(row.message) != std::string::npos);
  }
}

const std::string kEval = "onebit-eval --ppl teach/heldout.txt --quiet --model ";

}  // namespace

TEST_CASE("bad inputs: configs and command lines", "[catalogue][config]") {
  Fixture fx;
  auto yaml = [](const std::string& name, const std::string& text) {
    return [=](const fs::path& d) { write_text((d / name).string(), text); };
  };
  const std::string train = "onebit-train --config tiny.yaml --dry-run ";
  check_rows(fx, {
    {"typo in a top-level key", "onebit-train --config c.yaml --dry-run", 1,
     "c.yaml: unknown key 'optim_lr' (did you mean 'optim.lr'?)", yaml("c.yaml", "output_dir: x\noptim_lr: 1\n")},
    {"typo in a section's key (override)", train + "optim.lrr=1e-3", 1,
     "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"},
    {"typo in a nested YAML key", "onebit-train --config c.yaml --dry-run", 1, "unknown key 'embedded.hidden'",
     yaml("c.yaml", "output_dir: x\nmodel: {teacher: embedded}\nembedded: {hidden: 16}\n")},
    {"key below a leaf", train + "dist.shard_teacher.x=1", 1, "unknown key 'dist.shard_teacher.x'"},
    {"wrong type (override)", train + "train.max_steps=abc", 1, "key 'train.max_steps' expects an integer, got 'abc'"},
    {"wrong type (a list for a number)", "onebit-train --config c.yaml --dry-run", 1,
     "key 'optim.lr' expects a single value, got a list",
     yaml("c.yaml", "output_dir: x\nmodel: {teacher: embedded}\noptim: {lr: [1, 2]}\n")},
    {"a section given as a scalar", "onebit-train --config c.yaml --dry-run", 1,
     "section 'optim' expects a mapping of keys, got a scalar",
     yaml("c.yaml", "output_dir: x\nmodel: {teacher: embedded}\noptim: 3\n")},
    {"a value outside its choices", train + "student.svid=foo", 1, "student.svid must be one of nmf, svd, none; got 'foo'"},
    {"a value out of range", train + "data.batch_size=0", 1, "data.batch_size must be > 0, got 0"},
    {"progressive replacement longer than the run (32 layers: the last from step 38 of 40)",
     train + "train.max_steps=10 student.progressive_steps=40 model.teacher=" +
         (onebit::test::source_dir() / "configs" / "models" / "llama-7b").string(),
     1, "student.progressive_steps=40 keeps a decoder layer full precision until step 38, but the run has only 10"},
    {"invalid YAML", "onebit-train --config c.yaml --dry-run", 1, "c.yaml: invalid YAML at line",
     yaml("c.yaml", "output_dir: x\nmodel: {teacher: embedded\n")},
    {"an override without '='", train + "train.max_steps", 1, "override 'train.max_steps' is not of the form key=value"},
    {"an override without a key", train + "=3", 1, "override '=3' is not of the form key=value"},
    {"missing config file", "onebit-train --config nope.yaml", 2, "--config: File does not exist: nope.yaml"},
    {"config path is a folder", "onebit-train --config teach", 2, "--config: File is actually a directory: teach"},
    {"unknown option", "onebit-eval --model teach/teacher --ppl teach/heldout.txt --bogus", 2,
     "The following argument was not expected: --bogus"},
    {"missing required option", "onebit-export --model run/student", 2, "--out is required"},
    {"teacher folder missing", train + "model.teacher=nope", 1, "nope/config.json: no such file"},
    {"teacher config.json not JSON", train + "model.teacher=badcfg", 1, "badcfg/config.json: invalid JSON",
     [](const fs::path& d) {
       copy_dir(d / "teach" / "teacher", d / "badcfg");
       write_text((d / "badcfg" / "config.json").string(), "{");
     }},
  });
}

TEST_CASE("bad inputs: datasets and checkpoints", "[catalogue][data]") {
  Fixture fx;
  fx.need_run();
  fx.need_data();
  const std::string train = "onebit-train --config tiny.yaml ";
  check_rows(fx, {
    {"dataset too short for one batch", train + "output_dir=r1 data.source=dataset data.path=data data.seq_len=64", 1,
     "data: only 2 blocks of 64 tokens"},
    {"dataset folder without index.json", train + "output_dir=r2 data.source=dataset data.path=empty", 1,
     "'empty' is not a token dataset: no index.json",
     [](const fs::path& d) { fs::create_directories(d / "empty"); }},
    {"dataset sampled from another model", train + "output_dir=r3 data.source=dataset data.path=other", 1,
     "other: dataset vocab size 32000 does not fit the teacher's 370",
     [](const fs::path& d) {
       copy_dir(d / "data", d / "other");
       edit_json(d / "other" / "index.json", [](json& j) { j["vocab_size"] = 32000; });
     }},
    {"dataset tokens.bin truncated", train + "output_dir=r4 data.source=dataset data.path=trunc", 1,
     "trunc/tokens.bin is truncated",
     [](const fs::path& d) {
       copy_dir(d / "data", d / "trunc");
       fs::resize_file(d / "trunc" / "tokens.bin", 10);
     }},
    {"empty text file", train + "output_dir=r5 data.source=text data.path=empty.txt", 1, "empty.txt: no documents",
     [](const fs::path& d) { write_text((d / "empty.txt").string(), ""); }},
    {"checkpoint of a different run", train + "train.max_steps=3 data.seq_len=8", 1,
     "it belongs to a different run (data.seq_len: was 16, now 8)"},
    {"newest checkpoint corrupt: the one before is used", train + "output_dir=rc train.max_steps=3", 0,
     "warning: skipping checkpoint rc/checkpoints/step-00000002: shard-00000-of-00001.pt has 100 bytes",
     [](const fs::path& d) {
       copy_dir(d / "run", d / "rc");
       fs::resize_file(d / "rc" / "checkpoints" / "step-00000002" / "shard-00000-of-00001.pt", 100);
     }},
  });
}

TEST_CASE("bad inputs: model and tokenizer files", "[catalogue][io]") {
  Fixture fx;
  auto model = [](const std::string& name, std::function<void(const fs::path&)> edit) {
    return [=](const fs::path& d) {
      copy_dir(d / "teach" / "teacher", d / name);
      edit(d / name);
    };
  };
  check_rows(fx, {
    {"model folder missing", kEval + "nope", 1, "nope: not a folder"},
    {"text file missing", "onebit-eval --model teach/teacher --ppl nope.txt", 1, "cannot open 'nope.txt'"},
    {"model.safetensors truncated", kEval + "m1", 1, "m1/model.safetensors: tensor 'model.embed_tokens.weight': "
     "data_offsets [0, 23680] out of range",
     model("m1", [](const fs::path& m) { fs::resize_file(m / "model.safetensors", 5000); })},
    {"config.json shape against the weights", kEval + "m2", 1,
     "tensor 'model.embed_tokens.weight' in m2 has shape [370, 16], the config expects [370, 32]",
     model("m2", [](const fs::path& m) {
       edit_json(m / "config.json", [](json& j) { j["hidden_size"] = 32; j["head_dim"] = 16; });
     })},
    {"index.json shard outside the model folder", kEval + "m3", 1,
     "names shard '../outside.safetensors', which is not a plain file name in the model folder",
     model("m3", [](const fs::path& m) {
       fs::rename(m / "model.safetensors", m / "model-00001-of-00001.safetensors");
       write_text((m / "model.safetensors.index.json").string(),
                  R"({"metadata": {}, "weight_map": {"model.embed_tokens.weight": "../outside.safetensors"}})");
     })},
    {"one NaN in the embeddings", kEval + "m4", 1,
     "tensor 'model.embed_tokens.weight' holds 1 NaN or infinite value of 5920",
     model("m4", [](const fs::path& m) {
       edit_tensors(m.string(), [](auto& t) { tensor(t, "model.embed_tokens.weight")[3][1] = NAN; });
     })},
    {"a tensor missing", kEval + "m5", 1, "missing tensor 'model.layers.0.mlp.up_proj.weight' in m5",
     model("m5", [](const fs::path& m) {
       edit_tensors(m.string(), [](auto& t) { erase_tensor(t, "model.layers.0.mlp.up_proj.weight"); });
     })},
    {"tokenizer larger than the model's vocabulary (eval)", kEval + "t1", 1,
     "tokenizer in 't1' has 401 ids but the model at 't1' only 370",
     model("t1", [](const fs::path& m) {
       edit_json(m / "tokenizer.json", [](json& j) { j["model"]["vocab"]["zzz"] = 400; });
     })},
    {"tokenizer larger than the model's vocabulary (generate)", "onebit-generate --model t1 --prompt once", 1,
     "tokenizer in 't1' has 401 ids but the model at 't1' only 370"},
    {"tokenizer.json not JSON", "onebit-generate --model t2 --prompt once", 1, "t2/tokenizer.json: invalid JSON",
     model("t2", [](const fs::path& m) { write_text((m / "tokenizer.json").string(), "{\"model\": "); })},
    {"tokenizer.json with a malformed merge", "onebit-generate --model t3 --prompt ab", 1,
     "t3/tokenizer.json: merge token 'b c' is not in the vocabulary",
     model("t3", [](const fs::path& m) {
       write_text((m / "tokenizer.json").string(),
                  R"({"version": "1.0", "added_tokens": [], "normalizer": null,
                      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
                      "post_processor": null, "decoder": {"type": "ByteLevel"},
                      "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                                "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b c"]}})");
     })},
    {"tokenizer.json of an unsupported kind", "onebit-generate --model t4 --prompt ab", 1,
     "tokenizer.json uses model type 'Unigram2', which onebit does not support",
     model("t4", [](const fs::path& m) {
       edit_json(m / "tokenizer.json", [](json& j) { j["model"]["type"] = "Unigram2"; });
     })},
    {"invalid UTF-8 in the prompt is encoded, not refused",
     "onebit-generate --model teach/teacher --max-new-tokens 2 --prompt \"$(printf 'once \\377\\376 upon')\"", 0,
     "2 tokens in"},
    {"an unknown --decode mode", "onebit-generate --model teach/teacher --decode fast --prompt once", 1,
     "--decode: unknown decode mode 'fast' (expected auto, dynamic, static or graph)"},
    {"ONEBIT_FUSED_OPS neither 0 nor 1", "ONEBIT_FUSED_OPS=yes onebit-generate --model teach/teacher --prompt once", 1,
     "ONEBIT_FUSED_OPS must be 0 or 1, got 'yes'"},
    {"CUDA-graph decoding of a model on the CPU",
     "onebit-generate --model teach/teacher --device cpu --decode graph --prompt once", 1,
     "decoding with a CUDA graph needs the model on a CUDA device, it is on cpu"},
    {"zero-shot task file of the wrong kind", "onebit-eval --model teach/teacher --tasks piqa=teach/heldout.txt", 1,
     "teach/heldout.txt:1: malformed JSON line"},
  });
}

TEST_CASE("bad inputs: exported 1-bit models", "[catalogue][export]") {
  Fixture fx;
  fx.need_export();
  auto exported = [](const std::string& name, std::function<void(const fs::path&)> edit) {
    return [=](const fs::path& d) {
      copy_dir(d / "export", d / name);
      edit(d / name);
    };
  };
  check_rows(fx, {
    {"packed signs one byte short per row", kEval + "e1", 1,
     "tensor 'model.layers.0.mlp.down_proj.weight_packed' in e1: packed signs have shape [16, 2], expected [16, 3]",
     exported("e1", [](const fs::path& m) {
       edit_tensors(m.string(), [](auto& t) {
         auto& w = tensor(t, "model.layers.0.mlp.down_proj.weight_packed");
         w = w.narrow(1, 0, w.size(1) - 1).contiguous();
       });
     })},
    {"format version from the future", kEval + "e2", 1,
     "e2/config.json: quantization_config: format_version 2 is not supported (this build reads 1)",
     exported("e2", [](const fs::path& m) {
       edit_json(m / "config.json", [](json& j) { j["quantization_config"]["format_version"] = 2; });
     })},
    {"a layer's h missing", "onebit-generate --model e3 --prompt once", 1,
     "missing tensor 'model.layers.0.self_attn.q_proj.h' in e3",
     exported("e3", [](const fs::path& m) {
       edit_tensors(m.string(), [](auto& t) { erase_tensor(t, "model.layers.0.self_attn.q_proj.h"); });
     })},
    {"g in another dtype than scale_dtype", kEval + "e4", 1,
     "tensor 'model.layers.0.mlp.up_proj.g' in e4 has dtype float32, quantization_config.scale_dtype says float16",
     exported("e4", [](const fs::path& m) {
       edit_tensors(m.string(), [](auto& t) {
         auto& g = tensor(t, "model.layers.0.mlp.up_proj.g");
         g = g.to(torch::kFloat32);
       });
     })},
    {"exporting a model that is not a student", "onebit-export --model teach/teacher --out x1", 1,
     "export: the model has no OneBitLinear layer (is it a OneBit student?)"},
    {"exporting into a folder that is not empty", "onebit-export --model run/student --out export", 1,
     "export: 'export' exists and is not empty (pass --overwrite to replace it)"},
  });
}
