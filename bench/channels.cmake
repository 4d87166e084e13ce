corral_bench(channels SOURCES ${CMAKE_CURRENT_LIST_DIR}/channels.c LIBS corral_channels corral_controller)
