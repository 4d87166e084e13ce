# build/bench/learner: SAC updates/s and batch-1 actor latency against PyTorch.
corral_bench(learner SOURCES ${CMAKE_CURRENT_LIST_DIR}/learner.c LIBS corral_policies)
target_compile_definitions(bench_learner PRIVATE CORRAL_SOURCE_DIR_DEFAULT="${CMAKE_SOURCE_DIR}")
