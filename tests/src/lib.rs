//! Shared helpers for the VM tests: every test boots the real Debian kernel
//! under qemu with the real static init, through the same library the
//! `kestrel` binary uses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel::run::{RunOptions, RunOutcome};
use std::ffi::OsString;
use std::time::Duration;

/// Options for a test boot: output captured (not streamed), a hard
/// timeout well above a TCG boot, everything else the defaults users get.
pub fn test_options() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(180),
        stream_output: false,
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
