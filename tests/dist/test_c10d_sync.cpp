// C10dSync between two real processes (Gloo over 127.0.0.1): this test binary starts itself
// twice as the hidden worker case below, one process per rank, and compares what they wrote.
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>

#include "onebit/core/error.h"
#include "onebit/dist/c10d_sync.h"
#include "onebit/dist/launch.h"
#include "tests/data/tmpdir.h"
#include "tests/dist/spawn.h"
#include "tests/support.h"

namespace {

constexpr double kAvgTol = 1e-6;        // averaged gradient vs the mean of both ranks' gradients
constexpr double kWorkerTimeoutS = 60;  // generous: two torch processes on 2 busy cores
constexpr int64_t kTinyBucketBytes = 64;  // forces several buckets for a handful of values

torch::Tensor or_empty(const torch::Tensor& t) { return t.defined() ? t.detach().clone() : torch::empty({0}); }

// Parameters with rank-dependent gradients: two dtypes, one gradient only on rank 0, one on no rank.
std::vector<torch::Tensor> worker_params(int rank) {
  torch::manual_seed(100 + rank);
  std::vector<torch::Tensor> ps = {torch::zeros({3, 5}), torch::zeros({7}, torch::kFloat64), torch::zeros({4}),
                                   torch::zeros({2, 2}), torch::zeros({40})};
  for (auto& p : ps) p.requires_grad_(true);
  for (size_t i : {0, 1, 4}) ps[i].mutable_grad() = torch::randn(ps[i].sizes(), ps[i].options());
  if (rank == 0) ps[2].mutable_grad() = torch::randn({4});
  return ps;
}

bool worker_mode() { return std::getenv("ONEBIT_DIST_WORKER_OUT") != nullptr; }

}  // namespace

// Run by the test below in each child process (hidden: not part of a normal run).
TEST_CASE("dist worker: C10dSync collectives", "[.][dist_worker]") {
  if (!worker_mode()) return;
  const std::string out = std::getenv("ONEBIT_DIST_WORKER_OUT");
  const auto launch = onebit::dist::detect_launch();
  onebit::dist::C10dOptions o;
  o.backend = "gloo";
  o.timeout_s = 30;
  o.bucket_bytes = kTinyBucketBytes;
  onebit::dist::C10dSync sync(launch, torch::kCPU, o);
  auto ps = worker_params(launch.rank);
  std::vector<torch::Tensor> saved;
  for (auto& p : ps) saved.push_back(or_empty(p.grad()));
  sync.after_backward(ps);
  for (auto& p : ps) saved.push_back(or_empty(p.grad()));
  saved.push_back(torch::tensor({sync.mean(1.5 + launch.rank)}, torch::kFloat64));
  auto b = torch::full({3}, 7.0 + launch.rank);
  sync.broadcast({b}, 0);
  saved.push_back(b);
  sync.barrier("worker");
  saved.push_back(torch::tensor({double(sync.rank()), double(sync.world_size())}, torch::kFloat64));
  // A rank that trains other tensors than the rest: every rank is told.
  std::string mismatch;
  try {
    std::vector<torch::Tensor> other(ps.begin(), ps.begin() + 1 + launch.rank);
    sync.after_backward(other);
  } catch (const onebit::Error& e) {
    mismatch = e.what();
  }
  torch::save(saved, out + ".pt");
  std::ofstream(out + ".txt") << mismatch;
}

TEST_CASE("C10dSync: two Gloo processes average gradients and scalars", "[dist]") {
  OB_REQUIRE_OR_SKIP(onebit::dist::backend_compiled("gloo"), "built without gloo headers (apt-get install libgloo-dev)");
  onebit::test::TempDir dir("c10d_sync");
  const std::string port = std::to_string(onebit::test::free_port());
  std::vector<std::unique_ptr<onebit::test::Child>> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.push_back(std::make_unique<onebit::test::Child>(
        std::vector<std::string>{onebit::test::self_exe(), "dist worker: C10dSync collectives"},
        std::map<std::string, std::string>{{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"},
                                           {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port},
                                           {"OMP_NUM_THREADS", "1"},
                                           {"ONEBIT_DIST_WORKER_OUT", dir.str("rank" + std::to_string(r))}},
        dir.str("rank" + std::to_string(r) + ".log")));
  for (int r = 0; r < 2; ++r) {
    const int rc = ranks[size_t(r)]->wait(kWorkerTimeoutS);
    INFO("rank " << r << " output:\n" << ranks[size_t(r)]->output());
    REQUIRE(rc == 0);
  }
  std::vector<torch::Tensor> s0, s1;
  torch::load(s0, dir.str("rank0.pt"));
  torch::load(s1, dir.str("rank1.pt"));
  const size_t n = 5;
  REQUIRE(s0.size() == 2 * n + 3);
  REQUIRE(s1.size() == s0.size());
  auto max_diff = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
  };
  for (size_t i : {0, 1, 4}) {
    INFO("param " << i);
    const auto want = (s0[i].to(torch::kFloat64) + s1[i].to(torch::kFloat64)) / 2;
    CHECK(max_diff(s0[n + i], want) < kAvgTol);
    CHECK(torch::equal(s0[n + i], s1[n + i]));  // bitwise the same on both ranks
    CHECK(max_diff(s0[i], s1[i]) > 0.1);        // the ranks really had different gradients
    CHECK(s0[n + i].scalar_type() == s0[i].scalar_type());
  }
  // Gradient on rank 0 only: rank 1 counts zeros and gets the averaged gradient too.
  CHECK(s1[2].numel() == 0);
  CHECK(max_diff(s0[n + 2], s0[2] / 2) < kAvgTol);
  CHECK(torch::equal(s0[n + 2], s1[n + 2]));
  // No gradient on any rank: stays undefined everywhere.
  CHECK(s0[n + 3].numel() == 0);
  CHECK(s1[n + 3].numel() == 0);
  // mean(1.5 + rank) = 2, broadcast from rank 0 = 7, rank and world size.
  CHECK(s0[2 * n].item<double>() == 2.0);
  CHECK(s1[2 * n].item<double>() == 2.0);
  CHECK(torch::equal(s1[2 * n + 1], torch::full({3}, 7.0)));
  CHECK(s0[2 * n + 2][0].item<double>() == 0);
  CHECK(s1[2 * n + 2][0].item<double>() == 1);
  CHECK(s1[2 * n + 2][1].item<double>() == 2);
  for (int r = 0; r < 2; ++r)
    CHECK_THAT(onebit::test::read_text(dir.str("rank" + std::to_string(r) + ".txt")),
               OB_CONTAINS("another rank trains a different set"));
}

TEST_CASE("C10dSync: bad options are one-line errors", "[dist]") {
  onebit::dist::LaunchInfo l;
  l.world_size = 2;
  onebit::dist::C10dOptions o;
  o.backend = "mpi";
  CHECK_THROWS_WITH(onebit::dist::C10dSync(l, torch::kCPU, o), OB_CONTAINS("dist.backend must be auto, gloo or nccl"));
  o.backend = "nccl";
  CHECK_THROWS_WITH(onebit::dist::C10dSync(l, torch::kCPU, o), OB_CONTAINS("dist.backend=nccl needs a CUDA device"));
  o.backend = "auto";
  o.timeout_s = 0;
  CHECK_THROWS_WITH(onebit::dist::C10dSync(l, torch::kCPU, o), OB_CONTAINS("dist.timeout_s must be > 0"));
}
