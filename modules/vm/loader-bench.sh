#!/bin/sh
# Tries the kestrel-modules loader against the real Debian 6.1 kernel in a
# TCG VM, never on the host: the q35 guest's modules (tests/fixtures) are
# loaded by examples/vm_loader.rs as PID 1 with 1, 2 and 4 threads on a
# 2-vCPU q35 guest, alternating, RUNS boots each; then one boot with a
# corrupt copy of virtio_rng.ko (the kernel's error must be reported and the
# rest must load). Prints the loader's wall time (first load start to last
# load end) per boot and the medians.
# Needs: qemu-system-x86_64, cpio, linux-image-6.1.0-56-amd64.
# Usage (from modules/): sh vm/loader-bench.sh [RUNS]
set -eu
RUNS=${1:-3}
K=6.1.0-56-amd64
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# KEEP=DIR keeps the console logs there.
trap 'if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/log-* "$KEEP"/; fi; rm -rf "$work"' EXIT
target=${CARGO_TARGET_DIR:-/work/target-modules-static}
(cd "$here" && CARGO_TARGET_DIR=$target RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build --release -q -p kestrel-modules --example vm_loader --target x86_64-unknown-linux-gnu)
bin=$target/x86_64-unknown-linux-gnu/release/examples/vm_loader
root=$work/root
mkdir -p "$root/proc" "$root/sys" "$root/dev"
cp "$bin" "$root/init"
"$bin" prepare /lib/modules/$K "$here/tests/fixtures/guest-modaliases-q35.txt" "$root" > "$work/modules.txt"
echo "modules in the plan: $(wc -l < "$work/modules.txt")"
(cd "$root" && find . | sort | cpio -o -H newc --quiet) > "$work/initrd"

# The corrupt variant: virtio_rng.ko with its ELF header and middle damaged.
croot=$work/croot
cp -a "$root" "$croot"
rng=$(find "$croot/lib/modules" -name 'virtio-rng.ko' -o -name 'virtio_rng.ko' | head -1)
printf 'JUNKJUNK' | dd of="$rng" bs=1 seek=0 conv=notrunc 2>/dev/null
(cd "$croot" && find . | sort | cpio -o -H newc --quiet) > "$work/initrd-corrupt"

boot() { # initrd threads -> console log on stdout
	timeout 600 qemu-system-x86_64 -nodefaults -no-user-config -no-reboot -display none \
		-accel tcg -M q35 -m 512 -smp 2 \
		-chardev stdio,id=console,signal=off -serial chardev:console \
		-device virtio-serial-pci,id=vserial -chardev null,id=events \
		-device virtserialport,bus=vserial.0,chardev=events,name=org.kestrel.events \
		-blockdev driver=null-co,node-name=scratch,size=1048576,read-zeroes=on \
		-device virtio-blk-pci,drive=scratch,serial=kestrel-scratch \
		-netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
		-object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
		-kernel /boot/vmlinuz-$K -initrd "$1" \
		-append "console=ttyS0 panic=-1 quiet rdinit=/init kestrel.threads=$2" 2>&1 | tr -d '\r'
}

: > "$work/results"
i=0
while [ $i -lt "$RUNS" ]; do
	for t in 1 2 4; do
		boot "$work/initrd" $t > "$work/log-$t-$i"
		line=$(grep '^KESTREL-VM result' "$work/log-$t-$i" || true)
		if [ -z "$line" ]; then cat "$work/log-$t-$i"; echo "boot failed (threads=$t)" >&2; exit 1; fi
		echo "$line"
		echo "$line" >> "$work/results"
		if [ $i -eq 0 ] && [ $t -eq 1 ]; then
			echo "modules the kernel refused in this guest (expected under TCG: no SVM, no cpufreq, no EDAC):"
			grep '^KESTREL-VM module .* error:' "$work/log-$t-$i" | sed 's/^KESTREL-VM module /  /'
			base_failed=$(echo "$line" | sed 's/.* failed=\([0-9]*\).*/\1/')
			base_skipped=$(echo "$line" | sed 's/.* skipped=\([0-9]*\).*/\1/')
		fi
	done
	i=$((i + 1))
done
for t in 1 2 4; do
	grep "threads=$t " "$work/results" | sed "s/.*wall_ms=//" | sort -n |
		awk -v t=$t '{a[NR]=$1} END {printf "threads=%d median wall %.1f ms (min %.1f, max %.1f, n=%d)\n", t, a[int((NR+1)/2)], a[1], a[NR], NR}'
done

echo "corrupt virtio_rng.ko:"
boot "$work/initrd-corrupt" 2 > "$work/log-corrupt"
grep -E '^KESTREL-VM (module virtio_rng|result)' "$work/log-corrupt"
grep -q '^KESTREL-VM module virtio_rng .*error: failed to insert module virtio_rng' "$work/log-corrupt"
grep -q "^KESTREL-VM result .* failed=$((base_failed + 1)) skipped=$base_skipped " "$work/log-corrupt"
echo "corrupt module reported, the rest loaded: ok"
