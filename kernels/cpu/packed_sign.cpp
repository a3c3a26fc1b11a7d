#include "kernels/packed_sign.h"

#include <cstring>

namespace onebit::kernels {

void pack_ref(const float* w, int64_t out, int64_t in, SignBlock* packed) {
  const int64_t nbytes = bytes_per_row(in);
  auto* bytes = reinterpret_cast<uint8_t*>(packed);
  std::memset(bytes, 0, size_t(out * nbytes));
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) {
      if (w[o * in + i] < 0) bytes[o * nbytes + i / 8] |= uint8_t(1u << (i % 8));
    }
  }
}

namespace {
// The 8 signs of every byte value, so unpacking is one 32-byte copy per byte.
struct ByteSigns {
  float v[256][8];
  ByteSigns() {
    for (int b = 0; b < 256; ++b)
      for (int k = 0; k < 8; ++k) v[b][k] = (b >> k) & 1 ? -1.0f : 1.0f;
  }
};
const ByteSigns& byte_signs() {
  static const ByteSigns table;
  return table;
}
}  // namespace

void unpack_rows(const SignBlock* packed, int64_t in, int64_t o_begin, int64_t o_end, float* dst) {
  const int64_t nbytes = bytes_per_row(in), full = in / 8;
  const auto* bytes = reinterpret_cast<const uint8_t*>(packed);
  const ByteSigns& t = byte_signs();
  for (int64_t o = o_begin; o < o_end; ++o) {
    const uint8_t* row = bytes + o * nbytes;
    float* d = dst + (o - o_begin) * in;
    for (int64_t j = 0; j < full; ++j) std::memcpy(d + 8 * j, t.v[row[j]], sizeof(t.v[0]));
    for (int64_t i = 8 * full; i < in; ++i) d[i] = t.v[row[full]][i % 8];
  }
}

void unpack_ref(const SignBlock* packed, int64_t out, int64_t in, float* dst) {
  unpack_rows(packed, in, 0, out, dst);
}

void build_lut(const float* xg, int64_t in, float* lut) {
  const int64_t groups = (in + 7) / 8;
  for (int64_t j = 0; j < groups; ++j) {
    float v[8];
    for (int k = 0; k < 8; ++k) v[k] = 8 * j + k < in ? xg[8 * j + k] : 0.0f;  // padding: 0
    float* t = lut + 256 * j;
    t[0] = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    // t[b] differs from t[b without its lowest set bit] by flipping that input to −1.
    for (int b = 1; b < 256; ++b) t[b] = t[b & (b - 1)] - 2.0f * v[__builtin_ctz(unsigned(b))];
  }
}

void gemv_lut_rows(const float* lut, const SignBlock* packed, int64_t in, const float* h,
                   int64_t o_begin, int64_t o_end, float* y) {
  const int64_t nbytes = bytes_per_row(in), groups = (in + 7) / 8;
  const auto* bytes = reinterpret_cast<const uint8_t*>(packed);
  for (int64_t o = o_begin; o < o_end; ++o) {
    const uint8_t* row = bytes + o * nbytes;
    float acc[4] = {0, 0, 0, 0};  // independent chains: the loads, not the adds, set the pace
    int64_t j = 0;
    for (; j + 4 <= groups; j += 4) {
      acc[0] += lut[256 * j + row[j]];
      acc[1] += lut[256 * (j + 1) + row[j + 1]];
      acc[2] += lut[256 * (j + 2) + row[j + 2]];
      acc[3] += lut[256 * (j + 3) + row[j + 3]];
    }
    for (; j < groups; ++j) acc[0] += lut[256 * j + row[j]];
    y[o] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) * h[o];
  }
}

}  // namespace onebit::kernels
