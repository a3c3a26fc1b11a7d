// Safetensors reader/writer: round trips, Python interop, sharded index, shared model,
// and every malformed-file error.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "tests/io/test_util.h"
#include "tests/support.h"
#include "tests/references.h"

using onebit::io::SafetensorsReader;
using onebit::io::write_safetensors;
using onebit::test::TempDir;

namespace {

const std::vector<torch::Dtype> kAllDtypes = {
    torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kFloat64, torch::kInt64,
    torch::kInt32,   torch::kInt16,   torch::kInt8,     torch::kUInt8,   torch::kBool};

// A deterministic tensor of `dt` with a mix of values (negatives where signed).
torch::Tensor sample(torch::Dtype dt, std::vector<int64_t> shape, int seed) {
  auto g = torch::arange(0, c10::multiply_integers(shape), torch::kFloat64).reshape(shape);
  auto x = torch::sin(g * 1.7 + seed) * 100;
  if (dt == torch::kBool) return x > 0;
  if (dt == torch::kUInt8) return x.abs().to(dt);
  return x.to(dt);
}

// A file with the given raw header JSON and `data_bytes` zero bytes of data.
void craft(const std::string& path, const std::string& header, size_t data_bytes,
           std::optional<uint64_t> declared_len = std::nullopt) {
  std::string out(8, '\0');
  uint64_t n = declared_len.value_or(header.size());
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  out += header;
  out.append(data_bytes, '\0');
  onebit::test::write_text(path, out);
}

}  // namespace

TEST_CASE("safetensors round trip for every dtype", "[io]") {
  TempDir dir;
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  int i = 0;
  for (auto dt : kAllDtypes) {
    ts.emplace_back("t." + std::string(c10::toString(dt)), sample(dt, {3, 5}, i++));
  }
  ts.emplace_back("scalar", torch::tensor(3.5, torch::kFloat32).reshape({}));
  ts.emplace_back("empty", torch::zeros({0, 4}, torch::kFloat16));
  ts.emplace_back("noncontig", sample(torch::kFloat32, {4, 6}, 9).t());
  const std::string path = dir / "model.safetensors";
  write_safetensors(path, ts, {{"format", "pt"}, {"note", "round trip"}});

  // Header padded to 8 bytes; nothing else left in the folder (the temp file was renamed).
  std::string raw = onebit::test::read_text(path);
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | uint8_t(raw[k]);
  CHECK(n % 8 == 0);
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path), {}) == 1);

  SafetensorsReader r(path);
  CHECK(r.names().size() == ts.size());
  CHECK(r.metadata().at("format") == "pt");
  CHECK(r.metadata().at("note") == "round trip");
  for (const auto& [name, t] : ts) {
    INFO(name);
    REQUIRE(r.contains(name));
    CHECK(r.info(name).dtype == t.scalar_type());
    CHECK(r.info(name).shape == t.sizes().vec());
    CHECK(r.info(name).file == path);
    auto got = r.load(name);
    CHECK(got.scalar_type() == t.scalar_type());
    CHECK(torch::equal(got, t.contiguous()));
  }
  // Conversion on load: BF16 -> F32 is exact; F32 -> F16 equals torch's own cast.
  CHECK(torch::equal(r.load("t.BFloat16", torch::kFloat32), ts[2].second.to(torch::kFloat32)));
  CHECK(torch::equal(r.load("t.Float", torch::kFloat16), ts[0].second.to(torch::kFloat16)));
  // Loaded tensors own their memory: writing to them doesn't touch the mapping.
  auto a = r.load("t.Float");
  a.fill_(0);
  CHECK(torch::equal(r.load("t.Float"), ts[0].second));
  // Move keeps the mapping valid.
  SafetensorsReader moved = std::move(r);
  CHECK(torch::equal(moved.load("t.Int"), ts[5].second));
}

TEST_CASE("safetensors writer rejects bad input and leaves no file", "[io]") {
  TempDir dir;
  const std::string path = dir / "x.safetensors";
  auto t = torch::ones({2});
  CHECK_THROWS_WITH(write_safetensors(path, {{"a", t}, {"a", t}}), OB_CONTAINS("given twice"));
  CHECK_THROWS_WITH(write_safetensors(path, {{"c", torch::ones({2}, torch::kComplexFloat)}}),
                    OB_CONTAINS("unsupported dtype"));
  CHECK_THROWS_WITH(write_safetensors(dir / "nodir/x.safetensors", {{"a", t}}),
                    OB_CONTAINS("does not exist"));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path), {}) == 0);

  // Atomic overwrite: an old file stays intact when the new write fails.
  write_safetensors(path, {{"a", t}});
  CHECK_THROWS(write_safetensors(path, {{"a", t}, {"a", t}}));
  CHECK(torch::equal(SafetensorsReader(path).load("a"), t));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path), {}) == 1);
}

TEST_CASE("safetensors: a NaN or inf weight is an error on load, naming tensor and count", "[io]") {
  TempDir dir;
  auto w = torch::ones({3, 4});
  w[1][2] = std::numeric_limits<float>::quiet_NaN();
  w[2][0] = -std::numeric_limits<float>::infinity();
  write_safetensors(dir / "m.safetensors", {{"emb", w.to(torch::kBFloat16)}, {"ids", torch::arange(3)}});
  SafetensorsReader r(dir / "m.safetensors");
  CHECK_THROWS_WITH(r.load("emb"), OB_CONTAINS("m.safetensors: tensor 'emb' holds 2 NaN or infinite values of 12"));
  CHECK_THROWS_WITH(r.load("emb", torch::kFloat32), OB_CONTAINS("holds 2 NaN"));
  CHECK(torch::equal(r.load("ids"), torch::arange(3)));  // integer tensors are not checked
}

TEST_CASE("write_file_atomic and read_file", "[io]") {
  TempDir dir;
  const std::string p = dir / "config.json";
  onebit::io::write_file_atomic(p, "{\"a\": 1}\n");
  CHECK(onebit::io::read_file(p) == "{\"a\": 1}\n");
  onebit::io::write_file_atomic(p, std::string("bin\0ary", 7));
  CHECK(onebit::io::read_file(p) == std::string("bin\0ary", 7));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path), {}) == 1);
  CHECK_THROWS_WITH(onebit::io::read_file(dir / "missing.txt"),
                    OB_CONTAINS("missing.txt: no such file"));
}

TEST_CASE("safetensors sharded index and folders", "[io]") {
  TempDir dir;
  auto a = sample(torch::kFloat32, {4, 4}, 1), b = sample(torch::kBFloat16, {7}, 2),
       c = sample(torch::kInt64, {2, 3}, 3);
  write_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", a}, {"b", b}});
  write_safetensors(dir / "model-00002-of-00002.safetensors", {{"c", c}});
  const std::string index = R"({"metadata": {"total_size": 126}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})";
  onebit::test::write_text(dir / "model.safetensors.index.json", index);

  for (const std::string& src : {dir / "model.safetensors.index.json", dir.path.string()}) {
    SafetensorsReader r(src);
    CHECK(r.names() == std::vector<std::string>{"a", "b", "c"});
    CHECK(torch::equal(r.load("a"), a));
    CHECK(torch::equal(r.load("b"), b));
    CHECK(torch::equal(r.load("c"), c));
    CHECK(r.info("c").file == dir / "model-00002-of-00002.safetensors");
  }

  // Folder with a single model.safetensors.
  TempDir one;
  write_safetensors(one / "model.safetensors", {{"a", a}});
  CHECK(torch::equal(SafetensorsReader(one.path.string()).load("a"), a));

  // Index naming a shard that isn't there.
  TempDir broken;
  write_safetensors(broken / "model-00001-of-00002.safetensors", {{"a", a}});
  onebit::test::write_text(broken / "model.safetensors.index.json",
                           R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                              "c": "model-00002-of-00002.safetensors"}})");
  CHECK_THROWS_WITH(SafetensorsReader(broken.path.string()),
                    OB_CONTAINS("model-00002-of-00002.safetensors is missing"));
  // Index naming a tensor its shard lacks.
  onebit::test::write_text(broken / "model.safetensors.index.json",
                           R"({"weight_map": {"zz": "model-00001-of-00002.safetensors"}})");
  CHECK_THROWS_WITH(SafetensorsReader(broken.path.string()),
                    OB_CONTAINS("tensor 'zz' is not in its shard"));
  // Shard names stay inside the model folder: no folder part, no "..".
  write_safetensors(dir / "outside.safetensors", {{"a", a}});
  for (const std::string shard : {"../outside.safetensors", "/etc/passwd", "sub/x.safetensors", ".."}) {
    INFO(shard);
    onebit::test::write_text(broken / "model.safetensors.index.json",
                             R"({"weight_map": {"a": ")" + shard + R"("}})");
    CHECK_THROWS_WITH(SafetensorsReader(broken.path.string()),
                      OB_CONTAINS("weight_map entry 'a' names shard '" + shard +
                                  "', which is not a plain file name in the model folder"));
  }
  TempDir empty;
  CHECK_THROWS_WITH(SafetensorsReader(empty.path.string()),
                    OB_CONTAINS("no model.safetensors or model.safetensors.index.json"));
}

TEST_CASE("safetensors malformed files are errors naming file and problem", "[io]") {
  TempDir dir;
  const std::string f = dir / "bad.safetensors";
  const std::string ok = R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})";

  CHECK_THROWS_WITH(SafetensorsReader(dir / "nope.safetensors"),
                    OB_CONTAINS("nope.safetensors: no such file"));

  onebit::test::write_text(f, "abc");
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("bad.safetensors: file is 3 bytes, shorter"));

  craft(f, ok, 16, /*declared_len=*/1000);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("header length 1000 goes beyond the file"));
  craft(f, ok, 16, /*declared_len=*/UINT64_MAX - 1);  // no overflow in the bound check
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("header length 18446744073709551614 exceeds the 100000000-byte limit"));
  craft(f, ok, 16, /*declared_len=*/100'000'001);  // the reference implementation's cap
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("exceeds the 100000000-byte limit"));

  craft(f, R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16])", 16);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("bad.safetensors: invalid JSON header"));

  craft(f, R"({"w": {"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 2]}})", 2);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("tensor 'w': unknown dtype 'F8_E9'"));

  craft(f, R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})", 8);
  CHECK_THROWS_WITH(SafetensorsReader(f),
                    OB_CONTAINS("tensor 'w': data_offsets [0, 16] out of range"));
  craft(f, R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [9, 4]}})", 16);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("out of range"));

  craft(f, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
        12);
  CHECK_THROWS_WITH(SafetensorsReader(f),
                    OB_CONTAINS("tensors 'a' and 'b' have overlapping data_offsets"));

  // The reference implementation's layout rules: no duplicate key, no hole, no trailing bytes.
  craft(f, R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
        16);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("bad.safetensors: key 'w' appears twice in the JSON header"));
  craft(f, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})",
        20);
  CHECK_THROWS_WITH(SafetensorsReader(f),
                    OB_CONTAINS("tensor 'b' starts at byte 12 but the data before it ends at 8 (a hole"));
  craft(f, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("tensor 'a' starts at byte 4 but the data before it ends at 0"));
  craft(f, ok, 24);
  CHECK_THROWS_WITH(SafetensorsReader(f),
                    OB_CONTAINS("the tensors end at byte 16 of a 24-byte data section (trailing bytes)"));
  // A zero dimension after huge ones holds no element: a valid header, whatever the product
  // overflows to (LibTorch cannot make such a tensor, which load() says in one line).
  craft(f, R"({"z": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]},
               "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
        4);
  {
    SafetensorsReader r(f);
    CHECK(r.info("z").shape == std::vector<int64_t>{4294967296, 4294967296, 0});
    CHECK_THROWS_WITH(r.load("z"), OB_CONTAINS("tensor 'z' has shape [4294967296, 4294967296, 0], which a LibTorch "
                                               "tensor cannot hold (its size arithmetic overflows)"));
    CHECK(r.load("w").numel() == 1);
  }

  craft(f, R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}})", 16);
  CHECK_THROWS_WITH(SafetensorsReader(f),
                    OB_CONTAINS("tensor 'w': byte size 16 does not match shape [2,3]"));
  craft(f, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("invalid shape"));
  craft(f, R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})",
        4);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("does not match shape"));
  craft(f, R"({"w": {"dtype": "F32", "shape": [1]}})", 4);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("missing or invalid data_offsets"));
  craft(f, R"([1, 2])", 0);
  CHECK_THROWS_WITH(SafetensorsReader(f), OB_CONTAINS("not an object"));

  craft(f, ok, 16);
  SafetensorsReader r(f);
  CHECK_THROWS_WITH(r.load("missing.weight"), OB_CONTAINS("tensor 'missing.weight' not found in"));
  CHECK_THROWS_WITH(r.info("missing.weight"), OB_CONTAINS("bad.safetensors"));
}

TEST_CASE("safetensors interop with the Python safetensors library", "[io]") {
  OB_REFERENCE_OR_SKIP(onebit::test::python_has("torch, safetensors"),
                     "needs Python with torch + safetensors (" + onebit::test::python() + ")");
  TempDir dir;
  // Python writes; we read. Values are generated the same way on both sides (arange-based),
  // so the comparison is exact.
  const char* py_write = R"PY(
import sys, torch
from safetensors.torch import save_file
dts = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
       "U8": torch.uint8, "BOOL": torch.bool}
out = {}
for k, dt in dts.items():
    x = torch.arange(-7, 8, dtype=torch.float64).reshape(3, 5) * 3.25
    if dt == torch.bool: x = x > 0
    elif dt == torch.uint8: x = x.abs()
    out["p." + k] = x.to(dt)
out["odd"] = torch.arange(3, dtype=torch.int8)  # makes later tensors start at odd offsets
save_file(out, sys.argv[1], metadata={"format": "pt", "who": "python"})
)PY";
  REQUIRE(onebit::test::run_python(py_write, "'" + (dir / "py.safetensors") + "'"));
  SafetensorsReader r(dir / "py.safetensors");
  CHECK(r.metadata().at("who") == "python");
  auto base = torch::arange(-7, 8, torch::kFloat64).reshape({3, 5}) * 3.25;
  const std::vector<std::pair<std::string, torch::Dtype>> names = {
      {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"F64", torch::kFloat64}, {"I64", torch::kInt64},   {"I32", torch::kInt32},
      {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
      {"BOOL", torch::kBool}};
  for (const auto& [k, dt] : names) {
    INFO(k);
    torch::Tensor want = dt == torch::kBool    ? base > 0
                         : dt == torch::kUInt8 ? base.abs().to(dt)
                                               : base.to(dt);
    CHECK(r.info("p." + k).dtype == dt);
    CHECK(torch::equal(r.load("p." + k), want));
  }
  CHECK(torch::equal(r.load("odd"), torch::arange(3, torch::kInt8)));

  // We write; Python reads and checks every value and the metadata.
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  int i = 0;
  for (auto dt : kAllDtypes)
    ts.emplace_back("c." + std::string(c10::toString(dt)), sample(dt, {2, 3}, i++));
  write_safetensors(dir / "cpp.safetensors", ts, {{"format", "pt"}});
  // Expected values as float64 lists (exact for every dtype here) in a JSON file.
  nlohmann::json want;
  for (const auto& [name, t] : ts) {
    auto d = t.to(torch::kFloat64).contiguous();
    want[name] = {
        {"dtype", std::string(c10::toString(t.scalar_type()))},
        {"values", std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel())}};
  }
  onebit::test::write_text(dir / "want.json", want.dump());
  const char* py_check = R"PY(
import sys, json, torch
from safetensors import safe_open
want = json.load(open(sys.argv[2]))
with safe_open(sys.argv[1], "pt") as f:
    assert f.metadata() == {"format": "pt"}, f.metadata()
    assert sorted(f.keys()) == sorted(want), (sorted(f.keys()), sorted(want))
    for k, w in want.items():
        t = f.get_tensor(k)
        assert t.shape == (2, 3), (k, t.shape)
        assert str(t.dtype) == "torch." + {"Float": "float32", "Half": "float16",
            "BFloat16": "bfloat16", "Double": "float64", "Long": "int64", "Int": "int32",
            "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool"}[w["dtype"]], (k, t.dtype)
        assert t.double().flatten().tolist() == w["values"], k
)PY";
  CHECK(onebit::test::run_python(
      py_check, "'" + (dir / "cpp.safetensors") + "' '" + (dir / "want.json") + "'"));
}

TEST_CASE("safetensors reads the shared stories260K checkpoint", "[io]") {
  OB_SHARED_OR_SKIP(dir, "models/stories260K");
  SafetensorsReader r(dir.string());  // folder form
  const auto names = r.names();
  // 5 layers x 9 tensors + embed + final norm; lm_head is tied and not stored.
  CHECK(names.size() == 5 * 9 + 2);
  CHECK(r.info("model.embed_tokens.weight").shape == std::vector<int64_t>{512, 64});
  CHECK(r.info("model.layers.0.mlp.gate_proj.weight").shape == std::vector<int64_t>{172, 64});
  CHECK(r.info("model.layers.0.self_attn.k_proj.weight").shape == std::vector<int64_t>{32, 64});
  int64_t total = 0;
  for (const auto& n : names) {
    CHECK(r.info(n).dtype == torch::kFloat32);
    auto t = r.load(n);
    CHECK(torch::isfinite(t).all().item<bool>());
    total += t.numel();
  }
  CHECK(total == 260032);
  CHECK(r.load("model.embed_tokens.weight", torch::kBFloat16).scalar_type() == torch::kBFloat16);
}

TEST_CASE("safetensors load straight to CUDA with conversion", "[io][cuda]") {
  OB_REQUIRE_OR_SKIP(torch::cuda::is_available(), "needs a CUDA device");
  TempDir dir;
  auto a = sample(torch::kFloat32, {8, 3}, 1);
  write_safetensors(dir / "m.safetensors", {{"a", a}, {"b", a.to(torch::kBFloat16)}});
  SafetensorsReader r(dir / "m.safetensors");
  auto g = r.load("a", torch::kBFloat16, torch::kCUDA);
  CHECK(g.device().is_cuda());
  CHECK(g.scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(g.cpu(), a.to(torch::kBFloat16)));
  CHECK(torch::equal(r.load("b", std::nullopt, torch::kCUDA).cpu(), a.to(torch::kBFloat16)));
}
