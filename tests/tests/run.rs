//! `kestrel run` end to end: real qemu, the Debian kernel, its modules, the
//! static init. Each boot is shared by several assertions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_init::event::kind;
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

    let events: Vec<_> = out.log.events.iter().map(|s| &s.item).collect();
    let first = |k: &str| {
        events
            .iter()
            .position(|e| e.kind == k)
            .unwrap_or_else(|| panic!("no {k} event"))
    };
    let order = [
        kind::INIT_START,
        kind::MODULE,
        kind::PORT_OPEN,
        kind::READY,
        kind::PAYLOAD_START,
        kind::PAYLOAD_EXIT,
        kind::POWEROFF,
    ];
    let times: Vec<u64> = order.iter().map(|k| events[first(k)].t_ns).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "phases out of order: {order:?} {times:?}"
    );

    // Every module of the default machine was loaded, each with its time.
    let modules: Vec<_> = events.iter().filter(|e| e.kind == kind::MODULE).collect();
    for m in &modules {
        assert_eq!(m.get_str("result").as_deref(), Some("ok"), "{m}");
        assert!(
            m.get_u64("dur_us").is_some() && m.get_u64("start_ns").is_some(),
            "{m}"
        );
    }
    let names: Vec<String> = modules.iter().filter_map(|m| m.get_str("name")).collect();
    let transport = if test_options().profile.spec().virtio_suffix == "pci" {
        "virtio_pci"
    } else {
        "virtio_mmio"
    };
    for want in [
        transport,
        "virtio_console",
        "virtio_blk",
        "virtio_net",
        "virtio_rng",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not loaded: {names:?}"
        );
    }
    let start = events[first(kind::PAYLOAD_START)];
    let args: Vec<&[u8]> = start.get_all("arg").collect();
    assert_eq!(
        args,
        vec![&b"/bin/echo"[..], b"a b", "'ü'".as_bytes(), b"$HOME", b""]
    );
    assert_eq!(events[first(kind::PAYLOAD_EXIT)].get_u64("status"), Some(0));
    // The kernel's own log came over the port too, from its first record.
    assert!(events.iter().any(|e| e.kind == kind::KMSG
        && e.get_str("msg")
            .is_some_and(|m| m.starts_with("Linux version"))));
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
    let exit = out
        .log
        .last(kind::PAYLOAD_EXIT)
        .expect("payload_exit event");
    assert_eq!(exit.get_u64("signal"), Some(9));
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
    let dropped = out
        .log
        .last(kind::POWEROFF)
        .and_then(|e| e.get_u64("dropped"));
    assert_eq!(dropped, Some(0));
}
