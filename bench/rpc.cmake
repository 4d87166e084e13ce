# build/bench/rpc: the RPC layer against plain TCP (latency and stream throughput).
corral_bench(rpc SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/rpc.c LIBS corral_rpc)
