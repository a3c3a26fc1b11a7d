// A CPU emulator for onebit's CUDA kernels, for tests on machines without a GPU.
//
// kernels/cuda/*.cu compile as plain C++ in tests/cuda_emu/*_emu.cpp (emu_prelude.h maps the
// CUDA built-ins to the functions below) and run here: each block's threads are fibers on the
// calling thread, switched at __syncthreads, __syncwarp and the warp shuffles, so every barrier
// and shuffle means what it means on a GPU, and a kernel whose threads wait at different
// barriers is reported as a deadlock instead of hanging. Blocks run one after another. A launch
// configuration CUDA refuses (too many threads, a grid dimension out of range, more than 48 KB of
// dynamic shared memory) is an error of the next cudaGetLastError, as on a device. Dynamic shared
// memory starts as 0xFF bytes (float NaN) in every block, so a read before a write shows.
// Not emulated: inline PTX (the mma kernel), timing, and memory outside the kernel's arguments.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

namespace onebit::emu {

// Runs body once per thread of every block of grid (body reads thread_idx() and block_idx()).
// Throws std::runtime_error on a deadlock or a shuffle from a lane that does not exist.
void run(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body);

// The running thread's built-ins.
uint3& thread_idx();
uint3& block_idx();
dim3& block_dim();
dim3& grid_dim();
void* dynamic_smem();
void sync_block();  // __syncthreads
void sync_warp();   // __syncwarp
// Every lane of the warp passes `bytes` (<= 16) at `mine`; each gets lane `src`'s at `out`.
void warp_exchange(const void* mine, void* out, size_t bytes, int src);

// The runtime calls the kernels' launchers make.
cudaError_t get_last_error();
const char* error_string(cudaError_t e);
cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t get_device(int* device);
// What device_get_attribute reports as the multiprocessor count (default 8).
void set_multiprocessors(int n);
// Launches so far (tests count them).
long launches();

template <typename Kernel>
struct Launch {
  dim3 grid, block;
  size_t smem;
  Kernel* kernel;
  template <typename... Args>
  void operator()(Args... args) const {
    run(grid, block, smem, [&] { kernel(args...); });
  }
};
// ONEBIT_CUDA_LAUNCH(grid, block, smem, stream, kernel)(args...) in emulation.
template <typename Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, Kernel* kernel) {
  return {grid, block, smem, kernel};
}

}  // namespace onebit::emu
