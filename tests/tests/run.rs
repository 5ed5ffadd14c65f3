//! `kestrel run` end to end: real qemu, the Debian kernel, its modules, the
//! static init. Each boot is shared by several assertions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_proto::{GuestKind, GuestRecord, ModuleOutcome};
use kestrel_tests::{dump, run, test_options};

/// Arguments arrive unchanged, output comes back, and the event stream has
/// every phase with guest timestamps in order.
#[test]
fn echo_round_trips_arguments_and_reports_every_phase() {
    let out = run(&["/bin/echo", "a b", "'ü'", "$HOME", ""], &test_options());
    if out.exit_code != 0 {
        dump(&out);
    }
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b 'ü' $HOME \n");

    let log = &out.log;
    let order = [
        GuestKind::InitStart,
        GuestKind::Module,
        GuestKind::PortOpen,
        GuestKind::Ready,
        GuestKind::PayloadStart,
        GuestKind::PayloadExit,
        GuestKind::Poweroff,
    ];
    let times: Vec<u64> = order
        .iter()
        .map(|&k| {
            log.first(k)
                .unwrap_or_else(|| panic!("no {} record", k.name()))
                .t_ns
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "phases out of order: {order:?} {times:?}"
    );

    // Every module the machine needs was loaded, each with its time.
    let mut names = Vec::new();
    for e in log.records() {
        if let GuestRecord::Module { name, outcome, .. } = &e.rec {
            assert_eq!(
                *outcome,
                ModuleOutcome::Inserted,
                "{}",
                e.rec.to_line(e.t_ns)
            );
            names.push(name.clone());
        }
    }
    let transport = test_options().machine.profile.spec().transport;
    for want in [transport, "virtio_console"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not loaded: {names:?}"
        );
    }
    match &log.first(GuestKind::PayloadStart).unwrap().rec {
        // The program as resolved on the host, exec'd as is (argv[0] as typed).
        GuestRecord::PayloadStart { program, .. } => assert_eq!(program, "/bin/echo"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        log.first(GuestKind::PayloadExit).unwrap().rec,
        GuestRecord::PayloadExit {
            status: 0,
            signal: None
        }
    ));
    // The kernel's own log came over the port too, from its first record.
    assert!(log.records().any(
        |e| matches!(&e.rec, GuestRecord::Kmsg { msg, .. } if msg.starts_with("Linux version"))
    ));
}

/// Exit status and stderr come back separately from stdout.
#[test]
fn exit_status_and_stderr_come_back() {
    let out = run(
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
        &test_options(),
    );
    assert_eq!(out.exit_code, 7, "{:?}", out.failure);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert!(out.failure.is_none());
}

/// A payload killed by signal N reports 128+N.
#[test]
fn a_signal_gives_128_plus_n() {
    let out = run(&["/bin/sh", "-c", "kill -KILL $$"], &test_options());
    assert_eq!(out.exit_code, 128 + 9, "{:?}", out.failure);
    let exit = &out
        .log
        .last(GuestKind::PayloadExit)
        .expect("payload_exit record")
        .rec;
    assert_eq!(
        *exit,
        GuestRecord::PayloadExit {
            status: 137,
            signal: Some(9)
        }
    );
}

/// A lot of output (about 0.9 MB in 30,000 writes) arrives whole and in
/// order: the non-blocking port waits for room instead of dropping.
#[test]
fn bulk_output_arrives_whole() {
    let script = "i=0; while [ $i -lt 30000 ]; do echo \"line $i of the payload's output, padded to be longer\"; i=$((i+1)); done";
    let out = run(&["/bin/sh", "-c", script], &test_options());
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 30000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            *l,
            format!("line {i} of the payload's output, padded to be longer")
        );
    }
    let poweroff = &out
        .log
        .last(GuestKind::Poweroff)
        .expect("poweroff record")
        .rec;
    assert!(
        matches!(poweroff, GuestRecord::Poweroff { dropped: 0, .. }),
        "{poweroff:?}"
    );
}
