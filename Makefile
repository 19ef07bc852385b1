# The README's two commands are `make run` and `make test`; everything else is a helper.
.PHONY: run test build unit bench bench-peers tsan clean

run:            ## build and run the gateway with the demo route
	scripts/run.sh

test:           ## install, build and run every test (CI runs this)
	scripts/test.sh

build:
	scripts/setup.sh && scripts/build.sh default

unit: build
	cd build && ctest --output-on-failure -L unit

tsan:           ## ThreadSanitizer build of the unit tests
	scripts/setup.sh && scripts/build.sh tsan lowart_unit_tests && \
	  cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -L unit

bench:          ## wrk against the mock directly and through lowart
	scripts/setup.sh --bench && scripts/build.sh default && bench/run.sh

bench-peers:    ## ../shared/bench/peer_bench.sh with lowart as the extra target
	scripts/setup.sh --bench && scripts/build.sh default && bench/peers.sh

clean:
	rm -rf build build-asan build-tsan
