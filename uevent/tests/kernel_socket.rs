//! The socket against the live kernel, as root (CI runs it as root; this
//! host is a VM where the test user is root).
//!
//! Forged uevents are sent by separate processes (this test binary re-run
//! with `FORGE_ENV` set): as root to the kernel's multicast group 1, and as
//! root directly to the listener's port (the udev CVE-2009-1185 attack; an
//! unprivileged process is refused by the kernel, which is checked too).
//! Both must be dropped and counted, while a real
//! kernel event (a `change` written to /dev/null's `uevent` file, tagged with
//! our SYNTH_UUID) gets through.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kestrel_uevent::socket::{UeventSocket, KERNEL_GROUP};
use kestrel_uevent::{walk, Action, Uevent};

#[path = "support/coldplug.rs"]
mod coldplug;
#[path = "support/track.rs"]
mod track;
use coldplug::{SynthUuid, SysfsWriter, Trigger, UeventWriter};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    bind, getsockname, sendto, socket_with, AddressFamily, SendFlags, SocketFlags, SocketType,
};

const FORGE_ENV: &str = "KESTREL_UEVENT_FORGE_TO";
const FORGED_DEVPATH: &str = "/devices/kestrel-forged";
const NULL_UEVENT: &str = "/sys/devices/virtual/mem/null/uevent";
const DEADLINE: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The child's part: send one forged uevent to `dest` = `PORT,GROUPS,EXPECT`
/// where EXPECT is `sent` or `refused` (EPERM from the kernel).
fn forge(dest: &str) {
    let mut parts = dest.split(',');
    let port: u32 = parts.next().unwrap().parse().unwrap();
    let groups: u32 = parts.next().unwrap().parse().unwrap();
    let expect = parts.next().unwrap();
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )
    .unwrap();
    // Port 0 asks the kernel to choose: a process never gets port 0.
    bind(&fd, &SocketAddrNetlink::new(0, 0)).unwrap();
    let msg = format!(
        "add@{FORGED_DEVPATH}\0ACTION=add\0DEVPATH={FORGED_DEVPATH}\0SUBSYSTEM=block\0\
MAJOR=8\0MINOR=0\0DEVNAME=sda\0SEQNUM=1\0"
    );
    let sent = sendto(
        &fd,
        msg.as_bytes(),
        SendFlags::empty(),
        &SocketAddrNetlink::new(port, groups),
    );
    match expect {
        "sent" => assert_eq!(sent.unwrap(), msg.len()),
        // Sending on a uevent socket to any group or port
        // needs CAP_NET_ADMIN (uevent sockets are NL_CFG_F_NONROOT_RECV
        // only): the kernel refuses an unprivileged forger outright.
        "refused" => assert_eq!(sent, Err(rustix::io::Errno::PERM)),
        other => panic!("bad expectation {other}"),
    }
}

fn run_forger(dest: String, uid: Option<u32>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "forged_uevents_are_dropped_and_kernel_events_pass",
        "--nocapture",
    ])
    .env(FORGE_ENV, dest);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "forger failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Receives until `want` matches an event or the deadline passes; returns
/// every event received.
fn recv_until(sock: &mut UeventSocket, want: impl Fn(&Uevent) -> bool) -> Vec<Uevent> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let mut fds = [PollFd::new(&*sock, PollFlags::IN)];
        poll(&mut fds, Some(&Timespec::try_from(left).unwrap())).unwrap();
        while let Some(ev) = sock.recv().unwrap() {
            let done = want(&ev);
            got.push(ev);
            if done {
                return got;
            }
        }
    }
    panic!("no matching event within {DEADLINE:?}; got {got:#?}");
}

#[test]
fn forged_uevents_are_dropped_and_kernel_events_pass() {
    if let Ok(dest) = std::env::var(FORGE_ENV) {
        forge(&dest);
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: needs root (CI runs this as root)");
        return;
    }
    let mut sock = UeventSocket::open().unwrap();
    assert!(sock.has_forced_buffer(), "root must get SO_RCVBUFFORCE");
    let me = SocketAddrNetlink::try_from(getsockname(&sock).unwrap()).unwrap();
    assert_ne!(me.pid(), 0);
    assert_eq!(me.groups(), KERNEL_GROUP);

    // 1. A root process, multicast to the kernel's group.
    run_forger(format!("0,{KERNEL_GROUP},sent"), None);
    // 2. A root process, unicast to our port (the udev CVE-2009-1185 path).
    run_forger(format!("{},0,sent", me.pid()), None);
    // 3. An unprivileged process, unicast: the kernel itself refuses.
    run_forger(format!("{},0,refused", me.pid()), Some(NOBODY));

    // 4. A real kernel event, tagged so we know it is ours.
    let uuid = SynthUuid::new(0x6b65_7374_7265_6c00, u64::from(std::process::id()));
    let mut content = b"change ".to_vec();
    content.extend_from_slice(uuid.as_bytes());
    SysfsWriter
        .write_uevent(Path::new(NULL_UEVENT), &content)
        .unwrap();

    let got = recv_until(&mut sock, |ev| ev.synth_uuid() == Some(uuid.as_bytes()));
    let real = got.last().unwrap();
    assert_eq!(real.action(), Action::Change);
    assert_eq!(real.devpath(), b"/devices/virtual/mem/null");
    assert_eq!(real.subsystem(), Some(&b"mem"[..]));
    assert_eq!(real.major_minor(), Some((1, 3)));
    assert!(real.seqnum().is_some());
    assert!(got
        .iter()
        .all(|ev| ev.devpath() != FORGED_DEVPATH.as_bytes()));
    // Both forgeries were queued before the real event (delivery is
    // synchronous), so both were seen and dropped by now. (More only if
    // another process forges at the same time.)
    assert!(
        sock.dropped() >= 2,
        "dropped {}, received: {got:#?}",
        sock.dropped()
    );
}

/// Triggered coldplug on the live /sys: every `add UUID` written either comes
/// back or is named silent once the socket is drained, and each triggered
/// event has the same fields as the walk read from the device's file.
#[test]
fn triggered_coldplug_completes_without_a_timeout() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (CI runs this as root)");
        return;
    }
    let sys = Path::new("/sys");
    let mut sock = UeventSocket::open().unwrap();
    let w = walk::walk_devices(sys).unwrap();
    // Only harmless virtual devices: no driver reacts to a synthetic add of
    // a memory character device or a workqueue.
    let targets: Vec<&Uevent> = w
        .devices
        .iter()
        .filter(|d| {
            d.devpath().starts_with(b"/devices/virtual/mem/")
                || d.devpath().starts_with(b"/devices/virtual/workqueue")
        })
        .collect();
    assert!(targets.len() >= 5, "too few targets: {}", targets.len());
    let mut trigger = Trigger::with_unique_batch();
    let written = trigger
        .trigger_all(&mut SysfsWriter, sys, targets.iter().copied())
        .unwrap();
    assert_eq!(written, targets.len(), "{:?}", trigger.failed());
    // Writes are synchronous: everything is queued; drain to empty.
    let mut answered = Vec::new();
    while let Some(ev) = sock.recv().unwrap() {
        if trigger.observe(&ev) {
            answered.push(ev);
        }
    }
    let silent = trigger.finish_after_drain();
    assert!(trigger.is_complete());
    // /devices/virtual/workqueue itself has no class: filtered, silent.
    for s in &silent {
        let walked = targets.iter().find(|d| d.devpath() == &s[..]).unwrap();
        assert_eq!(
            walked.fields().count(),
            0,
            "a silent device had an environment: {walked:?}"
        );
    }
    assert_eq!(answered.len() + silent.len(), targets.len());
    for ev in &answered {
        let walked = targets
            .iter()
            .find(|d| d.devpath() == ev.devpath())
            .unwrap();
        assert_eq!(ev.action(), Action::Add);
        for (k, v) in walked.fields() {
            assert_eq!(ev.get(k), Some(v), "{ev:?} vs walk {walked:?}");
        }
    }
}

/// A receive buffer too small for a burst: `recv` reports the overflow
/// (ENOBUFS) once, keeps working afterwards, and the SEQNUM gap shows how
/// many events were lost.
#[test]
fn overflow_is_reported_and_the_socket_recovers() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (CI runs this as root)");
        return;
    }
    const BURST: u64 = 200;
    // The kernel's minimum (SOCK_MIN_RCVBUF, about 2.3 KiB) holds a few
    // uevents of /dev/null (each skb costs its truesize, ~1 KiB or more).
    let mut sock = UeventSocket::open_with_buffer(1).unwrap();
    let uuid = SynthUuid::new(0x6f76_6572_666c_6f77, u64::from(std::process::id()));
    let mut content = b"change ".to_vec();
    content.extend_from_slice(uuid.as_bytes());
    for _ in 0..BURST {
        SysfsWriter
            .write_uevent(Path::new(NULL_UEVENT), &content)
            .unwrap();
    }
    let mut tracker = track::SeqnumTracker::new();
    let mut ours = 0u64;
    let mut overflowed = 0;
    loop {
        match sock.recv() {
            Ok(Some(ev)) => {
                tracker.observe_event(&ev);
                if ev.synth_uuid() == Some(uuid.as_bytes()) {
                    ours += 1;
                }
            }
            Ok(None) => break,
            Err(kestrel_uevent::UeventError::Overflow) => overflowed += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // One burst, one ENOBUFS (more only if others' events overflow it again
    // while it drains).
    assert!(overflowed >= 1, "no ENOBUFS reported");
    assert_eq!(sock.overflows(), overflowed);
    assert!(ours > 0 && ours < BURST, "received {ours} of {BURST}");
    // And the socket still works: a new event gets through.
    let uuid2 = SynthUuid::new(0x6166_7465_7200_0000, u64::from(std::process::id()));
    let mut content = b"change ".to_vec();
    content.extend_from_slice(uuid2.as_bytes());
    SysfsWriter
        .write_uevent(Path::new(NULL_UEVENT), &content)
        .unwrap();
    for ev in recv_until(&mut sock, |ev| ev.synth_uuid() == Some(uuid2.as_bytes())) {
        tracker.observe_event(&ev);
    }
    // The lost events show as a SEQNUM gap once a later event arrives
    // (others' events, sent or lost, may add more).
    assert!(
        tracker.missed() >= BURST - ours,
        "missed {} received {ours}",
        tracker.missed()
    );
    assert!(tracker.gaps() >= 1);
}
