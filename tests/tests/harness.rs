//! The host harness against real boots: every machine profile gives an
//! analysis with every phase in order, a hung guest is killed at the
//! timeout with the last phase named, and the bench comparison runs end to
//! end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel::analyze::analyze;
use kestrel::bench;
use kestrel::qemu::Profile;
use kestrel::run::{RunOptions, EXIT_TIMEOUT};
use kestrel_proto::GuestKind;
use kestrel_tests::{dump, modules, run, test_options};
use std::ffi::OsString;
use std::time::{Duration, Instant};

const MILESTONES: &[&str] = &[
    "qemu_start",
    "guest_clock_zero",
    "init_start",
    "modules_start",
    "modules_end",
    "ready",
    "payload_start",
    "payload_exit",
    "poweroff",
    "qemu_exit",
];

fn check_profile(profile: Profile) {
    let opts = RunOptions {
        profile,
        ..test_options()
    };
    let out = run(&["/bin/true"], &opts);
    if out.exit_code != 0 {
        dump(&out);
    }
    assert_eq!(out.exit_code, 0, "{profile:?}: {:?}", out.failure);
    let a = analyze(&out.log);
    let names: Vec<&str> = a.milestones.iter().map(|m| m.name).collect();
    assert_eq!(names, MILESTONES, "{profile:?}");
    assert!(
        a.milestones.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "{profile:?}: {:?}",
        a.milestones
    );
    assert!(!a.modules.is_empty(), "{profile:?}: no module loads");
}

/// pc (i440fx, virtio-pci).
#[test]
fn pc_profile_boots_with_every_phase_in_order() {
    check_profile(Profile::Pc);
}

/// q35 (PCIe); microvm (virtio-mmio found through its ACPI alias) is the
/// default every other test boots, and is checked here too.
#[test]
fn q35_and_microvm_profiles_boot_with_every_phase_in_order() {
    check_profile(Profile::Q35);
    check_profile(Profile::Microvm);
}

/// `kestrel.hang=payload` stops the init after ready; the host kills qemu
/// at the timeout and names the last phase.
#[test]
fn a_hung_guest_is_killed_at_the_timeout_naming_the_last_phase() {
    let timeout = Duration::from_secs(40);
    let opts = RunOptions {
        timeout,
        append: "kestrel.hang=payload".into(),
        ..test_options()
    };
    let t0 = Instant::now();
    let out = run(&["/bin/true"], &opts);
    let took = t0.elapsed();
    assert_eq!(out.exit_code, EXIT_TIMEOUT);
    assert!(out.log.timed_out);
    let why = out.failure.unwrap_or_default();
    assert!(why.contains("last phase reached: ready"), "{why}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(10),
        "took {took:?}"
    );
}

/// Comparison mode: A and B interleaved, one pair, a finite ratio.
#[test]
fn bench_compares_two_configurations_pair_by_pair() {
    let a = RunOptions {
        profile: Profile::Q35,
        ..test_options()
    };
    let b = RunOptions {
        profile: Profile::Microvm,
        ..test_options()
    };
    let c = bench::compare(&[OsString::from("/bin/true")], &a, &b, 1, 2);
    assert_eq!(
        (c.a.failures, c.b.failures),
        (0, 0),
        "{}",
        bench::render_comparison(&c)
    );
    assert_eq!(c.pairs.len(), 1);
    assert!(c.median_ratio.is_finite() && c.median_ratio > 0.0);
    let total =
        c.a.phases
            .iter()
            .find(|p| p.name.starts_with("total"))
            .expect("total phase");
    assert_eq!(total.n, 1);
    assert!(bench::render_comparison(&c).contains("median B/A"));
}

/// The kernel unpacks the base archive in every compression the builder
/// writes (followed by the uncompressed run archive), and the init runs.
#[test]
fn the_kernel_boots_every_compression() {
    for compression in ["gzip", "zstd", "xz"] {
        let opts = RunOptions {
            compression: compression.parse().unwrap(),
            ..test_options()
        };
        let out = run(&["/bin/echo", compression], &opts);
        assert_eq!(out.exit_code, 0, "{compression}: {:?}", out.failure);
        assert_eq!(out.stdout, format!("{compression}\n").as_bytes());
    }
}

/// A frozen plan: no discovery, the baked modules loaded one at a time in
/// plan order, and the machine still comes up.
#[test]
fn a_frozen_plan_skips_discovery() {
    let opts = RunOptions {
        frozen_plan: true,
        ..test_options()
    };
    let out = run(&["/bin/true"], &opts);
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    assert!(
        out.log.first(GuestKind::Coldplug).is_none(),
        "discovery ran"
    );
    let loaded: Vec<String> = modules(&out.log)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let transport = opts.profile.spec().modules[0];
    for m in [transport, "virtio_console", "virtio_blk", "ext4"] {
        assert!(loaded.iter().any(|n| n == m), "{m} not in {loaded:?}");
    }
    let pos = |m: &str| loaded.iter().position(|n| n == m).unwrap();
    assert!(
        pos("virtio") < pos(transport) && pos("jbd2") < pos("ext4"),
        "{loaded:?}"
    );
}
