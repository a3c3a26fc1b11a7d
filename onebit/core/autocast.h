// AutocastGuard: LibTorch autocast (mixed precision) for one device type over a C++ scope,
// like Python's `with torch.autocast(device_type, dtype)`. The previous state (on/off and
// dtype) comes back when the scope ends, also when an exception unwinds it, so guards nest.
// Autocast runs matmul-like ops in the lower-precision dtype and keeps reductions, norms and
// softmaxes in fp32; parameters keep their dtype (fp32 masters stay fp32).
#pragma once
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <optional>

namespace onebit {

class AutocastGuard {
 public:
  // dtype kBFloat16 or kHalf: autocast on for `device_type` with that dtype.
  // nullopt: autocast off for `device_type` (a full-precision island inside an autocast region).
  AutocastGuard(c10::DeviceType device_type, std::optional<c10::ScalarType> dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool prev_enabled_;
  c10::ScalarType prev_dtype_;
};

// The autocast dtype in effect for `device_type`, or nullopt when autocast is off there.
std::optional<c10::ScalarType> autocast_dtype(c10::DeviceType device_type);

}  // namespace onebit
