// kernels/cuda/fused_ops.cu compiled for the CPU emulator (tests/cuda_emu/emu_runtime.h), in
// namespace cuda_emu so that its functions do not clash with the CUDA build's.
#include "tests/cuda_emu/emu_prelude.h"

namespace cuda_emu {
#include "kernels/cuda/fused_ops.cu"
}  // namespace cuda_emu
