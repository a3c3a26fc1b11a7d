// The activation dtypes the CUDA kernels take (plain C++: no torch, no CUDA headers).
#pragma once

namespace onebit::kernels::cuda {

enum class Act { F32 = 0, BF16 = 1, F16 = 2 };

}  // namespace onebit::kernels::cuda
