#include "onebit/data/token_dataset.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace onebit::data {

namespace {

constexpr const char* kFormat = "onebit-token-dataset";
constexpr const char* kIndex = "index.json";
constexpr const char* kTokens = "tokens.bin";
constexpr const char* kOffsets = "offsets.bin";

int width_for_vocab(int64_t vocab) { return vocab <= 65536 ? 2 : 4; }
const char* dtype_name(int width) { return width == 2 ? "uint16" : "uint32"; }

std::string sys_error() { return std::strerror(errno); }

// ---- little-endian encoding, independent of the host byte order ----
void put_le(std::string& buf, uint64_t v, int width) {
  for (int b = 0; b < width; ++b) buf.push_back(char((v >> (8 * b)) & 0xff));
}
uint64_t get_le(const uint8_t* p, int width) {
  uint64_t v = 0;
  for (int b = 0; b < width; ++b) v |= uint64_t(p[b]) << (8 * b);
  return v;
}

// ---- POSIX file helpers that fail with the path and errno text ----
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Fd open_or_fail(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  OB_CHECK(fd >= 0, "cannot open '", path, "': ", sys_error());
  return Fd(fd);
}

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    OB_CHECK(n > 0, "cannot write '", path, "': ", sys_error());
    done += size_t(n);
  }
}

void fsync_or_fail(int fd, const std::string& path) {
  OB_CHECK(::fsync(fd) == 0, "cannot fsync '", path, "': ", sys_error());
}

int64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return int64_t(st.st_size);
}

// The parsed index.json with every field checked.
struct Index {
  int64_t vocab_size = 0, num_samples = 0, num_tokens = 0;
  int width = 2;
  GeneratorSettings generator;
};

Index read_index(const std::string& dir) {
  const std::string path = dir + "/" + kIndex;
  std::ifstream in(path, std::ios::binary);
  OB_CHECK(in, "'", dir, "' is not a token dataset: no ", kIndex, " (write one with onebit-sample)");
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail(path, ": corrupt index (", e.what(), ")");
  }
  Index ix;
  try {
    OB_CHECK(j.is_object() && j.value("format", "") == kFormat, path, ": corrupt index (format is not '", kFormat, "')");
    const int version = j.at("version").get<int>();
    OB_CHECK(version == kTokenDatasetVersion, path, ": format version ", version, " is not supported (this build reads ",
             kTokenDatasetVersion, ")");
    ix.vocab_size = j.at("vocab_size").get<int64_t>();
    ix.num_samples = j.at("num_samples").get<int64_t>();
    ix.num_tokens = j.at("num_tokens").get<int64_t>();
    const std::string dtype = j.at("dtype").get<std::string>();
    OB_CHECK(ix.vocab_size > 0 && ix.num_samples >= 0 && ix.num_tokens >= 0, path,
             ": corrupt index (negative or zero sizes)");
    ix.width = width_for_vocab(ix.vocab_size);
    OB_CHECK(dtype == dtype_name(ix.width), path, ": corrupt index (dtype '", dtype, "' does not match vocab size ",
             ix.vocab_size, ")");
    for (const auto& [k, v] : j.at("generator").items()) ix.generator[k] = v.get<std::string>();
  } catch (const json::exception& e) {
    fail(path, ": corrupt index (", e.what(), ")");
  }
  return ix;
}

std::string index_json(const Index& ix) {
  json j;
  j["format"] = kFormat;
  j["version"] = kTokenDatasetVersion;
  j["vocab_size"] = ix.vocab_size;
  j["dtype"] = dtype_name(ix.width);
  j["num_samples"] = ix.num_samples;
  j["num_tokens"] = ix.num_tokens;
  j["tokens_file"] = kTokens;
  j["offsets_file"] = kOffsets;
  j["generator"] = ix.generator;
  return j.dump(2) + "\n";
}

// Read-only memory map of the first `bytes` bytes of a file.
struct Mapping {
  void* addr = nullptr;
  size_t bytes = 0;
  Mapping(const std::string& path, size_t n) : bytes(n) {
    if (n == 0) return;
    Fd f = open_or_fail(path, O_RDONLY);
    addr = ::mmap(nullptr, n, PROT_READ, MAP_SHARED, f.fd, 0);
    OB_CHECK(addr != MAP_FAILED, "cannot memory-map '", path, "': ", sys_error());
  }
  ~Mapping() {
    if (addr && addr != MAP_FAILED) ::munmap(addr, bytes);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

}  // namespace

// ======================================================================================
// TokenDataset
// ======================================================================================

struct TokenDataset::Impl {
  std::string where;
  int64_t vocab_size = 0, num_tokens = 0;
  int width = 4;
  std::vector<int64_t> ends;  // end offset of each sample
  std::unique_ptr<Mapping> map;
  std::vector<uint8_t> owned;  // in-memory datasets
  const uint8_t* data = nullptr;
  GeneratorSettings generator;

  int64_t token(int64_t k) const { return int64_t(get_le(data + k * width, width)); }

  // Offsets monotone, ending at num_tokens; every id below the vocab size.
  void check(const std::string& tokens_name) const {
    int64_t prev = 0;
    for (size_t i = 0; i < ends.size(); ++i) {
      OB_CHECK(ends[i] >= prev && ends[i] <= num_tokens, where, ": corrupt offsets (sample ", i, " ends at ", ends[i],
               ", previous at ", prev, ", ", num_tokens, " tokens)");
      prev = ends[i];
    }
    OB_CHECK(prev == num_tokens, where, ": corrupt offsets (last sample ends at ", prev, ", index records ", num_tokens,
             " tokens)");
    for (int64_t k = 0; k < num_tokens; ++k) {
      const int64_t id = token(k);
      if (id >= vocab_size) {
        const auto s = std::upper_bound(ends.begin(), ends.end(), k) - ends.begin();
        fail(tokens_name, ": token id ", id, " at position ", k, " (sample ", s, ") is >= vocab size ", vocab_size);
      }
    }
  }
};

TokenDataset::TokenDataset(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

TokenDataset TokenDataset::open(const std::string& dir) {
  const Index ix = read_index(dir);
  auto impl = std::make_shared<Impl>();
  impl->where = dir;
  impl->vocab_size = ix.vocab_size;
  impl->num_tokens = ix.num_tokens;
  impl->width = ix.width;
  impl->generator = ix.generator;

  const std::string tokens = dir + "/" + kTokens, offsets = dir + "/" + kOffsets;
  const int64_t tok_bytes = ix.num_tokens * ix.width, off_bytes = ix.num_samples * 8;
  const int64_t tok_have = file_size(tokens), off_have = file_size(offsets);
  OB_CHECK(tok_have >= 0, tokens, " is missing (", kIndex, " records ", ix.num_tokens, " tokens)");
  OB_CHECK(off_have >= 0, offsets, " is missing (", kIndex, " records ", ix.num_samples, " samples)");
  OB_CHECK(tok_have >= tok_bytes, tokens, " is truncated: ", kIndex, " records ", ix.num_tokens, " tokens (", tok_bytes,
           " bytes) but the file has ", tok_have, " bytes");
  OB_CHECK(off_have >= off_bytes, offsets, " is truncated: ", kIndex, " records ", ix.num_samples, " samples (",
           off_bytes, " bytes) but the file has ", off_have, " bytes");

  {
    Mapping off(offsets, size_t(off_bytes));
    impl->ends.resize(size_t(ix.num_samples));
    for (int64_t i = 0; i < ix.num_samples; ++i)
      impl->ends[size_t(i)] = int64_t(get_le(static_cast<const uint8_t*>(off.addr) + 8 * i, 8));
  }
  impl->map = std::make_unique<Mapping>(tokens, size_t(tok_bytes));
  impl->data = static_cast<const uint8_t*>(impl->map->addr);
  impl->check(tokens);
  return TokenDataset(std::move(impl));
}

TokenDataset TokenDataset::from_samples(const std::vector<std::vector<int64_t>>& samples, int64_t vocab_size) {
  OB_CHECK(vocab_size > 0, "in-memory token dataset: vocab size must be > 0, got ", vocab_size);
  auto impl = std::make_shared<Impl>();
  impl->where = "<memory>";
  impl->vocab_size = vocab_size;
  impl->width = width_for_vocab(vocab_size);
  std::string buf;
  for (size_t i = 0; i < samples.size(); ++i) {
    for (int64_t id : samples[i]) {
      OB_CHECK(id >= 0 && id < vocab_size, "in-memory token dataset: token id ", id, " in sample ", i,
               " is outside the vocabulary [0, ", vocab_size, ")");
      put_le(buf, uint64_t(id), impl->width);
    }
    impl->num_tokens += int64_t(samples[i].size());
    impl->ends.push_back(impl->num_tokens);
  }
  impl->owned.assign(buf.begin(), buf.end());
  impl->data = impl->owned.data();
  return TokenDataset(std::move(impl));
}

int64_t TokenDataset::size() const { return int64_t(impl_->ends.size()); }
int64_t TokenDataset::num_tokens() const { return impl_->num_tokens; }
int64_t TokenDataset::vocab_size() const { return impl_->vocab_size; }
const GeneratorSettings& TokenDataset::generator() const { return impl_->generator; }
const std::string& TokenDataset::where() const { return impl_->where; }

int64_t TokenDataset::begin(int64_t i) const {
  OB_CHECK(i >= 0 && i < size(), impl_->where, ": sample ", i, " out of range [0, ", size(), ")");
  return i == 0 ? 0 : impl_->ends[size_t(i - 1)];
}
int64_t TokenDataset::length(int64_t i) const { return impl_->ends[size_t(i)] - begin(i); }

void TokenDataset::read_tokens(int64_t first, int64_t count, int64_t* out) const {
  OB_CHECK(first >= 0 && count >= 0 && first + count <= impl_->num_tokens, impl_->where, ": tokens [", first, ", ",
           first + count, ") out of range [0, ", impl_->num_tokens, ")");
  for (int64_t k = 0; k < count; ++k) out[k] = impl_->token(first + k);
}

std::vector<int64_t> TokenDataset::sample(int64_t i) const {
  std::vector<int64_t> ids(size_t(length(i)));
  read_tokens(begin(i), int64_t(ids.size()), ids.data());
  return ids;
}

// ======================================================================================
// TokenDatasetWriter
// ======================================================================================

struct TokenDatasetWriter::Impl {
  std::string dir;
  Index ix;             // committed state
  Fd tokens, offsets;   // positioned at the committed ends
  std::string tok_buf, off_buf;
  int64_t pending = 0, pending_tokens = 0;
};

TokenDatasetWriter::TokenDatasetWriter(const std::string& dir, int64_t vocab_size, GeneratorSettings generator)
    : impl_(std::make_unique<Impl>()) {
  OB_CHECK(vocab_size > 0, dir, ": vocab size must be > 0, got ", vocab_size);
  auto& s = *impl_;
  s.dir = dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  OB_CHECK(!ec, "cannot create '", dir, "': ", ec.message());

  // One writer per folder (two ranks sampling into one cache would truncate each other).
  const std::string tp = dir + "/" + kTokens, op = dir + "/" + kOffsets;
  s.tokens = open_or_fail(tp, O_RDWR | O_CREAT);
  OB_CHECK(::flock(s.tokens.fd, LOCK_EX | LOCK_NB) == 0, dir,
           ": another process is writing this dataset (", kTokens, " is locked)");

  if (fs::exists(dir + "/" + kIndex)) {
    s.ix = read_index(dir);
    OB_CHECK(s.ix.vocab_size == vocab_size, dir, ": existing dataset has vocab size ", s.ix.vocab_size,
             ", this run has ", vocab_size, " (use another output folder)");
    for (const auto& [k, v] : generator) {
      auto it = s.ix.generator.find(k);
      OB_CHECK(it != s.ix.generator.end() && it->second == v, dir, ": cannot resume: existing samples were made with ",
               k, "=", (it == s.ix.generator.end() ? "<unset>" : it->second), ", this run asks for ", k, "=", v,
               " (use the same settings or another output folder)");
    }
    for (const auto& [k, v] : s.ix.generator)
      OB_CHECK(generator.count(k), dir, ": cannot resume: existing samples were made with ", k, "=", v,
               ", this run does not set ", k);
  } else {
    s.ix.vocab_size = vocab_size;
    s.ix.width = width_for_vocab(vocab_size);
    s.ix.generator = std::move(generator);
  }

  // Cut whatever an interrupted run wrote past the last commit, then append from there.
  s.offsets = open_or_fail(op, O_RDWR | O_CREAT);
  const int64_t tok_bytes = s.ix.num_tokens * s.ix.width, off_bytes = s.ix.num_samples * 8;
  OB_CHECK(file_size(tp) >= tok_bytes, tp, " is truncated: ", kIndex, " records ", s.ix.num_tokens, " tokens (",
           tok_bytes, " bytes) but the file has ", file_size(tp), " bytes");
  OB_CHECK(file_size(op) >= off_bytes, op, " is truncated: ", kIndex, " records ", s.ix.num_samples, " samples (",
           off_bytes, " bytes) but the file has ", file_size(op), " bytes");
  OB_CHECK(::ftruncate(s.tokens.fd, tok_bytes) == 0, "cannot truncate '", tp, "': ", sys_error());
  OB_CHECK(::ftruncate(s.offsets.fd, off_bytes) == 0, "cannot truncate '", op, "': ", sys_error());
  ::lseek(s.tokens.fd, tok_bytes, SEEK_SET);
  ::lseek(s.offsets.fd, off_bytes, SEEK_SET);
  fsync_or_fail(s.tokens.fd, tp);
  fsync_or_fail(s.offsets.fd, op);
  io::write_file_atomic(dir + "/" + kIndex, index_json(s.ix));
}

TokenDatasetWriter::~TokenDatasetWriter() = default;

void TokenDatasetWriter::append(const std::vector<int64_t>& ids) {
  auto& s = *impl_;
  const int64_t sample = s.ix.num_samples + s.pending;
  for (size_t k = 0; k < ids.size(); ++k) {
    OB_CHECK(ids[k] >= 0 && ids[k] < s.ix.vocab_size, s.dir, ": token id ", ids[k], " at position ", k, " of sample ",
             sample, " is outside the vocabulary [0, ", s.ix.vocab_size, ")");
    put_le(s.tok_buf, uint64_t(ids[k]), s.ix.width);
  }
  s.pending_tokens += int64_t(ids.size());
  ++s.pending;
  put_le(s.off_buf, uint64_t(s.ix.num_tokens + s.pending_tokens), 8);
}

void TokenDatasetWriter::commit() {
  auto& s = *impl_;
  if (s.pending == 0) return;
  // Data first, durable, then the index that makes it count (temp file, fsync, rename).
  write_all(s.tokens.fd, s.tok_buf, s.dir + "/" + kTokens);
  write_all(s.offsets.fd, s.off_buf, s.dir + "/" + kOffsets);
  fsync_or_fail(s.tokens.fd, s.dir + "/" + kTokens);
  fsync_or_fail(s.offsets.fd, s.dir + "/" + kOffsets);
  Index next = s.ix;
  next.num_samples += s.pending;
  next.num_tokens += s.pending_tokens;
  io::write_file_atomic(s.dir + "/" + kIndex, index_json(next));
  s.ix = next;
  s.tok_buf.clear();
  s.off_buf.clear();
  s.pending = s.pending_tokens = 0;
}

int64_t TokenDatasetWriter::committed() const { return impl_->ix.num_samples; }
int64_t TokenDatasetWriter::pending() const { return impl_->pending; }

}  // namespace onebit::data
