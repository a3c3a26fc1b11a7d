// AutocastGuard: autocast on/off per scope, nesting, and restoring the previous state on
// exceptions. Checked through ATen's own state and through what a matmul produces.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <stdexcept>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "tests/support.h"

using onebit::AutocastGuard;
using onebit::autocast_dtype;

namespace {
// The dtype a CPU fp32 matmul returns in the current state (bf16/fp16 when autocast is on).
torch::ScalarType mm_dtype() {
  const auto a = torch::ones({2, 2});
  return torch::mm(a, a).scalar_type();
}
}  // namespace

TEST_CASE("AutocastGuard: nested regions and their exit restore the previous state", "[distill][autocast]") {
  const auto cpu = torch::kCPU;
  // Start from a known outside state: off, with a dtype other than the guards' (it must come back).
  at::autocast::set_autocast_enabled(cpu, false);
  at::autocast::set_autocast_dtype(cpu, torch::kHalf);
  REQUIRE(!autocast_dtype(cpu));
  REQUIRE(mm_dtype() == torch::kFloat32);
  {
    AutocastGuard outer(cpu, torch::kBFloat16);
    CHECK(autocast_dtype(cpu) == torch::kBFloat16);
    CHECK(mm_dtype() == torch::kBFloat16);
    {
      AutocastGuard inner(cpu, torch::kHalf);
      CHECK(mm_dtype() == torch::kHalf);
      {
        AutocastGuard off(cpu, std::nullopt);  // a full-precision island
        CHECK(!autocast_dtype(cpu));
        CHECK(mm_dtype() == torch::kFloat32);
      }
      CHECK(mm_dtype() == torch::kHalf);
    }
    CHECK(autocast_dtype(cpu) == torch::kBFloat16);
    CHECK(mm_dtype() == torch::kBFloat16);
  }
  CHECK(!at::autocast::is_autocast_enabled(cpu));
  CHECK(at::autocast::get_autocast_dtype(cpu) == torch::kHalf);
  CHECK(mm_dtype() == torch::kFloat32);
  at::autocast::set_autocast_dtype(cpu, torch::kBFloat16);  // ATen's CPU default
}

TEST_CASE("AutocastGuard: an exception leaves every level as it was", "[distill][autocast]") {
  const auto cpu = torch::kCPU;
  REQUIRE(!autocast_dtype(cpu));
  {
    AutocastGuard outer(cpu, torch::kBFloat16);
    try {
      AutocastGuard inner(cpu, torch::kHalf);
      AutocastGuard off(cpu, std::nullopt);
      throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
    }
    CHECK(autocast_dtype(cpu) == torch::kBFloat16);
    CHECK(mm_dtype() == torch::kBFloat16);
    // A throwing op inside the region (a shape error from ATen) unwinds the same way.
    CHECK_THROWS([&] {
      AutocastGuard inner(cpu, torch::kHalf);
      torch::mm(torch::ones({2, 3}), torch::ones({2, 3}));
    }());
    CHECK(mm_dtype() == torch::kBFloat16);
  }
  CHECK(!autocast_dtype(cpu));
  CHECK(mm_dtype() == torch::kFloat32);
}

TEST_CASE("AutocastGuard: only bf16 and fp16, and nothing changes when refused", "[distill][autocast]") {
  const auto cpu = torch::kCPU;
  CHECK_THROWS_WITH(AutocastGuard(cpu, torch::kFloat32), OB_CONTAINS("autocast: the dtype must be bf16 or fp16"));
  CHECK(!autocast_dtype(cpu));
  CHECK(mm_dtype() == torch::kFloat32);
}
