#include "onebit/distill/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "onebit/core/error.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/util/fs.h"

namespace fs = std::filesystem;

namespace onebit::distill {
namespace {

constexpr const char* kPrefix = "step-";
const std::vector<std::string> kRank0Files = {"rng.pt", "state.json"};

std::string shard_file(int64_t shard, int64_t shards) {
  char buf[64];  // two 19-digit numbers fit
  std::snprintf(buf, sizeof buf, "shard-%05lld-of-%05lld.pt", static_cast<long long>(shard),
                static_cast<long long>(shards));
  return buf;
}

using util::remove_tree;

void fsync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) fail("checkpoint: cannot open ", p.string(), " to sync it");
  ::fsync(fd);
  ::close(fd);
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
  f.close();
  OB_CHECK(f.good(), "checkpoint: cannot write ", p.string());
}

// LibTorch's archive writer aborts the whole process when a write comes up short (a full disk):
// it gets a writer that always reports success, and the first error is raised here instead.
void save_archive(torch::serialize::OutputArchive& ar, const fs::path& p) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("checkpoint: cannot create ", p.string(), ": ", std::strerror(errno));
  int err = 0;
  ar.save_to([&](const void* data, size_t n) -> size_t {
    const char* c = static_cast<const char*>(data);
    for (size_t left = n; left > 0 && err == 0;) {
      const ssize_t w = ::write(fd, c, left);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) err = errno;
      else c += w, left -= static_cast<size_t>(w);
    }
    return n;
  });
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) fail("checkpoint: cannot write ", p.string(), ": ", std::strerror(err));
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  OB_CHECK(f.good(), "checkpoint: cannot read ", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int64_t step_of(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind(kPrefix, 0) != 0) return -1;
  try {
    return std::stoll(name.substr(std::char_traits<char>::length(kPrefix)));
  } catch (...) {
    return -1;
  }
}

std::vector<fs::path> checkpoints_newest_first(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && step_of(e.path()) >= 0) out.push_back(e.path());
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) > step_of(b); });
  return out;
}

}  // namespace

CheckpointManager::CheckpointManager(fs::path dir, int64_t keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {
  OB_CHECK(keep_last_ >= 1, "train.keep_last must be >= 1, got ", keep_last_);
}

namespace {

// One phase of a collective save or load: fn runs on every rank, then all ranks agree on
// whether it worked anywhere, so no rank commits or continues past another's failure.
void together(dist::GradSync& sync, const std::string& what, const std::function<void()>& fn) {
  std::string error;
  try {
    fn();
  } catch (const std::exception& e) {
    error = e.what();
  }
  const bool failed_somewhere = sync.any(!error.empty());
  if (!error.empty()) fail(error);
  OB_CHECK(!failed_somewhere, "checkpoint: another rank failed while ", what, " (see its error); rank ", sync.rank(),
           " gives up");
}

nlohmann::json read_manifest(const fs::path& ckpt) { return nlohmann::json::parse(read_text(ckpt / "manifest.json")); }

}  // namespace

fs::path CheckpointManager::save(dist::ParamSync& params, const TrainState& state) const {
  auto& sync = params.sync();
  const int rank = sync.rank();
  const int64_t shards = params.num_shards();
  char name[32];
  std::snprintf(name, sizeof name, "%s%08lld", kPrefix, static_cast<long long>(state.step));
  const fs::path final_dir = dir_ / name;
  const fs::path tmp = dir_ / (std::string(".tmp-") + name);

  together(sync, "preparing a checkpoint", [&] {
    if (rank != 0) return;
    fs::create_directories(dir_);
    remove_tree(tmp);
    fs::create_directories(tmp);
  });
  // Each rank its own shard, in parallel (values copied to CPU one tensor at a time).
  together(sync, "writing its checkpoint shard", [&] {
    if (rank >= shards) return;
    const fs::path f = tmp / shard_file(rank, shards);
    torch::serialize::OutputArchive ar;
    for (const auto& [k, t] : params.state()) ar.write(k, t.detach().to(torch::kCPU));
    save_archive(ar, f);
  });
  // Every shard is complete: rank 0 commits.
  together(sync, "committing a checkpoint", [&] {
    if (rank != 0) return;
    {
      torch::serialize::OutputArchive ar;
      ar.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
      save_archive(ar, tmp / "rng.pt");
    }
    nlohmann::json js;
    js["step"] = state.step;
    js["counters"] = state.counters;
    js["scalars"] = state.scalars;
    js["config"] = state.config_yaml;
    write_text(tmp / "state.json", js.dump(2));

    nlohmann::json manifest;
    manifest["step"] = state.step;
    manifest["world_size"] = sync.world_size();
    manifest["sharding"] = dist::sharding_name(params.sharding());
    manifest["shards"] = shards;
    std::vector<std::string> files = kRank0Files;
    for (int64_t r = 0; r < shards; ++r) files.push_back(shard_file(r, shards));
    for (const auto& f : files) {
      OB_CHECK(fs::exists(tmp / f), "checkpoint: ", (tmp / f).string(), " is missing after every rank wrote its shard",
               " (output_dir must be one folder that all ranks share)");
      fsync_path(tmp / f);
      manifest["files"][f] = static_cast<int64_t>(fs::file_size(tmp / f));
    }
    write_text(tmp / "manifest.json", manifest.dump(2));
    fsync_path(tmp / "manifest.json");
    fsync_path(tmp);
    remove_tree(final_dir);
    fs::rename(tmp, final_dir);
    fsync_path(dir_);

    // Keep the newest keep_last complete checkpoints.
    int64_t kept = 0;
    for (const auto& p : checkpoints_newest_first(dir_))
      if (check(p).empty() && ++kept > keep_last_) remove_tree(p);
  });
  return final_dir;
}

std::string CheckpointManager::check(const fs::path& ckpt) {
  if (!fs::is_directory(ckpt)) return "not a directory";
  if (!fs::exists(ckpt / "manifest.json")) return "no manifest.json (incomplete save)";
  try {
    const auto manifest = read_manifest(ckpt);
    if (!manifest.contains("shards")) return "manifest.json has no shard layout (written by an older onebit)";
    const auto shards = manifest.at("shards").get<int64_t>();
    std::vector<std::string> files = kRank0Files;
    for (int64_t r = 0; r < shards; ++r) files.push_back(shard_file(r, shards));
    for (const auto& f : files) {
      if (!fs::exists(ckpt / f)) return "missing " + f;
      const auto want = manifest.at("files").at(f).get<int64_t>();
      const auto got = static_cast<int64_t>(fs::file_size(ckpt / f));
      if (want != got) return f + " has " + std::to_string(got) + " bytes, manifest says " + std::to_string(want);
    }
  } catch (const std::exception& e) {
    return std::string("unreadable manifest.json: ") + e.what();
  }
  return "";
}

std::optional<fs::path> CheckpointManager::latest_valid() const {
  for (const auto& p : checkpoints_newest_first(dir_)) {
    const std::string why = check(p);
    if (why.empty()) return p;
    std::cerr << "warning: skipping checkpoint " << p.string() << ": " << why << "\n";
  }
  return std::nullopt;
}

std::string CheckpointManager::layout_mismatch(const fs::path& ckpt, int world_size, const std::string& sharding) {
  const std::string why = check(ckpt);
  if (!why.empty()) return why;
  const auto m = read_manifest(ckpt);
  const int saved_world = m.at("world_size").get<int>();
  const std::string saved_sharding = m.at("sharding").get<std::string>();
  if (saved_world == world_size && saved_sharding == sharding) return "";
  return "it was written by " + std::to_string(saved_world) + " rank(s) with dist.sharding=" + saved_sharding +
         ", this run has " + std::to_string(world_size) + " with dist.sharding=" + sharding +
         " (re-sharding is not supported: resume with the same world size and sharding)";
}

TrainState CheckpointManager::load(const fs::path& ckpt, dist::ParamSync& params) const {
  auto& sync = params.sync();
  together(sync, "loading a checkpoint", [&] {
    const std::string why = check(ckpt);
    OB_CHECK(why.empty(), "checkpoint ", ckpt.string(), " is not usable: ", why);
    const std::string layout = layout_mismatch(ckpt, sync.world_size(), dist::sharding_name(params.sharding()));
    OB_CHECK(layout.empty(), "cannot resume from ", ckpt.string(), ": ", layout);
    try {
      torch::NoGradGuard no_grad;
      // none: one shard that every rank loads; otherwise rank r's own.
      const fs::path f = ckpt / shard_file(sync.rank() % params.num_shards(), params.num_shards());
      torch::serialize::InputArchive ar;
      ar.load_from(f.string());
      for (const auto& [k, t] : params.state()) {
        torch::Tensor v;
        OB_CHECK(ar.try_read(k, v), "checkpoint ", f.string(), " has no tensor '", k, "'");
        OB_CHECK(v.sizes() == t.sizes(), "checkpoint ", f.string(), ": tensor '", k, "' has shape ", v.sizes(),
                 ", this run has ", t.sizes(), " (another dist.bucket_mb?)");
        t.copy_(v);  // onto the tensor's own device
      }
      torch::serialize::InputArchive ra;
      ra.load_from((ckpt / "rng.pt").string());
      torch::Tensor rng;
      ra.read("cpu", rng);
      at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail("checkpoint ", ckpt.string(), " is corrupt: ", e.what());
    }
  });
  params.gather_params();
  return read_state(ckpt);
}

TrainState CheckpointManager::read_state(const fs::path& ckpt) {
  const std::string why = check(ckpt);
  OB_CHECK(why.empty(), "checkpoint ", ckpt.string(), " is not usable: ", why);
  try {
    const auto js = nlohmann::json::parse(read_text(ckpt / "state.json"));
    TrainState s;
    s.step = js.at("step").get<int64_t>();
    s.counters = js.at("counters").get<std::map<std::string, int64_t>>();
    s.scalars = js.at("scalars").get<std::map<std::string, double>>();
    s.config_yaml = js.value("config", std::string());
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint ", ckpt.string(), ": state.json is corrupt: ", e.what());
  }
}

}  // namespace onebit::distill
