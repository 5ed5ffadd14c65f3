//! Compressed modules, made from the real Debian ones: a module tree with
//! .ko.xz and .ko.zst files indexed by the real depmod must resolve exactly
//! as modprobe resolves it, and the loader must refuse (clearly, before any
//! syscall) what the kernel cannot decompress. .ko.gz is checked on our side
//! only: Debian's kmod is built without zlib, so its depmod skips them.
//!
//! Nothing is ever loaded into the host kernel: the only paths handed to
//! the real inserter are ones it refuses or that do not exist.

// Test code: a failed expectation must stop the run loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

mod common;
use common::{Layout, Tree};

use kestrel_modules::loader::{Inserter, KernelInserter, LoadError};
use kestrel_modules::{decompress_needed, Compression, ModuleIndex, Plan, Request};

/// Copies `rel` from the real tree into `root`'s tree, compressed with `tool`.
fn add_module(real: &Path, tree: &Path, rel: &str, tool: &str, ext: &str) -> String {
    let src = real.join(rel);
    let dst_rel = format!("{rel}.{ext}");
    let dst = tree.join(&dst_rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let out = Command::new(tool)
        .arg("-c")
        .arg(&src)
        .output()
        .expect("compressor runs");
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&dst, out.stdout).unwrap();
    dst_rel
}

#[test]
fn compressed_tree_resolves_like_modprobe_and_loader_refuses_clearly() {
    // The compressed copies are made from plain .ko files.
    let what = "compressed copies of real modules";
    let Some(Tree { version, dir: real }) = common::tree_or_skip(Layout::Plain, what) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("lib/modules").join(&version);
    std::fs::create_dir_all(&tree).unwrap();
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        std::fs::copy(real.join(f), tree.join(f)).unwrap();
    }
    // virtio_blk needs virtio and virtio_ring: one xz, two zstd.
    let ring = add_module(
        &real,
        &tree,
        "kernel/drivers/virtio/virtio_ring.ko",
        "xz",
        "xz",
    );
    let virtio = add_module(
        &real,
        &tree,
        "kernel/drivers/virtio/virtio.ko",
        "zstd",
        "zst",
    );
    let blk = add_module(
        &real,
        &tree,
        "kernel/drivers/block/virtio_blk.ko",
        "zstd",
        "zst",
    );
    let out = Command::new("depmod")
        .arg("-b")
        .arg(root.path())
        .arg(&version)
        .output()
        .expect("depmod runs");
    assert!(
        out.status.success(),
        "depmod failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let index = ModuleIndex::load(&tree).unwrap();
    let plan = index
        .plan(&[Request::Name("virtio-blk".to_owned())])
        .unwrap();
    let ours: Vec<String> = plan
        .modules
        .iter()
        .map(|m| m.path.display().to_string())
        .collect();
    assert_eq!(
        ours,
        [tree.join(&ring), tree.join(&virtio), tree.join(&blk)]
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    );
    // The same answer from modprobe on the same tree.
    let out = Command::new("modprobe")
        .arg("-d")
        .arg(root.path())
        .args([
            "-S",
            &version,
            "-C",
            "/dev/null",
            "--show-depends",
            "virtio-blk",
        ])
        .output()
        .expect("modprobe runs");
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        ours,
        theirs,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Aliases of compressed modules resolve too.
    assert_eq!(
        index.lookup_alias("virtio:d00000002v00001AF4"),
        vec!["virtio_blk"]
    );
    assert_eq!(index.module_relpath("virtio_ring"), Some(ring.as_str()));

    // The Debian 6.1 kernel has no in-kernel decompression
    // (CONFIG_MODULE_COMPRESS_NONE): every file needs userspace
    // decompression, and the loader says so without touching the kernel.
    let no_support = KernelInserter {
        kernel_compression: None,
    };
    for (entry, kind) in
        plan.modules
            .iter()
            .zip([Compression::Xz, Compression::Zstd, Compression::Zstd])
    {
        assert_eq!(decompress_needed(&entry.path, None), Some(kind));
        match no_support.insert(entry) {
            Err(LoadError::CompressionUnsupported {
                module,
                compression,
                kernel: None,
                ..
            }) => {
                assert_eq!(module, entry.name);
                assert_eq!(compression, kind);
            }
            other => panic!(
                "expected CompressionUnsupported for {}, got {other:?}",
                entry.name
            ),
        }
    }
    // A kernel that decompresses xz takes the .ko.xz as it is (no
    // decompression needed) but still refuses zstd.
    assert_eq!(
        decompress_needed(&plan.modules[0].path, Some(Compression::Xz)),
        None
    );
    let xz_kernel = KernelInserter {
        kernel_compression: Some(Compression::Xz),
    };
    let err = xz_kernel.insert(&plan.modules[1]).unwrap_err().to_string();
    assert!(
        err.ends_with("it is zstd-compressed and the kernel only decompresses xz"),
        "{err}"
    );
    // The supported kind goes on to open + finit_module(MODULE_INIT_COMPRESSED_FILE):
    // shown with a path that does not exist, so nothing reaches the kernel.
    let mut ghost = plan.modules[0].clone();
    ghost.path = tree.join("kernel/does-not-exist.ko.xz");
    match xz_kernel.insert(&ghost) {
        Err(e @ LoadError::Open { .. }) => assert_eq!(e.raw_os_error(), Some(2)),
        other => panic!("expected an open error, got {other:?}"),
    }
}

#[test]
fn gzip_modules_index_and_are_refused_without_kernel_support() {
    let dir = Path::new("/lib/modules/test-gz");
    let dep = b"kernel/a.ko.gz: kernel/b.ko.gz\nkernel/b.ko.gz:\n".to_vec();
    let alias = b"alias fs-a a\n".to_vec();
    let index = ModuleIndex::from_bytes(dir, dep, alias, None, None, None).unwrap();
    let plan = index.plan(&[Request::Alias("fs-a".to_owned())]).unwrap();
    let names: Vec<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["b", "a"]);
    assert_eq!(plan.modules[1].path, dir.join("kernel/a.ko.gz"));
    assert_eq!(
        decompress_needed(&plan.modules[1].path, None),
        Some(Compression::Gzip)
    );
    assert_eq!(
        decompress_needed(&plan.modules[1].path, Some(Compression::Gzip)),
        None
    );
    let err = KernelInserter {
        kernel_compression: Some(Compression::Zstd),
    }
    .insert(&plan.modules[1])
    .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::CompressionUnsupported {
                compression: Compression::Gzip,
                ..
            }
        ),
        "{err:?}"
    );
}

/// The plan for every MODALIAS of the captured q35 guest, on `index`.
fn q35_plan(index: &ModuleIndex) -> Plan {
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guest-modaliases-q35.txt"),
    )
    .unwrap();
    let requests: Vec<Request> = fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| Request::Alias(l.to_owned()))
        .collect();
    index.plan(&requests).unwrap()
}

/// Every entry that needs entry `k` through hard dependencies (a failed
/// softdep does not skip its user), directly or not.
fn hard_users(plan: &Plan, k: usize) -> BTreeSet<String> {
    let mut failed = BTreeSet::from([k]);
    for (i, m) in plan.modules.iter().enumerate() {
        // Plans are topologically ordered: dependencies come first.
        let hard = m.deps.iter().filter(|d| !m.soft_deps.contains(d));
        if hard.clone().any(|d| failed.contains(d)) {
            failed.insert(i);
        }
    }
    failed.remove(&k);
    failed
        .into_iter()
        .map(|i| plan.modules[i].name.clone())
        .collect()
}

/// The dry-run loader on real modules of `layout`: the whole q35 guest plan
/// passes; a corrupt copy of `victim` (the real file with its first bytes
/// overwritten) fails with `reason` and exactly the modules that need it
/// are skipped, the rest still "loads".
fn dry_run_real_plan_with_a_corrupt_copy(layout: Layout, victim: &str, reason: &str) {
    use kestrel_modules::loader::{load_plan_with, CheckOnlyInserter, LoadEvent};
    let what = format!("dry run of the q35 plan on {layout:?} modules");
    let Some(tree) = common::tree_or_skip(layout, &what) else {
        return;
    };
    let index = ModuleIndex::load(&tree.dir).unwrap();
    let mut plan = q35_plan(&index);
    let report = load_plan_with(&plan, 2, &CheckOnlyInserter, &|_ev: &LoadEvent| {});
    assert_eq!(report.loaded, plan.modules.len());

    let dir = tempfile::tempdir().unwrap();
    let k = plan
        .modules
        .iter()
        .position(|m| m.name == victim)
        .unwrap_or_else(|| panic!("{victim} is not in the q35 plan on {}", tree.dir.display()));
    let mut bytes = std::fs::read(&plan.modules[k].path).unwrap();
    bytes[..4].copy_from_slice(b"JUNK");
    let corrupt = dir.path().join(plan.modules[k].path.file_name().unwrap());
    std::fs::write(&corrupt, bytes).unwrap();
    plan.modules[k].path = corrupt;
    let users = hard_users(&plan, k);
    assert!(!users.is_empty(), "nothing in the plan needs {victim}");
    let events = std::sync::Mutex::new(Vec::new());
    let report = load_plan_with(&plan, 2, &CheckOnlyInserter, &|ev: &LoadEvent| {
        events.lock().unwrap().push((
            ev.entry.name.clone(),
            ev.outcome.as_ref().err().map(|e| e.to_string()),
        ));
    });
    let events = events.into_inner().unwrap();
    assert_eq!(report.failed, 1);
    let skipped: BTreeSet<String> = events
        .iter()
        .filter(|(_, e)| {
            e.as_deref()
                .is_some_and(|e| e.contains(&format!("its dependency {victim} failed")))
        })
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(skipped, users);
    assert_eq!(report.skipped, skipped.len());
    assert_eq!(
        report.loaded + report.failed + report.skipped,
        plan.modules.len()
    );
    // Everything that does not need it still "loads".
    for (name, error) in &events {
        if name != victim && !users.contains(name) {
            assert_eq!(error, &None, "{name}");
        }
    }
    assert!(report.loaded > 0, "unrelated modules still load");
    let error = events
        .iter()
        .find(|(n, _)| n == victim)
        .unwrap()
        .1
        .clone()
        .unwrap();
    assert!(error.contains(reason), "{error}");
}

/// 6.1: virtio is a module, and every virtio driver needs it.
#[test]
fn dry_run_loads_real_plan_and_reports_a_corrupt_copy() {
    dry_run_real_plan_with_a_corrupt_copy(Layout::Plain, "virtio", "it is not an ELF object");
}

/// 6.12: the files are .ko.xz (virtio is builtin there; libata has users).
#[test]
fn dry_run_loads_real_xz_plan_and_reports_a_corrupt_copy() {
    dry_run_real_plan_with_a_corrupt_copy(Layout::Xz, "libata", "it is not xz data");
}

/// A real .ko.xz tree as depmod wrote it: plans name the .ko.xz files exactly
/// as modprobe does, they need decompression unless the kernel does it, and
/// the loader refuses them (before any syscall) for a kernel that cannot.
#[test]
fn real_xz_tree_plans_like_modprobe() {
    let Some(tree) = common::tree_or_skip(Layout::Xz, "the installed .ko.xz tree") else {
        return;
    };
    let index = ModuleIndex::load(&tree.dir).unwrap();
    // ahci needs libahci and libata: three files.
    let plan = index.plan(&[Request::Name("ahci".to_owned())]).unwrap();
    let ours: Vec<String> = plan
        .modules
        .iter()
        .map(|m| m.path.display().to_string())
        .collect();
    let out = Command::new("modprobe")
        .args([
            "-S",
            &tree.version,
            "-C",
            "/dev/null",
            "--show-depends",
            "ahci",
        ])
        .output()
        .expect("modprobe runs");
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        ours,
        theirs,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ours.len() >= 2, "{ours:?}");
    let no_support = KernelInserter {
        kernel_compression: None,
    };
    for entry in &plan.modules {
        assert!(
            entry.path.to_string_lossy().ends_with(".ko.xz"),
            "{entry:?}"
        );
        assert_eq!(decompress_needed(&entry.path, None), Some(Compression::Xz));
        assert_eq!(decompress_needed(&entry.path, Some(Compression::Xz)), None);
        assert!(
            matches!(
                no_support.insert(entry),
                Err(LoadError::CompressionUnsupported {
                    compression: Compression::Xz,
                    kernel: None,
                    ..
                })
            ),
            "{}",
            entry.name
        );
    }
}
