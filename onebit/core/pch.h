// Precompiled header for every onebit target (see CMakeLists.txt, ONEBIT_USE_PCH).
// Only used as a PCH: never include it; include what you use.
#pragma once
#include <torch/torch.h>
