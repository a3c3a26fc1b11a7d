#include "onebit/core/autocast.h"

#include <ATen/autocast_mode.h>

#include "onebit/core/error.h"

namespace onebit {

AutocastGuard::AutocastGuard(c10::DeviceType device_type, std::optional<c10::ScalarType> dtype)
    : device_(device_type) {
  OB_CHECK(at::autocast::is_autocast_available(device_type), "autocast: not available for device type ",
           c10::DeviceTypeName(device_type));
  OB_CHECK(!dtype || *dtype == c10::kBFloat16 || *dtype == c10::kHalf,
           "autocast: the dtype must be bf16 or fp16, got ", *dtype);
  prev_enabled_ = at::autocast::is_autocast_enabled(device_);
  prev_dtype_ = at::autocast::get_autocast_dtype(device_);
  // Nothing below throws, so the destructor always runs against a fully entered state.
  at::autocast::set_autocast_enabled(device_, dtype.has_value());
  if (dtype) at::autocast::set_autocast_dtype(device_, *dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  // Leaving the outermost region drops the cached low-precision copies of fp32 leaves
  // (their masters may change before the next region).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, prev_enabled_);
  at::autocast::set_autocast_dtype(device_, prev_dtype_);
}

std::optional<c10::ScalarType> autocast_dtype(c10::DeviceType device_type) {
  if (!at::autocast::is_autocast_available(device_type) || !at::autocast::is_autocast_enabled(device_type))
    return std::nullopt;
  return at::autocast::get_autocast_dtype(device_type);
}

}  // namespace onebit
