# The README's two commands are `make run` and `make test`; everything else is a helper.
.PHONY: run test build unit bench bench-peers bench-streams bench-fleet soak tsan fuzz replicas chaos clean

run:            ## build and run the gateway with the demo route
	scripts/run.sh

test:           ## install, build and run every test (CI runs this)
	scripts/test.sh

build:
	scripts/setup.sh && scripts/build.sh default

unit: build
	cd build && ctest --output-on-failure -L unit

tsan:           ## ThreadSanitizer: unit tests, then the e2e suite against a TSan lowart
	scripts/setup.sh && scripts/build.sh tsan lowart_unit_tests lowart lowart-mock
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan-suppressions.txt" \
	  ctest --output-on-failure -L unit
	rm -rf build-tsan/reports && mkdir -p build-tsan/reports
	TSAN_OPTIONS="log_path=$(CURDIR)/build-tsan/reports/tsan suppressions=$(CURDIR)/tests/tsan-suppressions.txt" \
	  LOWART_BIN=$(CURDIR)/build-tsan/lowart LOWART_TIME_SCALE=8 tests/e2e/run.sh
	TSAN_OPTIONS="log_path=$(CURDIR)/build-tsan/reports/tsan suppressions=$(CURDIR)/tests/tsan-suppressions.txt" \
	  LOWART_IO_THREADS=4 LOWART_ACTOR_THREADS=2 LOWART_BIN=$(CURDIR)/build-tsan/lowart LOWART_TIME_SCALE=8 \
	  tests/e2e/run.sh --only-files limits.test.mjs resilience.test.mjs proxy.test.mjs fleet.test.mjs
	@if ls build-tsan/reports/tsan.* >/dev/null 2>&1; then \
	  echo "ThreadSanitizer reports in build-tsan/reports:"; grep -h WARNING build-tsan/reports/tsan.*; exit 1; \
	else echo "ThreadSanitizer: no reports"; fi

chaos:          ## tests/e2e/chaos.test.mjs for CHAOS_ROUNDS (10) rounds, the first with CHAOS_SEED (random)
	scripts/setup.sh && scripts/build.sh default lowart lowart-mock
	CHAOS_ROUNDS=$(or $(CHAOS_ROUNDS),10) tests/e2e/run.sh --only-files chaos.test.mjs

replicas:       ## two replicas sharing one Redis and one PostgreSQL on loopback
	scripts/replicas.sh

fuzz:           ## every libFuzzer target for FUZZ_SECONDS (default 60) each
	scripts/setup.sh && scripts/fuzz.sh

bench:          ## wrk against the mock directly and through lowart
	scripts/setup.sh --bench && scripts/build.sh default && bench/run.sh

bench-fleet:    ## the hot-path cost of limits shared through Redis (vs. in-process limits)
	scripts/setup.sh --bench && scripts/build.sh default && bench/fleet.sh

bench-streams:  ## STREAMS (9,500) concurrent slow-drip streams: RSS and CPU per stream
	scripts/setup.sh && scripts/build.sh default && bench/streams.sh

soak:           ## SOAK_SECONDS (180) of mixed traffic with faults: RSS, descriptors, children
	scripts/setup.sh && scripts/build.sh default && bench/soak.sh

bench-spike:    ## RSS after 5,000 idle connections and 200 stalled readers of the console bundle
	scripts/setup.sh --bench && scripts/build.sh default && bench/spike.sh

bench-allocs:   ## heap allocations per JSON request, counted by heaptrack (exact, no timing noise)
	scripts/setup.sh --bench && scripts/build.sh default && bench/allocs.sh

bench-peers:    ## ../shared/bench/peer_bench.sh with lowart as the extra target
	scripts/setup.sh --bench && scripts/build.sh default && bench/peers.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz
