// kernels/cuda/launch.cu compiled for the CPU emulator (tests/cuda_emu/emu_runtime.h: an sm_90
// device), in namespace cuda_emu so that its functions do not clash with the CUDA build's.
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "tests/cuda_emu/emu_prelude.h"

namespace cuda_emu {
#include "kernels/cuda/launch.cu"
}  // namespace cuda_emu
