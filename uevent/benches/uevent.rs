//! Datagrams parsed per second, and the coldplug walk of the fixture tree.
//!
//! cargo bench -p kestrel-uevent --bench uevent

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kestrel_uevent::walk::walk_devices;
use kestrel_uevent::{parse_netlink, parse_sysfs};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/subsystems.rs"]
mod subsystems;
use common::{fixtures, read_datagrams};
use subsystems::walk_subsystems;

/// The captured kernel datagrams, as received: this host's triggered
/// coldplug, and a guest boot's coldplug and module loading.
fn datagrams() -> Vec<Bytes> {
    ["host-netlink", "guest-pc/coldplug", "guest-pc/modules"]
        .iter()
        .flat_map(|d| read_datagrams(d))
        .collect()
}

fn parse(c: &mut Criterion) {
    let dgrams = datagrams();
    let bytes: usize = dgrams.iter().map(Bytes::len).sum();
    let mut g = c.benchmark_group("parse_netlink");
    g.throughput(Throughput::Elements(dgrams.len() as u64));
    g.bench_function("captured_datagrams", |b| {
        b.iter(|| {
            for d in &dgrams {
                // Bytes::clone is a reference count, as when the socket hands
                // over a received datagram.
                let ev = parse_netlink(black_box(d.clone())).unwrap();
                black_box(ev.modalias());
            }
        })
    });
    g.finish();
    eprintln!("({} datagrams, {bytes} bytes per iteration)", dgrams.len());

    // The walk's content of every device, parsed again (no I/O).
    let walk = walk_devices(&fixtures().join("host-sys")).unwrap();
    let files: Vec<(Vec<u8>, Bytes)> = walk
        .devices
        .iter()
        .map(|e| {
            let content = fs::read(
                fixtures()
                    .join("host-sys")
                    .join(std::str::from_utf8(&e.devpath()[1..]).unwrap())
                    .join("uevent"),
            )
            .unwrap();
            (e.devpath().to_vec(), Bytes::from(content))
        })
        .collect();
    let mut g = c.benchmark_group("parse_sysfs");
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("fixture_uevent_files", |b| {
        b.iter(|| {
            for (devpath, content) in &files {
                black_box(parse_sysfs(devpath, content.clone()).unwrap());
            }
        })
    });
    g.finish();
}

fn walk(c: &mut Criterion) {
    let mut trees = vec![
        ("fixture_host", fixtures().join("host-sys")),
        ("fixture_guest_pc", fixtures().join("guest-pc/sys")),
    ];
    if Path::new("/sys/devices").is_dir() {
        trees.push(("live_sys", PathBuf::from("/sys")));
    }
    for (name, tree) in trees {
        let n = walk_devices(&tree).unwrap().devices.len();
        let mut g = c.benchmark_group("walk_devices");
        g.throughput(Throughput::Elements(n as u64));
        g.sample_size(30);
        g.bench_function(name, |b| b.iter(|| black_box(walk_devices(&tree).unwrap())));
        g.finish();
    }
    if Path::new("/sys/bus").is_dir() {
        let n = walk_subsystems(Path::new("/sys")).unwrap().devices.len();
        let mut g = c.benchmark_group("walk_subsystems");
        g.throughput(Throughput::Elements(n as u64));
        g.sample_size(30);
        g.bench_function("live_sys", |b| {
            b.iter(|| black_box(walk_subsystems(Path::new("/sys")).unwrap()))
        });
        g.finish();
    }
}

criterion_group!(benches, parse, walk);
criterion_main!(benches);
