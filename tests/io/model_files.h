// Editing model folders in tests: copying one, rewriting its model.safetensors.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "onebit/io/safetensors.h"
#include "onebit/util/fs.h"

namespace onebit::test {

// A copy of folder `from` (recursive) at `to`, replacing what was there.
inline void copy_dir(const std::filesystem::path& from, const std::filesystem::path& to) {
  onebit::util::remove_tree(to);
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
}

// Rewrites dir/model.safetensors with `edit` applied to its tensors (in name order).
inline void edit_tensors(const std::string& dir,
                         const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit) {
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  {
    onebit::io::SafetensorsReader r(dir + "/model.safetensors");
    for (const auto& n : r.names()) ts.emplace_back(n, r.load(n));
  }
  edit(ts);
  onebit::io::write_safetensors(dir + "/model.safetensors", ts);
}

}  // namespace onebit::test
