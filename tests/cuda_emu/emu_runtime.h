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
#include <cstdint>
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
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with d as C and D, every lane of the warp
// taking part: the fragments as the PTX ISA lays them out (groupID = lane / 4, t = lane % 4;
// A: a0 row groupID, a1 row groupID + 8, a2/a3 the same rows at k + 8, k = 2t and 2t + 1 in
// the low and high halves; B: b0 k = 2t, 2t + 1, b1 those + 8, column groupID; D: d0, d1 row
// groupID, d2, d3 row groupID + 8, columns 2t and 2t + 1), summed in fp64, rounded once.
void mma_m16n8k16_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);

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
