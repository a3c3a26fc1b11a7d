// CheckpointManager: exact resume, keep-last, and corrupt/partial checkpoints.
#include <unistd.h>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "onebit/dist/grad_sync.h"
#include "onebit/dist/param_sync.h"
#include "onebit/distill/checkpoint.h"
#include "tests/data/tmpdir.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using onebit::distill::CheckpointManager;
using onebit::distill::TrainState;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("onebit_distill_" + name + "_" + std::to_string(::getpid()));
  onebit::test::remove_tree(d);
  return d;
}

onebit::dist::ParamSyncOptions toy_options() {
  onebit::dist::ParamSyncOptions o;
  o.weight_decay = 0.01;
  return o;
}

// One trainable tensor under a single-process ParamSync (AdamW, lr 0.05).
struct Toy {
  explicit Toy(int64_t rows = 4) : w(torch::zeros({rows, 3}).requires_grad_(true)), ps({w}, sync, toy_options()) {}
  torch::Tensor w;
  onebit::dist::NoSync sync;
  onebit::dist::ParamSync ps;
  // One step on a random batch drawn from the global CPU generator (so RNG state matters).
  double step() {
    const auto x = torch::randn({8, 3});
    const auto loss = torch::matmul(x, w.t()).sin().pow(2).mean() + (w - 1).pow(2).sum();
    ps.begin_backward(true);
    loss.backward();
    ps.finish_backward();
    ps.step(0.05);
    ps.zero_grad();
    return loss.item<double>();
  }
};

}  // namespace

TEST_CASE("checkpoint: resume gives exactly the uninterrupted loss sequence", "[distill]") {
  const fs::path dir = fresh_dir("resume");
  std::vector<double> uninterrupted, resumed;
  {
    torch::manual_seed(7);
    Toy t;
    CheckpointManager mgr(dir, 2);
    for (int s = 1; s <= 6; ++s) {
      uninterrupted.push_back(t.step());
      if (s == 3) {
        TrainState st;
        st.step = s;
        st.counters["data_position"] = 123;
        st.scalars["loss_scale"] = 1024.0;
        mgr.save(t.ps, st);
      }
    }
  }
  torch::manual_seed(999);  // a different RNG state: resume must restore it
  Toy t;
  CheckpointManager mgr(dir, 2);
  const auto latest = mgr.latest_valid();
  REQUIRE(latest.has_value());
  const TrainState st = mgr.load(*latest, t.ps);
  CHECK(st.step == 3);
  CHECK(st.counters.at("data_position") == 123);
  CHECK(st.scalars.at("loss_scale") == 1024.0);
  for (int s = 4; s <= 6; ++s) resumed.push_back(t.step());
  CHECK(resumed == std::vector<double>(uninterrupted.begin() + 3, uninterrupted.end()));
  onebit::test::remove_tree(dir);
}

TEST_CASE("checkpoint: keeps the last K", "[distill]") {
  const fs::path dir = fresh_dir("keep");
  Toy t;
  CheckpointManager mgr(dir, 2);
  for (int s = 1; s <= 4; ++s) {
    TrainState st;
    st.step = s;
    mgr.save(t.ps, st);
  }
  CHECK(!fs::exists(dir / "step-00000001"));
  CHECK(!fs::exists(dir / "step-00000002"));
  CHECK(fs::exists(dir / "step-00000003"));
  CHECK(fs::exists(dir / "step-00000004"));
  onebit::test::remove_tree(dir);
}

TEST_CASE("checkpoint: partial or corrupt checkpoints are skipped (auto) or refused (explicit)", "[distill]") {
  const fs::path dir = fresh_dir("corrupt");
  Toy t;
  CheckpointManager mgr(dir, 5);
  for (int s = 1; s <= 3; ++s) {
    TrainState st;
    st.step = s;
    mgr.save(t.ps, st);
  }
  fs::remove(dir / "step-00000003" / "manifest.json");  // as if killed before the manifest
  {
    std::ofstream f(dir / "step-00000002" / "shard-00000-of-00001.pt", std::ios::binary | std::ios::trunc);
    f << "garbage";
  }
  const auto latest = mgr.latest_valid();
  REQUIRE(latest.has_value());
  CHECK(latest->filename() == "step-00000001");
  CHECK_THROWS_WITH(mgr.load(dir / "step-00000003", t.ps), OB_CONTAINS("no manifest.json"));
  CHECK_THROWS_WITH(mgr.load(dir / "step-00000002", t.ps), OB_CONTAINS("shard-00000-of-00001.pt has 7 bytes"));
  Toy wrong(5);
  CHECK_THROWS_WITH(mgr.load(dir / "step-00000001", wrong.ps), OB_CONTAINS("has shape [12], this run has [15]"));
  // A shard deleted: the checkpoint is rejected and the previous complete one is used.
  TrainState st;
  st.step = 4;
  mgr.save(t.ps, st);
  REQUIRE(mgr.latest_valid()->filename() == "step-00000004");
  fs::remove(dir / "step-00000004" / "shard-00000-of-00001.pt");
  CHECK(mgr.latest_valid()->filename() == "step-00000001");
  CHECK(CheckpointManager::check(dir / "step-00000004") == "missing shard-00000-of-00001.pt");
  // Another world size or sharding is refused in one line.
  CHECK(CheckpointManager::layout_mismatch(dir / "step-00000001", 1, "none").empty());
  CHECK_THAT(CheckpointManager::layout_mismatch(dir / "step-00000001", 2, "optimizer"),
             OB_CONTAINS("written by 1 rank(s) with dist.sharding=none, this run has 2 with dist.sharding=optimizer"));
  onebit::test::remove_tree(dir);
}
