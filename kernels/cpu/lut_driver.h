// The loop that the AVX2 and AVX-512 lookup-table kernels share (kernels/packed_sign.h): the
// input is cut into chunks whose tables (all tokens of the call) fit `budget` bytes; each
// chunk's tables are built once, then every group of R output rows of the call streams past
// them through the kernel's own `rows_fn`; the epilogue (h, bias, post-LN: scale_rows) last.
// Header-only, in an unnamed namespace: each kernel file compiles it with its own ISA flags, so
// no instantiation built for one ISA can stand in for the other's at link time.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/packed_sign.h"

namespace onebit::kernels {
namespace {

// build(x, words, tab): the tables (table_floats per word) of `words` words of one token's
// inputs x. rows_fn(rows, valid, o, row, tab, ts, c0, ce): rows o..o+R−1 (only `valid` of them
// real; the others repeat the last real row) over words [c0, ce), with the tables `tab`, ts
// floats per token; row(o') is the sign words of any row o' of the call (for prefetching).
template <int R, class Build, class RowsFn>
void lut_gemm_rows(const GemmArgs& a, int64_t o_begin, int64_t o_end, int64_t budget, int64_t table_floats,
                   Build build, RowsFn rows_fn) {
  if (o_begin >= o_end || a.n <= 0) return;
  const int64_t words = a.blocks * (kSignsPerBlock / 32);
  // Chunk of the input whose tables fit the budget: whole blocks of R words.
  const int64_t chunk = lut_chunk_words(budget, a.n, table_floats * int64_t(sizeof(float)), R, words);
  struct alignas(4 * R) Table {  // one vector of R floats
    float t[R];
  };
  thread_local std::vector<Table> tables;
  tables.resize(size_t(a.n * chunk * table_floats / R));
  float* tab = tables.data()->t;
  const auto row = [&a](int64_t o) { return reinterpret_cast<const uint32_t*>(a.w + o * a.blocks); };
  for (int64_t c0 = 0; c0 < words; c0 += chunk) {
    const int64_t ce = std::min(words, c0 + chunk), ts = (ce - c0) * table_floats;
    for (int64_t t = 0; t < a.n; ++t) build(a.xg + t * a.xs + 32 * c0, ce - c0, tab + t * ts);
    for (int64_t o = o_begin; o < o_end; o += R) {
      const int valid = int(std::min<int64_t>(R, o_end - o));
      const uint32_t* rows[R];
      for (int i = 0; i < R; ++i) rows[i] = row(o + std::min(i, valid - 1));
      rows_fn(rows, valid, o, row, tab, ts, c0, ce);
    }
  }
  scale_rows(a, o_begin, o_end);
}

}  // namespace
}  // namespace onebit::kernels
