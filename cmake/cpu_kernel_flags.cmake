# The instruction-set flags of the packed CPU kernels (kernels/cpu/), set per source file so
# that nothing else is built for those instruction sets; kernels/cpu/dispatch.cpp picks among
# them at run time. Shared by the main build and the fuzz build (tests/fuzz/CMakeLists.txt).
# Further arguments: more options for those files (the main build silences a GCC warning).
function(onebit_cpu_kernel_flags root)
  if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
    return()
  endif()
  foreach(pair "avx2.cpp:-mavx2 -mfma" "avx512.cpp:-mavx512f"
               "avx512_vnni.cpp:-mavx512f -mavx512bw -mavx512vbmi -mavx512vnni")
    string(REPLACE ":" ";" parts "${pair}")
    list(GET parts 0 file)
    list(GET parts 1 flags)
    separate_arguments(flags UNIX_COMMAND "${flags}")
    set(options ${flags} ${ARGN})
    set_source_files_properties(${root}/kernels/cpu/${file} PROPERTIES
      COMPILE_OPTIONS "${options}" SKIP_PRECOMPILE_HEADERS ON)
  endforeach()
  # On dispatch.cpp alone: a target-wide define would invalidate the shared precompiled header.
  set_source_files_properties(${root}/kernels/cpu/dispatch.cpp PROPERTIES
    COMPILE_DEFINITIONS ONEBIT_X86_KERNELS=1 SKIP_PRECOMPILE_HEADERS ON)
endfunction()
