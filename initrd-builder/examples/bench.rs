//! Measurements for issue 6's closing note, side by side in one run:
//! build time (cold and cached), size, and boot time to the init's start for
//! each compression, plus the size of mkinitramfs images for the same kernel.
//!
//! The module closure comes from `modprobe --show-depends` here (this is a
//! benchmark, not the builder: the builder gets its closure from
//! kestrel-modules). The init is a tiny static C program built with gcc that
//! prints CLOCK_BOOTTIME and the kernel's initramfs log lines, then powers off.
//!
//! cargo run --release -p kestrel-initrd --example bench -- [--boots N] [--mkinitramfs]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_initrd::{Archive, Cache, Compression, KeyHasher, RdSupport};
use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type R<T> = Result<T, Box<dyn Error>>;

/// The devices of the default machine (virtio disk, net, console, rng, scsi) and the root fs.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio-rng",
    "virtio_scsi",
    "ext4",
];
const MTIME: u32 = 0;
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

const INIT_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/klog.h>
#include <sys/reboot.h>
int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    printf("KESTREL_INIT_START %ld.%06ld\n", (long)ts.tv_sec, ts.tv_nsec / 1000);
    static char buf[1 << 20];
    int n = klogctl(3, buf, sizeof buf - 1);
    if (n > 0) {
        buf[n] = 0;
        for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
            if (strstr(l, "initramfs") || strstr(l, "initrd") || strstr(l, "Run /init"))
                printf("KLOG %s\n", l);
    }
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
"#;

fn kver() -> String {
    std::env::var("KVER").unwrap_or_else(|_| "6.1.0-56-amd64".into())
}

fn module_closure(kver: &str) -> R<Vec<PathBuf>> {
    let mut out = Vec::new();
    for m in MODULES {
        let o = Command::new("modprobe")
            .args(["--show-depends", "-S", kver, m])
            .output()?;
        for line in String::from_utf8(o.stdout)?.lines() {
            if let Some(p) = line.strip_prefix("insmod ") {
                let p = PathBuf::from(p.trim());
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    Ok(out)
}

fn build_init(dir: &Path) -> R<PathBuf> {
    let src = dir.join("init.c");
    std::fs::write(&src, INIT_C)?;
    let bin = dir.join("init");
    let st = Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()?;
    if !st.success() {
        return Err("gcc -static failed".into());
    }
    Ok(bin)
}

/// The archive a `kestrel build` would make: init, console node, modules, a shell with its libraries.
fn build_archive(init: &Path, kver: &str, modules: &[PathBuf]) -> R<Archive> {
    let mut a = Archive::new();
    a.add_char_dev("dev/console", 0o600, 5, 1)?;
    a.add_file_from("init", init)?;
    let base = format!("/lib/modules/{kver}/");
    for m in modules {
        let rel = m.to_str().unwrap().strip_prefix(&base).unwrap();
        let rel = rel
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .trim_end_matches(".gz");
        a.add_file(
            &format!("lib/modules/{kver}/{rel}"),
            0o644,
            kestrel_initrd::read_module(m)?,
        )?;
    }
    a.add_program(Path::new("/bin/sh"))?;
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Boot {
    wall_ms: f64,
    init_start_ms: f64,
    unpack_ms: Option<f64>,
}

/// Kills the VM's process group on drop unless already reaped (then its pid,
/// and so its group id, may belong to someone else).
struct Vm {
    child: std::process::Child,
    reaped: bool,
}

impl Vm {
    fn exited(&mut self) -> bool {
        if !self.reaped {
            self.reaped = matches!(self.child.try_wait(), Ok(Some(_)));
        }
        self.reaped
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.exited() {
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// One boot: time from spawning qemu to the init's first line, and what the guest says.
fn boot(kernel: &Path, initrd: &Path) -> R<Boot> {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut vm = Vm {
        child,
        reaped: false,
    };
    // Lines with the host time they arrived.
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|l| (start.elapsed(), l))
            .collect::<Vec<_>>()
    });
    while !vm.exited() && start.elapsed() < BOOT_TIMEOUT {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(vm);
    let lines = reader.join().map_err(|_| "reader panicked")?;
    let mut wall = None;
    let mut init_start = None;
    let (mut trying, mut freeing) = (None, None);
    let mut console = String::new();
    for (at, line) in &lines {
        console.push_str(line);
        console.push('\n');
        if let Some(t) = line.strip_prefix("KESTREL_INIT_START ") {
            wall = Some(at.as_secs_f64() * 1e3);
            init_start = Some(t.trim().parse::<f64>()? * 1e3);
        }
        let stamp = || {
            line.split('[')
                .nth(1)
                .and_then(|r| r.split(']').next())
                .and_then(|t| t.trim().parse::<f64>().ok())
        };
        if line.contains("Trying to unpack rootfs image") {
            trying = stamp();
        }
        if line.contains("Freeing initrd memory") {
            freeing = stamp();
        }
    }
    match (wall, init_start) {
        (Some(w), Some(i)) => Ok(Boot {
            wall_ms: w,
            init_start_ms: i,
            unpack_ms: trying.zip(freeing).map(|(a, b)| (b - a) * 1e3),
        }),
        _ => Err(format!("no init start in the console:\n{console}").into()),
    }
}

fn mkinitramfs_size(kver: &str, modules: &str, compress: &str, dir: &Path) -> R<(u64, f64)> {
    let conf = dir.join(format!("conf-{modules}-{compress}"));
    std::fs::create_dir_all(&conf)?;
    std::fs::write(
        conf.join("initramfs.conf"),
        format!("MODULES={modules}\nBUSYBOX=auto\nCOMPRESS={compress}\nRUNSIZE=10%\nFSTYPE=auto\n"),
    )?;
    std::fs::write(conf.join("modules"), "")?;
    let out = dir.join(format!("initrd-{modules}-{compress}"));
    let t = Instant::now();
    let st = Command::new("mkinitramfs")
        .arg("-d")
        .arg(&conf)
        .arg("-o")
        .arg(&out)
        .arg(kver)
        .stderr(Stdio::null())
        .status()?;
    let secs = t.elapsed().as_secs_f64();
    if !st.success() {
        return Err(format!("mkinitramfs MODULES={modules} failed").into());
    }
    Ok((std::fs::metadata(&out)?.len(), secs))
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    let boots: usize = args
        .iter()
        .position(|a| a == "--boots")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(0);
    let kver = kver();
    let kernel = PathBuf::from(format!("/boot/vmlinuz-{kver}"));
    let work = tempfile::tempdir()?;
    let init = build_init(work.path())?;
    let modules = module_closure(&kver)?;
    println!(
        "kernel {kver}; {} modules in the closure of {:?}",
        modules.len(),
        MODULES
    );
    if let Some(rd) = RdSupport::from_file(&kestrel_initrd::kernel_config_path(
        Path::new("/boot"),
        &kver,
    ))? {
        println!("kernel unpacks: {:?}", rd.supported());
    }

    // Build: cold (assemble + serialise + compress), 3 runs each, median.
    println!(
        "\n{:<6} {:>10} {:>12} {:>12} {:>14} {:>14}",
        "comp", "bytes", "cold ms", "compress ms", "cached ms", "newc-hash ms"
    );
    let cache = Cache::new(work.path().join("cache"));
    let mut sizes = BTreeMap::new();
    for c in Compression::ALL {
        let mut cold = Vec::new();
        let mut comp = Vec::new();
        let mut out = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let a = build_archive(&init, &kver, &modules)?;
            let newc = a.to_newc(MTIME)?;
            let t2 = Instant::now();
            out = kestrel_initrd::compress(&newc, c)?;
            comp.push(t2.elapsed().as_secs_f64() * 1e3);
            cold.push(t.elapsed().as_secs_f64() * 1e3);
        }
        // Cached: the key from the inputs (files hashed by content), then a hit.
        let key = |h: &mut KeyHasher| -> R<()> {
            h.add_str("kver", &kver).add_str("compression", c.name());
            h.add_file("init", &init)?;
            for m in &modules {
                h.add_file("module", m)?;
            }
            h.add_file("program", Path::new("/bin/sh"))?;
            Ok(())
        };
        let mut h = KeyHasher::new();
        key(&mut h)?;
        let k = h.finish();
        cache.get_or_build(&k, c.extension(), |w| {
            w.write_all(&out)
                .map_err(kestrel_initrd::InitrdError::Write)
        })?;
        let mut cached = Vec::new();
        let mut newc_hash = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let mut h = KeyHasher::new();
            key(&mut h)?;
            let hit = cache.get_or_build(&h.finish(), c.extension(), |_| {
                Err(kestrel_initrd::InitrdError::UnknownCompression(
                    "miss".into(),
                ))
            })?;
            assert!(hit.hit);
            cached.push(t.elapsed().as_secs_f64() * 1e3);
            // The alternative: build the archive and hash its bytes (what a cache keyed on output does).
            let t = Instant::now();
            let a = build_archive(&init, &kver, &modules)?;
            let mut h = KeyHasher::new();
            h.add_bytes("newc", &a.to_newc(MTIME)?);
            let _ = h.finish();
            newc_hash.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "{:<6} {:>10} {:>12.1} {:>12.1} {:>14.2} {:>14.1}",
            c.name(),
            out.len(),
            median(cold),
            median(comp),
            median(cached),
            median(newc_hash)
        );
        let path = work.path().join(format!("initrd{}", c.extension()));
        std::fs::write(&path, &out)?;
        sizes.insert(c, path);
    }

    if args.iter().any(|a| a == "--levels") {
        // Size, compression and (host, in-process) decompression time per level:
        // decompression speed is what the guest kernel pays at boot.
        let newc = build_archive(&init, &kver, &modules)?.to_newc(MTIME)?;
        println!("\nlevels (host, in-process; the guest decompresses with the kernel's own code):");
        println!(
            "{:<10} {:>10} {:>12} {:>14}",
            "codec", "bytes", "compress ms", "decompress ms"
        );
        let time = |f: &dyn Fn() -> Vec<u8>| {
            let t = Instant::now();
            let out = f();
            (out, t.elapsed().as_secs_f64() * 1e3)
        };
        for level in [3, 9, 15, 19] {
            let (z, ct) = time(&|| zstd::bulk::compress(&newc, level).unwrap());
            let (_, dt) = time(&|| kestrel_initrd::decompress(&z, Compression::Zstd).unwrap());
            println!(
                "{:<10} {:>10} {:>12.1} {:>14.1}",
                format!("zstd-{level}"),
                z.len(),
                ct,
                dt
            );
        }
        for level in [1u32, 6, 9] {
            let (z, ct) = time(&|| {
                use std::io::Write;
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                e.write_all(&newc).unwrap();
                e.finish().unwrap()
            });
            let (_, dt) = time(&|| kestrel_initrd::decompress(&z, Compression::Gzip).unwrap());
            println!(
                "{:<10} {:>10} {:>12.1} {:>14.1}",
                format!("gzip-{level}"),
                z.len(),
                ct,
                dt
            );
        }
        let (z, ct) = time(&|| kestrel_initrd::compress(&newc, Compression::Xz).unwrap());
        let (_, dt) = time(&|| kestrel_initrd::decompress(&z, Compression::Xz).unwrap());
        println!(
            "{:<10} {:>10} {:>12.1} {:>14.1}",
            "xz-6-1MiB",
            z.len(),
            ct,
            dt
        );
    }

    if args.iter().any(|a| a == "--mkinitramfs") {
        println!("\nmkinitramfs for the same kernel:");
        for (m, comp) in [
            ("dep", "zstd"),
            ("most", "zstd"),
            ("dep", "gzip"),
            ("most", "gzip"),
        ] {
            match mkinitramfs_size(&kver, m, comp, work.path()) {
                Ok((size, secs)) => {
                    println!("  MODULES={m:<4} COMPRESS={comp:<4} {size:>10} bytes  {secs:.1} s")
                }
                Err(e) => println!("  MODULES={m:<4} COMPRESS={comp:<4} failed: {e}"),
            }
        }
    }

    if boots > 0 {
        println!("\nboots under TCG, {boots} rounds, compressions interleaved (ms):");
        let mut results: BTreeMap<Compression, Vec<Boot>> = BTreeMap::new();
        for round in 0..boots {
            let mut order = Compression::ALL.to_vec();
            let n = order.len();
            order.rotate_left(round % n);
            for c in order {
                let b = boot(&kernel, &sizes[&c])?;
                results.entry(c).or_default().push(b);
            }
        }
        println!(
            "{:<6} {:>14} {:>14} {:>14} {:>12}",
            "comp", "wall med", "init-start med", "min..max", "unpack med"
        );
        for (c, bs) in &results {
            let wall = median(bs.iter().map(|b| b.wall_ms).collect());
            let init: Vec<f64> = bs.iter().map(|b| b.init_start_ms).collect();
            let (lo, hi) = init
                .iter()
                .fold((f64::MAX, 0f64), |(l, h), v| (l.min(*v), h.max(*v)));
            let unpack: Vec<f64> = bs.iter().filter_map(|b| b.unpack_ms).collect();
            let unpack = if unpack.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median(unpack))
            };
            println!(
                "{:<6} {:>14.0} {:>14.1} {:>7.0}..{:<6.0} {:>12}",
                c.name(),
                wall,
                median(init),
                lo,
                hi,
                unpack
            );
        }
    }
    Ok(())
}
