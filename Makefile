# berth: `make` builds, `make test` runs every test, `make demo` shows it working.
BUILD      ?= build
ASAN_BUILD ?= build-asan
CLANG_BUILD ?= build-clang
FUZZ_BUILD ?= build-fuzz
PREFIX     ?= /usr/local
MESON      ?= meson
PYTHON     ?= /usr/bin/python3

.PHONY: all deps test unit unit-asan clang-build e2e format format-check fuzz bench demo install clean

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	@command -v $(MESON) >/dev/null || ./scripts/install-deps.sh
	$(MESON) setup $(BUILD) --prefix=$(PREFIX)

$(ASAN_BUILD)/build.ninja:
	$(MESON) setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

deps:
	./scripts/install-deps.sh

test: deps format-check all clang-build unit unit-asan e2e

unit: all
	meson test -C $(BUILD) --print-errorlogs

unit-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		meson test -C $(ASAN_BUILD) --print-errorlogs

# clang as a second compiler: it refuses, among others, a goto that jumps over a cleanup variable.
clang-build:
	@[ -f $(CLANG_BUILD)/build.ninja ] || CC=clang $(MESON) setup $(CLANG_BUILD) >/dev/null
	ninja -C $(CLANG_BUILD)

e2e: all
	BERTH_BIN=$(CURDIR)/$(BUILD)/berth $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@out=$$(clang-format --dry-run $$(git ls-files '*.c' '*.h') 2>&1); \
	if [ -n "$$out" ]; then echo "$$out" | head -40; echo "run 'make format'"; exit 1; fi

fuzz:
	CC=clang $(MESON) setup $(FUZZ_BUILD) -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false --reconfigure 2>/dev/null || \
		CC=clang $(MESON) setup $(FUZZ_BUILD) -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(FUZZ_BUILD)
	./tests/fuzz/run.sh $(FUZZ_BUILD) $${FUZZ_SECONDS:-60}

bench: all
	./bench/run.sh

demo: deps all
	./scripts/demo.sh

install: all
	DESTDIR=$(DESTDIR) meson install -C $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(CLANG_BUILD) $(FUZZ_BUILD)
