// The table of one 4-bit sign group that the AVX-512 kernels look up: lane m of the result is
// Σ_k (bit k of m ? −u_k : u_k) over the group's four inputs u. cpu/avx512.cpp keeps it in
// fp32, cpu/avx512_vnni.cpp rounds it to int16. Header-only, in an unnamed namespace: each
// kernel file compiles it with its own instruction-set flags (as lut_driver.h).
#pragma once
#include <immintrin.h>

namespace onebit::kernels {
namespace {

inline __m512 group_sums(const float* u) {
  // Lane j of s_k is −1 where bit k of j is set (constants: hoisted out of the callers' loops).
  const __m512 s0 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
  const __m512 s1 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
  const __m512 s2 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
  const __m512 s3 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m512 t = _mm512_mul_ps(s0, _mm512_set1_ps(u[0]));
  t = _mm512_fmadd_ps(s1, _mm512_set1_ps(u[1]), t);
  t = _mm512_fmadd_ps(s2, _mm512_set1_ps(u[2]), t);
  return _mm512_fmadd_ps(s3, _mm512_set1_ps(u[3]), t);
}

}  // namespace
}  // namespace onebit::kernels
