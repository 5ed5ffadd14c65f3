//! The builder against real tools: GNU cpio (list and extract), gzip, zstd
//! and xz (decompress), ldd (library closure), an independent golden file,
//! and hostile inputs. Tools are found on PATH; their absence fails the test
//! (they are part of the project's setup), except gcc for the RUNPATH test.
// Test code: the workspace's production lints do not apply (clippy.toml allows
// them inside #[test] functions; the helpers here are test code too).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_initrd::{
    compress, concat_archives, parse_initramfs, parse_newc, Archive, Compression, EntryKind,
    InitrdError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MTIME: u32 = 1_700_000_000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Run `cmd args` with `stdin`, in `dir`; return stdout; fail on a non-zero exit.
fn run(cmd: &str, args: &[&str], stdin: &[u8], dir: Option<&Path>) -> Vec<u8> {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A tree with every kind of entry the extraction test can check without root.
type Step = Box<dyn Fn(&mut Archive)>;

fn sample(reverse: bool, tree: &Path) -> Archive {
    let mut steps: Vec<Step> = vec![
        Box::new(|a| {
            a.add_file("/init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
                .unwrap()
        }),
        Box::new(|a| {
            a.add_file("etc/hostname", 0o644, b"kestrel\n".to_vec())
                .unwrap()
        }),
        Box::new(|a| a.add_file("etc/secret", 0o600, vec![7; 4096]).unwrap()),
        Box::new(|a| a.add_file("etc/empty", 0o640, Vec::new()).unwrap()),
        Box::new(|a| a.add_file("a/b/c/d/three", 0o444, b"abc".to_vec()).unwrap()),
        Box::new(|a| a.add_dir("private", 0o700).unwrap()),
        Box::new(|a| a.add_file("private/x", 0o604, b"x".to_vec()).unwrap()),
        Box::new(|a| a.add_symlink("etc/rel", "hostname").unwrap()),
        Box::new(|a| a.add_symlink("etc/up", "../init").unwrap()),
        Box::new(|a| a.add_symlink("abs", "/etc/hostname").unwrap()),
        Box::new(|a| a.add_symlink("dangling", "nowhere/at/all").unwrap()),
        Box::new(|a| {
            a.add_file(
                "payload/data.bin",
                0o644,
                (0..=255u8).cycle().take(10_001).collect(),
            )
            .unwrap()
        }),
        Box::new(|a| a.add_program(Path::new("/bin/sh")).unwrap()),
    ];
    let tree = tree.to_path_buf();
    steps.push(Box::new(move |a| a.add_tree("opt/tree", &tree).unwrap()));
    if reverse {
        steps.reverse();
    }
    let mut a = Archive::new();
    for s in &steps {
        s(&mut a);
    }
    a.add_hardlink("etc/hostname.link", "etc/hostname").unwrap();
    a
}

/// A host directory for add_tree: files, a subdirectory, a symlink, a hard link.
fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("one"), b"one\n").unwrap();
    std::fs::write(dir.join("sub/two"), b"two two\n").unwrap();
    std::fs::set_permissions(dir.join("sub/two"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::hard_link(dir.join("one"), dir.join("sub/one-again")).unwrap();
    symlink("../one", dir.join("sub/link")).unwrap();
    std::fs::write(dir.join("sub/deeper/z"), b"").unwrap();
}

fn tree_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    t
}

#[test]
fn two_builds_are_byte_identical() {
    // Two different host trees with the same content and two insertion orders.
    let (t1, t2) = (tree_dir(), tree_dir());
    let a = sample(false, t1.path());
    let b = sample(true, t2.path());
    assert_eq!(a.manifest(), b.manifest());
    let (x, y) = (a.to_newc(MTIME).unwrap(), b.to_newc(MTIME).unwrap());
    assert_eq!(x, y);
    for c in Compression::ALL {
        assert_eq!(
            a.to_compressed(MTIME, c).unwrap(),
            b.to_compressed(MTIME, c).unwrap(),
            "{c}"
        );
    }
    // The mtime is the only time in the output.
    assert_ne!(a.to_newc(MTIME + 1).unwrap(), x);
}

fn cpio_list(archive: &[u8]) -> Vec<String> {
    let out = run("cpio", &["-t", "--quiet"], archive, None);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn cpio_lists_exactly_the_manifest() {
    let t = tree_dir();
    let a = sample(false, t.path());
    let listed = cpio_list(&a.to_newc(MTIME).unwrap());
    let manifest: Vec<String> = a.manifest().into_iter().map(|e| e.path).collect();
    assert_eq!(listed, manifest);
    // Parents come before children.
    let mut seen = BTreeSet::new();
    for p in &manifest {
        if let Some((parent, _)) = p.rsplit_once('/') {
            assert!(seen.contains(parent), "{p} before {parent}");
        }
        seen.insert(p.as_str());
    }
}

#[test]
fn cpio_extraction_gives_back_files_links_and_modes() {
    let t = tree_dir();
    let a = sample(false, t.path());
    let out = tempfile::tempdir().unwrap();
    run(
        "cpio",
        &["-idm", "--no-absolute-filenames", "--quiet"],
        &a.to_newc(MTIME).unwrap(),
        Some(out.path()),
    );
    let mut inodes: BTreeMap<String, u64> = BTreeMap::new();
    for e in a.manifest() {
        let p = out.path().join(&e.path);
        let meta = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{}: {err}", e.path));
        match e.kind {
            EntryKind::Dir => {
                assert!(meta.is_dir(), "{}", e.path);
                assert_eq!(meta.permissions().mode() & 0o7777, e.mode, "{}", e.path);
            }
            EntryKind::File | EntryKind::HardLink => {
                assert!(meta.is_file(), "{}", e.path);
                assert_eq!(meta.permissions().mode() & 0o7777, e.mode, "{}", e.path);
                assert_eq!(meta.len(), e.size, "{}", e.path);
                assert_eq!(meta.mtime(), i64::from(MTIME), "{}", e.path);
                inodes.insert(e.path.clone(), meta.ino());
            }
            EntryKind::Symlink => {
                assert!(meta.file_type().is_symlink(), "{}", e.path);
                let target = std::fs::read_link(&p).unwrap();
                assert_eq!(
                    Some(target.to_str().unwrap().to_owned()),
                    e.target,
                    "{}",
                    e.path
                );
            }
            EntryKind::CharDev | EntryKind::BlockDev => {
                unreachable!("no device nodes in the sample")
            }
        }
    }
    // Content, byte for byte, for a few files including the program.
    assert_eq!(
        std::fs::read(out.path().join("etc/secret")).unwrap(),
        vec![7; 4096]
    );
    assert_eq!(
        std::fs::read(out.path().join("opt/tree/sub/two")).unwrap(),
        b"two two\n"
    );
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let sh_in = a.resolve(sh.to_str().unwrap()).unwrap();
    assert_eq!(
        std::fs::read(out.path().join(sh_in)).unwrap(),
        std::fs::read(&sh).unwrap()
    );
    // Hard links came back as hard links.
    assert_eq!(inodes["etc/hostname"], inodes["etc/hostname.link"]);
    assert_eq!(inodes["opt/tree/one"], inodes["opt/tree/sub/one-again"]);
    assert_ne!(inodes["etc/hostname"], inodes["opt/tree/one"]);
    // Every file in the extraction is in the manifest (nothing extra).
    let mut found = Vec::new();
    walk(out.path(), out.path(), &mut found);
    found.sort();
    let manifest: Vec<String> = a.manifest().into_iter().map(|e| e.path).collect();
    assert_eq!(found, manifest);
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        }
    }
}

/// The same tree as tests/fixtures/gen_tiny.py describes.
fn tiny() -> Archive {
    let mut a = Archive::new();
    a.add_dir("x", 0o700).unwrap();
    a.add_file("x/y/empty", 0o600, Vec::new()).unwrap();
    a.add_symlink("sbin", "bin").unwrap();
    a.add_file("init", 0o755, b"#!/bin/sh\nexit 0\n".to_vec())
        .unwrap();
    a.add_file("/etc/hostname", 0o644, b"kestrel\n".to_vec())
        .unwrap();
    a.add_hardlink("etc/hosts2", "/etc/hostname").unwrap();
    a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
    a
}

#[test]
fn golden_tiny_archive() {
    let golden = std::fs::read(fixture("tiny.cpio")).unwrap();
    let ours = tiny().to_newc(MTIME).unwrap();
    if ours != golden {
        let at = ours
            .iter()
            .zip(&golden)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(golden.len()));
        panic!(
            "differs from tests/fixtures/tiny.cpio at byte {at} (ours {} bytes, golden {})",
            ours.len(),
            golden.len()
        );
    }
    let listed = cpio_list(&golden);
    assert_eq!(
        listed,
        tiny()
            .manifest()
            .into_iter()
            .map(|e| e.path)
            .collect::<Vec<_>>()
    );
    // And our reader agrees with the headers.
    let (entries, used) = parse_newc(&golden).unwrap();
    assert_eq!(used, golden.len());
    let console = entries.iter().find(|e| e.name == "dev/console").unwrap();
    assert_eq!(
        (console.mode, console.rdev_major, console.rdev_minor),
        (0o020_600, 5, 1)
    );
    assert!(entries
        .iter()
        .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == MTIME));
}

#[test]
fn hostile_paths_are_refused() {
    let mut a = Archive::new();
    let paths = std::fs::read_to_string(fixture("hostile-paths.txt")).unwrap();
    for line in paths.lines() {
        let p = line.replace("\\0", "\0").replace("\\n", "\n");
        for r in [
            a.add_file(&p, 0o644, b"x".to_vec()),
            a.add_dir(&p, 0o755),
            a.add_symlink(&p, "target"),
            a.add_char_dev(&p, 0o600, 1, 3),
        ] {
            assert!(
                matches!(
                    r,
                    Err(InitrdError::PathEscape { .. } | InitrdError::InvalidPath { .. })
                ),
                "{line:?} accepted: {r:?}"
            );
        }
    }
    let links = std::fs::read_to_string(fixture("hostile-symlinks.txt")).unwrap();
    for line in links.lines() {
        let (link, target) = line.split_once('\t').unwrap();
        let r = a.add_symlink(link, target);
        assert!(
            matches!(r, Err(InitrdError::PathEscape { .. })),
            "{link} -> {target} accepted: {r:?}"
        );
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("escapes the archive root"));
    }
    // Failed adds may leave implicit parent directories, never a hostile entry.
    assert!(a.manifest().iter().all(|e| e.kind == EntryKind::Dir));
}

#[test]
fn hostile_tree_is_refused_and_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(t.path().join("outside"), b"host secret").unwrap();
    // A symlink to a directory outside the tree: copied as a link, never entered.
    symlink(t.path(), src.join("d/parent-link")).unwrap();
    let mut a = Archive::new();
    a.add_tree("opt", &src).unwrap();
    assert!(a
        .manifest()
        .iter()
        .all(|e| !e.path.contains("outside") && !e.path.starts_with("opt/d/parent-link/")));
    assert!(a
        .to_newc(0)
        .unwrap()
        .windows(11)
        .all(|w| w != b"host secret"));
    // A relative link climbing above the archive root is refused.
    symlink("../../../../outside", src.join("d/escape")).unwrap();
    let r = Archive::new().add_tree("opt", &src);
    assert!(matches!(r, Err(InitrdError::PathEscape { .. })), "{r:?}");
    // A fifo is refused.
    let f = tempfile::tempdir().unwrap();
    let fifo = f.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert!(matches!(
        Archive::new().add_tree("x", f.path()),
        Err(InitrdError::UnsupportedFileType { .. })
    ));
}

#[test]
fn hostile_sysroot_cannot_escape() {
    // A sysroot whose library path is a symlink climbing out: resolution stays
    // inside the sysroot on the host side and is refused in the archive.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy("/bin/sh", r.join("bin/sh")).unwrap();
    std::fs::create_dir_all(r.join("lib64")).unwrap();
    // PT_INTERP of /bin/sh is /lib64/ld-linux-x86-64.so.2: make it a hostile link.
    let interp =
        kestrel_initrd::parse_elf(Path::new("/bin/sh"), &std::fs::read("/bin/sh").unwrap())
            .unwrap()
            .interpreter
            .unwrap();
    let interp_in = r.join(interp.trim_start_matches('/'));
    std::fs::create_dir_all(interp_in.parent().unwrap()).unwrap();
    symlink("../../../../../../../../etc/passwd", &interp_in).unwrap();
    let e = Archive::new()
        .add_program_in(r, Path::new("/bin/sh"))
        .unwrap_err();
    assert!(matches!(e, InitrdError::PathEscape { .. }), "{e}");
    // An absolute link resolves inside the sysroot: /etc/passwd of the sysroot
    // does not exist, so it is an error, never the host's file.
    std::fs::remove_file(&interp_in).unwrap();
    symlink("/etc/passwd", &interp_in).unwrap();
    let e = Archive::new()
        .add_program_in(r, Path::new("/bin/sh"))
        .unwrap_err();
    assert!(matches!(e, InitrdError::Io { .. }), "{e}");
    assert!(e.to_string().contains(r.to_str().unwrap()), "{e}");
}

/// ldd's view: every resolved path (the interpreter and "name => path").
fn ldd(program: &str) -> BTreeSet<String> {
    let out = String::from_utf8(run("ldd", &[program], b"", None)).unwrap();
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once(" => ") {
                Some((_, rest)) => rest.split(" (").next().unwrap(),
                None => l.split(" (").next().unwrap(),
            };
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

fn our_closure(program: &str) -> (Archive, BTreeSet<String>) {
    let mut a = Archive::new();
    let report = a
        .add_program_in(Path::new("/"), Path::new(program))
        .unwrap();
    let paths = report
        .iter()
        .map(|f| f.host_path.clone())
        .filter(|p| p != program)
        .collect();
    (a, paths)
}

#[test]
fn add_program_matches_ldd() {
    let mut programs = vec!["/bin/sh", "/usr/bin/env"];
    // A program with many libraries, when installed.
    if Path::new("/usr/bin/qemu-system-x86_64").exists() {
        programs.push("/usr/bin/qemu-system-x86_64");
    }
    for program in programs {
        let expected = ldd(program);
        let (a, ours) = our_closure(program);
        assert_eq!(ours, expected, "{program}");
        // Each is reachable in the archive at the host path.
        for p in &expected {
            assert!(a.contains(p), "{p} missing for {program}");
        }
        // Same files: the archive content is the host content.
        for p in &expected {
            let real = std::fs::canonicalize(p).unwrap();
            let stored = a.resolve(real.to_str().unwrap()).unwrap();
            let entry = a.manifest().into_iter().find(|e| e.path == stored).unwrap();
            assert_eq!(entry.size, std::fs::metadata(&real).unwrap().len(), "{p}");
            assert!(!entry.reason.is_empty(), "{p} has no reason");
        }
    }
}

#[test]
fn loader_symlinks_become_archive_symlinks() {
    let (a, _) = our_closure("/bin/sh");
    let interp =
        kestrel_initrd::parse_elf(Path::new("/bin/sh"), &std::fs::read("/bin/sh").unwrap())
            .unwrap()
            .interpreter
            .unwrap();
    // Every symlink on the host path of the interpreter is a symlink in the archive.
    let m: BTreeMap<String, _> = a
        .manifest()
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let mut prefix = PathBuf::from("/");
    for c in Path::new(&interp).components().skip(1) {
        prefix.push(c);
        let meta = std::fs::symlink_metadata(&prefix).unwrap();
        if meta.file_type().is_symlink() {
            let rel = prefix.strip_prefix("/").unwrap().to_str().unwrap();
            let e = m
                .get(rel)
                .unwrap_or_else(|| panic!("{rel} not in the archive"));
            assert_eq!(e.kind, EntryKind::Symlink, "{rel}");
            assert_eq!(
                e.target.as_deref(),
                Some(std::fs::read_link(&prefix).unwrap().to_str().unwrap())
            );
            break; // later components live under the link's target
        }
    }
}

#[test]
fn scripts_pull_in_their_interpreter() {
    let t = tempfile::tempdir().unwrap();
    let script = t.path().join("hello");
    std::fs::write(&script, "#!/usr/bin/env sh\necho hello\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut a = Archive::new();
    let report = a.add_program_in(Path::new("/"), &script).unwrap();
    let hosts: BTreeSet<_> = report.iter().map(|f| f.host_path.as_str()).collect();
    assert!(hosts.contains("/usr/bin/env"), "{hosts:?}");
    assert!(hosts.iter().any(|h| h.ends_with("/sh")), "{hosts:?}");
    for lib in ldd("/usr/bin/env") {
        assert!(hosts.contains(lib.as_str()), "{lib}");
    }
    assert!(a.contains(script.to_str().unwrap()));
}

#[test]
fn runpath_origin_matches_ldd() {
    let Ok(status) = Command::new("gcc")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    else {
        eprintln!("gcc not installed; skipping");
        return;
    };
    assert!(status.success());
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("app/bin")).unwrap();
    std::fs::create_dir_all(d.join("app/lib")).unwrap();
    std::fs::write(d.join("foo.c"), "int foo(void) { return 42; }\n").unwrap();
    std::fs::write(
        d.join("main.c"),
        "int foo(void);\nint main(void) { return foo() - 42; }\n",
    )
    .unwrap();
    let ok = |args: &[&str]| {
        assert!(
            Command::new("gcc")
                .args(args)
                .current_dir(d)
                .status()
                .unwrap()
                .success(),
            "{args:?}"
        )
    };
    ok(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,libfoo.so.1",
        "-o",
        "app/lib/libfoo.so.1",
        "foo.c",
    ]);
    ok(&[
        "-o",
        "app/bin/main",
        "main.c",
        "app/lib/libfoo.so.1",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib",
    ]);
    let main = d.join("app/bin/main");
    let main = main.to_str().unwrap();
    let expected = ldd(main);
    assert!(
        expected
            .iter()
            .any(|p| p.ends_with("/app/bin/../lib/libfoo.so.1")),
        "{expected:?}"
    );
    let (a, ours) = our_closure(main);
    assert_eq!(ours, expected);
    let lib = d.join("app/lib/libfoo.so.1");
    assert!(a.contains(lib.to_str().unwrap()));
}

fn unpack_with(tool: &str, data: &[u8]) -> Vec<u8> {
    run(tool, &["-dc"], data, None)
}

#[test]
fn compression_round_trips_through_real_tools() {
    let t = tree_dir();
    let a = sample(false, t.path());
    let raw = a.to_newc(MTIME).unwrap();
    for (c, tool) in [
        (Compression::Gzip, "gzip"),
        (Compression::Zstd, "zstd"),
        (Compression::Xz, "xz"),
    ] {
        let packed = compress(&raw, c).unwrap();
        assert!(packed.len() < raw.len(), "{c} did not shrink");
        let back = unpack_with(tool, &packed);
        assert!(back == raw, "{tool} -dc gave different bytes");
        assert_eq!(cpio_list(&back).len(), a.len());
    }
    // The xz stream's check is CRC32 (what the kernel's decoder supports), per xz itself.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.cpio.xz");
    std::fs::write(&f, compress(&raw, Compression::Xz).unwrap()).unwrap();
    let info = String::from_utf8(run(
        "xz",
        &["--robot", "--list", f.to_str().unwrap()],
        b"",
        None,
    ))
    .unwrap();
    let stream = info.lines().find(|l| l.starts_with("file\t")).unwrap();
    assert_eq!(stream.split('\t').nth(6), Some("CRC32"), "{info}");
}

#[test]
fn concatenated_archives_read_back_in_order() {
    let t = tree_dir();
    let base = sample(false, t.path());
    let mut extra = Archive::new();
    extra
        .add_file("run/command", 0o644, b"echo ok\n".to_vec())
        .unwrap();
    extra
        .add_file("etc/hostname", 0o644, b"override\n".to_vec())
        .unwrap();
    for c in Compression::ALL {
        let first = base.to_compressed(MTIME, c).unwrap();
        let second = extra.to_newc(MTIME).unwrap();
        let mut out = Vec::new();
        concat_archives(&mut out, &[&first, &second]).unwrap();
        assert_eq!(out.len() % 4, 0);
        let parts = parse_initramfs(&out, 1 << 30).unwrap();
        assert_eq!(parts.len(), 2, "{c}");
        assert_eq!(parts[0].len(), base.len());
        assert_eq!(
            parts[1].iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["etc", "etc/hostname", "run", "run/command"]
        );
        // GNU cpio reads the first archive of an uncompressed concatenation.
        if c == Compression::None {
            assert_eq!(cpio_list(&out).len(), base.len());
        }
    }
    // A compressed second part after an uncompressed first one.
    let mut out = Vec::new();
    concat_archives(
        &mut out,
        &[
            &extra.to_newc(0).unwrap(),
            &base.to_compressed(0, Compression::Zstd).unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(parse_initramfs(&out, 1 << 30).unwrap().len(), 2);
}

fn extract(archive: &[u8], into: &Path) {
    run(
        "cpio",
        &["-idmu", "--no-absolute-filenames", "--quiet"],
        archive,
        Some(into),
    );
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Follow `path` inside `root` like the kernel would in the guest (absolute
/// links from `root`), returning the physical host path.
fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut cur: Vec<String> = Vec::new();
    let mut queue: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        cur.push(c);
        let p: PathBuf = std::iter::once(root.to_path_buf())
            .chain(cur.iter().map(PathBuf::from))
            .collect();
        if let Ok(t) = std::fs::read_link(&p) {
            hops += 1;
            assert!(hops < 40, "loop at {path}");
            cur.pop();
            let t = t.to_str().unwrap().to_owned();
            if t.starts_with('/') {
                cur.clear();
            }
            for part in t.split('/').rev().filter(|c| !c.is_empty()) {
                queue.push_front(part.to_owned());
            }
        }
    }
    std::iter::once(root.to_path_buf())
        .chain(cur.iter().map(PathBuf::from))
        .collect()
}

#[test]
fn overlay_program_lands_in_the_base_tree_and_runs() {
    // The base has a real /lib (modules); the run archive adds a program whose
    // host libraries live under /lib -> usr/lib on a merged-/usr host.
    let mut base = Archive::new();
    base.add_file("lib/modules/6.1.0/kernel/x.ko", 0o644, b"ko".to_vec())
        .unwrap();
    base.add_dir("proc", 0o555).unwrap();
    let mut over = Archive::overlay(&base);
    let report = over
        .add_program_in(Path::new("/"), Path::new("/usr/bin/env"))
        .unwrap();
    assert!(
        over.manifest().iter().all(|e| e.path != "lib"),
        "the overlay must not redefine lib"
    );
    let root = tempfile::tempdir().unwrap();
    extract(&base.to_newc(MTIME).unwrap(), root.path());
    extract(&over.to_newc(MTIME).unwrap(), root.path());
    // Every path the loader will open resolves to a regular file in the guest tree.
    for f in &report {
        let p = resolve_in(root.path(), &f.host_path);
        assert!(
            p.is_file(),
            "{} -> {} is not a file",
            f.host_path,
            p.display()
        );
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(&f.resolved).unwrap(),
            "{}",
            f.host_path
        );
    }
    assert!(resolve_in(root.path(), "/lib/modules/6.1.0/kernel/x.ko").is_file());
    if is_root() {
        let out = Command::new("chroot")
            .arg(root.path())
            .args(["/usr/bin/env", "--version"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn extracted_programs_run_in_a_chroot() {
    if !is_root() {
        eprintln!("not root: checking the closure without running it");
    }
    let mut a = Archive::new();
    for p in ["/bin/sh", "/usr/bin/env"] {
        a.add_program(Path::new(p)).unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    extract(&a.to_newc(MTIME).unwrap(), root.path());
    for p in ["/bin/sh", "/usr/bin/env", "/lib64/ld-linux-x86-64.so.2"] {
        assert!(resolve_in(root.path(), p).is_file(), "{p}");
    }
    if is_root() {
        let out = Command::new("chroot")
            .arg(root.path())
            .args(["/bin/sh", "-c", "echo chroot-ok"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "chroot-ok\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
