//! Oracle tests of `kestrel_init::probe`: images made in a temp dir by the
//! real tools (mkfs.ext2/3/4, mkfs.xfs, mkfs.btrfs, mkfs.vfat, mkswap,
//! genisoimage, sgdisk, sfdisk), each probed by us and by util-linux
//! (`blkid -p -o udev` for filesystems and partition tables, `partx -P`
//! for partitions); the answers must be equal. Then corrupt copies
//! (checksums, truncation, two signatures), and property tests: random
//! bytes and random mutations of the real images never panic.
//!
//! A missing tool fails the test (it does not skip): `make test` installs
//! them. Debian packages: e2fsprogs xfsprogs btrfs-progs dosfstools
//! util-linux fdisk gdisk genisoimage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_init::probe::{
    encode_link_name, probe_filesystem, probe_partitions, Filesystem, PartitionTable, ProbeError,
    ReadAt,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------- helpers

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("kestrel-probe-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Debian package that provides a tool, for the failure message.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "mkfs.ext2" | "mkfs.ext3" | "mkfs.ext4" => "e2fsprogs",
        "mkfs.xfs" => "xfsprogs",
        "mkfs.btrfs" => "btrfs-progs",
        "mkfs.vfat" => "dosfstools",
        "mkswap" | "blkid" | "partx" => "util-linux",
        "sfdisk" => "fdisk",
        "sgdisk" => "gdisk",
        "genisoimage" => "genisoimage",
        _ => "?",
    }
}

/// Runs a tool; a missing tool or a failure fails the test loudly.
fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool} ({e}): install the Debian package {}",
                package_of(tool)
            )
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_stdin(tool: &str, args: &[&str], input: &str) {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool} ({e}): install the Debian package {}",
                package_of(tool)
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sparse(path: &Path, size: u64) {
    File::create(path).unwrap().set_len(size).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Undoes blkid's / partx's `\xNN` escaping.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], b.get(i + 1), byte) {
            (b'\\', Some(b'x'), Some(x)) => {
                out.push(x);
                i += 4;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `blkid -p -o udev` says about a file (or a byte range of it).
struct Blkid {
    rc: i32,
    vars: BTreeMap<String, String>,
}

impl Blkid {
    fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str)
    }
}

fn blkid(path: &Path, range: Option<(u64, u64)>) -> Blkid {
    let mut args = vec!["-p".to_owned(), "-o".into(), "udev".into()];
    if let Some((off, size)) = range {
        args.extend([
            "--offset".into(),
            off.to_string(),
            "--size".into(),
            size.to_string(),
        ]);
    }
    args.push(s(path).to_owned());
    let out = Command::new("blkid")
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run blkid ({e}): install util-linux"));
    let rc = out.status.code().unwrap_or(-1);
    assert!(
        matches!(rc, 0 | 2 | 8),
        "blkid {args:?}: rc {rc}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Blkid { rc, vars }
}

/// A byte range of a file, as a partition device would show it.
struct Range<'a> {
    file: &'a File,
    offset: u64,
}

impl ReadAt for Range<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(self.file, buf, self.offset + offset)
    }
}

fn probe_fs_file(path: &Path, range: Option<(u64, u64)>) -> Result<Option<Filesystem>, ProbeError> {
    let f = File::open(path).unwrap();
    match range {
        None => probe_filesystem(&f, f.metadata().unwrap().len()),
        Some((offset, size)) => probe_filesystem(&Range { file: &f, offset }, size),
    }
}

/// Our answer must equal blkid's: type, UUID, label and the by-label link
/// name (`ID_FS_LABEL_ENC`). Returns our answer for further checks.
fn assert_fs_matches_blkid(path: &Path, range: Option<(u64, u64)>) -> Option<Filesystem> {
    let ours = probe_fs_file(path, range);
    let theirs = blkid(path, range);
    let ours = match ours {
        Err(ProbeError::Ambivalent(types)) => {
            assert_eq!(
                theirs.rc, 8,
                "{path:?}: we say ambivalent {types:?}, blkid {:?}",
                theirs.vars
            );
            return None;
        }
        Err(e) => panic!("{path:?}: {e}"),
        Ok(o) => o,
    };
    let Some(fs) = ours else {
        assert!(
            theirs.get("ID_FS_TYPE").is_none(),
            "{path:?} {range:?}: we found nothing, blkid: {:?}",
            theirs.vars
        );
        return None;
    };
    assert_eq!(
        Some(fs.fstype),
        theirs.get("ID_FS_TYPE"),
        "{path:?}: type; blkid {:?}",
        theirs.vars
    );
    assert_eq!(
        fs.uuid.as_deref(),
        theirs.get("ID_FS_UUID_ENC"),
        "{path:?}: uuid"
    );
    let their_label = theirs.get("ID_FS_LABEL_ENC").map(unescape);
    assert_eq!(fs.label, their_label, "{path:?}: label");
    assert_eq!(
        fs.label.as_deref().map(encode_link_name).as_deref(),
        theirs.get("ID_FS_LABEL_ENC"),
        "{path:?}: by-label link name"
    );
    Some(fs)
}

/// One partition as `partx -g -P -o NR,START,SECTORS,UUID,NAME` prints it.
#[derive(Debug, PartialEq, Eq)]
struct PartxRow {
    number: u32,
    start: u64,
    size: u64,
    uuid: Option<String>,
    name: Option<String>,
}

fn partx(path: &Path) -> Vec<PartxRow> {
    let out = run(
        "partx",
        &["-g", "-P", "-o", "NR,START,SECTORS,UUID,NAME", s(path)],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|line| {
            let mut kv = BTreeMap::new();
            let mut rest = line;
            while let Some((k, r)) = rest.split_once("=\"") {
                let (v, r) = r.split_once('"').unwrap();
                kv.insert(k.trim().to_owned(), unescape(v));
                rest = r;
            }
            let opt = |k: &str| kv.get(k).filter(|v| !v.is_empty()).cloned();
            PartxRow {
                number: kv["NR"].parse().unwrap(),
                start: kv["START"].parse::<u64>().unwrap() * 512,
                size: kv["SECTORS"].parse::<u64>().unwrap() * 512,
                uuid: opt("UUID"),
                name: opt("NAME"),
            }
        })
        .collect()
}

fn probe_pt_file(path: &Path) -> Option<PartitionTable> {
    let f = File::open(path).unwrap();
    probe_partitions(&f, f.metadata().unwrap().len()).unwrap()
}

/// Our table must equal what blkid (type, PTUUID) and partx (partitions)
/// say. Returns it.
fn assert_pt_matches(path: &Path) -> Option<PartitionTable> {
    let ours = probe_pt_file(path);
    let theirs = blkid(path, None);
    let (kind, id, parts) = match &ours {
        None => {
            assert!(
                !matches!(theirs.get("ID_PART_TABLE_TYPE"), Some("gpt" | "dos")),
                "{path:?}: we found no table, blkid: {:?}",
                theirs.vars
            );
            return None;
        }
        Some(PartitionTable::Gpt {
            disk_guid,
            partitions,
        }) => ("gpt", disk_guid, partitions),
        Some(PartitionTable::Mbr {
            disk_id,
            partitions,
        }) => ("dos", disk_id, partitions),
    };
    assert_eq!(
        Some(kind),
        theirs.get("ID_PART_TABLE_TYPE"),
        "{path:?}: {:?}",
        theirs.vars
    );
    // blkid prints no PTUUID for an MBR whose signature is zero.
    assert_eq!(
        id.as_str(),
        theirs.get("ID_PART_TABLE_UUID").unwrap_or("00000000"),
        "{path:?}: PTUUID"
    );
    let rows: Vec<PartxRow> = parts
        .iter()
        .map(|p| PartxRow {
            number: p.number,
            start: p.start_bytes,
            size: p.size_bytes,
            uuid: p.partuuid.clone(),
            name: p.partlabel.clone(),
        })
        .collect();
    assert_eq!(rows, partx(path), "{path:?}: partitions");
    for p in parts {
        if let Some(name) = &p.partlabel {
            assert!(!encode_link_name(name).contains('/'));
        }
    }
    ours
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

fn copy(from: &Path, to: &Path) {
    run("cp", &["--sparse=always", s(from), s(to)]);
}

// ------------------------------------------------------------ image makers

fn mkfs_ext(dir: &TempDir, name: &str, tool: &str, extra: &[&str], label: &str) -> PathBuf {
    let p = dir.path(name);
    sparse(&p, 16 * MIB);
    let mut args = vec!["-q", "-F", "-L", label];
    args.extend(extra);
    args.push(s(&p));
    run(tool, &args);
    p
}

fn mkfs_xfs(dir: &TempDir, name: &str, extra: &[&str], label: &str) -> PathBuf {
    let p = dir.path(name);
    // mkfs.xfs refuses filesystems under 300 MiB; sparse, so cheap.
    sparse(&p, 320 * MIB);
    let mut args = vec!["-q", "-f", "-L", label];
    args.extend(extra);
    args.push(s(&p));
    run("mkfs.xfs", &args);
    p
}

fn mkfs_btrfs(dir: &TempDir, name: &str, extra: &[&str], label: &str) -> PathBuf {
    let p = dir.path(name);
    sparse(&p, 128 * MIB);
    let mut args = vec!["-q", "-f", "-L", label];
    args.extend(extra);
    args.push(s(&p));
    run("mkfs.btrfs", &args);
    p
}

fn mkfs_vfat(dir: &TempDir, name: &str, fat: &str, size: u64, label: Option<&str>) -> PathBuf {
    let p = dir.path(name);
    sparse(&p, size);
    let mut args = vec!["-F", fat, "-i", "1234ABCD"];
    if let Some(l) = label {
        args.extend(["-n", l]);
    }
    args.push(s(&p));
    run("mkfs.vfat", &args);
    p
}

fn mkswap(dir: &TempDir, name: &str, label: Option<&str>) -> PathBuf {
    let p = dir.path(name);
    sparse(&p, MIB);
    let mut args = vec!["-q"];
    if let Some(l) = label {
        args.extend(["-L", l]);
    }
    args.push(s(&p));
    run("mkswap", &args);
    p
}

fn mkiso(dir: &TempDir, name: &str, extra: &[&str]) -> PathBuf {
    let src = dir.path(&format!("{name}.d"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello\n").unwrap();
    let p = dir.path(name);
    let mut args = vec!["-quiet", "-o", s(&p)];
    args.extend(extra);
    args.push(s(&src));
    run("genisoimage", &args);
    p
}

/// A 64 MiB GPT disk with three named partitions, ext4 in the second and
/// vfat in the first.
fn mk_gpt_disk(dir: &TempDir) -> PathBuf {
    let p = dir.path("gpt.img");
    sparse(&p, 64 * MIB);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+8M",
            "-c",
            "1:EFI System",
            "-n",
            "2:0:+16M",
            "-c",
            "2:root part",
            "-n",
            "3:0:0",
            "-c",
            "3:dätä/ü",
            s(&p),
        ],
    );
    let ext = mkfs_ext(dir, "gpt-p2.img", "mkfs.ext4", &[], "gptroot");
    place(&ext, &p, 18432 * 512);
    let fat = mkfs_vfat(dir, "gpt-p1.img", "12", 8 * MIB, Some("ESP"));
    place(&fat, &p, 2048 * 512);
    p
}

/// Copies an image into a disk at `offset` (a partition's content).
fn place(image: &Path, disk: &Path, offset: u64) {
    let data = std::fs::read(image).unwrap();
    patch(disk, offset, &data);
}

/// A 64 MiB MBR disk: primaries 1-3, 2 extended with logicals 5 and 6.
fn mk_mbr_disk(dir: &TempDir) -> PathBuf {
    let p = dir.path("mbr.img");
    sparse(&p, 64 * MIB);
    let n = s(&p);
    let script = format!(
        "label: dos\nlabel-id: 0x12345678\nunit: sectors\n\n\
         {n}1 : start=2048, size=16384, type=83\n\
         {n}2 : start=18432, size=81920, type=5\n\
         {n}3 : start=100352, size=8192, type=83\n\
         {n}5 : start=20480, size=8192, type=83\n\
         {n}6 : start=30720, size=8192, type=c\n"
    );
    run_stdin("sfdisk", &["-q", n], &script);
    let ext = dir.path("mbr-p5.img");
    sparse(&ext, 4 * MIB);
    run("mkfs.ext2", &["-q", "-F", "-L", "logical five", s(&ext)]);
    place(&ext, &p, 20480 * 512);
    let fat = mkfs_vfat(dir, "mbr-p6.img", "12", 4 * MIB, Some("SIX"));
    place(&fat, &p, 30720 * 512);
    p
}

// ------------------------------------------------------------ filesystems

#[test]
fn ext_family_matches_blkid() {
    let d = TempDir::new("ext");
    let cases = [
        ("ext2.img", "mkfs.ext2", vec![], "ext2", "two", None),
        ("ext3.img", "mkfs.ext3", vec![], "ext3", "three fs", None),
        (
            "ext4-nocsum.img",
            "mkfs.ext4",
            vec!["-O", "^metadata_csum"],
            "ext4",
            "a/β c",
            Some(false),
        ),
        (
            "ext4-csum.img",
            "mkfs.ext4",
            vec!["-O", "metadata_csum"],
            "ext4",
            "root",
            Some(true),
        ),
        (
            "ext4-nolabel.img",
            "mkfs.ext4",
            vec!["-U", "0b1e2b6e-5b43-4f0b-a4ae-8a5f7d6c7d01"],
            "ext4",
            "",
            None,
        ),
    ];
    for (name, tool, extra, fstype, label, csum) in cases {
        let p = mkfs_ext(&d, name, tool, &extra, label);
        let fs = assert_fs_matches_blkid(&p, None).unwrap_or_else(|| panic!("{name}: nothing"));
        assert_eq!(fs.fstype, fstype, "{name}");
        assert_eq!(
            fs.label.as_deref(),
            (!label.is_empty()).then_some(label),
            "{name}"
        );
        assert!(fs.uuid.is_some(), "{name}");
        // The images really are with and without metadata_csum (ro_compat 0x400).
        let ro = u32::from_le_bytes(read_at(&p, 1024 + 0x64, 4).try_into().unwrap());
        if let Some(csum) = csum {
            assert_eq!(ro & 0x400 != 0, csum, "{name}: ro_compat {ro:#x}");
        }
    }
    let fs = probe_fs_file(&d.path("ext4-nolabel.img"), None)
        .unwrap()
        .unwrap();
    assert_eq!(
        fs.uuid.as_deref(),
        Some("0b1e2b6e-5b43-4f0b-a4ae-8a5f7d6c7d01")
    );
}

#[test]
fn ext4_bad_superblock_checksum_is_not_trusted() {
    let d = TempDir::new("extcsum");
    let p = mkfs_ext(
        &d,
        "csum.img",
        "mkfs.ext4",
        &["-O", "metadata_csum"],
        "good",
    );
    assert!(probe_fs_file(&p, None).unwrap().is_some());
    // Change the label without fixing s_checksum.
    patch(&p, 1024 + 0x78, b"evil");
    assert_eq!(probe_fs_file(&p, None).unwrap(), None);
    // util-linux 2.38 blkid still reports it (2.39 verifies the checksum);
    // the kernel refuses to mount it ("invalid superblock checksum"),
    // which is what matters for a by-uuid link.
    let without_csum = mkfs_ext(
        &d,
        "nocsum.img",
        "mkfs.ext4",
        &["-O", "^metadata_csum"],
        "good",
    );
    patch(&without_csum, 1024 + 0x78, b"evil");
    assert_eq!(
        assert_fs_matches_blkid(&without_csum, None)
            .unwrap()
            .label
            .as_deref(),
        Some("evil")
    );
}

#[test]
fn xfs_matches_blkid() {
    let d = TempDir::new("xfs");
    let v5 = mkfs_xfs(&d, "v5.img", &[], "xfs data");
    let fs = assert_fs_matches_blkid(&v5, None).unwrap();
    assert_eq!((fs.fstype, fs.label.as_deref()), ("xfs", Some("xfs data")));
    let v4 = mkfs_xfs(&d, "v4.img", &["-m", "crc=0", "-i", "sparse=0"], "old");
    let fs = assert_fs_matches_blkid(&v4, None).unwrap();
    assert_eq!((fs.fstype, fs.label.as_deref()), ("xfs", Some("old")));
    let nolabel = mkfs_xfs(
        &d,
        "nolabel.img",
        &["-m", "uuid=4f2c1d5e-8a9b-4c3d-9e0f-112233445566"],
        "",
    );
    let fs = assert_fs_matches_blkid(&nolabel, None).unwrap();
    assert_eq!(
        fs.uuid.as_deref(),
        Some("4f2c1d5e-8a9b-4c3d-9e0f-112233445566")
    );
    assert_eq!(fs.label, None);

    // v5 with a broken superblock crc: not trusted.
    let bad = d.path("bad.img");
    copy(&v5, &bad);
    patch(&bad, 108, b"evil");
    assert_eq!(probe_fs_file(&bad, None).unwrap(), None);
    // v4 has no crc: the same change is just a new label, as for blkid.
    patch(&v4, 108, b"new");
    assert_eq!(
        assert_fs_matches_blkid(&v4, None).unwrap().label.as_deref(),
        Some("new")
    );
    // Insane geometry (agcount 0) is refused by magic-plus-checks, like blkid.
    patch(&v4, 88, &[0; 4]);
    assert_eq!(assert_fs_matches_blkid(&v4, None), None);
}

#[test]
fn btrfs_matches_blkid() {
    let d = TempDir::new("btrfs");
    let long_label: String = "btrfs-label-".repeat(10);
    let p = mkfs_btrfs(&d, "b.img", &[], &long_label);
    let fs = assert_fs_matches_blkid(&p, None).unwrap();
    assert_eq!(
        (fs.fstype, fs.label.as_deref()),
        ("btrfs", Some(long_label.as_str()))
    );
    let xx = mkfs_btrfs(
        &d,
        "xx.img",
        &[
            "--csum",
            "xxhash",
            "-U",
            "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        ],
        "xx",
    );
    let fs = assert_fs_matches_blkid(&xx, None).unwrap();
    assert_eq!(
        fs.uuid.as_deref(),
        Some("5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    );

    // A broken crc32c: not trusted.
    let bad = d.path("bad.img");
    copy(&p, &bad);
    patch(&bad, 64 * 1024 + 0x12B, b"evil");
    assert_eq!(probe_fs_file(&bad, None).unwrap(), None);
}

#[test]
fn vfat_matches_blkid() {
    let d = TempDir::new("vfat");
    let cases = [
        ("f12.img", "12", 4 * MIB, Some("FAT TWELVE")),
        ("f16.img", "16", 32 * MIB, Some("sixteen")),
        ("f32.img", "32", 64 * MIB, Some("THIRTY2")),
        ("f32-nolabel.img", "32", 64 * MIB, None),
        ("f12-nolabel.img", "12", 2 * MIB, None),
    ];
    for (name, fat, size, label) in cases {
        let p = mkfs_vfat(&d, name, fat, size, label);
        let fs = assert_fs_matches_blkid(&p, None).unwrap_or_else(|| panic!("{name}: nothing"));
        assert_eq!(fs.fstype, "vfat");
        assert_eq!(fs.uuid.as_deref(), Some("1234-ABCD"), "{name}");
        assert_eq!(fs.label.as_deref(), label, "{name}");
        // A FAT boot sector has 0x55AA but is not a partition table.
        assert_pt_matches(&p);
        assert!(probe_pt_file(&p).is_none(), "{name}");
    }
    // LABEL is the root directory's; the boot sector's copy is only
    // LABEL_FATBOOT, which udev does not link (util-linux >= 2.36).
    for (name, label_off, label) in [("f16.img", 0x2b, "sixteen"), ("f32.img", 0x47, "THIRTY2")] {
        let p = d.path(name);
        patch(&p, label_off, b"BOOTSECTOR ");
        let fs = assert_fs_matches_blkid(&p, None).unwrap();
        assert_eq!(fs.label.as_deref(), Some(label), "{name}");
    }
}

#[test]
fn swap_matches_blkid() {
    let d = TempDir::new("swap");
    let p = mkswap(&d, "labelled.img", Some("swappy"));
    let fs = assert_fs_matches_blkid(&p, None).unwrap();
    assert_eq!((fs.fstype, fs.label.as_deref()), ("swap", Some("swappy")));
    let p = mkswap(&d, "plain.img", None);
    let fs = assert_fs_matches_blkid(&p, None).unwrap();
    assert_eq!((fs.fstype, fs.label), ("swap", None));
    assert!(fs.uuid.is_some());
    // A 64 KiB-page swap area (signature at 65526).
    let p = d.path("64k.img");
    sparse(&p, MIB);
    run("mkswap", &["-q", "-p", "65536", "-L", "big pages", s(&p)]);
    assert_eq!(&read_at(&p, 65526, 10), b"SWAPSPACE2");
    let fs = assert_fs_matches_blkid(&p, None).unwrap();
    assert_eq!(fs.label.as_deref(), Some("big pages"));
}

#[test]
fn iso9660_matches_blkid() {
    let d = TempDir::new("iso");
    let plain = mkiso(&d, "plain.iso", &["-V", "KESTREL_ISO"]);
    let fs = assert_fs_matches_blkid(&plain, None).unwrap();
    assert_eq!(
        (fs.fstype, fs.label.as_deref()),
        ("iso9660", Some("KESTREL_ISO"))
    );
    assert!(fs.uuid.is_some());
    let joliet = mkiso(&d, "joliet.iso", &["-J", "-r", "-V", "Mixed Case Label"]);
    let fs = assert_fs_matches_blkid(&joliet, None).unwrap();
    assert_eq!(fs.label.as_deref(), Some("Mixed Case Label"));
    // Joliet holds 16 characters; blkid rebuilds the rest from the PVD.
    let long = mkiso(
        &d,
        "long.iso",
        &[
            "-J",
            "-joliet-long",
            "-V",
            "A Long Volume Name Of 32 Chars!",
        ],
    );
    assert_fs_matches_blkid(&long, None).unwrap();
    let unicode = mkiso(
        &d,
        "unicode.iso",
        &["-J", "-input-charset", "utf-8", "-V", "Daten ä/ö"],
    );
    assert_fs_matches_blkid(&unicode, None).unwrap();
    // El Torito: a boot record descriptor sits between the primary and
    // the Joliet one.
    std::fs::create_dir_all(d.path("boot.iso.d")).unwrap();
    std::fs::write(d.path("boot.iso.d").join("boot.img"), vec![0u8; 2048]).unwrap();
    let boot = mkiso(
        &d,
        "boot.iso",
        &[
            "-J",
            "-V",
            "Bootable Disc",
            "-b",
            "boot.img",
            "-no-emul-boot",
        ],
    );
    assert_eq!(read_at(&boot, 0x8800, 6), b"\0CD001", "boot record second");
    let fs = assert_fs_matches_blkid(&boot, None).unwrap();
    assert_eq!(fs.label.as_deref(), Some("Bootable Disc"));
}

#[test]
fn iso_with_a_fat_boot_sector_is_judged_as_blkid_does() {
    let d = TempDir::new("isofat");
    let fat = mkfs_vfat(&d, "f.img", "16", 16 * MIB, Some("EFIBOOT"));
    // A small ISO (floppy-sized for blkid): the first signature, vfat, wins.
    let small = mkiso(&d, "small.iso", &["-V", "HYBRID"]);
    patch(&small, 0, &read_at(&fat, 0, 512));
    let fs = assert_fs_matches_blkid(&small, None).unwrap();
    // The FAT label sits in the boot sector only: no LABEL, like blkid.
    assert_eq!((fs.fstype, fs.label), ("vfat", None));
    // A larger one: two signatures and vfat does not tolerate others, so
    // blkid answers "ambivalent" and so do we.
    let big = mkiso(&d, "big.iso", &["-V", "HYBRID"]);
    let f = OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(4 * MIB).unwrap();
    patch(&big, 0, &read_at(&fat, 0, 512));
    assert_fs_matches_blkid(&big, None);
    assert!(matches!(
        probe_fs_file(&big, None),
        Err(ProbeError::Ambivalent(_))
    ));
}

#[test]
fn two_filesystems_are_ambivalent_like_blkid() {
    let d = TempDir::new("ambi");
    let b = mkfs_btrfs(&d, "b.img", &[], "btr");
    let e = mkfs_ext(&d, "e.img", "mkfs.ext4", &[], "ext");
    patch(&b, 1024, &read_at(&e, 1024, 1024));
    let err = probe_fs_file(&b, None).unwrap_err();
    assert!(
        matches!(&err, ProbeError::Ambivalent(t) if t == &["ext4", "btrfs"]),
        "{err}"
    );
    assert_eq!(blkid(&b, None).rc, 8);
    assert!(err.to_string().contains("ext4 and btrfs"), "{err}");
}

#[test]
fn devices_smaller_than_the_superblock_offset() {
    let d = TempDir::new("small");
    let images = [
        mkfs_ext(&d, "e.img", "mkfs.ext4", &[], "e"),
        mkfs_btrfs(&d, "b.img", &[], "b"),
        mkiso(&d, "i.iso", &["-V", "I"]),
        mkswap(&d, "s.img", Some("s")),
    ];
    for img in &images {
        for cut in [
            0u64,
            512,
            1500,
            2048,
            40 * 1024,
            64 * 1024 + 100,
            68 * 1024,
            MIB - 1,
            MIB + 68 * 1024,
        ] {
            let t = d.path("cut.img");
            let len = std::fs::metadata(img).unwrap().len().min(cut);
            std::fs::write(&t, read_at(img, 0, len as usize)).unwrap();
            assert_fs_matches_blkid(&t, None);
            let f = File::open(&t).unwrap();
            // A size larger than the data (a lying device): no panic, no error.
            probe_filesystem(&f, cut + 10 * MIB).unwrap();
            probe_partitions(&f, cut + 10 * MIB).unwrap();
        }
    }
}

// ------------------------------------------------------- partition tables

#[test]
fn gpt_matches_blkid_and_partx() {
    let d = TempDir::new("gpt");
    let p = mk_gpt_disk(&d);
    let Some(PartitionTable::Gpt { partitions, .. }) = assert_pt_matches(&p) else {
        panic!("no GPT")
    };
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[2].partlabel.as_deref(), Some("dätä/ü"));
    assert_eq!(encode_link_name("dätä/ü"), "dätä\\x2fü");
    // The filesystems inside, probed through the partition's byte range.
    for part in &partitions {
        assert_fs_matches_blkid(&p, Some((part.start_bytes, part.size_bytes)));
    }
    let root = probe_fs_file(
        &p,
        Some((partitions[1].start_bytes, partitions[1].size_bytes)),
    )
    .unwrap()
    .unwrap();
    assert_eq!(root.label.as_deref(), Some("gptroot"));
    // No filesystem on the whole disk.
    assert_fs_matches_blkid(&p, None);
}

#[test]
fn gpt_with_bad_crcs_is_not_trusted() {
    let d = TempDir::new("gptcrc");
    let good = mk_gpt_disk(&d);
    let Some(PartitionTable::Gpt {
        partitions: want, ..
    }) = probe_pt_file(&good)
    else {
        panic!("no GPT")
    };
    let last = 64 * MIB - 512;

    // Primary header corrupt: the backup header is used, as by blkid.
    let p = d.path("primary-header.img");
    copy(&good, &p);
    patch(&p, 512 + 56, b"X"); // a byte of the disk GUID
    let Some(PartitionTable::Gpt { partitions, .. }) = assert_pt_matches(&p) else {
        panic!("backup header not used")
    };
    assert_eq!(partitions, want);

    // Primary entry array corrupt: the header's array CRC fails, backup used.
    let p = d.path("primary-array.img");
    copy(&good, &p);
    patch(&p, 1024 + 56, b"Z"); // first entry's name
    let Some(PartitionTable::Gpt { partitions, .. }) = assert_pt_matches(&p) else {
        panic!("backup header not used")
    };
    assert_eq!(partitions, want);

    // Both headers corrupt: no table (blkid says PTTYPE=PMBR, no partitions).
    let p = d.path("both.img");
    copy(&good, &p);
    patch(&p, 512 + 56, b"X");
    patch(&p, last + 56, b"X");
    assert_eq!(assert_pt_matches(&p), None);
    assert_eq!(blkid(&p, None).get("ID_PART_TABLE_TYPE"), Some("PMBR"));

    // Without the protective MBR, GPT is not looked for (like blkid): what
    // is left is an empty DOS table.
    let p = d.path("nopmbr.img");
    copy(&good, &p);
    patch(&p, 446, &[0; 16]);
    assert!(
        matches!(assert_pt_matches(&p), Some(PartitionTable::Mbr { partitions, .. }) if partitions.is_empty())
    );
}

#[test]
fn mbr_with_logical_partitions_matches_blkid_and_partx() {
    let d = TempDir::new("mbr");
    let p = mk_mbr_disk(&d);
    let Some(PartitionTable::Mbr {
        disk_id,
        partitions,
    }) = assert_pt_matches(&p)
    else {
        panic!("no MBR")
    };
    assert_eq!(disk_id, "12345678");
    let numbers: Vec<u32> = partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 5, 6]);
    assert_eq!(partitions[3].partuuid.as_deref(), Some("12345678-05"));
    let five = &partitions[3];
    let fs = assert_fs_matches_blkid(&p, Some((five.start_bytes, five.size_bytes))).unwrap();
    assert_eq!(
        (fs.fstype, fs.label.as_deref()),
        ("ext2", Some("logical five"))
    );

    // An EBR chain that points back to itself ends at the bound.
    let looped = d.path("loop.img");
    copy(&p, &looped);
    // The second EBR (at 30720 - 2048 sectors before it... i.e. the EBR of
    // partition 6, at sector 28672) links back to the first one.
    let ebr6 = 28672 * 512;
    let link = read_at(&looped, 20480 * 512 - 2048 * 512 + 446 + 16, 16);
    assert_eq!(link[4], 0x05, "the first EBR links to the second");
    let mut back = [0u8; 16];
    back[4] = 0x05;
    back[8..12].copy_from_slice(&0u32.to_le_bytes()); // relative to the extended start
    back[12..16].copy_from_slice(&4096u32.to_le_bytes());
    patch(&looped, ebr6 + 446 + 16, &back);
    let Some(PartitionTable::Mbr { partitions, .. }) = probe_pt_file(&looped) else {
        panic!("no MBR")
    };
    assert!(partitions.len() <= 3 + 100 + 1, "{}", partitions.len());
    assert!(partitions.iter().all(|p| p.number <= 5 + 100));
}

#[test]
fn mbr_without_disk_id_has_no_partuuid() {
    let d = TempDir::new("mbr0");
    let p = mk_mbr_disk(&d);
    patch(&p, 440, &[0; 4]);
    let Some(PartitionTable::Mbr { partitions, .. }) = probe_pt_file(&p) else {
        panic!("no MBR")
    };
    assert!(partitions.iter().all(|p| p.partuuid.is_none()));
    assert_eq!(blkid(&p, None).get("ID_PART_TABLE_UUID"), None);
    let rows = partx(&p);
    assert!(rows.iter().all(|r| r.uuid.is_none()), "{rows:?}");
}

// -------------------------------------------------------- property tests

/// The first bytes of real images (every structure the probes read lies
/// in them), made once for all property cases.
fn corpus() -> &'static Vec<(String, Vec<u8>)> {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let d = TempDir::new("corpus");
        let head = |p: PathBuf, len: u64| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            let data = read_at(
                &p,
                0,
                len.min(std::fs::metadata(&p).unwrap().len()) as usize,
            );
            (n, data)
        };
        vec![
            head(mkfs_ext(&d, "ext4.img", "mkfs.ext4", &[], "root"), 2 * MIB),
            head(mkfs_ext(&d, "ext2.img", "mkfs.ext2", &[], "boot"), 2 * MIB),
            head(mkfs_xfs(&d, "xfs.img", &[], "x"), 2 * MIB),
            head(mkfs_btrfs(&d, "btrfs.img", &[], "b"), 2 * MIB),
            head(
                mkfs_vfat(&d, "f12.img", "12", 2 * MIB, Some("F12")),
                2 * MIB,
            ),
            head(
                mkfs_vfat(&d, "f32.img", "32", 64 * MIB, Some("F32")),
                2 * MIB,
            ),
            head(mkswap(&d, "swap.img", Some("sw")), MIB),
            head(mkiso(&d, "j.iso", &["-J", "-V", "Iso Label"]), 2 * MIB),
            head(mk_gpt_disk(&d), 64 * MIB),
            head(mk_mbr_disk(&d), 16 * MIB),
        ]
    })
}

/// A device made of a base image with some bytes overwritten, without
/// copying the base for every case.
struct Mutated<'a> {
    base: &'a [u8],
    muts: &'a [(usize, u8)],
}

impl ReadAt for Mutated<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = self.base.read_at(buf, offset)?;
        for &(at, b) in self.muts {
            if let Some(i) = (at as u64).checked_sub(offset) {
                if let Some(slot) = buf.get_mut(i as usize).filter(|_| (i as usize) < n) {
                    *slot = b;
                }
            }
        }
        Ok(n)
    }
}

/// Offsets where the probes look: mutations land there most of the time.
const HOT: &[u64] = &[
    0,
    0x1B0,
    512,
    1024,
    2048,
    4096,
    0x8000,
    0x8800,
    0x9000,
    0x10000,
    0x100000 - 512,
    20480 * 512 - 2048 * 512,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200_000), extra in 0u64..1_000_000) {
        let _ = probe_filesystem(&data, data.len() as u64);
        let _ = probe_partitions(&data, data.len() as u64);
        // A size larger than the data: reads come back short.
        let _ = probe_filesystem(&data, data.len() as u64 + extra);
        let _ = probe_partitions(&data, data.len() as u64 + extra);
    }

    #[test]
    fn mutated_real_images_never_panic(
        which in 0usize..10,
        muts in proptest::collection::vec((0usize..12, 0u64..4096, any::<u8>(), any::<bool>()), 1..24),
        cut in proptest::option::of(0u64..2_000_000),
    ) {
        let (name, base) = &corpus()[which];
        let muts: Vec<(usize, u8)> = muts
            .iter()
            .map(|&(h, off, b, anywhere)| {
                let at = if anywhere { (off * 977 + h as u64 * 131_071) % base.len() as u64 } else { HOT[h] + off };
                (at as usize, b)
            })
            .collect();
        let dev = Mutated { base, muts: &muts };
        let size = cut.map_or(base.len() as u64, |c| c.min(base.len() as u64));
        let fs = probe_filesystem(&dev, size);
        let pt = probe_partitions(&dev, size);
        if let Ok(Some(fs)) = fs {
            let link = fs.label.as_deref().map(encode_link_name);
            prop_assert!(link.as_deref().is_none_or(|l| !l.contains('/') && l != "." && l != ".."), "{name}");
        }
        if let Ok(Some(PartitionTable::Mbr { partitions, .. } | PartitionTable::Gpt { partitions, .. })) = pt {
            prop_assert!(partitions.len() <= 8192 + 4, "{name}");
        }
    }

    #[test]
    fn link_names_are_safe(label in "\\PC{0,40}") {
        let l = encode_link_name(&label);
        // Unicode spaces stay, as in blkid (valid UTF-8 is kept); ASCII
        // whitespace would split udev's SYMLINK list.
        prop_assert!(!l.contains('/') && !l.contains(|c: char| c.is_ascii_whitespace()));
        prop_assert!(l != "." && l != "..");
        prop_assert_eq!(l.is_empty(), label.is_empty());
    }
}

/// Counts what the probe asks of the device.
struct Counting<'a> {
    inner: &'a [u8],
    reads: std::cell::Cell<u64>,
    bytes: std::cell::Cell<u64>,
}

impl ReadAt for Counting<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.reads.set(self.reads.get() + 1);
        self.bytes.set(self.bytes.get() + buf.len() as u64);
        self.inner.read_at(buf, offset)
    }
}

/// Reads per probe of each real image are few and small: the probe runs
/// in PID 1 for every disk and partition. Prints the figures (reads,
/// bytes, time per probe) for `--nocapture`.
#[test]
fn probe_cost_is_bounded() {
    for (name, data) in corpus() {
        let dev = Counting {
            inner: data,
            reads: 0.into(),
            bytes: 0.into(),
        };
        let size = data.len() as u64;
        let t = std::time::Instant::now();
        let fs = probe_filesystem(&dev, size).unwrap();
        let fs_time = t.elapsed();
        let (fs_reads, fs_bytes) = (dev.reads.replace(0), dev.bytes.replace(0));
        let t = std::time::Instant::now();
        let pt = probe_partitions(&dev, size).unwrap();
        let pt_time = t.elapsed();
        let (pt_reads, pt_bytes) = (dev.reads.get(), dev.bytes.get());
        eprintln!(
            "{name:>10}: filesystem {:>8} {fs_reads:>3} reads {fs_bytes:>7} B {fs_time:>9.1?} | table {:>4} {pt_reads:>3} reads {pt_bytes:>7} B {pt_time:>9.1?}",
            fs.map_or("-", |f| f.fstype),
            match pt { Some(PartitionTable::Gpt { .. }) => "gpt", Some(PartitionTable::Mbr { .. }) => "dos", None => "-" },
        );
        assert!(
            fs_reads <= 40 && fs_bytes <= 256 * 1024,
            "{name}: {fs_reads} reads, {fs_bytes} B"
        );
        assert!(
            pt_reads <= 8 && pt_bytes <= 64 * 1024,
            "{name}: {pt_reads} reads, {pt_bytes} B"
        );
    }
}

#[test]
fn unmutated_corpus_is_recognised() {
    // The property test starts from images we do recognise (otherwise it
    // would only ever exercise the "no signature" paths).
    for (name, data) in corpus() {
        let fs = probe_filesystem(data, data.len() as u64).unwrap();
        let pt = probe_partitions(data, data.len() as u64).unwrap();
        assert!(
            fs.is_some() || pt.is_some(),
            "{name}: nothing recognised: {fs:?} {pt:?}"
        );
    }
}
