//! Shared helpers for the VM tests: every test boots the real Debian kernel
//! under qemu with the real static init, through the same library the
//! `kestrel` binary uses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel::run::{IoOptions, OutputMode, RunOptions, RunOutcome, VmOptions};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Debian 6.1 kernel (plain .ko modules, virtio drivers as modules)
/// that the VM tests' assertions about modules are written for: the
/// newest /boot/vmlinuz-6.1.*-amd64 (not the cloud flavour). Machines
/// have several kernels; tests never take "the newest" by accident.
pub fn kernel_61() -> PathBuf {
    kestrel::kernel::installed_kernels(Path::new(kestrel::kernel::BOOT_DIR))
        .expect("/boot")
        .into_iter()
        .rfind(|k| {
            k.release.starts_with("6.1.")
                && k.release.ends_with("-amd64")
                && !k.release.contains("cloud")
        })
        .expect("no /boot/vmlinuz-6.1.*-amd64: `make setup` installs Debian's linux-image-amd64")
        .path
}

/// An installed kernel whose modules are compressed and whose virtio
/// console is built in (Debian's 6.12: `.ko.xz`, virtio_console and
/// virtio_pci built in, virtio_mmio and virtio_blk modules), if any.
pub fn kernel_with_built_in_console() -> Option<PathBuf> {
    kestrel::kernel::installed_kernels(Path::new(kestrel::kernel::BOOT_DIR))
        .ok()?
        .into_iter()
        .rfind(|k| {
            let tree = Path::new(kestrel::kernel::MODULES_ROOT).join(&k.release);
            let read = |f: &str| std::fs::read_to_string(tree.join(f)).unwrap_or_default();
            read("modules.builtin")
                .lines()
                .any(|l| l.ends_with("/virtio_console.ko"))
                && read("modules.dep").contains("/virtio_blk.ko.")
        })
        .map(|k| k.path)
}

/// Options for a test boot: the 6.1 kernel, output captured (not
/// streamed), a hard timeout well above a TCG boot, everything else the
/// defaults users get (the console and the events port, no other device).
pub fn test_options() -> RunOptions {
    RunOptions {
        vm: VmOptions {
            kernel: Some(kernel_61()),
            timeout: Duration::from_secs(180),
            ..VmOptions::default()
        },
        io: IoOptions {
            output: OutputMode::Capture,
            ..IoOptions::default()
        },
        ..RunOptions::default()
    }
}

/// Boots and runs `argv`; on a harness failure, prints the whole boot for
/// the test log (events and console) before returning.
pub fn run(argv: &[&str], opts: &RunOptions) -> RunOutcome {
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    let outcome = match kestrel::run::run(&argv, opts) {
        Ok(o) => o,
        Err(e) => panic!("kestrel run failed before booting: {e:#}"),
    };
    if outcome.failure.is_some() {
        dump(&outcome);
    }
    outcome
}

/// The whole boot, for a failing test's output.
pub fn dump(outcome: &RunOutcome) {
    eprintln!(
        "--- exit {} failure: {:?}",
        outcome.exit_code, outcome.failure
    );
    let mut text = Vec::new();
    let _ = outcome.log.write_log(&mut text);
    eprintln!("{}", String::from_utf8_lossy(&text));
    eprintln!("--- qemu stderr: {}", outcome.log.qemu_stderr);
}

/// Boots in root mode (no payload; `root=` in `opts.append`).
pub fn run_root(opts: &RunOptions) -> RunOutcome {
    match kestrel::run::run(&[], opts) {
        Ok(o) => o,
        Err(e) => panic!("kestrel run failed before booting: {e:#}"),
    }
}

/// Each module record of a boot: its name and what happened to it.
pub fn modules(log: &kestrel::bootlog::BootLog) -> Vec<(String, kestrel_proto::ModuleOutcome)> {
    log.records()
        .filter_map(|e| match &e.rec {
            kestrel_proto::GuestRecord::Module { name, outcome, .. } => {
                Some((name.clone(), outcome.clone()))
            }
            _ => None,
        })
        .collect()
}

/// What `name`'s load came to (its first record).
pub fn module_outcome(
    log: &kestrel::bootlog::BootLog,
    name: &str,
) -> Option<kestrel_proto::ModuleOutcome> {
    modules(log)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, outcome)| outcome)
}

/// The error of `name`'s load; panics unless its record says it failed.
pub fn module_failure(log: &kestrel::bootlog::BootLog, name: &str) -> String {
    match module_outcome(log, name) {
        Some(kestrel_proto::ModuleOutcome::Failed { error }) => error,
        other => panic!("{name}: expected a failed load, got {other:?}"),
    }
}

/// The errors and warnings the guest reported, in order.
pub fn problems(log: &kestrel::bootlog::BootLog) -> Vec<String> {
    log.records()
        .filter_map(|e| match &e.rec {
            kestrel_proto::GuestRecord::Error { msg, .. }
            | kestrel_proto::GuestRecord::Warn { msg } => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

/// The facts a guest-side checker reported, by name (the last wins).
pub fn facts(log: &kestrel::bootlog::BootLog) -> std::collections::BTreeMap<String, String> {
    log.records()
        .filter_map(|e| match &e.rec {
            kestrel_proto::GuestRecord::Fact { name, value } => Some((name.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

/// The status of the guest's `poweroff` record: present only when the
/// init powered off in order and the record reached the host.
pub fn poweroff_status(log: &kestrel::bootlog::BootLog) -> Option<i32> {
    match log.last(kestrel_proto::GuestKind::Poweroff).map(|e| &e.rec) {
        Some(kestrel_proto::GuestRecord::Poweroff { status, .. }) => Some(*status),
        _ => None,
    }
}

/// A kernel panic or a panicking init on the console.
pub fn console_panic(log: &kestrel::bootlog::BootLog) -> Option<String> {
    log.console
        .iter()
        .find(|l| l.item.contains("Kernel panic") || l.item.contains("panicked"))
        .map(|l| l.item.clone())
}

/// Asserts an orderly end: the guest reported `poweroff` with `status`,
/// nothing panicked, the host did not have to kill it at the deadline.
pub fn assert_orderly_poweroff(out: &RunOutcome, status: i32) {
    if poweroff_status(&out.log) != Some(status) || out.log.timed_out {
        dump(out);
    }
    assert_eq!(
        poweroff_status(&out.log),
        Some(status),
        "no orderly power off with status {status}: {:?}",
        out.failure
    );
    assert!(!out.log.timed_out, "killed at the deadline");
    assert_eq!(console_panic(&out.log), None);
}

/// Deterministic bytes that take every value (xorshift64*), for payload
/// input and output that must arrive byte for byte.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// POSIX `cksum` (CRC-32, polynomial 0x04C11DB7, the length appended),
/// streaming: the guest's coreutils computes the same over its side of
/// the data, so large output is checked without keeping it.
#[derive(Clone, Debug)]
pub struct Cksum {
    crc: u32,
    len: u64,
    table: [u32; 256],
}

impl Default for Cksum {
    fn default() -> Self {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = (i as u32) << 24;
            for _ in 0..8 {
                c = if c & 0x8000_0000 != 0 {
                    (c << 1) ^ 0x04C1_1DB7
                } else {
                    c << 1
                };
            }
            *slot = c;
        }
        Cksum {
            crc: 0,
            len: 0,
            table,
        }
    }
}

impl Cksum {
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        self.crc = self.feed(self.crc, data);
    }

    fn feed(&self, mut crc: u32, data: &[u8]) -> u32 {
        for &b in data {
            crc = (crc << 8) ^ self.table[((crc >> 24) ^ u32::from(b)) as usize];
        }
        crc
    }

    /// `cksum`'s two numbers: the CRC and the byte count.
    pub fn finish(&self) -> (u32, u64) {
        let mut crc = self.crc;
        let mut n = self.len;
        while n != 0 {
            crc = self.feed(crc, &[n as u8]);
            n >>= 8;
        }
        (!crc, self.len)
    }
}

/// A process's peak resident set (VmHWM), in KiB; None once it is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The `kestrel` binary for tests that run it as a user would (the soak:
/// output streamed through a pipe): $KESTREL_BIN (`make soak` sets it),
/// else the release build in this workspace's target directory.
pub fn kestrel_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KESTREL_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/kestrel");
    assert!(
        p.is_file(),
        "no {}: `make tools` builds it (or set KESTREL_BIN)",
        p.display()
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our cksum is coreutils' (the guest's) on data with every byte value.
    #[test]
    fn cksum_matches_coreutils() {
        let data = pseudo_random(100_003, 7);
        let mut c = Cksum::default();
        for part in data.chunks(4099) {
            c.update(part);
        }
        let mut child = std::process::Command::new("cksum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        let (crc, len) = c.finish();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{crc} {len}\n")
        );
        let all: Vec<u8> = pseudo_random(1 << 16, 1);
        let mut seen = [false; 256];
        all.iter().for_each(|&b| seen[b as usize] = true);
        assert!(seen.iter().all(|&s| s));
    }
}

/// An entry of a newc archive: a regular file (0644) with its bytes, or
/// a symbolic link with its target (one to nowhere makes a path missing).
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A newc archive of `entries` (paths without a leading `/`), to follow
/// an initrd: the kernel unpacks concatenated archives in order, and a
/// later entry replaces an earlier one of the same path.
pub fn newc(entries: &[Entry]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    let trailer = ("TRAILER!!!", 0, &b""[..]);
    let all = entries.iter().map(|e| match *e {
        Entry::File(name, data) => (name, 0o100644, data),
        Entry::Symlink(name, target) => (name, 0o120777, target.as_bytes()),
    });
    for (i, (name, mode, data)) in all.chain([trailer]).enumerate() {
        let fields = [
            0x7e57_0000 + i as u32,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out
}

/// The initrd `kestrel run` would boot for `argv` (root mode when empty)
/// and `opts`, with `entries` unpacked over it, written into `dir`; boot it
/// by adding `-initrd PATH` to the qemu arguments (qemu takes the last).
/// For faults the builder cannot make: a damaged index in the guest.
pub fn initrd_with_files(
    argv: &[&str],
    opts: &RunOptions,
    entries: &[Entry],
    dir: &Path,
) -> PathBuf {
    use kestrel::build::{self, Payload};
    let kernel = kestrel::run::load_kernel(opts).unwrap();
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    let payload = (!argv.is_empty()).then(|| Payload {
        env: opts.io.env.clone(),
        cwd: opts.io.cwd.clone(),
        stdin: opts.io.stdin.is_some(),
        ..build::resolve_payload(&argv).unwrap()
    });
    let cache = kestrel::cache::open_cache().unwrap();
    let initrd = build::build(
        &opts.build,
        &opts.machine.target(),
        &kernel,
        payload.as_ref(),
        &cache,
    )
    .unwrap();
    let path = dir.join("initrd-with-files");
    initrd.write(&path).unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&newc(entries))
        .unwrap();
    path
}
