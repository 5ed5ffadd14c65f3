//! The reference machine of `kestrel bench --reference`: a plain qemu
//! command line with no events port (q35, 2 vCPUs, 1 GiB, virtio console,
//! blk with an ext4 root, net, rng; `root=/dev/vda ro init=/sbin/init`),
//! as another VMM or a user would boot a Kestrel initrd.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel::yardstick::{Loader, Reference};
use kestrel_tests::kernel_61;

/// Kestrel discovering devices boots the reference machine to the root's
/// init without waiting for anything that is not coming (no events port)
/// and without a single warning; the fixed-list loader, the benchmark's
/// comparator, boots it too.
#[test]
fn the_reference_machine_boots_without_a_port_a_wait_or_a_warning() {
    let cache = kestrel::cache::open_cache().unwrap();
    let kernel = kestrel::kernel::read_kernel(
        &kernel_61(),
        kestrel::kernel::KernelReason::Given,
        &cache,
        false,
    )
    .unwrap();
    let reference = Reference::prepare(kernel).unwrap();
    let boot = reference.boot(Loader::Discovery).unwrap();
    assert!(boot.warnings.is_empty(), "{:?}", boot.warnings);
    // The init's own wait for devices is kestrel.timeout (20 s): a boot
    // that took anywhere near it waited for something.
    assert!(
        boot.ready_ms() > 0.0 && boot.ready_ms() < 15_000.0,
        "{boot:?}"
    );
    let fixed = reference.boot(Loader::Fixed).unwrap();
    assert!(fixed.ready_ms() > 0.0, "{fixed:?}");
}
