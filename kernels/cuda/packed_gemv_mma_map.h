// The k map of the mma kernel (kernels/cuda/packed_gemv_mma.cu): which input each bf16 value
// of an mma fragment stands for, how signs become A values and how x ⊙ g becomes B values.
// Plain C++ (host and device), so that a CPU test emulates the kernel's fragments with it
// (tests/kernels/test_packed.cpp, "the mma kernel's k map").
//
// A chunk is 512 inputs: 4 blocks of 128 (16 bytes of signs per row), block `tig` read by thread
// tig (0..3) of an mma quad with one 128-bit load per row; it takes 32 k-steps of m16n8k16.
// Logical k = 2·tig + e + 8·r of k-step s = 8q + 2j + h (q, j < 4; h, e, r < 2) is input
// 128·tig + 32q + b + 16e of the chunk, with b = 15 − ci − 4j and class ci = 2h + r: word q of
// the block shifted left by 4j puts bits b and b + 16 at bits 15 − ci and 31 − ci.
// Classes (bit position in a 16-bit half → bf16 A value, B multiplier of x ⊙ g):
//   ci 0: bit 15, sign bit on 1.0:        A = ±1 (bit 1 = −1)        B = +xg
//   ci 1: bit 14, exponent top bit on 0:  A = 0 or 2 (exact)         B = −xg
//   ci 2: bit 13, on 2^-64 (exponent 63): A = 2^-64 or 1             B = −2·xg
//   ci 3: bit 12, on 2^-32 (exponent 95): A = 2^-32 or 1             B = −2·xg
// Σ A·B + Σ_{ci ≠ 0} xg = Σ s·xg (s = 1 − 2·bit), up to 2^-31·Σ|xg| from the 2^-32, 2^-64 bases.
// ci = 3 − (b mod 4): the class of an input is its bit position mod 4.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ONEBIT_HD __host__ __device__ __forceinline__ constexpr
#else
#define ONEBIT_HD constexpr
#endif

namespace onebit::kernels::cuda::mma_map {

constexpr int kChunk = 512;  // inputs per chunk
constexpr int kSteps = 32;   // k-steps of 16 per chunk
constexpr int kGroups = 64;  // staging groups per chunk

// Staging group gi (< 64) of a chunk: inputs koff + c + 16e (c < 4, e < 2), i.e. bit pairs
// b = 4·jb + c of word q of block tig. Input c has class ci = 3 − c, k-step s0 + (ci >> 1) and
// B register r = ci & 1: c = 3, 2 fill registers 0, 1 of k-step s0 (one 64-bit store), c = 1, 0
// those of k-step s0 + 1. gi's low bits are tig, then jb, then q, so that the 16 threads of a
// half-warp (consecutive gi, the same column) store to 16 different 8-byte bank pairs (b_unit).
struct Group {
  int koff, s0, tig;
};
ONEBIT_HD Group stage_group(int gi) {
  const int tig = gi & 3, jb = (gi >> 2) & 3, q = gi >> 4;
  Group m{};
  m.koff = 128 * tig + 32 * q + 4 * jb;
  m.s0 = 8 * q + 2 * (3 - jb);  // j = 3 − jb
  m.tig = tig;
  return m;
}
ONEBIT_HD int class_of(int c) { return 3 - c; }

// Which groups and tokens a staging thread p of a group of P threads (32: one warp, one token;
// 128: four warps, up to 8 tokens) handles: groups group_of(p, it, P) for it < groups_per_thread(P)
// and tokens t = token_first(p, P) + token_step(P)·i. Every (group, token) pair once.
ONEBIT_HD int groups_per_thread(int P) { return P == 32 ? 2 : 1; }
ONEBIT_HD int group_of(int p, int it, int P) { return P == 32 ? p + 32 * it : p & 63; }
ONEBIT_HD int token_first(int p, int P) { return P == 32 ? 0 : p >> 6; }
ONEBIT_HD int token_step(int P) { return P == 32 ? 1 : 2; }

// Shared-memory unit (CG·8 bytes: B registers r = 0, 1 of each column group cg, 32-bit word
// (unit·CG + cg)·2 + r) of k-step s, column g < GU and tig. The 4·GU units of a k-step are
// contiguous (the mma loop's loads, lane 4g + tig, are conflict-free), each row padded by 2
// units: a staging store (fixed g and s parity, a half-warp's threads differing in tig and j)
// then hits 16 different 8-byte bank pairs. Linear in g: a thread's stores for all tokens of a
// group are one base register plus immediate offsets.
ONEBIT_HD int b_row_units(int GU) { return GU * 4 + 2; }
ONEBIT_HD int b_unit(int GU, int s, int g, int tig) { return s * b_row_units(GU) + 4 * g + tig; }

// The bf16 pair (low half: bit 15 − ci, high half: bit 31 − ci) of class ci of a shifted word.
ONEBIT_HD uint32_t sign_pair(uint32_t w, int ci) {
  const uint32_t mask = 0x80008000u >> ci;
  const uint32_t base = ci == 0 ? 0x3F803F80u : ci == 1 ? 0u : ci == 2 ? 0x1F801F80u : 0x2F802F80u;
  return (w & mask) | base;
}
// B = class_mult(ci)·xg; Σ B·class_t_factor(ci) over a class's inputs is its share of T.
ONEBIT_HD float class_mult(int ci) { return ci == 0 ? 1.f : ci == 1 ? -1.f : -2.f; }
ONEBIT_HD float class_t_factor(int ci) { return ci == 0 ? 0.f : ci == 1 ? -1.f : -0.5f; }

}  // namespace onebit::kernels::cuda::mma_map

#undef ONEBIT_HD
