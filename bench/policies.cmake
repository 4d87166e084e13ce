# build/bench/policies: action and training-step cost of the flow and VLA policies
# at two sizes, with FLOP counts and the fraction of the sgemm peak of the same run.
corral_bench(policies SOURCES ${CMAKE_CURRENT_LIST_DIR}/policies.c LIBS corral_policies)
