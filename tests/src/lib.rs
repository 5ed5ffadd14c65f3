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
