// Run-time choice among the CPU packed kernels (kernels/packed_sign.h).
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "kernels/packed_sign.h"

namespace onebit::kernels {

// ONEBIT_X86_KERNELS (CMake, x86-64 builds): cpu/avx2.cpp and cpu/avx512.cpp were compiled
// with their instruction sets.
bool cpu_supports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return true;
#if defined(ONEBIT_X86_KERNELS)
    case CpuIsa::Avx2: return __builtin_cpu_supports("avx2");
    case CpuIsa::Avx512: return __builtin_cpu_supports("avx512f");
    case CpuIsa::Avx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni");
#else
    case CpuIsa::Avx2:
    case CpuIsa::Avx512:
    case CpuIsa::Avx512Vnni: return false;
#endif
  }
  return false;
}

CpuIsa best_cpu_isa() {
  if (const char* env = std::getenv("ONEBIT_CPU_KERNEL")) {
    for (CpuIsa isa : {CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Avx512Vnni})
      if (std::strcmp(env, to_string(isa)) == 0 && cpu_supports(isa)) return isa;
  }
  if (cpu_supports(CpuIsa::Avx512Vnni)) return CpuIsa::Avx512Vnni;
  if (cpu_supports(CpuIsa::Avx512)) return CpuIsa::Avx512;
  if (cpu_supports(CpuIsa::Avx2)) return CpuIsa::Avx2;
  return CpuIsa::Generic;
}

GemmRowsFn gemm_rows_for(CpuIsa isa) {
#if defined(ONEBIT_X86_KERNELS)
  if (isa == CpuIsa::Avx512Vnni && cpu_supports(isa)) return gemm_tiles_avx512vnni;
  if (isa == CpuIsa::Avx512 && cpu_supports(isa)) return gemm_rows_avx512;
  if (isa == CpuIsa::Avx2 && cpu_supports(isa)) return gemm_rows_avx2;
#endif
  return gemm_rows_generic;
}

const char* to_string(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return "generic";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

}  // namespace onebit::kernels
