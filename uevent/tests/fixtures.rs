//! The walk and the netlink parser over captured real data
//! (tests/fixtures/*/NOTE says where each capture came from), and the walk
//! over this machine's own /sys as a second real source.
//!
//! The expected values are computed here independently of the crate: a plain
//! recursive listing of the tree and a `split_once('=')` per line.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kestrel_uevent::walk::walk_devices;
use kestrel_uevent::{parse_netlink, Action, Uevent};

mod common;
#[path = "support/subsystems.rs"]
mod subsystems;
#[path = "support/track.rs"]
mod track;
use common::{fixtures, read_datagrams};
use track::{Dedup, SeqnumCheck, SeqnumTracker};

/// Every directory below `dir` (not through symlinks) with a `uevent` file,
/// as (devpath, expected fields).
/// A device's fields, in file order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn expected_devices(sys: &Path) -> BTreeMap<String, Fields> {
    let mut out = BTreeMap::new();
    let mut stack = vec![sys.join("devices")];
    while let Some(dir) = stack.pop() {
        let uevent = dir.join("uevent");
        if fs::symlink_metadata(&uevent).is_ok_and(|m| m.is_file()) {
            let content = fs::read(&uevent).unwrap();
            let mut fields: Vec<(Vec<u8>, Vec<u8>)> = content
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let eq = l.iter().position(|&b| b == b'=').unwrap();
                    (l[..eq].to_vec(), l[eq + 1..].to_vec())
                })
                .collect();
            if let Ok(target) = fs::read_link(dir.join("subsystem")) {
                let name = target.file_name().unwrap().to_str().unwrap();
                fields.push((b"SUBSYSTEM".to_vec(), name.as_bytes().to_vec()));
            }
            let devpath = format!("/{}", dir.strip_prefix(sys).unwrap().to_str().unwrap());
            out.insert(devpath, fields);
        }
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn check_walk_matches_files(sys: &Path) -> usize {
    let expected = expected_devices(sys);
    let walk = walk_devices(sys).unwrap();
    assert_eq!(walk.skipped, 0);
    assert_eq!(walk.devices.len(), expected.len());
    let mut seen = BTreeMap::new();
    for (i, ev) in walk.devices.iter().enumerate() {
        let devpath = std::str::from_utf8(ev.devpath()).unwrap();
        let want = expected
            .get(devpath)
            .unwrap_or_else(|| panic!("walk invented {devpath}"));
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            ev.fields().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(&got, want, "fields of {devpath}");
        assert_eq!(ev.action(), Action::Add);
        // Typed accessors agree with the raw fields.
        let field = |k: &[u8]| {
            want.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_slice())
        };
        assert_eq!(ev.modalias(), field(b"MODALIAS"), "{devpath}");
        assert_eq!(ev.subsystem(), field(b"SUBSYSTEM"), "{devpath}");
        assert_eq!(ev.driver(), field(b"DRIVER"), "{devpath}");
        assert_eq!(ev.devname(), field(b"DEVNAME"), "{devpath}");
        assert_eq!(ev.devtype(), field(b"DEVTYPE"), "{devpath}");
        let num =
            |k: &[u8]| field(k).map(|v| std::str::from_utf8(v).unwrap().parse::<u32>().unwrap());
        if let (Some(ma), Some(mi)) = (num(b"MAJOR"), num(b"MINOR")) {
            assert_eq!(ev.major_minor(), Some((ma, mi)), "{devpath}");
        }
        // Parents before children.
        let mut parent = Path::new(devpath).parent();
        while let Some(p) = parent {
            if let Some(&j) = seen.get(p.to_str().unwrap()) {
                assert!(j < i, "{devpath} before its parent");
            }
            parent = p.parent();
        }
        seen.insert(devpath.to_string(), i);
    }
    walk.devices.len()
}

/// The captured device trees: this host, and real guest boots (qemu pc and
/// q35 with the Debian kernel, at the moment /init starts).
fn trees() -> Vec<PathBuf> {
    ["host-sys", "guest-pc/sys", "guest-q35/sys"]
        .iter()
        .map(|t| fixtures().join(t))
        .collect()
}

#[test]
fn every_captured_device_is_found_with_its_fields() {
    for tree in trees() {
        let n = check_walk_matches_files(&tree);
        assert!(n > 200, "{} has {n} devices", tree.display());
    }
}

#[test]
fn walk_order_is_deterministic() {
    for sys in trees() {
        let a: Vec<_> = walk_devices(&sys)
            .unwrap()
            .devices
            .iter()
            .map(|e| e.devpath().to_vec())
            .collect();
        let b: Vec<_> = walk_devices(&sys)
            .unwrap()
            .devices
            .iter()
            .map(|e| e.devpath().to_vec())
            .collect();
        assert_eq!(a, b);
    }
}

#[test]
fn modalias_files_agree_with_the_uevent_files() {
    let mut compared = 0;
    for sys in trees() {
        let walk = walk_devices(&sys).unwrap();
        for ev in &walk.devices {
            let path = sys
                .join(std::str::from_utf8(&ev.devpath()[1..]).unwrap())
                .join("modalias");
            let Ok(file) = fs::read(&path) else { continue };
            let file = file.strip_suffix(b"\n").unwrap_or(&file);
            // x86's cpu modalias carries its own trailing newline.
            let file = file.strip_suffix(b"\n").unwrap_or(file);
            match ev.modalias() {
                Some(m) => {
                    assert_eq!(m, file, "{}", path.display());
                    compared += 1;
                }
                // The cpu subsystem's root device has a `modalias` attribute
                // (the boot CPU's features) but no MODALIAS in its environment;
                // each cpuN device carries its own.
                None => assert_eq!(ev.devpath(), b"/devices/system/cpu", "{}", path.display()),
            }
        }
    }
    assert!(compared >= 60, "only {compared} modalias files");
}

#[test]
fn this_machines_own_sys_walks_completely() {
    let sys = Path::new("/sys");
    if !sys.join("devices").is_dir() {
        eprintln!("SKIPPED: no /sys/devices here");
        return;
    }
    // Devices may come and go on a live system; the fixture test above is the
    // exact one. Here: every device found has the fields its file has now.
    let walk = walk_devices(sys).unwrap();
    assert_eq!(walk.skipped, 0);
    assert!(!walk.devices.is_empty());
    for ev in walk.devices.iter().take(2000) {
        let rel = std::str::from_utf8(&ev.devpath()[1..]).unwrap();
        let Ok(content) = fs::read(sys.join(rel).join("uevent")) else {
            continue;
        };
        for line in content.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let eq = line.iter().position(|&b| b == b'=').unwrap();
            assert_eq!(ev.get(&line[..eq]), Some(&line[eq + 1..]), "{rel}");
        }
    }
}

/// The datagrams of a capture directory, parsed, in the order received.
fn datagrams(dir: &str) -> Vec<Uevent> {
    read_datagrams(dir)
        .into_iter()
        .map(|d| parse_netlink(d).unwrap())
        .collect()
}

fn netlink_fixture() -> Vec<Uevent> {
    datagrams("host-netlink")
}

/// Each device tree with the triggered coldplug captured right after it.
const COLDPLUGS: [(&str, &str); 3] = [
    ("host-sys", "host-netlink"),
    ("guest-pc/sys", "guest-pc/coldplug"),
    ("guest-q35/sys", "guest-q35/coldplug"),
];

/// The netlink capture is a triggered coldplug of the same machine, taken
/// right after the sysfs capture (see the NOTEs): the kernel announced every
/// device that has a subsystem (the others are filtered by `dev_uevent_filter`:
/// no bus, no class), once, with every field the walk read from its file.
#[test]
fn the_kernel_announced_every_walked_device_with_the_same_fields() {
    for (tree, stream) in COLDPLUGS {
        check_announced(
            &walk_devices(&fixtures().join(tree)).unwrap().devices,
            &datagrams(stream),
        );
    }
}

fn check_announced(walked: &[Uevent], events: &[Uevent]) {
    let mut last = 0;
    for ev in events {
        // The kernel always sends these four.
        assert_eq!(ev.get(b"ACTION"), Some(ev.action_bytes()));
        assert_eq!(ev.get(b"DEVPATH"), Some(ev.devpath()));
        assert!(ev.subsystem().is_some());
        let seq = ev.seqnum().unwrap();
        assert!(seq > last, "SEQNUM not increasing");
        last = seq;
    }
    assert!(events.len() > 150);
    let announced: BTreeMap<&[u8], &Uevent> = events.iter().map(|e| (e.devpath(), e)).collect();
    assert_eq!(announced.len(), events.len(), "a device announced twice");
    let with_subsystem: Vec<&Uevent> = walked.iter().filter(|d| d.subsystem().is_some()).collect();
    assert_eq!(announced.len(), with_subsystem.len());
    for walked in with_subsystem {
        let ev = announced.get(walked.devpath()).unwrap_or_else(|| {
            panic!(
                "{:?} not announced",
                walked.devpath().escape_ascii().to_string()
            )
        });
        assert_eq!(ev.action(), Action::Add);
        assert!(ev.get(b"SYNTH_UUID").is_some());
        for (k, v) in walked.fields() {
            let got = ev
                .get(k)
                .unwrap_or_else(|| panic!("{k:?} missing in {ev:?}"));
            if k == b"MODALIAS" && walked.subsystem() == Some(b"cpu") {
                // x86's cpu MODALIAS ends in '\n' in the event; the file
                // shows that newline as an empty line after the value.
                assert_eq!(got.strip_suffix(b"\n"), Some(v), "{ev:?}");
            } else {
                assert_eq!(got, v, "{k:?} of {ev:?}");
            }
        }
        assert_eq!(ev.major_minor(), walked.major_minor());
        assert_eq!(ev.devname(), walked.devname());
        assert_eq!(ev.driver(), walked.driver());
    }
}

#[test]
fn captured_datagrams_decode_as_recorded() {
    // events.txt was written by the capture from the same datagrams: its
    // netlink lines (after the walk's) must match the parsed events.
    let text = fs::read_to_string(fixtures().join("host-netlink/events.txt")).unwrap();
    let events = netlink_fixture();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len() - events.len()..];
    for (line, ev) in tail.iter().zip(&events) {
        let mut want = format!(
            "{} {}",
            ev.action_bytes().escape_ascii(),
            ev.devpath().escape_ascii()
        );
        for (k, v) in ev.fields() {
            want.push_str(&format!(" {}={}", k.escape_ascii(), v.escape_ascii()));
        }
        assert_eq!(*line, want);
    }
}

/// A real boot: walk, triggered coldplug, then the virtio modules loaded in
/// dependency order, all from one socket opened first.
#[test]
fn guest_boot_stream_is_complete_ordered_and_deduplicated() {
    for guest in ["guest-pc", "guest-q35"] {
        let walk = walk_devices(&fixtures().join(guest).join("sys")).unwrap();
        let coldplug = datagrams(&format!("{guest}/coldplug"));
        let modules = datagrams(&format!("{guest}/modules"));

        // One guest, one network namespace: SEQNUMs have no gap at all
        // (filtered synthetic events never take a number).
        let mut seq = SeqnumTracker::new();
        for ev in coldplug.iter().chain(&modules) {
            let check = seq.observe_event(ev).unwrap();
            assert!(
                matches!(check, SeqnumCheck::First | SeqnumCheck::Next),
                "{guest}: {check:?} at {ev:?}"
            );
        }

        // Walk first, then the socket: every synthetic add is a duplicate
        // of a walked device, every module event is new.
        let mut dedup = Dedup::new();
        assert!(walk.devices.iter().all(|d| dedup.admit(d)));
        assert!(
            coldplug.iter().all(|e| !dedup.admit(e)),
            "{guest}: a coldplug event was new"
        );
        assert!(
            modules.iter().all(|e| dedup.admit(e)),
            "{guest}: a module event was refused"
        );
        assert_eq!(dedup.duplicates(), coldplug.len() as u64);

        // What the init needs from it: PCI devices carry their MODALIAS
        // from the first walk; loading virtio_pci adds virtio devices with
        // theirs; virtio_blk adds the disk with its device number.
        let null = walk
            .devices
            .iter()
            .find(|d| d.devpath() == b"/devices/virtual/mem/null")
            .unwrap();
        assert_eq!(
            (null.devname(), null.devmode(), null.major_minor()),
            (Some(&b"null"[..]), Some(0o666), Some((1, 3)))
        );
        let pci: Vec<_> = walk
            .devices
            .iter()
            .filter(|d| d.subsystem() == Some(b"pci"))
            .collect();
        assert!(pci.len() >= 5, "{guest}: {} pci devices", pci.len());
        assert!(pci
            .iter()
            .all(|d| d.modalias().is_some_and(|m| m.starts_with(b"pci:v"))));
        let virtio: Vec<_> = modules
            .iter()
            .filter(|e| e.action() == Action::Add && e.subsystem() == Some(b"virtio"))
            .collect();
        assert_eq!(virtio.len(), 3, "{guest}: blk, console, rng");
        assert!(virtio
            .iter()
            .all(|e| e.modalias().is_some_and(|m| m.starts_with(b"virtio:d"))));
        let vda = modules
            .iter()
            .find(|e| e.devname() == Some(b"vda"))
            .unwrap();
        assert_eq!(
            (vda.action(), vda.devtype(), vda.subsystem()),
            (Action::Add, Some(&b"disk"[..]), Some(&b"block"[..]))
        );
        assert!(vda.major_minor().is_some());
        let binds = modules
            .iter()
            .filter(|e| e.action() == Action::Bind && e.driver() == Some(b"virtio-pci"))
            .count();
        assert_eq!(binds, 3, "{guest}");
        // The events port appears as a virtio-ports device; its name arrives
        // later (a `change`), as the init must expect.
        let port = modules
            .iter()
            .filter(|e| e.subsystem() == Some(b"virtio-ports"))
            .map(|e| e.action())
            .collect::<Vec<_>>();
        assert_eq!(port, [Action::Add, Action::Change], "{guest}");
    }
}

/// The walk through bus and class links finds, on this live machine, exactly
/// the devices of the full walk that have a subsystem, with the same fields,
/// in the same order.
#[test]
fn subsystem_walk_matches_the_full_walk_on_this_machine() {
    let sys = Path::new("/sys");
    if !sys.join("bus").is_dir() {
        eprintln!("SKIPPED: no /sys/bus here");
        return;
    }
    let full = walk_devices(sys).unwrap();
    let by_links = subsystems::walk_subsystems(sys).unwrap();
    assert_eq!(by_links.skipped, 0);
    let want: Vec<_> = full
        .devices
        .iter()
        .filter(|d| d.subsystem().is_some())
        .collect();
    let got: Vec<_> = by_links
        .devices
        .iter()
        .map(|d| d.devpath().escape_ascii().to_string())
        .collect();
    let wanted: Vec<_> = want
        .iter()
        .map(|d| d.devpath().escape_ascii().to_string())
        .collect();
    assert_eq!(got, wanted);
    for (a, b) in by_links.devices.iter().zip(want) {
        assert_eq!(
            a.fields().collect::<Vec<_>>(),
            b.fields().collect::<Vec<_>>(),
            "{a:?}"
        );
    }
}

// The alternative walk on a small tree (tests/support/subsystems.rs).

fn write_file(p: &Path, content: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

#[test]
fn subsystem_walk_finds_bus_and_class_devices_in_the_same_order() {
    let t = tempfile::tempdir().unwrap();
    let sys = t.path();
    let d = sys.join("devices");
    write_file(&d.join("pci0000:00/uevent"), "");
    write_file(
        &d.join("pci0000:00/0000:00:02.0/uevent"),
        "DRIVER=virtio-pci\n",
    );
    write_file(
        &d.join("pci0000:00/0000:00:02.0/virtio0/uevent"),
        "MODALIAS=virtio:d00000002v00001AF4\n",
    );
    write_file(
        &d.join("pci0000:00/0000:00:02.0/virtio0/block/vda/uevent"),
        "MAJOR=254\nMINOR=0\nDEVNAME=vda\n",
    );
    write_file(
        &d.join("virtual/mem/null/uevent"),
        "MAJOR=1\nMINOR=3\nDEVNAME=null\nDEVMODE=0666\n",
    );
    for (link, target) in [
        (
            "devices/pci0000:00/0000:00:02.0/subsystem",
            "../../../bus/pci",
        ),
        (
            "devices/pci0000:00/0000:00:02.0/virtio0/subsystem",
            "../../../../bus/virtio",
        ),
        (
            "devices/pci0000:00/0000:00:02.0/virtio0/block/vda/subsystem",
            "../../../../../../class/block",
        ),
        (
            "devices/virtual/mem/null/subsystem",
            "../../../../class/mem",
        ),
        (
            "bus/pci/devices/0000:00:02.0",
            "../../../devices/pci0000:00/0000:00:02.0",
        ),
        (
            "bus/virtio/devices/virtio0",
            "../../../devices/pci0000:00/0000:00:02.0/virtio0",
        ),
        (
            "class/block/vda",
            "../../devices/pci0000:00/0000:00:02.0/virtio0/block/vda",
        ),
        ("class/mem/null", "../../devices/virtual/mem/null"),
        // Not into devices/: skipped and counted.
        ("class/mem/odd", "../../elsewhere/odd"),
    ] {
        fs::create_dir_all(sys.join(link).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, sys.join(link)).unwrap();
    }
    fs::create_dir_all(sys.join("bus/empty/devices")).unwrap();
    let by_links = subsystems::walk_subsystems(sys).unwrap();
    assert_eq!(by_links.skipped, 1);
    let by_tree = walk_devices(sys).unwrap();
    let with_subsystem: Vec<_> = by_tree
        .devices
        .iter()
        .filter(|d| d.subsystem().is_some())
        .collect();
    assert_eq!(by_links.devices.len(), 4);
    assert_eq!(with_subsystem.len(), 4);
    for (a, b) in by_links.devices.iter().zip(with_subsystem) {
        assert_eq!(a.devpath(), b.devpath());
        assert_eq!(
            a.fields().collect::<Vec<_>>(),
            b.fields().collect::<Vec<_>>()
        );
    }
    assert_eq!(by_links.devices[3].devmode(), Some(0o666));
}

#[test]
fn link_targets_resolve_only_into_devices() {
    assert_eq!(
        subsystems::devpath_of_link(b"../../../devices/a/b", 3),
        Some(b"/devices/a/b".to_vec())
    );
    assert_eq!(subsystems::devpath_of_link(b"../../devices/a", 3), None);
    assert_eq!(subsystems::devpath_of_link(b"../../../devices/", 3), None);
    assert_eq!(
        subsystems::devpath_of_link(b"../../../devices/a/../b", 3),
        None
    );
    assert_eq!(subsystems::devpath_of_link(b"../../../module/a", 3), None);
    assert_eq!(subsystems::devpath_of_link(b"/sys/devices/a", 0), None);
}
