corral_bench(hal SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/hal.c LIBS corral_hal)
