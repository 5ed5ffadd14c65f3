//! The `kestrel` binary itself: exit status and errors as a user sees them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

fn kestrel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kestrel"))
}

/// `kestrel run -- /bin/sh -c 'exit 7'` exits 7, and `echo "a b" 'ü'`
/// prints `a b ü` (one boot each, the real kernel under qemu).
#[test]
fn run_exits_with_the_payload_status_and_prints_its_output() {
    let out = kestrel()
        .args(["run", "--", "/bin/sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kestrel()
        .args(["run", "--", "/bin/echo", "a b", "ü"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b ü\n");
}

/// A payload that does not exist is a clear error before any VM starts.
#[test]
fn a_missing_payload_fails_before_booting() {
    let t0 = std::time::Instant::now();
    let out = kestrel()
        .args(["run", "--", "/no/such/program", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("payload program /no/such/program does not exist"),
        "{err}"
    );
    assert!(!err.contains("using TCG"), "a VM was being prepared: {err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
}

/// A program found on the host's PATH in a directory the guest's PATH does
/// not have (here a script in a temporary directory) runs in the guest as
/// resolved, with argv[0] as typed.
#[test]
fn a_program_from_the_host_path_runs_as_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("kestrel-test-prog");
    std::fs::write(&prog, "#!/bin/sh\necho \"$0 ran with $1\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = kestrel()
        .env("PATH", path)
        .args(["run", "--", "kestrel-test-prog", "x"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{} ran with x\n", prog.display())
    );
}
