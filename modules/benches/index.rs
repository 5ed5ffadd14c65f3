//! Index load time and MODALIAS resolution against the full Debian index
//! (/lib/modules/6.1.0-56-amd64). Skips with a message when it is absent.

// Test code: a failed expectation must stop the run loudly (clippy.toml
// allows this in unit tests; integration tests and benches need it spelled out).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kestrel_modules::{ModuleIndex, Request};

const KERNEL_DIR: &str = "/lib/modules/6.1.0-56-amd64";

/// MODALIAS strings of a q35 guest with virtio devices (captured with
/// `cat /sys/bus/*/devices/*/modalias` in a Debian 6.1 guest).
const MODALIASES: &[&str] = &[
    "pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00",
    "pci:v00008086d00002918sv00001AF4sd00001100bc06sc01i00",
    "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
    "pci:v00008086d00002930sv00001AF4sd00001100bc0Csc05i00",
    "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00",
    "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00",
    "pci:v00001AF4d00001043sv00001AF4sd00001100bc07sc80i00",
    "pci:v00001AF4d00001044sv00001AF4sd00001100bcFFsc00i00",
    "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30",
    "virtio:d00000001v00001AF4",
    "virtio:d00000002v00001AF4",
    "virtio:d00000003v00001AF4",
    "virtio:d00000004v00001AF4",
    "acpi:PNP0A08:PNP0A03:",
    "acpi:PNP0C0F:",
    "acpi:PNP0B00:",
    "acpi:PNP0303:",
    "acpi:PNP0F13:",
    "acpi:PNP0501:",
    "acpi:QEMU0002:",
    "acpi:ACPI0010:PNP0A05:",
    "acpi:LNXCPU:",
    "acpi:LNXPWRBN:",
    "platform:serial8250",
    "platform:i8042",
    "platform:pcspkr",
    "serio:ty01pr00id00ex00",
    "input:b0011v0001p0001eAB41-e0,1,4,11,14,k71,72,73,74,75,76,77,79,7A,7B,7C,7D,7E,7F,80,8C,8E,8F,9B,9C,9D,9E,9F,A3,A4,A5,A6,AC,AD,B7,B8,B9,D9,E2,ram4,l0,1,2,sfw",
    "cpu:type:x86,ven0000fam0006mod003D:feature:,0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,000B,000C,000D,000E,000F,0010,0011,0013,0017,0018,0019,001A,001B,001C,002B,0034,003A,003B,003D,0068,006F,0070,0072,0074,0075,0076,0080,0081,0089,008C,008D,0091,0093,0094,0095,0096,0097,0098,0099,009A,009B,009C,009D,009E,00C0,00C5,00E1,00E3,00E4,00E6,00E7,00EB,00EC,00F0,00F1,00F3,00F5,00F6,00F9,00FA,00FB,00FD,0100,0101,0102,0103,0120,0123,0125,0127,0128,0129,012A,012D,0140,0165,01C0,01C1,01C2,01C4,01C5,01C6,024A,025A,025B,025C,025D,025F",
];

fn bench(c: &mut Criterion) {
    let dir = Path::new(KERNEL_DIR);
    if !dir.join("modules.dep").exists() {
        eprintln!("SKIPPING kestrel-modules benchmarks: {KERNEL_DIR} is not installed");
        return;
    }
    c.bench_function("index_load_debian_6.1", |b| b.iter(|| ModuleIndex::load(black_box(dir)).unwrap()));
    let index = ModuleIndex::load(dir).unwrap();
    c.bench_function("lookup_alias_guest_modaliases", |b| {
        b.iter(|| {
            let mut n = 0;
            for m in MODALIASES {
                n += index.lookup_alias(black_box(m)).len();
            }
            n
        })
    });
    let requests: Vec<Request> = MODALIASES.iter().map(|m| Request::Alias((*m).to_owned())).collect();
    c.bench_function("plan_guest_modaliases", |b| b.iter(|| index.plan(black_box(&requests)).unwrap()));
    c.bench_function("load_and_plan_guest_modaliases", |b| {
        b.iter(|| ModuleIndex::load(dir).unwrap().plan(black_box(&requests)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
