// Cutting length-sorted rows into padded forwards (zero-shot request batching, zeroshot.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace onebit::eval {

// `lengths` sorted longest first; each batch is a run of consecutive rows padded to its first
// (longest) row, costing rows × that length tokens. The cut minimises the total padded
// tokens plus `forward_cost` tokens per batch (the fixed cost of one model call, in token
// equivalents), with at most `max_tokens` tokens per batch (a longer row runs alone).
// Returns each batch's [begin, end) in `lengths`. O(n · rows per batch).
std::vector<std::pair<std::size_t, std::size_t>> cut_sorted(const std::vector<int64_t>& lengths, int64_t max_tokens,
                                                       int64_t forward_cost);

}  // namespace onebit::eval
