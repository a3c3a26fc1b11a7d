// CUDA launcher for the packed-sign OneBit product (plain C++ interface, no torch, no CUDA headers).
#pragma once
#include <cstdint>

namespace onebit::kernels::cuda {

// y[t, o] = h[o] · Σ_i sign[o, i] · xg[t, i] for t < n, o < out; all pointers on the device,
// xg [n, in] and y [n, out] row-major fp32, packed as in kernels/packed_sign.h (row stride
// bytes_per_row(in), a multiple of 8). `stream` is a cudaStream_t. Returns nullptr on success,
// else the CUDA error string.
const char* packed_matvec(const float* xg, const void* packed, const float* h, float* y,
                          int64_t n, int64_t in, int64_t out, void* stream);

}  // namespace onebit::kernels::cuda
