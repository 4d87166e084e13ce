# Helpers shared by the component CMakeLists files: one way to declare a unit test,
# an integration test, a benchmark and a set of .proto files.

# corral_unit_test(<component> <name> SOURCES ... [LIBS ...] [TIMEOUT s])
# A CUnit executable tests/unit/<component>/<name>, labelled "unit".
function(corral_unit_test component name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
  set(exe test_${component}_${name})
  add_executable(${exe} ${T_SOURCES})
  target_link_libraries(${exe} PRIVATE corral_testharness ${T_LIBS})
  set_target_properties(${exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME unit.${component}.${name} COMMAND ${exe})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(unit.${component}.${name} PROPERTIES LABELS unit TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "CORRAL_SOURCE_DIR=${CMAKE_SOURCE_DIR};CORRAL_BUILD_DIR=${CMAKE_BINARY_DIR};LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tests/lsan.supp")
endfunction()

# corral_integration_test(<name> COMMAND ... [TIMEOUT s])
# A multi-process test (usually a script driving build/corral), labelled "integration".
function(corral_integration_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "COMMAND" ${ARGN})
  add_test(NAME integration.${name} COMMAND ${T_COMMAND})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  set_tests_properties(integration.${name} PROPERTIES LABELS integration TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "CORRAL_SOURCE_DIR=${CMAKE_SOURCE_DIR};CORRAL_BUILD_DIR=${CMAKE_BINARY_DIR};CORRAL=${CMAKE_BINARY_DIR}/corral")
endfunction()

# corral_bench(<name> SOURCES ... [LIBS ...]) -> build/bench/<name>
function(corral_bench name)
  cmake_parse_arguments(B "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(bench_${name} ${B_SOURCES})
  target_link_libraries(bench_${name} PRIVATE corral_benchutil ${B_LIBS})
  set_target_properties(bench_${name} PROPERTIES OUTPUT_NAME ${name}
    RUNTIME_OUTPUT_DIRECTORY ${CORRAL_BENCH_DIR})
endfunction()

# corral_protos(<target> FILES a.proto b.proto ...)
# Compiles proto/corral/v1/*.proto with protoc-c into a static library <target>.
function(corral_protos target)
  cmake_parse_arguments(P "" "" "FILES" ${ARGN})
  set(srcs)
  foreach(f ${P_FILES})
    get_filename_component(base ${f} NAME_WE)
    get_filename_component(rel ${f} DIRECTORY)
    set(out ${CMAKE_BINARY_DIR}/proto/${rel}/${base}.pb-c.c)
    add_custom_command(
      OUTPUT ${out} ${CMAKE_BINARY_DIR}/proto/${rel}/${base}.pb-c.h
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/proto
      COMMAND ${PROTOC_C} --proto_path=${CMAKE_SOURCE_DIR}/proto --c_out=${CMAKE_BINARY_DIR}/proto ${CMAKE_SOURCE_DIR}/proto/${f}
      DEPENDS ${CMAKE_SOURCE_DIR}/proto/${f}
      COMMENT "protoc-c ${f}")
    list(APPEND srcs ${out})
  endforeach()
  add_library(${target} STATIC ${srcs})
  # Generated code is not ours to warn about.
  target_compile_options(${target} PRIVATE -Wno-error -w)
  target_link_libraries(${target} PUBLIC PkgConfig::PROTOBUFC)
endfunction()
