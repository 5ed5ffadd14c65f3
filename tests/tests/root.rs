//! Root mode against real boots: an ext4 root made here (mkfs.ext4 -d, no
//! root privileges or loop devices needed) whose /sbin/init is a busybox
//! script that reports back over the events port, says a line on the
//! console (which the run passes to its stdout), then powers off.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel::machine::Disk;
use kestrel_proto::{GuestKind, GuestRecord, ModuleOutcome};
use kestrel_tests::{dump, run_root, test_options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BUSYBOX: &str = "/bin/busybox";

/// The real init of the test root. /proc/uptime has two decimals; the
/// record needs nine.
const ROOT_INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
exec 3<>/dev/virtio-ports/org.kestrel.events
now() { read up rest < /proc/uptime; echo "${up%.*}.${up#*.}0000000"; }
mode=$($B awk '$2 == "/" { split($4, o, ","); m = o[1] } END { print m }' /proc/mounts)
fstype=$($B awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)
byuuid=$($B ls /dev/disk/by-uuid | $B tr '\n' ',')
left=$($B ls /kestrel 2>/dev/null | $B wc -l)
fact() { echo "@kestrel $(now) fact name=$1 value=$2" >&3; }
fact pid $$; fact mode $mode; fact fstype $fstype; fact arg1 "$1"; fact byuuid "$byuuid"; fact initramfs_files $left
fact reported yes
echo "the root's own init on the console"
echo "@kestrel $(now) poweroff status=0 dropped=0" >&3
read -t 5 ack <&3
$B poweroff -f
"#;

const UUID: &str = "6b1c3c4e-2f4a-4d35-9c51-0a7f2b8e5d11";
const LABEL: &str = "kestrel-root";

fn make_root(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    for d in ["bin", "sbin", "dev", "proc", "sys", "run", "etc"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} missing: make setup installs busybox-static"
    );
    std::fs::copy(BUSYBOX, tree.join("bin/busybox")).unwrap();
    std::fs::write(tree.join("sbin/init"), ROOT_INIT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        tree.join("sbin/init"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let image = dir.join("root.ext4");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", LABEL, "-U", UUID, "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4 failed");
    image
}

fn boot_root(append: &str) -> (kestrel::run::RunOutcome, Option<BTreeMap<String, String>>) {
    boot_root_with(append, vec![])
}

fn boot_root_with(
    append: &str,
    qemu_args: Vec<std::ffi::OsString>,
) -> (kestrel::run::RunOutcome, Option<BTreeMap<String, String>>) {
    let dir = tempfile::tempdir().unwrap();
    let image = make_root(dir.path());
    let mut opts = test_options();
    opts.vm.append = append.into();
    opts.machine.disks = vec![Disk::file(image)];
    opts.vm.qemu_args = qemu_args;
    let out = run_root(&opts);
    let facts = kestrel_tests::facts(&out.log);
    let reported = facts.contains_key("reported").then_some(facts);
    if reported.is_none() {
        dump(&out);
    }
    (out, reported)
}

/// root=UUID=, read-only by default, init arguments after `--`, the
/// initramfs freed, /dev/disk/by-uuid made and moved along with /dev.
#[test]
fn switches_to_a_root_found_by_uuid_read_only() {
    let (out, r) = boot_root(&format!("root=UUID={UUID} -- hello"));
    let r = r.expect("the root's init reported back");
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    let fact = |k: &str| r.get(k).map(String::as_str);
    assert_eq!(fact("pid"), Some("1"));
    assert_eq!(fact("mode"), Some("ro"));
    assert_eq!(fact("fstype"), Some("ext4"));
    assert_eq!(fact("arg1"), Some("hello"));
    assert!(fact("byuuid").unwrap_or_default().contains(UUID), "{r:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l == "the root's own init on the console"),
        "{stdout}"
    );
    match &out.log.last(GuestKind::Root).expect("root record").rec {
        GuestRecord::Root { dev, .. } => assert_eq!(dev, "/dev/vda"),
        other => panic!("{other:?}"),
    }
}

/// root=LABEL= with rw, on a CPU without SSE4.2 (qemu64): ext4's softdep
/// crc32c_intel fails with ENODEV, and ext4 must load all the same.
#[test]
fn switches_to_a_root_found_by_label_read_write() {
    let (out, r) = boot_root_with(
        &format!("root=LABEL={LABEL} rw"),
        vec!["-cpu".into(), "qemu64".into()],
    );
    let r = r.expect("the root's init reported back");
    assert_eq!(out.exit_code, 0, "{:?}", out.failure);
    assert_eq!(r.get("mode").map(String::as_str), Some("rw"));
    let module = |name: &str| {
        kestrel_tests::modules(&out.log)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o)
    };
    assert!(matches!(
        module("crc32c_intel"),
        Some(ModuleOutcome::Failed { .. })
    ));
    assert_eq!(module("ext4"), Some(ModuleOutcome::Inserted));
}

/// root=/dev/PATH.
#[test]
fn switches_to_a_root_given_by_device_path() {
    let (out, r) = boot_root("root=/dev/vda");
    assert!(r.is_some(), "{:?}", out.failure);
}

/// A root that never appears: the error names it and lists what appeared,
/// within the deadline, and the guest powers off with a failure status.
#[test]
fn a_missing_root_is_named_with_what_appeared() {
    let (out, r) = boot_root("root=UUID=00000000-0000-0000-0000-000000000000 kestrel.timeout=3");
    assert!(r.is_none());
    assert_eq!(out.exit_code, 1);
    let why = out.failure.unwrap_or_default();
    assert!(
        why.contains("UUID=00000000-0000-0000-0000-000000000000 did not appear within"),
        "{why}"
    );
    assert!(
        why.contains(&format!("vda (ext4, UUID={UUID}, LABEL={LABEL})")),
        "{why}"
    );
}

/// A root disk whose driver the initrd lacks (the disk is a raw qemu
/// argument, outside the machine table): while the init waits for the
/// root, the disk is reported as a device without a driver, so the host
/// names the module to add even when its own deadline ends the wait.
#[test]
fn a_root_disk_without_its_driver_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_root(dir.path());
    let mut opts = test_options();
    opts.vm.append = "root=/dev/vda kestrel.timeout=600".into();
    opts.vm.timeout = std::time::Duration::from_secs(15);
    opts.vm.qemu_args = [
        "-drive".to_owned(),
        format!("file={},if=none,id=d0,format=raw", image.display()),
        "-device".to_owned(),
        "virtio-blk-device,drive=d0".to_owned(),
    ]
    .map(std::ffi::OsString::from)
    .to_vec();
    let out = run_root(&opts);
    assert_eq!(
        out.exit_code,
        kestrel::run::EXIT_TIMEOUT,
        "{:?}",
        out.failure
    );
    let named: Vec<String> = out
        .missing_drivers
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        named.iter().any(|l| l.contains("needs module virtio_blk")),
        "{named:?} {:?}",
        out.failure
    );
}
