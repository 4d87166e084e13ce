# build/bench/controller: 1000 simulated agents against a real controller process.
if(TARGET corral_rpc AND TARGET corral)
  corral_bench(controller SOURCES ${CMAKE_CURRENT_LIST_DIR}/controller.c
               LIBS corral_agents corral_controller PkgConfig::SQLITE)
  add_dependencies(bench_controller corral)
endif()
