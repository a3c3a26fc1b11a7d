// Safetensors reader (mmap) and atomic writer. See safetensors.h for the format.
#include "onebit/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/util/strings.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace onebit::io {

namespace {

// The on-disk dtype names, in one table for both directions.
struct DtypeName {
  const char* name;
  torch::Dtype dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"F64", torch::kFloat64}, {"I64", torch::kInt64},   {"I32", torch::kInt32},
    {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

std::optional<torch::Dtype> dtype_from_name(const std::string& s) {
  for (const auto& d : kDtypes)
    if (s == d.name) return d.dtype;
  return std::nullopt;
}

const char* dtype_name(torch::Dtype dt) {
  for (const auto& d : kDtypes)
    if (dt == d.dtype) return d.name;
  return nullptr;
}

std::string errno_text() { return std::strerror(errno); }

// The reference implementation's cap on the JSON header (100 MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// One memory-mapped .safetensors file.
struct MappedFile {
  std::string path;
  const uint8_t* base = nullptr;
  size_t size = 0;
  size_t data_start = 0;  // 8 + header length

  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (base) munmap(const_cast<uint8_t*>(base), size);
  }
};

struct Entry {
  TensorInfo info;
  const MappedFile* file = nullptr;
  size_t begin = 0, end = 0;  // absolute byte offsets in the file
};

// Checked non-negative integer from a JSON value (rejects floats, negatives, strings).
bool as_size(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

struct SafetensorsReader::Impl {
  std::string source;  // what the user passed
  std::vector<std::unique_ptr<MappedFile>> files;
  std::map<std::string, Entry> entries;
  std::map<std::string, std::string> metadata;

  // Maps `path` and adds its tensors to `entries`.
  void add_file(const std::string& path) {
    auto mf = std::make_unique<MappedFile>();
    mf->path = path;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, ": cannot open safetensors file: ", errno_text());
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      std::string why = errno_text();
      ::close(fd);
      fail(path, ": cannot stat: ", why);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(path, ": not a regular file");
    }
    const size_t size = static_cast<size_t>(st.st_size);
    if (size < 8) {
      ::close(fd);
      fail(path, ": file is ", size, " bytes, shorter than the 8-byte header length");
    }
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    std::string why = p == MAP_FAILED ? errno_text() : "";
    ::close(fd);  // the mapping keeps the file alive
    if (p == MAP_FAILED) fail(path, ": mmap failed: ", why);
    mf->base = static_cast<const uint8_t*>(p);
    mf->size = size;

    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | mf->base[i];  // little-endian
    if (n > kMaxHeaderBytes)
      fail(path, ": header length ", n, " exceeds the ", kMaxHeaderBytes, "-byte limit");
    if (n > size - 8) fail(path, ": header length ", n, " goes beyond the file (", size, " bytes)");
    mf->data_start = 8 + static_cast<size_t>(n);
    const size_t data_size = size - mf->data_start;

    // A key given twice would silently keep the last value: the callback sees every top-level key.
    std::set<std::string> keys;
    std::string duplicate;
    json header = json::parse(
        reinterpret_cast<const char*>(mf->base) + 8,
        reinterpret_cast<const char*>(mf->base) + mf->data_start,
        [&](int depth, json::parse_event_t ev, json& parsed) {
          if (depth == 1 && ev == json::parse_event_t::key && !keys.insert(parsed.get<std::string>()).second &&
              duplicate.empty())
            duplicate = parsed.get<std::string>();
          return true;
        },
        /*allow_exceptions=*/false);
    if (header.is_discarded()) fail(path, ": invalid JSON header");
    if (!duplicate.empty()) fail(path, ": key '", duplicate, "' appears twice in the JSON header");
    if (!header.is_object()) fail(path, ": JSON header is not an object");

    std::vector<std::pair<size_t, size_t>> ranges;  // relative [begin, end) of non-empty tensors
    std::vector<std::string> range_names;
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) fail(path, ": __metadata__ is not an object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string())
            fail(path, ": __metadata__ value for '", m.key(), "' is not a string");
          metadata[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      auto bad = [&](const std::string& what) { fail(path, ": tensor '", name, "': ", what); };
      if (!v.is_object()) bad("entry is not an object");
      if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing dtype");
      const std::string dts = v["dtype"].get<std::string>();
      auto dt = dtype_from_name(dts);
      if (!dt) bad("unknown dtype '" + dts + "'");
      if (!v.contains("shape") || !v["shape"].is_array()) bad("missing shape");
      std::vector<int64_t> shape;
      uint64_t numel = 1;
      bool numel_overflow = false, has_zero = false;
      for (const auto& d : v["shape"]) {
        uint64_t x = 0;
        if (!as_size(d, x) || x > static_cast<uint64_t>(INT64_MAX))
          bad("invalid shape " + v["shape"].dump());
        has_zero |= x == 0;
        if (x != 0 && numel > UINT64_MAX / x) numel_overflow = true;
        if (!numel_overflow) numel *= x;
        shape.push_back(static_cast<int64_t>(x));
      }
      if (has_zero) numel = 0, numel_overflow = false;  // [huge, huge, 0] holds no element
      const json& off = v.contains("data_offsets") ? v["data_offsets"] : json();
      uint64_t b = 0, e = 0;
      if (!off.is_array() || off.size() != 2 || !as_size(off[0], b) || !as_size(off[1], e))
        bad("missing or invalid data_offsets");
      if (b > e || e > data_size)
        bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
            "] out of range (data section is " + std::to_string(data_size) + " bytes)");
      const uint64_t item = c10::elementSize(*dt);
      if (numel_overflow || numel > UINT64_MAX / item || e - b != numel * item)
        bad("byte size " + std::to_string(e - b) + " does not match shape " + v["shape"].dump() +
            " x " + std::to_string(item) + " bytes (" + dts + ")");
      if (entries.count(name))
        fail(path, ": tensor '", name, "' also in ", entries.at(name).info.file);
      ranges.emplace_back(b, e);
      range_names.push_back(name);
      Entry en;
      en.info = TensorInfo{name, *dt, std::move(shape), path};
      en.file = mf.get();
      en.begin = mf->data_start + b;
      en.end = mf->data_start + e;
      entries.emplace(name, std::move(en));
    }
    // As the reference implementation: sorted by offsets, the tensors tile the data section
    // exactly, each starting where the previous one ends (no overlap, no hole, nothing after).
    std::vector<size_t> order(ranges.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t c) { return ranges[a] < ranges[c]; });
    uint64_t at = 0;
    for (size_t k = 0; k < order.size(); ++k) {
      const auto& cur = ranges[order[k]];
      if (cur.first < at)
        fail(path, ": tensors '", range_names[order[k - 1]], "' and '", range_names[order[k]],
             "' have overlapping data_offsets");
      if (cur.first > at)
        fail(path, ": tensor '", range_names[order[k]], "' starts at byte ", cur.first, " but the data before it ends at ",
             at, " (a hole in the data section)");
      at = cur.second;
    }
    if (at != data_size)
      fail(path, ": the tensors end at byte ", at, " of a ", data_size, "-byte data section (trailing bytes)");
    files.push_back(std::move(mf));
  }

  void add_index(const std::string& index_path) {
    const std::string text = read_file(index_path);
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) fail(index_path, ": invalid JSON");
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index_path, ": no \"weight_map\" object");
    const fs::path dir = fs::path(index_path).parent_path();
    std::map<std::string, std::string> want;  // tensor -> shard path
    std::vector<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail(index_path, ": weight_map entry '", it.key(), "' is not a file name");
      // Shards live in the index's own folder: a name with a folder part could read any file.
      const std::string file = it.value().get<std::string>();
      if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
          file.find('\\') != std::string::npos)
        fail(index_path, ": weight_map entry '", it.key(), "' names shard '", file,
             "', which is not a plain file name in the model folder");
      const std::string shard = (dir / file).string();
      if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
      want[it.key()] = shard;
    }
    std::sort(shards.begin(), shards.end());
    for (const auto& s : shards) {
      if (!fs::exists(s)) fail(index_path, ": shard ", s, " is missing");
      add_file(s);
    }
    for (const auto& [name, shard] : want) {
      auto it = entries.find(name);
      if (it == entries.end() || it->second.info.file != shard)
        fail(index_path, ": tensor '", name, "' is not in its shard ", shard);
    }
  }

  const Entry& entry(const std::string& name) const {
    auto it = entries.find(name);
    if (it == entries.end()) fail("tensor '", name, "' not found in ", source);
    return it->second;
  }
};

SafetensorsReader::SafetensorsReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->source = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, ": no such file or folder");
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / "model.safetensors.index.json")) {
      impl_->add_index((dir / "model.safetensors.index.json").string());
    } else if (fs::exists(dir / "model.safetensors")) {
      impl_->add_file((dir / "model.safetensors").string());
    } else {
      // Otherwise accept exactly one *.safetensors.index.json or one *.safetensors.
      std::vector<fs::path> idx, st;
      for (const auto& de : fs::directory_iterator(dir)) {
        const std::string fn = de.path().filename().string();
        if (ends_with(fn, ".safetensors.index.json"))
          idx.push_back(de.path());
        else if (ends_with(fn, ".safetensors"))
          st.push_back(de.path());
      }
      if (idx.size() == 1)
        impl_->add_index(idx[0].string());
      else if (idx.empty() && st.size() == 1)
        impl_->add_file(st[0].string());
      else
        fail(path, ": no model.safetensors or model.safetensors.index.json in this folder");
    }
  } else {
    const std::string fn = fs::path(path).filename().string();
    if (ends_with(fn, ".json"))
      impl_->add_index(path);
    else
      impl_->add_file(path);
  }
}

SafetensorsReader::~SafetensorsReader() = default;
SafetensorsReader::SafetensorsReader(SafetensorsReader&&) noexcept = default;
SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&&) noexcept = default;

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  out.reserve(impl_->entries.size());
  for (const auto& kv : impl_->entries) out.push_back(kv.first);
  return out;
}

bool SafetensorsReader::contains(const std::string& name) const {
  return impl_->entries.count(name) != 0;
}

const TensorInfo& SafetensorsReader::info(const std::string& name) const {
  return impl_->entry(name).info;
}

torch::Tensor SafetensorsReader::load(const std::string& name, std::optional<torch::Dtype> dtype,
                                      torch::Device device) const {
  const Entry& e = impl_->entry(name);
  const torch::Dtype stored = e.info.dtype;
  const torch::Dtype target = dtype.value_or(stored);
  const void* src = e.file->base + e.begin;
  const size_t nbytes = e.end - e.begin;
  const auto cpu = torch::TensorOptions().dtype(stored).device(torch::kCPU);
  // Safetensors only guarantees alignment when the writer sorted by dtype size; copy a
  // misaligned blob into an aligned buffer before any typed kernel reads it.
  torch::Tensor view;
  try {
    if (reinterpret_cast<uintptr_t>(src) % c10::elementSize(stored) == 0) {
      view = torch::from_blob(const_cast<void*>(src), e.info.shape, cpu);
    } else {
      view = torch::empty(e.info.shape, cpu);
      if (nbytes > 0) std::memcpy(view.data_ptr(), src, nbytes);  // an empty tensor has no data pointer
    }
  } catch (const c10::Error&) {
    // A valid header such as [2^32, 2^32, 0] (no element) still overflows LibTorch's size checks.
    fail(e.info.file, ": tensor '", name, "' has shape ", c10::IntArrayRef(e.info.shape),
         ", which a LibTorch tensor cannot hold (its size arithmetic overflows)");
  }
  // A NaN/inf weight would otherwise surface much later as a "-nan" perplexity with exit 0.
  if (c10::isFloatingType(stored)) {
    const int64_t bad = view.numel() - torch::isfinite(view).sum().item<int64_t>();
    if (bad > 0)
      fail(e.info.file, ": tensor '", name, "' holds ", bad, " NaN or infinite value", bad == 1 ? "" : "s",
           " of ", view.numel(), " (a corrupt or diverged file)");
  }
  // copy=true: the result never aliases the read-only mapping.
  return view.to(torch::TensorOptions().dtype(target).device(device), /*non_blocking=*/false,
                 /*copy=*/true);
}

const std::map<std::string, std::string>& SafetensorsReader::metadata() const {
  return impl_->metadata;
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path, ": write failed: ", errno_text());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Runs `body(fd)` on a temp file beside `path`, then fsync + rename over `path`. On any error
// the temp file is removed and `path` is untouched.
void atomic_write(const std::string& path, const std::function<void(int)>& body) {
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(path, ": folder ", dir.string(), " does not exist");
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  int fd = ::mkstemp(buf.data());
  if (fd < 0) fail(path, ": cannot create temp file in ", dir.string(), ": ", errno_text());
  const std::string tmp(buf.data());
  try {
    body(fd);
    if (::fsync(fd) != 0) fail(path, ": fsync failed: ", errno_text());
    // mkstemp makes 0600 files; give the result ordinary permissions (umask applies).
    mode_t mask = ::umask(0);
    ::umask(mask);
    ::fchmod(fd, 0666 & ~mask);
    if (::close(fd) != 0) {
      fd = -1;
      fail(path, ": close failed: ", errno_text());
    }
    fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(path, ": rename from ", tmp, " failed: ", errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Persist the rename itself.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

void write_safetensors_streamed(const std::string& path, const std::vector<TensorSpec>& specs,
                                const std::function<torch::Tensor(size_t)>& tensor_at,
                                const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& sp : specs) {
    if (sp.name.empty() || sp.name == "__metadata__") fail(path, ": invalid tensor name '", sp.name, "'");
    if (!seen.insert(sp.name).second) fail(path, ": tensor name '", sp.name, "' given twice");
    if (!dtype_name(sp.dtype)) fail(path, ": tensor '", sp.name, "' has unsupported dtype ", sp.dtype);
    uint64_t numel = 1;
    for (const int64_t d : sp.shape) {
      OB_CHECK(d >= 0, path, ": tensor '", sp.name, "' has a negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t nbytes = numel * c10::elementSize(sp.dtype);
    header[sp.name] = {{"dtype", dtype_name(sp.dtype)}, {"shape", sp.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * i));

  atomic_write(path, [&](int fd) {
    write_all(fd, len, 8, path);
    write_all(fd, h.data(), h.size(), path);
    for (size_t i = 0; i < specs.size(); ++i) {
      const torch::Tensor t = tensor_at(i);
      OB_CHECK(t.defined() && t.scalar_type() == specs[i].dtype && t.sizes() == c10::IntArrayRef(specs[i].shape),
               path, ": tensor '", specs[i].name, "' is not the ", dtype_name(specs[i].dtype), " ",
               c10::IntArrayRef(specs[i].shape), " its header entry says");
      // One tensor at a time on CPU, so GPU checkpoints don't need a full host copy.
      const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
      write_all(fd, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size(), path);
    }
  });
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Same order as the Python library: larger dtypes first, then by name, so every tensor
  // starts aligned to its element size.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].second.defined()) fail(path, ": tensor '", tensors[i].first, "' is undefined");
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    size_t sa = tensors[a].second.element_size(), sb = tensors[b].second.element_size();
    if (sa != sb) return sa > sb;
    return tensors[a].first < tensors[b].first;
  });
  std::vector<TensorSpec> specs;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    specs.push_back({name, t.scalar_type(), t.sizes().vec()});
  }
  write_safetensors_streamed(path, specs, [&](size_t i) { return tensors[order[i]].second; }, metadata);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  atomic_write(path, [&](int fd) { write_all(fd, contents.data(), contents.size(), path); });
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, ": no such file");
  if (fs::is_directory(path, ec)) fail(path, ": is a folder, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, ": read failed");
  return ss.str();
}

}  // namespace onebit::io
