# Thin wrapper over CMake presets. `make run` and `make test` are all a fresh machine needs.
PRESET ?= release
BUILD := build/$(PRESET)
ARGS ?=

.PHONY: all setup build run run-tls run-cluster test test-openssl test-fast bench format clean

all: build

setup:
	@tools/setup

$(BUILD)/build.ninja:
	cmake --preset $(PRESET)

build: setup $(BUILD)/build.ninja
	cmake --build --preset $(PRESET)

# Starts a standalone server with the default configuration (see docs/operations.md).
run: build
	$(BUILD)/switchboard serve $(ARGS)

# The same with HTTPS/wss:// on 127.0.0.1:8443 and the binary protocol over TLS on 7443,
# certificate from tools/dev-cert (trust build/dev-cert/ca.pem in the client; see "TLS" in
# docs/operations.md).
run-tls: build
	tools/dev-cert build/dev-cert
	$(BUILD)/switchboard serve --tls-listen 127.0.0.1:8443 --binary-tls-listen 127.0.0.1:7443 \
		--tls-cert build/dev-cert/server.pem --tls-key build/dev-cert/server.key $(ARGS)

# A Redis Cluster (3+3, ports 7100-7105) and two nodes: a on 127.0.0.1:8080, b on 127.0.0.1:8081
# (see "Redis Cluster" in docs/operations.md). Ctrl-C stops everything.
run-cluster: build
	tools/run-cluster $(BUILD)/switchboard $(ARGS)

# The whole suite: unit + integration on the full io_uring feature set, again with the Linux 5.15
# feature set forced, then everything (with a short fuzz run) under ASan+UBSan.
test: setup
	$(MAKE) build PRESET=release
	ctest --preset release -L 'unit|integration' -j2
	SWITCHBOARD_IO_MODE=compat ctest --preset release -L 'unit|integration' -j2
	$(MAKE) build PRESET=asan
	ctest --preset asan -j2
	$(MAKE) test-openssl

# The same code on OpenSSL 3 instead of BoringSSL (-DSB_TLS=openssl): the unit tests and the
# suites that go through the TLS or crypto code (under a minute).
test-openssl: setup
	$(MAKE) build PRESET=openssl
	ctest --preset openssl -j2 -L unit
	ctest --preset openssl -j2 -R 'integration\.(test_tls|test_chat|node\.tls)$$'

# Unit and integration tests on the release build only.
test-fast: build
	ctest --preset release -L 'unit|integration' -j2

# The microbenchmarks and a ~20 s echo smoke run against Node ws (docs/benchmarks.md has the
# full scenarios: bench/run echo|latency|hold|http). Installs the peers first, and configures
# again so that CMake finds the libraries just installed.
bench:
	tools/setup --bench
	cmake --preset release >/dev/null
	cmake --build --preset release
	bench/run micro
	bench/run echo-short

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cc')

clean:
	rm -rf build
