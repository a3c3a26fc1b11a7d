// Packed 1-bit signs of a OneBit weight (docs/layer.md, "Packed format"). Plain C++: no torch,
// so nvcc and the CPU kernels share it.
//
// Row-major [out, in]; each row is blocks_per_row(in) SignBlocks. Byte k of a row holds the
// signs of inputs 8k..8k+7, least-significant bit first; bit 1 means −1, bit 0 means +1
// (the OneBit authors' convention, so a row's bytes are theirs when in % 64 == 0). sign(w) is
// −1 exactly when w < 0 (w = ±0 → +1, as in training). Padding bits past `in` are 0.
#pragma once
#include <cstdint>

namespace onebit::kernels {

constexpr int64_t kSignsPerBlock = 64;
struct SignBlock {
  uint8_t q[kSignsPerBlock / 8];
};
static_assert(sizeof(SignBlock) == 8, "SignBlock must be exactly 64 bits, no padding");

inline int64_t blocks_per_row(int64_t in) { return (in + kSignsPerBlock - 1) / kSignsPerBlock; }
inline int64_t bytes_per_row(int64_t in) { return blocks_per_row(in) * int64_t(sizeof(SignBlock)); }

// Scalar references. w and dst are row-major [out, in]; packed holds out·blocks_per_row(in) blocks.
void pack_ref(const float* w, int64_t out, int64_t in, SignBlock* packed);
void unpack_ref(const SignBlock* packed, int64_t out, int64_t in, float* dst);  // ±1.0f
// Rows [o_begin, o_end) of the ±1 matrix into dst (row-major, (o_end − o_begin) × in).
void unpack_rows(const SignBlock* packed, int64_t in, int64_t o_begin, int64_t o_end, float* dst);

// Lookup-table GEMV over groups of 8 inputs. For one activation row xg (= x ⊙ g, length in):
// lut[256·j + b] = Σ_k (bit k of b ? −xg[8j+k] : +xg[8j+k]), j < ceil(in/8) (lut_floats(in)
// floats); then y[o] = h[o] · Σ_j lut[256·j + byte_j(o)] for o in [o_begin, o_end): one load
// and one add per 8 weights, no ±1 matrix.
inline int64_t lut_floats(int64_t in) { return (in + 7) / 8 * 256; }
void build_lut(const float* xg, int64_t in, float* lut);
void gemv_lut_rows(const float* lut, const SignBlock* packed, int64_t in, const float* h,
                   int64_t o_begin, int64_t o_end, float* y);

}  // namespace onebit::kernels
