corral_bench(buffer SOURCES buffer.c LIBS corral_buffer)
