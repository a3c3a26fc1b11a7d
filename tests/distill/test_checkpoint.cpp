// CheckpointManager: exact resume, keep-last, and corrupt/partial checkpoints.
#include <unistd.h>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>

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

struct Toy {
  torch::Tensor w = torch::zeros({4, 3}).requires_grad_(true);
  torch::optim::AdamW opt{{w}, torch::optim::AdamWOptions(0.05).weight_decay(0.01)};
  std::map<std::string, torch::Tensor> named() { return {{"w", w}}; }
  // One step on a random batch drawn from the global CPU generator (so RNG state matters).
  double step() {
    const auto x = torch::randn({8, 3});
    const auto loss = torch::matmul(x, w.t()).sin().pow(2).mean() + (w - 1).pow(2).sum();
    opt.zero_grad();
    loss.backward();
    opt.step();
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
        mgr.save(t.named(), t.opt, st);
      }
    }
  }
  torch::manual_seed(999);  // a different RNG state: resume must restore it
  Toy t;
  CheckpointManager mgr(dir, 2);
  const auto latest = mgr.latest_valid();
  REQUIRE(latest.has_value());
  const TrainState st = mgr.load(*latest, t.named(), t.opt);
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
    mgr.save(t.named(), t.opt, st);
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
    mgr.save(t.named(), t.opt, st);
  }
  fs::remove(dir / "step-00000003" / "manifest.json");  // as if killed before the manifest
  {
    std::ofstream f(dir / "step-00000002" / "tensors.pt", std::ios::binary | std::ios::trunc);
    f << "garbage";
  }
  const auto latest = mgr.latest_valid();
  REQUIRE(latest.has_value());
  CHECK(latest->filename() == "step-00000001");
  CHECK_THROWS_WITH(mgr.load(dir / "step-00000003", t.named(), t.opt), OB_CONTAINS("no manifest.json"));
  CHECK_THROWS_WITH(mgr.load(dir / "step-00000002", t.named(), t.opt), OB_CONTAINS("tensors.pt has 7 bytes"));
  std::map<std::string, torch::Tensor> wrong = {{"v", torch::zeros({4, 3})}};
  CHECK_THROWS_WITH(mgr.load(dir / "step-00000001", wrong, t.opt), OB_CONTAINS("has no tensor 'v'"));
  onebit::test::remove_tree(dir);
}
