# build/bench/e2e: one experiment as worker processes: env steps/s and learner
# updates/s against the bare components, and the learner's seconds per update with
# collection and training alternating versus overlapping (RLinf-USER: 4.6x).
corral_bench(e2e SOURCES ${CMAKE_CURRENT_LIST_DIR}/e2e.c LIBS corral_hal corral_policies)
target_compile_definitions(bench_e2e PRIVATE CORRAL_SOURCE_DIR_DEFAULT="${CMAKE_SOURCE_DIR}"
  CORRAL_BUILD_DIR_DEFAULT="${CMAKE_BINARY_DIR}")
add_dependencies(bench_e2e corral)
