// Intra-op parallelism as the library's own code gets it. at::parallel_for is a header
// template: its OpenMP path (#pragma omp parallel) is compiled into the caller's translation
// unit, so code built without -fopenmp runs every at::parallel_for on one thread, silently.
// CMakeLists.txt builds onebit with OpenMP; this reports what a parallel_for compiled in the
// library really uses, so a test (and a user's doubt) can check it.
#pragma once
#include <cstdint>

namespace onebit {

// The number of distinct threads that run the tasks of one at::parallel_for over n items in
// grains of 1, from library code: min(n, at::get_num_threads()) when OpenMP is compiled in, 1
// when it is not.
int parallel_for_threads(int64_t n);

}  // namespace onebit
