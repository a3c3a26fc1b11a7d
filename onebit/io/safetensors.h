// Safetensors reading (memory-mapped, single file or sharded index) and writing (atomic).
// Format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data buffer. Every malformed case is an onebit::Error naming the file. The reader
// enforces what the reference implementation does: a header of at most 100 MB, no duplicate
// keys, tensors that tile the data section exactly (no overlap, hole or trailing bytes), byte
// sizes that match dtype x shape (overflow-safe), shard names that stay inside the model
// folder; and, beyond it, no NaN/inf in a loaded floating-point tensor.
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace onebit::io {

struct TensorInfo {
  std::string name;
  torch::Dtype dtype;           // F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
  std::vector<int64_t> shape;
  std::string file;             // which file holds it (sharded checkpoints)
};

// A checkpoint: one model.safetensors, a model.safetensors.index.json with its shards, or a
// folder holding either. Files stay memory-mapped while the reader lives.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(SafetensorsReader&&) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept;

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  // Copies the tensor into a fresh tensor on `device`, converted to `dtype`
  // (std::nullopt keeps the stored dtype).
  torch::Tensor load(const std::string& name, std::optional<torch::Dtype> dtype = std::nullopt,
                     torch::Device device = torch::kCPU) const;
  const std::map<std::string, std::string>& metadata() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes tensors (any device/dtype, made contiguous on CPU) to `path` atomically:
// temp file in the same folder, fsync, rename. Names must be unique.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// What the header says of a tensor to be written.
struct TensorSpec {
  std::string name;
  torch::Dtype dtype;
  std::vector<int64_t> shape;
};
// Writes tensors one at a time, in the order of `specs`, atomically like write_safetensors:
// the header comes from specs; then tensor_at(i) is called for i = 0, 1, ... and must return
// a tensor of spec i's dtype and shape (checked), which is written and may then be freed. No
// alignment padding: the order chooses the alignment (write_safetensors sorts larger dtypes first).
void write_safetensors_streamed(const std::string& path, const std::vector<TensorSpec>& specs,
                                const std::function<torch::Tensor(size_t)>& tensor_at,
                                const std::map<std::string, std::string>& metadata = {});

// Atomic small-file write (temp + fsync + rename), for config.json and friends.
void write_file_atomic(const std::string& path, const std::string& contents);
std::string read_file(const std::string& path);  // onebit::Error when missing/unreadable

}  // namespace onebit::io
