# build/bench/vla_learn: the full language-conditioning check of the VLA (>= 80% of
# episodes at the named target on the three-target scene), too long for a unit test.
corral_bench(vla_learn SOURCES ${CMAKE_CURRENT_LIST_DIR}/vla_learn.c LIBS corral_policies corral_hal)
target_compile_definitions(bench_vla_learn PRIVATE CORRAL_SOURCE_DIR_DEFAULT="${CMAKE_SOURCE_DIR}")
