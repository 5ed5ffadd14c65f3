//! The host harness against real boots: every machine profile gives an
//! analysis with every phase in order, a hung guest is killed at the
//! timeout with the last phase named, and the bench comparison runs end to
//! end.

use kestrel::analyze::analyze;
use kestrel::bench;
use kestrel::qemu::Profile;
use kestrel::run::{RunOptions, EXIT_TIMEOUT};
use kestrel_tests::{dump, run, test_options};
use std::ffi::OsString;
use std::time::{Duration, Instant};

const MILESTONES: &[&str] = &[
    "qemu_start", "kernel_start", "init_start", "modules_start", "modules_end", "ready", "payload_start", "payload_exit", "poweroff", "qemu_exit",
];

fn check_profile(profile: Profile) {
    let opts = RunOptions { profile, ..test_options() };
    let out = run(&["/bin/true"], &opts);
    if out.exit_code != 0 {
        dump(&out);
    }
    assert_eq!(out.exit_code, 0, "{profile:?}: {:?}", out.failure);
    let a = analyze(&out.log);
    let names: Vec<&str> = a.milestones.iter().map(|m| m.name).collect();
    assert_eq!(names, MILESTONES, "{profile:?}");
    assert!(a.milestones.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{profile:?}: {:?}", a.milestones);
    assert!(!a.modules.is_empty(), "{profile:?}: no module loads");
}

/// pc (i440fx, virtio-pci); q35 is the default every other test boots.
#[test]
fn pc_profile_boots_with_every_phase_in_order() {
    check_profile(Profile::Pc);
}

/// microvm: virtio-mmio devices found through their ACPI alias.
#[test]
fn microvm_profile_boots_with_every_phase_in_order() {
    check_profile(Profile::Microvm);
}

/// `kestrel.hang=payload` stops the init after ready; the host kills qemu
/// at the timeout and names the last phase.
#[test]
fn a_hung_guest_is_killed_at_the_timeout_naming_the_last_phase() {
    let timeout = Duration::from_secs(40);
    let opts = RunOptions { timeout, append: "kestrel.hang=payload".into(), ..test_options() };
    let t0 = Instant::now();
    let out = run(&["/bin/true"], &opts);
    let took = t0.elapsed();
    assert_eq!(out.exit_code, EXIT_TIMEOUT);
    assert!(out.log.timed_out);
    let why = out.failure.unwrap_or_default();
    assert!(why.contains("last phase reached: ready"), "{why}");
    assert!(took >= timeout && took < timeout + Duration::from_secs(10), "took {took:?}");
}

/// Comparison mode: A and B interleaved, one pair, a finite ratio.
#[test]
fn bench_compares_two_configurations_pair_by_pair() {
    let a = RunOptions { profile: Profile::Q35, ..test_options() };
    let b = RunOptions { profile: Profile::Microvm, ..test_options() };
    let c = bench::compare(&[OsString::from("/bin/true")], &a, &b, 1, 2);
    assert_eq!((c.a.failures, c.b.failures), (0, 0), "{}", bench::render_comparison(&c));
    assert_eq!(c.pairs.len(), 1);
    assert!(c.median_ratio.is_finite() && c.median_ratio > 0.0);
    let total = c.a.phases.iter().find(|p| p.name.starts_with("total")).expect("total phase");
    assert_eq!(total.n, 1);
    assert!(bench::render_comparison(&c).contains("median B/A"));
}
