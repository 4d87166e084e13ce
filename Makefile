# corral - the two commands (`make demo`, `make test`) and their helpers. Each target
# does its own set-up: installs missing Debian packages, configures and builds.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= 2
CMAKE_ARGS ?=

.PHONY: all deps build test test-unit test-integration test-asan bench demo fuzz clean

all: build

deps:
	@./deploy/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

test: build
	@tests/run-tests.sh $(BUILD) all

test-unit: build
	@tests/run-tests.sh $(BUILD) unit

test-integration: build
	@tests/run-tests.sh $(BUILD) integration

# Unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCORRAL_SANITIZE=ON -DCORRAL_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
		tests/run-tests.sh $(ASAN_BUILD) unit

bench: build
	@for b in $(BUILD)/bench/*; do [ -x "$$b" ] || continue; echo "== $$b"; "$$b" || exit 1; done

demo: build
	@./deploy/demo.sh $(BUILD)

fuzz: deps
	cmake -S . -B build-fuzz -DCORRAL_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCORRAL_CUDA=OFF
	cmake --build build-fuzz -j$(JOBS) --target fuzz_all
	@tests/fuzz/run.sh build-fuzz

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
