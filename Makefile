# Every tier of Kestrel's tests, and the demo; CI runs `make test`.
TARGET      := x86_64-unknown-linux-gnu
INIT        := target/$(TARGET)/release/kestrel-init
KESTREL     := target/release/kestrel
FUZZ_SECONDS ?= 60

.PHONY: all setup init tools demo test unit vm-test lint fuzz bench clean

all: init tools

setup:
	scripts/setup

# The init must be static: no INTERP program header.
init:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target $(TARGET) -p kestrel-init
	@if readelf -l $(INIT) | grep -q INTERP; then echo "$(INIT) is not static" >&2; exit 1; fi
	@echo "init: static, $$(stat -c %s $(INIT)) bytes"

tools:
	cargo build --release -p kestrel

# The main job: boot a VM with Kestrel, run a command, show the phase table.
demo: setup init tools
	$(KESTREL) run --report -- /bin/sh -c 'echo "hello from $$(uname -sr) on $$(nproc) CPUs"; echo "modules loaded: $$(cut -d" " -f1 /proc/modules | tr "\n" " ")"'

# Every test: unit, property, oracle (kmod), and the VM tests.
test: setup init
	cargo test --workspace

lint:
	cargo clippy --workspace --all-targets -- -D warnings

bench: init
	cargo bench --workspace

clean:
	cargo clean
