//! The host harness against real boots: every machine profile gives an
//! analysis with every phase in order, a hung guest is killed at the
//! timeout with the last phase named, the bench comparison runs end to
//! end, and a VM gets only the devices (and modules) it asks for.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel::analyze::{analyze, MILESTONES};
use kestrel::bench;
use kestrel::machine::{Disk, Profile};
use kestrel::run::{RunOptions, EXIT_TIMEOUT};
use kestrel_proto::{GuestKind, GuestRecord, ModuleOutcome};
use kestrel_tests::{dump, modules, run, test_options};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::{Duration, Instant};

fn with_profile(profile: Profile) -> RunOptions {
    let mut opts = test_options();
    opts.machine.profile = profile;
    opts
}

fn check_profile(profile: Profile) {
    let out = run(&["/bin/true"], &with_profile(profile));
    if out.exit_code != 0 {
        dump(&out);
    }
    assert_eq!(out.exit_code, 0, "{profile:?}: {:?}", out.failure);
    let a = analyze(&out.log);
    let names: Vec<&str> = a.milestones.iter().map(|m| m.name).collect();
    // microvm has no ROM marker (kestrel::qemu_trace::args).
    let expected: Vec<&str> = MILESTONES
        .into_iter()
        .filter(|m| profile != Profile::Microvm || *m != "roms_loaded")
        .collect();
    assert_eq!(names, expected, "{profile:?}");
    assert!(
        a.unexplained_ms < 0.02 * a.total_ms,
        "{profile:?}: {} ms unexplained",
        a.unexplained_ms
    );
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
    let timeout = Duration::from_secs(20);
    let mut opts = test_options();
    opts.vm.timeout = timeout;
    opts.vm.append = "kestrel.hang=payload".into();
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

/// Comparison mode: A and B interleaved, one pair, a finite ratio; B is
/// A with a typed override.
#[test]
fn bench_compares_two_configurations_pair_by_pair() {
    let a = with_profile(Profile::Q35);
    let mut b = a.clone();
    "machine=microvm"
        .parse::<bench::Override>()
        .unwrap()
        .apply(&mut b);
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

/// The floor mode: a run and a no-op-init boot of the same kernel and
/// machine; both reach the kernel's end (the floor's init says when it
/// started), the run costs more than the floor, and nothing is left out.
#[test]
fn bench_measures_the_floor_beside_a_run() {
    let r = bench::floor(&[OsString::from("/bin/true")], &test_options(), 1).unwrap();
    let rendered = bench::render_floor(&r);
    assert_eq!(r.run.failures, 0, "{rendered}");
    for report in [&r.run, &r.floor] {
        let kernel = report
            .phases
            .iter()
            .find(|p| p.name.starts_with("kernel"))
            .unwrap_or_else(|| panic!("no kernel phase: {rendered}"));
        assert_eq!(kernel.n, 1);
        assert!(kernel.median_ms > 0.0, "{rendered}");
    }
    assert_eq!(r.ratios.len(), 1);
    assert!(r.median_ratio > 1.0, "{rendered}");
    assert!(rendered.contains("run / floor (host wall)"), "{rendered}");
}

/// The kernel unpacks the base archive in every compression the builder
/// writes (followed by the uncompressed run archive), and the init runs.
/// One of these boots also has a virtio-rng device the machine table does
/// not know of (a raw qemu argument): the guest reports its MODALIAS as
/// unmatched and the host names the module the initrd lacks.
#[test]
fn the_kernel_boots_every_compression_and_unmatched_devices_are_named() {
    for compression in ["gzip", "zstd", "xz"] {
        let mut opts = test_options();
        opts.build.compression = compression.parse().unwrap();
        if compression == "xz" {
            opts.vm.qemu_args = ["-device", "virtio-rng-device"]
                .map(OsString::from)
                .to_vec();
        }
        let out = run(&["/bin/echo", compression], &opts);
        assert_eq!(out.exit_code, 0, "{compression}: {:?}", out.failure);
        assert_eq!(out.stdout, format!("{compression}\n").as_bytes());
        if compression == "xz" {
            let named: Vec<String> = out.missing_drivers.iter().map(|d| d.to_string()).collect();
            assert!(
                named.iter().any(|l| l.contains("needs module virtio_rng, which the initrd does not carry (add --module virtio_rng)")),
                "{named:?}"
            );
        }
    }
}

/// A frozen plan: no discovery, the baked modules loaded in plan order,
/// and the machine still comes up. The plan holds exactly the modules of
/// the default machine's devices (Debian 6.1: the virtio-mmio transport
/// and the console port's driver, with their dependencies).
#[test]
fn a_frozen_plan_skips_discovery_and_holds_only_the_devices_modules() {
    let mut opts = test_options();
    opts.build.frozen_plan = true;
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
    let set: BTreeSet<&str> = loaded.iter().map(String::as_str).collect();
    assert_eq!(
        set,
        BTreeSet::from(["virtio", "virtio_console", "virtio_mmio", "virtio_ring"]),
        "{loaded:?}"
    );
    let pos = |m: &str| loaded.iter().position(|n| n == m).unwrap();
    assert!(pos("virtio") < pos("virtio_mmio"), "{loaded:?}");
}

/// Every kernel installed in /boot runs a payload: on Debian 12 with
/// backports that is 6.1 (plain `.ko`), its cloud flavour (an LZ4 image,
/// from which no PVH vmlinux is taken: it boots as a bzImage) and 6.12
/// (`.ko.xz`, drivers built in).
#[test]
fn every_installed_kernel_runs_a_payload() {
    let kernels =
        kestrel::kernel::installed_kernels(std::path::Path::new(kestrel::kernel::BOOT_DIR))
            .unwrap();
    assert!(!kernels.is_empty());
    for k in kernels {
        let mut opts = test_options();
        opts.vm.kernel = Some(k.path.clone());
        let out = run(
            &["/bin/sh", "-c", "read -r _ _ r _ < /proc/version; echo $r"],
            &opts,
        );
        assert_eq!(out.exit_code, 0, "{}: {:?}", k.release, out.failure);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), k.release);
    }
}

/// A kernel whose modules are compressed and whose console and PCI
/// transport are built in (Debian 6.12), on q35: the events port exists
/// before /init (no uevent will announce it) and is found; the disk's
/// driver, a `.ko.xz`, is carried and loads, nothing else does; the
/// console, driven by its built-in driver (whose alias
/// modules.builtin.modinfo lacks), is not reported as a device without
/// a driver.
#[test]
fn a_kernel_with_compressed_modules_and_a_built_in_console_runs() {
    let Some(kernel) = kestrel_tests::kernel_with_built_in_console() else {
        return eprintln!("SKIP: no kernel with .ko.xz modules and a built-in virtio console");
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let mut opts = with_profile(Profile::Q35);
    opts.vm.kernel = Some(kernel);
    opts.machine.disks = vec![Disk::parse(&image.display().to_string())];
    let out = run(&["/bin/cat", "/sys/block/vda/size"], &opts);
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    assert_eq!(out.stdout, b"2048\n");
    let loaded: BTreeSet<String> = modules(&out.log)
        .into_iter()
        .filter(|(_, o)| *o == ModuleOutcome::Inserted)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(loaded, BTreeSet::from(["virtio_blk".to_owned()]));
    let unmatched: Vec<&str> = out
        .log
        .records()
        .filter_map(|e| match &e.rec {
            GuestRecord::Unmatched { modalias, .. } => Some(modalias.as_str()),
            _ => None,
        })
        .collect();
    // virtio device 3 is the console.
    assert!(
        !unmatched.iter().any(|m| m.starts_with("virtio:d00000003")),
        "{unmatched:?}"
    );
    assert!(out.missing_drivers.is_empty(), "{:?}", out.missing_drivers);
}

/// The old full set on demand: a read-only disk whose path has a colon
/// and a comma, the network and rng. Each device's driver loads, the disk
/// is the file given and read-only, the network interface exists.
#[test]
fn devices_come_on_demand_with_their_drivers() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("a:b,c.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let mut opts = test_options();
    opts.machine.disks = vec![Disk::parse(&format!("{},ro", image.display()))];
    opts.machine.net = true;
    opts.machine.rng = true;
    let script = "read ro < /sys/block/vda/ro; read size < /sys/block/vda/size; \
                  echo ro=$ro size=$size; for n in /sys/class/net/*; do echo net=${n##*/}; done";
    let out = run(&["/bin/sh", "-c", script], &opts);
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ro=1 size=2048"), "{text}");
    assert!(text.contains("net=eth0"), "{text}");
    for m in ["virtio_blk", "virtio_net", "virtio_rng"] {
        let loaded = modules(&out.log);
        assert!(
            loaded
                .iter()
                .any(|(n, o)| n == m && *o == ModuleOutcome::Inserted),
            "{m}: {loaded:?}"
        );
    }
    assert!(out.missing_drivers.is_empty(), "{:?}", out.missing_drivers);
}
