//! Index load time and MODALIAS resolution against the full Debian index
//! (the installed tree, see tests/common). Skips with a message when absent.

// Test code: a failed expectation must stop the run loudly (clippy.toml
// allows this in unit tests; integration tests and benches need it spelled out).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kestrel_modules::{ModuleIndex, Request};

#[path = "../tests/common/mod.rs"]
mod common;

/// The MODALIAS of every device of a Debian 6.1 q35 guest with Kestrel's
/// virtio device set (captured by tests/fixtures/capture.sh).
const Q35_FIXTURE: &str = include_str!("../tests/fixtures/guest-modaliases-q35.txt");

fn modaliases() -> Vec<&'static str> {
    Q35_FIXTURE
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn bench(c: &mut Criterion) {
    // The figures in the README are for Debian's 6.1 tree (plain .ko).
    let Some(tree) = common::tree_or_skip(common::Layout::Plain, "kestrel-modules benchmarks")
    else {
        return;
    };
    let dir = tree.dir.as_path();
    c.bench_function(&format!("index_load_{}", tree.version), |b| {
        b.iter(|| ModuleIndex::load(black_box(dir)).unwrap())
    });
    let index = ModuleIndex::load(dir).unwrap();
    let fixture = modaliases();
    c.bench_function("lookup_alias_q35_fixture", |b| {
        b.iter(|| {
            let mut n = 0;
            for m in &fixture {
                n += index.lookup_alias(black_box(m)).len();
            }
            n
        })
    });
    let requests: Vec<Request> = fixture
        .iter()
        .map(|m| Request::Alias((*m).to_owned()))
        .collect();
    c.bench_function("plan_q35_fixture", |b| {
        b.iter(|| index.plan(black_box(&requests)).unwrap())
    });
    // What the init really reads: the subset the initrd builder writes for
    // the q35 guest's modules.
    let plan = index.plan(&requests).unwrap();
    let names: std::collections::BTreeSet<String> =
        plan.modules.iter().map(|m| m.name.clone()).collect();
    let subset_dir = tempfile::tempdir().unwrap();
    for (file, bytes) in index.subset_files(&names) {
        std::fs::write(subset_dir.path().join(file), bytes).unwrap();
    }
    let sub = subset_dir.path();
    c.bench_function("index_load_q35_subset", |b| {
        b.iter(|| ModuleIndex::load(black_box(sub)).unwrap())
    });
    c.bench_function("load_and_plan_q35_subset", |b| {
        b.iter(|| {
            ModuleIndex::load(sub)
                .unwrap()
                .plan(black_box(&requests))
                .unwrap()
        })
    });
    c.bench_function("load_and_plan_q35_fixture", |b| {
        b.iter(|| {
            ModuleIndex::load(dir)
                .unwrap()
                .plan(black_box(&requests))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
