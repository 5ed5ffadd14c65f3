//! The `kestrel` binary itself: exit status and errors as a user sees them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kestrel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kestrel"))
}

/// Runs the kestrel binary with `args`; its exit code and stderr.
fn run_kestrel(args: &[&str]) -> (Option<i32>, String, String) {
    let out = kestrel().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// All a child wrote on its piped stderr, to its end.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// `kestrel run -- /bin/sh -c 'exit 7'` exits 7, and `echo "a b" 'ü'`
/// prints `a b ü` (one boot each, the real kernel under qemu, the one
/// the default rule picks, said once on stderr).
#[test]
fn run_exits_with_the_payload_status_and_prints_its_output() {
    let (code, _, err) = run_kestrel(&["run", "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(code, Some(7), "stderr: {err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("kestrel: kernel "))
        .collect();
    assert_eq!(said.len(), 1, "stderr: {err}");
    assert!(
        said[0].contains("/boot/vmlinuz-") && said[0].contains("--kernel to choose"),
        "{}",
        said[0]
    );
    let (code, out, err) = run_kestrel(&["run", "--", "/bin/echo", "a b", "ü"]);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(out, "a b ü\n");
}

/// A qemu process whose command line mentions `path`, if any is left.
fn qemu_using(path: &std::path::Path) -> Option<String> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains("qemu") && cmdline.contains(&needle)).then_some(cmdline)
    })
}

/// SIGINT, SIGTERM and SIGHUP while the VM runs end the run with 128+N
/// and leave nothing behind: no qemu, no temporary directory, no socket
/// (before, the default action killed kestrel and left /tmp/kestrel-run-*).
#[test]
fn a_signal_ends_the_run_and_leaves_nothing_behind() {
    use rustix::process::{kill_process, Pid, Signal};
    for (signal, n) in [(Signal::INT, 2), (Signal::TERM, 15), (Signal::HUP, 1)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = kestrel()
            .env("TMPDIR", tmp.path())
            .args(["run", "--timeout", "100", "--", "/bin/sleep", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The VM is up once a qemu runs with our temporary directory.
        let t0 = Instant::now();
        while qemu_using(tmp.path()).is_none() {
            assert!(t0.elapsed() < Duration::from_secs(60), "no qemu started");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        kill_process(pid, signal).unwrap();
        let t1 = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(10),
                "kestrel did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = stderr_of(&mut child);
        assert_eq!(status.code(), Some(128 + n), "{signal:?}: {err}");
        assert!(err.contains("interrupted by SIG"), "{err}");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{signal:?} left {left:?}");
        assert_eq!(qemu_using(tmp.path()), None, "{signal:?} left a qemu");
    }
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

/// A reader that goes away (`kestrel analyze LOG --json | head -1`) ends
/// the output quietly: exit 0, no panic on stderr.
#[test]
fn a_closed_stdout_is_no_error() {
    let log = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/boot-q35.log");
    let mut child = kestrel()
        .args(["analyze", log, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing read: the pipe closes before the output is written.
    drop(child.stdout.take());
    let err = stderr_of(&mut child);
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
