// kernels/cuda/packed_gemv_mma.cu compiled for the CPU emulator (tests/cuda_emu/emu_runtime.h),
// its mma.sync emulated there, in namespace cuda_emu so that its functions do not clash with the
// CUDA build's.
#include "tests/cuda_emu/emu_prelude.h"

namespace cuda_emu {
#include "kernels/cuda/packed_gemv_mma.cu"
}  // namespace cuda_emu
