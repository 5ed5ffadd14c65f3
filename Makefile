# Every tier of Kestrel's tests, and the demo; CI runs `make test`.
TARGET      := x86_64-unknown-linux-gnu
# The init has a target folder of its own: its build (RUSTC_BOOTSTRAP,
# other flags) would otherwise rebuild the host tool's shared
# dependencies each time the two alternate.
INIT_TARGET_DIR := target/init
INIT        := $(INIT_TARGET_DIR)/$(TARGET)/release/kestrel-init
KESTREL     := target/release/kestrel
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := uevent_netlink uevent_sysfs probe_any \
	modules_dep modules_alias modules_softdep modules_builtin modules_modprobe_conf modules_fnmatch \
	initrd_newc initrd_elf initrd_text \
	proto_guest proto_host proto_config proto_cmdline

.PHONY: all setup init tools bench-programs demo test lint fuzz bench clean

all: init tools

setup:
	scripts/setup

# The init must be static: no INTERP program header. Its size is a target
# (BENCHMARKS.md): std is rebuilt for it without the backtrace symbolizer
# (-Zbuild-std, which needs the rust-src component; RUSTC_BOOTSTRAP lets
# the stable toolchain take the flag), optimised for size, linked non-PIE
# (no relocations to carry), without unwind tables (panic = "abort": nothing
# unwinds) and with identical code folded. Without rust-src it is built
# with the prebuilt std: it works the same, only larger.
INIT_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static \
	-C force-unwind-tables=no -C link-arg=-Wl,--icf=all -C link-arg=-Wl,--no-eh-frame-hdr
RUST_SRC := $(shell rustc --print sysroot)/lib/rustlib/src/rust/library/std
init:
	@if [ -d "$(RUST_SRC)" ]; then \
		RUSTC_BOOTSTRAP=1 RUSTFLAGS="$(INIT_RUSTFLAGS)" CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
			cargo build --release --target $(TARGET) --target-dir $(INIT_TARGET_DIR) -p kestrel-init \
			-Zbuild-std=std,panic_abort -Zbuild-std-features= ; \
	else \
		echo "init: no rust-src component (rustup component add rust-src): building with the prebuilt std, larger" >&2; \
		RUSTFLAGS="$(INIT_RUSTFLAGS)" CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
			cargo build --release --target $(TARGET) --target-dir $(INIT_TARGET_DIR) -p kestrel-init; \
	fi
	@if readelf -l $(INIT) | grep -q INTERP; then echo "$(INIT) is not static" >&2; exit 1; fi
	@echo "init: static, $$(stat -c %s $(INIT)) bytes"

# The benchmarks' yardsticks (BENCHMARKS.md): a no-op init (the floor) and
# the fixed-list loader, static C programs kept in bench/.
BENCH_DIR := target/bench
bench-programs: $(BENCH_DIR)/stopwatch $(BENCH_DIR)/fixed-loader
$(BENCH_DIR)/stopwatch: bench/stopwatch.c
	@mkdir -p $(BENCH_DIR)
	gcc -static -Os -Wall -Wextra -o $@ $<
$(BENCH_DIR)/fixed-loader: bench/fixed-loader.c
	@mkdir -p $(BENCH_DIR)
	gcc -static -Os -Wall -Wextra -pthread -o $@ $<

tools:
	cargo build --release -p kestrel

# The main job: boot a VM with Kestrel, run a command, show the phase table.
demo: setup init tools
	$(KESTREL) run --report -- /bin/sh -c 'read -r v < /proc/version; echo "hello from: $$v"; \
		printf "modules the init loaded:"; while read -r m rest; do printf " %s" "$$m"; done < /proc/modules; echo'

# Every test: unit, property, oracle (kmod), the VM tests, the cargo
# runner's example crate, and a short fuzz run of every parser.
test: setup init bench-programs lint
	cargo test --workspace
	$(MAKE) cargo-runner
	$(MAKE) fuzz FUZZ_SECONDS=10

# The long runs of issue 12, one at a time, each printing its figures: 100
# MiB of payload output streamed through the kestrel binary (exact, with
# its peak memory and wall time), 50 boots in a row and 4 at once leaving
# nothing behind, a 256-LUN device storm. `make test` runs short versions.
.PHONY: soak
soak: setup init tools
	KESTREL_BIN=$(abspath $(KESTREL)) cargo test -p kestrel-tests --test io --test load --test faults \
		-- --ignored --test-threads=1 --nocapture soak_

# Coverage-guided fuzzing (cargo-fuzz/libFuzzer, needs a nightly toolchain):
# each target for FUZZ_SECONDS from the real-capture seeds; a crash fails.
# A target's seeds are fuzz/seeds/TARGET/ unless FUZZ_SEEDS_TARGET names
# other directories (fuzz/README.md says where they come from); its longest
# input is FUZZ_MAX_LEN_TARGET, else FUZZ_MAX_LEN_CRATE (the name's first
# word), else FUZZ_MAX_LEN.
FUZZ_SEEDS_uevent_netlink := uevent/tests/fixtures/host-netlink uevent/tests/fixtures/guest-pc/modules
FUZZ_MAX_LEN := 8300
FUZZ_MAX_LEN_probe_any := 300000
FUZZ_MAX_LEN_modules := 32768
FUZZ_MAX_LEN_modules_fnmatch := 512
FUZZ_MAX_LEN_initrd := 32768
FUZZ_MAX_LEN_initrd_elf := 65536
FUZZ_MAX_LEN_proto := 70000
fuzz_seeds = $(addprefix ../,$(or $(FUZZ_SEEDS_$(1)),fuzz/seeds/$(1)))
fuzz_max_len = $(or $(FUZZ_MAX_LEN_$(1)),$(FUZZ_MAX_LEN_$(firstword $(subst _, ,$(1)))),$(FUZZ_MAX_LEN))

fuzz:
	@if ! rustup run nightly rustc --version >/dev/null 2>&1; then \
		echo "fuzz: SKIPPED: no nightly toolchain (rustup toolchain install nightly); the property tests cover the same parsers on stable" >&2; \
	else \
		command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 1; \
		$(foreach t,$(FUZZ_TARGETS),mkdir -p fuzz/corpus/$(t) && \
			(cd fuzz && cargo +nightly fuzz run $(t) corpus/$(t) $(call fuzz_seeds,$(t)) -- \
				-max_total_time=$(FUZZ_SECONDS) -max_len=$(call fuzz_max_len,$(t))) || exit 1;) \
	fi

# Layout (rustfmt.toml) and clippy, both as errors; CI runs it before the tests.
lint:
	cargo fmt --all --check
	cd fuzz && cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: init
	cargo bench --workspace

# `kestrel` and its static init where the tool finds them: PREFIX/bin and
# PREFIX/lib/kestrel (a kestrel looks beside itself, then in ../lib/kestrel).
PREFIX ?= /usr/local
install: init tools bench-programs
	install -D -m 755 $(KESTREL) $(DESTDIR)$(PREFIX)/bin/kestrel
	install -D -m 755 $(INIT) $(DESTDIR)$(PREFIX)/lib/kestrel/kestrel-init
	install -D -m 755 $(BENCH_DIR)/stopwatch $(DESTDIR)$(PREFIX)/lib/kestrel/stopwatch
	install -D -m 755 $(BENCH_DIR)/fixed-loader $(DESTDIR)$(PREFIX)/lib/kestrel/fixed-loader

# Kestrel as cargo's runner: the example crate's tests (examples/cargo-runner,
# its own crate) each run in a VM on Debian's 6.1 kernel, and pass only
# there. One boot per test binary; the kestrel of `cargo test` (debug) is enough.
KERNEL_61 := $(lastword $(sort $(filter-out %cloud-amd64,$(wildcard /boot/vmlinuz-6.1.*-amd64))))
RUNNER_KESTREL := $(CURDIR)/target/debug/kestrel
cargo-runner: setup init
	cargo build -q -p kestrel
	cd examples/cargo-runner && \
		CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(RUNNER_KESTREL) test --kernel $(KERNEL_61)" \
		KESTREL_EXPECT_RELEASE=$(patsubst /boot/vmlinuz-%,%,$(KERNEL_61)) KESTREL_EXPECT_UID=$$(id -u) \
		cargo test

# A kernel developer's loop, once: a small kernel source tree (Debian's
# linux-source-6.1, tinyconfig plus virtio, 9p, overlay; its modules in the
# tree's mods/) built by scripts/kernel-tree, then booted with
# `kestrel run --kernel TREE` by a VM test. Long (a kernel build): not in `make test`.
KERNEL_TREE ?= $(CURDIR)/target/kernel-tree/linux-source-6.1
kernel-tree-test: setup init
	scripts/kernel-tree $(dir $(KERNEL_TREE))
	KESTREL_KERNEL_TREE=$(KERNEL_TREE) cargo test -p kestrel-tests --test testvm -- --ignored --nocapture kernel_tree

clean:
	cargo clean
