//! PID 1 duties and failures that must explain themselves, on real boots.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel::machine::Disk;
use kestrel::vm::StdinSource;
use kestrel_modules::{ModuleIndex, Request};
use kestrel_proto::{GuestKind, GuestRecord};
use kestrel_tests::{module_failure, problems, run, run_root, test_options};
use std::path::Path;

/// Environment, working directory and stdin reach the payload; a zombie
/// and a still-running grandchild do not stop a clean shutdown.
#[test]
fn env_cwd_stdin_and_leftover_processes() {
    let mut opts = test_options();
    opts.io.env = vec!["FOO=x y".into(), "PATH=/usr/bin:/bin".into()];
    opts.io.cwd = Some("/tmp".into());
    opts.io.stdin = Some(StdinSource::Data(b"hello\nworld\n".to_vec()));
    opts.build.include = vec!["/usr/bin/cat".into(), "/usr/bin/sleep".into()];
    let out = run(
        &[
            "/bin/sh",
            "-c",
            "echo \"$FOO|$(pwd)\"; cat; sleep 0 & sleep 1000 & exit 3",
        ],
        &opts,
    );
    assert_eq!(out.exit_code, 3, "{:?}", out.failure);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "x y|/tmp\nhello\nworld\n"
    );
    assert!(!out.log.timed_out);
    let poweroff = &out
        .log
        .last(GuestKind::Poweroff)
        .expect("an orderly power off")
        .rec;
    assert!(
        matches!(poweroff, GuestRecord::Poweroff { status: 3, .. }),
        "{poweroff:?}"
    );
}

/// An unknown `kestrel.` option is an error that names it; the kernel
/// does not panic (the init powers off with status 1).
#[test]
fn a_bad_command_line_option_is_named() {
    let mut opts = test_options();
    opts.vm.append = "kestrel.bogus=1".into();
    let out = run(&["/bin/true"], &opts);
    assert_eq!(out.exit_code, 1);
    let why = out.failure.unwrap_or_default();
    assert!(why.contains("unknown option kestrel.bogus"), "{why}");
    assert!(!out
        .log
        .console
        .iter()
        .any(|l| l.item.contains("Kernel panic")));
}

/// A root device with no filesystem on it (a zero-filled scratch disk).
#[test]
fn an_unknown_filesystem_is_named() {
    let mut opts = test_options();
    opts.vm.append = "root=/dev/vda kestrel.timeout=5".into();
    opts.machine.disks = vec![Disk::zeroes(1 << 20)];
    let out = run_root(&opts);
    assert_eq!(out.exit_code, 1);
    let why = out.failure.unwrap_or_default();
    assert!(
        why.contains("/dev/vda has no filesystem the init recognises"),
        "{why}"
    );
}

/// A corrupt module is reported with the kernel's error and the boot goes
/// on; so does a module that does not exist.
#[test]
fn corrupt_and_missing_modules_are_reported_and_the_boot_goes_on() {
    let mut opts = test_options();
    opts.machine.rng = true;
    let release = kestrel::run::load_kernel(&opts).unwrap().release;
    let src = Path::new("/lib/modules").join(&release);
    let index = ModuleIndex::load(&src).unwrap();
    let requests: Vec<Request> = opts
        .machine
        .target()
        .device_modules()
        .iter()
        .map(|m| Request::Name(m.to_string()))
        .collect();
    let plan = index.plan(&requests).unwrap();
    // A module tree of our own: the index files and the machine's modules,
    // with virtio_rng's module replaced by garbage.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("modules.") {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    for m in &plan.modules {
        let rel = index.module_relpath(&m.name).unwrap();
        let dest = dir.path().join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if m.name == "virtio_rng" {
            std::fs::write(&dest, b"\x7fELF but not a module at all").unwrap();
        } else {
            std::fs::copy(&m.path, &dest).unwrap();
        }
    }
    opts.build.modules_dir = Some(dir.path().to_owned());
    opts.vm.append = "kestrel.modules=no_such_module".into();
    let out = run(&["/bin/echo", "still here"], &opts);
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    assert_eq!(out.stdout, b"still here\n");
    let error = module_failure(&out.log, "virtio_rng");
    assert!(
        error.contains("virtio_rng") && error.contains("os error"),
        "{error}"
    );
    let errors = problems(&out.log);
    assert!(
        errors.iter().any(|m| m.contains("no_such_module")),
        "{errors:?}"
    );
}

/// SIGTERM to PID 1 is forwarded to the payload's process group: a shell
/// that sends it to PID 1 and then spins dies of it (128 + 15).
#[test]
fn sigterm_to_pid1_reaches_the_payload() {
    let out = run(
        &[
            "/bin/sh",
            "-c",
            "echo before; kill -TERM 1; while :; do :; done",
        ],
        &test_options(),
    );
    assert_eq!(out.exit_code, 128 + 15, "{:?}", out.failure);
    assert_eq!(out.stdout, b"before\n");
}
