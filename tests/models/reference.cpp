#include "tests/models/reference.h"

#include <torch/torch.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>

#include "onebit/util/fs.h"
#include "tests/support.h"

namespace onebit::test {

namespace fs = std::filesystem;

using util::remove_tree;

fs::path reference_models() {
  static std::once_flag once;
  static fs::path result;
  std::call_once(once, [] {
    const fs::path script = source_dir() / "tests/python/make_reference_models.py";
    std::ifstream in(script);
    std::stringstream ss;
    ss << in.rdbuf();
    // Keyed by the script's content: an edited script regenerates, an unchanged one is reused.
    const fs::path dir = binary_dir() / "models_ref" / std::to_string(std::hash<std::string>{}(ss.str()));
    if (fs::exists(dir / "done")) {
      result = dir;
      return;
    }
    const std::string py = python();
    if (py.empty() || std::system((py + " -c 'import transformers, safetensors' >/dev/null 2>&1").c_str()) != 0) return;
    // Generated beside and renamed into place, so parallel test processes never see half a set.
    const fs::path tmp = dir.string() + ".tmp" + std::to_string(::getpid());
    remove_tree(tmp);
    fs::create_directories(tmp);
    const std::string cmd = py + " " + script.string() + " " + tmp.string() + " >" + (tmp / "log.txt").string() + " 2>&1";
    if (std::system(cmd.c_str()) != 0 || !fs::exists(tmp / "done")) {
      throw std::runtime_error("make_reference_models.py failed, see " + (tmp / "log.txt").string());
    }
    std::error_code ec;
    fs::rename(tmp, dir, ec);  // fails when another process got there first: use its copy
    if (ec) remove_tree(tmp);
    if (fs::exists(dir / "done")) result = dir;
  });
  return result;
}

fs::path scratch_dir(const std::string& name) {
  const fs::path dir = binary_dir() / "models_tmp" / name;
  remove_tree(dir);
  fs::create_directories(dir);
  return dir;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace onebit::test
