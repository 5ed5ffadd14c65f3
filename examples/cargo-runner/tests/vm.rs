//! Tests that only pass inside a fresh VM (run them with
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="kestrel test"`).

use kestrel_cargo_runner_example::{init_name, kernel_release};

/// PID 1 is Kestrel's init, not the host's: this test binary runs in a
/// machine of its own.
#[test]
fn runs_in_a_fresh_vm() {
    assert_eq!(init_name().unwrap(), "init");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap();
    assert!(cmdline.contains("rdinit=/init"), "{cmdline}");
}

/// The kernel is the one asked for (the Makefile passes its release).
#[test]
fn runs_on_the_chosen_kernel() {
    let release = kernel_release().unwrap();
    if let Some(want) = option_env!("KESTREL_EXPECT_RELEASE") {
        assert_eq!(release, want);
    }
    assert!(!release.is_empty());
}

/// The crate's folder is shared and is the working directory: files are
/// read by relative path as on the host.
#[test]
fn reads_the_crate_folder() {
    let data = std::fs::read_to_string("tests/data.txt").unwrap();
    assert_eq!(data, "shared from the host\n");
}

/// Root in the VM (the host user's ids when it is not root on the host):
/// the uid is what the host user has.
#[test]
fn runs_as_the_host_user() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    if let Some(want) = option_env!("KESTREL_EXPECT_UID") {
        assert_eq!(uid, want);
    }
}
