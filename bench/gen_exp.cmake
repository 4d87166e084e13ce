# build/bench/gen_exp: the generative experiment files (reach-vla, reach-flow) through
# a learner and an env worker process: the VLA's evaluated success beside the unit
# recipe and the 80% target, and the flow's RL gain over a BC phase short of the ceiling.
corral_bench(gen_exp SOURCES ${CMAKE_CURRENT_LIST_DIR}/gen_exp.c LIBS corral_policies corral_hal)
target_compile_definitions(bench_gen_exp PRIVATE CORRAL_SOURCE_DIR_DEFAULT="${CMAKE_SOURCE_DIR}"
  CORRAL_BUILD_DIR_DEFAULT="${CMAKE_BINARY_DIR}")
add_dependencies(bench_gen_exp corral)
