#!/usr/bin/env python3
"""Seeds for the uevent_sysfs, modules_*, initrd_* and proto_* fuzz targets,
cut from real data.

Usage (from the repository root): fuzz/make-seeds.py [OUTDIR]   (default fuzz/seeds)

Sources: the captured sysfs tree (uevent/tests/fixtures/host-sys), the
installed Debian module trees (/lib/modules/*: modules.dep,
.alias, .softdep, .builtin, .builtin.modinfo and a few small modules), the
host's modprobe.d and ld.so.conf, /boot/config-*, the captured guest
MODALIAS lists (modules/tests/fixtures) and the initrd-builder's golden
archive (initrd-builder/tests/fixtures/tiny.cpio). Every file is an excerpt
(cut at a line or record boundary) of at most MAX_SEED bytes, written in
the input format of its target (see each target's doc comment). The same
machine gives the same bytes.
"""
import ctypes
import gzip
import os
import subprocess
import sys
import tempfile

MAX_SEED = 16 * 1024
MODULES = "/lib/modules"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBC = ctypes.CDLL(None)
LIBC.fnmatch.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def cut(lines, limit=MAX_SEED):
    """As many whole lines (bytes, with their newline) as fit in `limit`."""
    out = b""
    for line in lines:
        if len(out) + len(line) > limit:
            break
        out += line
    return out


def trees():
    """(version, dir) of every installed tree with a modules.dep, sorted."""
    found = []
    for v in sorted(os.listdir(MODULES)):
        d = os.path.join(MODULES, v)
        if os.path.exists(os.path.join(d, "modules.dep")):
            found.append((v, d))
    return found


WRITTEN = set()


def write(outdir, target, name, data):
    """Writes one seed; empty ones and repeats of a seed of the target are skipped."""
    assert len(data) <= 64 * 1024, (target, name, len(data))
    if not data or (target, data) in WRITTEN:
        return
    WRITTEN.add((target, data))
    d = os.path.join(outdir, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def uevent_sysfs_seeds(outdir):
    """The first 40 devices of the captured host tree (walk order: parents
    first, names sorted) whose uevent file is not empty: 1 byte of devpath
    length, the devpath, the file."""
    root = os.path.join(REPO, "uevent/tests/fixtures/host-sys")
    found = []

    def walk(d):
        names = sorted(os.listdir(d))
        u = os.path.join(d, "uevent")
        if "uevent" in names and os.path.isfile(u) and not os.path.islink(u) and os.path.getsize(u):
            found.append(d)
        for n in names:
            p = os.path.join(d, n)
            if os.path.isdir(p) and not os.path.islink(p):
                walk(p)

    walk(os.path.join(root, "devices"))
    for i, d in enumerate(found[:40]):
        devpath = d[len(root):].encode()
        write(outdir, "uevent_sysfs", f"{i:03}", bytes([len(devpath)]) + devpath + read(os.path.join(d, "uevent")))


def modules_seeds(outdir):
    for v, d in trees():
        dep = read(os.path.join(d, "modules.dep")).splitlines(keepends=True)
        write(outdir, "modules_dep", f"{v}-head", cut(dep, 8 * 1024))
        # Long dependency chains: the DRM drivers.
        drm = [l for l in dep if b"/gpu/drm/" in l.split(b":")[0]]
        write(outdir, "modules_dep", f"{v}-drm", cut(drm))

        alias = read(os.path.join(d, "modules.alias")).splitlines(keepends=True)
        header = [l for l in alias if l.startswith(b"#")]
        for kind, needle in [("head", b""), ("pci", b"alias pci:"), ("usb", b"alias usb:"),
                             ("acpi", b"alias acpi*:"), ("virtio", b"alias virtio:")]:
            body = [l for l in alias if not l.startswith(b"#") and l.startswith(needle)]
            if kind != "head" and "cloud" in v:
                continue
            write(outdir, "modules_alias", f"{v}-{kind}", cut(header + body, 8 * 1024))

        write(outdir, "modules_softdep", v, read(os.path.join(d, "modules.softdep")))

        builtin = cut(read(os.path.join(d, "modules.builtin")).splitlines(keepends=True), 4 * 1024)
        recs = read(os.path.join(d, "modules.builtin.modinfo")).split(b"\0")
        # Every alias record, then the others, whole records only.
        recs = [r for r in recs if b".alias=" in r] + [r for r in recs if r and b".alias=" not in r]
        modinfo = cut([r + b"\0" for r in recs], MAX_SEED - len(builtin) - 2)
        write(outdir, "modules_builtin", v, len(builtin).to_bytes(2, "little") + builtin + modinfo)


def modprobe_conf_seeds(outdir):
    seen = set()
    for conf_dir in ["/etc/modprobe.d", "/lib/modprobe.d", "/usr/lib/modprobe.d", "/run/modprobe.d"]:
        if not os.path.isdir(conf_dir):
            continue
        for name in sorted(os.listdir(conf_dir)):
            data = read(os.path.join(conf_dir, name))
            if name.endswith(".conf") and data not in seen:
                seen.add(data)
                write(outdir, "modules_modprobe_conf", name, data[:MAX_SEED])
    # The oracle test's crafted config, with a kernel command line after the NUL.
    crafted = (b"# earlier than modules.softdep: wins for ext4\n"
               b"softdep ext4 pre: virtio-blk post: loop\n"
               b"alias my-disk virtio_blk\nalias my-glob* dm-mod\n"
               b"options virtio_blk queue_depth=8\noptions my_disk from_alias=1\n"
               b"options  loop   max_loop=4\tmax_part=2\nblacklist e1000\n"
               b"softdep snd-hda-* pre: snd-hwdep\nsoftdep cifs pre: \\\n  gcm post: md4\n"
               b"remove foo /bin/true\n\0"
               b"root=/dev/vda1 modprobe.blacklist=snd-pcsp,floppy module_blacklist=evil "
               b"virtio-net.napi_tx=1 e1000e.InterruptThrottleRate=1.5")
    write(outdir, "modules_modprobe_conf", "crafted", crafted)


def fnmatch_seeds(outdir):
    plain = [(v, d) for v, d in trees() if "cloud" not in v]
    if not plain:
        return
    v, d = plain[0]
    patterns = [l.split(b" ")[1] for l in read(os.path.join(d, "modules.alias")).splitlines()
                if l.startswith(b"alias ")]
    # One MODALIAS per bus (the text before ':') with its first matching
    # pattern, and one near miss (the subject's last byte changed).
    buses = set()
    for profile in ["q35", "pc", "microvm"]:
        path = os.path.join(REPO, f"modules/tests/fixtures/guest-modaliases-{profile}.txt")
        for m in read(path).splitlines():
            bus = m.split(b":")[0]
            if not m or m.startswith(b"#") or bus in buses:
                continue
            hits = [p for p in patterns if len(p) < 256 and LIBC.fnmatch(p, m, 0) == 0]
            if not hits:
                continue
            p = hits[0]
            name = bus.decode()
            write(outdir, "modules_fnmatch", name, bytes([len(p)]) + p + m)
            if not buses:
                write(outdir, "modules_fnmatch", name + "-miss", bytes([len(p)]) + p + m[:-1] + b"#")
            buses.add(bus)
    for i, p in enumerate([b"usb:v0BDAp8153d*dc*dsc*dp*icFFisc*ip*in*", b"[[:alpha:]][!0-9]*[.-.]x\\*",
                           b"of:N*T*Cvirtio,mmioC*", b"[]a-]?[^[=a=]]"]):
        write(outdir, "modules_fnmatch", f"syntax-{i}", bytes([len(p)]) + p + p.replace(b"*", b"x"))


def initrd_seeds(outdir):
    tiny = read(os.path.join(REPO, "initrd-builder/tests/fixtures/tiny.cpio"))
    write(outdir, "initrd_newc", "tiny", tiny)
    write(outdir, "initrd_newc", "tiny-gzip-concat", tiny + gzip.compress(tiny, mtime=0))
    with tempfile.TemporaryDirectory() as t:
        fixtures = os.path.join(REPO, "modules/tests/fixtures")
        names = sorted(n for n in os.listdir(fixtures) if n.endswith(".txt"))
        listing = "".join(f"{n}\n" for n in names).encode()
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "--reproducible"], input=listing,
                              cwd=fixtures, capture_output=True, check=True).stdout
        write(outdir, "initrd_newc", "cpio-modaliases", cpio[:MAX_SEED])

        plain = [d for v, d in trees() if "cloud" not in v]
        ko = os.path.join(plain[0], "kernel/net/6lowpan/nhc_ipv6.ko") if plain else None
        if ko and os.path.exists(ko):
            write(outdir, "initrd_elf", "module-nhc_ipv6.ko", read(ko))
            sec = os.path.join(t, "modinfo")
            r8169 = os.path.join(plain[0], "kernel/drivers/net/ethernet/realtek/r8169.ko")
            if os.path.exists(r8169):
                subprocess.run(["objcopy", "-O", "binary", "--only-section=.modinfo", r8169, sec], check=True)
                write(outdir, "initrd_text", "modinfo-r8169", b"\0" + read(sec)[:MAX_SEED])
        for lib in ["/usr/lib/x86_64-linux-gnu/libdl.so.2", "/usr/bin/true"]:
            if os.path.exists(lib):
                write(outdir, "initrd_elf", os.path.basename(lib), read(lib)[:64 * 1024])
    for script in ["/usr/bin/zcat", "/usr/sbin/update-initramfs", "/usr/bin/ldd"]:
        if os.path.exists(script):
            write(outdir, "initrd_elf", "script-" + os.path.basename(script), read(script)[:1024])

    conf = b""
    for p in ["/etc/ld.so.conf"] + sorted(os.path.join("/etc/ld.so.conf.d", n)
                                           for n in os.listdir("/etc/ld.so.conf.d")):
        conf += read(p)
    write(outdir, "initrd_text", "ld.so.conf", b"\1" + conf[:MAX_SEED])
    for v, _ in trees():
        cfg = f"/boot/config-{v}"
        if os.path.exists(cfg):
            lines = read(cfg).splitlines(keepends=True)
            rd = [l for l in lines if b"_RD_" in l or b"BLK_DEV_INITRD" in l or l.startswith(b"#\n")]
            write(outdir, "initrd_text", f"config-{v}", b"\2" + cut(lines[:40] + rd, MAX_SEED - 1))
    write(outdir, "initrd_text", "source-date-epoch", b"\3" + b"1700000000\n")


def proto_seeds(outdir):
    """The events wire from a real boot (tools/tests/fixtures/boot-q35.log,
    one record per line after the host's arrival time), with an output frame
    of raw bytes; the host's records; baked configs; kernel command lines."""
    log = read(os.path.join(REPO, "tools/tests/fixtures/boot-q35.log")).splitlines(keepends=True)
    records = [l.split(b" ", 2)[2] for l in log if l.startswith(b"E ")]
    stream = cut(records, MAX_SEED - 200)
    out = b"@kestrel 5.000000000 out fd=1 len=12\nhello\n\x00\xff wo"
    write(outdir, "proto_guest", "boot-q35", b"\x40" + stream + out)
    write(outdir, "proto_guest", "boot-q35-bytewise", b"\x01" + cut(records, 2048))
    write(outdir, "proto_host", "stdin",
          b"@kestrel 0.000000000 in len=6\nhello\n@kestrel 0.000000000 in_eof\n@kestrel 0.000000000 ack\n")
    write(outdir, "proto_config", "run",
          b"arg=/bin/echo\narg=a\\x20b\nexe=/usr/bin/echo\nenv=PATH=/bin\ncwd=/tmp\nstdin=1\n"
          b"user=1000 1000 4,27\nshare=9p ro root /\nshare=virtiofs rw s1 /home/me\nhost_root=root\n"
          b"net=10.0.2.15/24 10.0.2.2 10.0.2.3\n")
    write(outdir, "proto_config", "base", b"frozen=1\nplan=virtio_mmio\nplan=ext4\nearly=ext4\n")
    write(outdir, "proto_cmdline", "harness",
          b"console=ttyS0 panic=-1 printk.devkmsg=on rdinit=/init kestrel.events quiet tsc_early_khz=2600000 kestrel.timeout=2.5\n")
    write(outdir, "proto_cmdline", "root",
          b'root=UUID=6b1c3c4e-2f4a-4d35-9c51-0a7f2b8e5d11 rootfstype=ext4 rw rootdelay=1 "kestrel.modules=a,b" -- init args\n')


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "fuzz/seeds")
    proto_seeds(outdir)
    uevent_sysfs_seeds(outdir)
    modules_seeds(outdir)
    modprobe_conf_seeds(outdir)
    fnmatch_seeds(outdir)
    initrd_seeds(outdir)


if __name__ == "__main__":
    main()
