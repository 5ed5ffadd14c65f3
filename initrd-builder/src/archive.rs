//! The in-memory archive tree and its deterministic newc serialisation.
//!
//! Paths are archive paths ("lib/modules/x", a leading '/' is stripped).
//! Parent components are resolved *inside the archive*: a missing parent
//! becomes a 0755 directory, an archive symlink is followed (absolute targets
//! from the archive root, exactly as the kernel will when it unpacks), so an
//! entry is always stored at its physical location and the archive never
//! holds a record that would be written through a symlink.

use crate::error::file_kind_name;
use crate::newc::{
    self, Header, MAX_FILE_SIZE, MAX_NAME_LEN, PERM_MASK, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK,
    S_IFREG,
};
use crate::InitrdError;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;

/// Linux's limit on symlinks followed in one lookup (ELOOP after 40).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// Mode of directories created implicitly as parents.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Reason recorded for implicitly created parent directories.
pub const REASON_PARENT: &str = "parent directory";

/// The kind of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    CharDev,
    BlockDev,
    /// A second name for a regular file (shares its inode; data written once).
    HardLink,
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Dir => "dir",
            Self::File => "file",
            Self::Symlink => "symlink",
            Self::CharDev => "char",
            Self::BlockDev => "block",
            Self::HardLink => "hardlink",
        })
    }
}

/// One line of the manifest (`kestrel build --list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Archive path, no leading '/', as `cpio -t` lists it.
    pub path: String,
    pub kind: EntryKind,
    /// Bytes of content: file data, symlink target length, 0 otherwise.
    pub size: u64,
    /// Why the entry is there (see [`Archive::set_reason`]); empty if nobody said.
    pub reason: String,
    /// Permission bits as written (0o777 for symlinks).
    pub mode: u32,
    /// The symlink target, for symlinks; the file it names, for hard links.
    pub target: Option<String>,
}

impl std::fmt::Display for ManifestEntry {
    /// One line of `kestrel build --list`: kind, mode, size, path, target, reason.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<8} {:04o} {:>10} {}",
            self.kind, self.mode, self.size, self.path
        )?;
        if let Some(t) = &self.target {
            write!(f, " -> {t}")?;
        }
        if !self.reason.is_empty() {
            write!(f, "  [{}]", self.reason)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        target: String,
    },
    CharDev {
        mode: u32,
        major: u32,
        minor: u32,
    },
    BlockDev {
        mode: u32,
        major: u32,
        minor: u32,
    },
    /// Archive path of the regular file this names.
    HardLink {
        target: String,
    },
}

impl Node {
    fn kind(&self) -> EntryKind {
        match self {
            Self::Dir { .. } => EntryKind::Dir,
            Self::File { .. } => EntryKind::File,
            Self::Symlink { .. } => EntryKind::Symlink,
            Self::CharDev { .. } => EntryKind::CharDev,
            Self::BlockDev { .. } => EntryKind::BlockDev,
            Self::HardLink { .. } => EntryKind::HardLink,
        }
    }
}

/// An in-memory archive tree; paths are archive paths like "lib/modules/x" or "/init"
/// (a leading '/' is accepted and stripped); parent directories are created implicitly (mode 0755).
///
/// Entries are kept in a `BTreeMap` keyed by path: byte order puts every
/// directory before its children (a prefix sorts first), which is the order
/// the kernel needs and makes the output independent of insertion order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Archive {
    /// Only this file's methods touch the entries: every addition goes
    /// through `place` and `insert`, with their checks.
    nodes: BTreeMap<String, Node>,
    reasons: BTreeMap<String, String>,
    /// Entries of the archive(s) this one is appended to (see [`Archive::overlay`]):
    /// they take part in path resolution but are not written or listed.
    inherited: BTreeSet<String>,
}

impl std::fmt::Debug for Archive {
    /// A summary: file data would make a debug print megabytes long.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("entries", &self.len())
            .field("inherited", &self.inherited.len())
            .field("data_bytes", &self.data_size())
            .finish()
    }
}

/// Split an archive path into components, refusing `..`, NUL and empty paths.
pub(crate) fn normalize(path: &str) -> Result<Vec<&str>, InitrdError> {
    if path.contains('\0') {
        return Err(InitrdError::InvalidPath {
            path: path.to_owned(),
            reason: "contains a NUL byte".into(),
        });
    }
    // Legal for the kernel, but a newline or escape in a name forges lines in
    // `cpio -t`, the manifest and logs.
    if path.contains(|c: char| c.is_control()) {
        return Err(InitrdError::InvalidPath {
            path: path.to_owned(),
            reason: "contains a control character".into(),
        });
    }
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        return Err(InitrdError::PathEscape {
            path: path.to_owned(),
            reason: "'..' component".into(),
        });
    }
    if comps.is_empty() {
        return Err(InitrdError::InvalidPath {
            path: path.to_owned(),
            reason: "names the archive root".into(),
        });
    }
    if comps.iter().map(|c| c.len() + 1).sum::<usize>() > MAX_NAME_LEN {
        return Err(InitrdError::InvalidPath {
            path: path.to_owned(),
            reason: format!("longer than {MAX_NAME_LEN} bytes"),
        });
    }
    Ok(comps)
}

/// Check a symlink target placed in directory `parent` (components): refused
/// when empty, with NUL, or when relative and climbing above the archive root.
/// Absolute targets are resolved inside the guest's root and are fine.
pub(crate) fn check_symlink_target(
    link: &str,
    parent: &[String],
    target: &str,
) -> Result<(), InitrdError> {
    if target.is_empty() || target.contains(|c: char| c.is_control()) || target.len() > MAX_NAME_LEN
    {
        return Err(InitrdError::InvalidPath {
            path: link.to_owned(),
            reason: format!("bad symlink target {target:?}"),
        });
    }
    if target.starts_with('/') {
        return Ok(());
    }
    let mut depth = parent.len();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| InitrdError::PathEscape {
                        path: link.to_owned(),
                        reason: format!("symlink target {target:?} climbs above the archive root"),
                    })?;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Outcome of a read-only walk of a path's parents.
enum Walk {
    Found {
        parent: Vec<String>,
        full: String,
    },
    /// This parent directory does not exist yet.
    Missing(String),
}

fn conflict(path: &str, existing: &Node) -> InitrdError {
    InitrdError::Conflict {
        path: path.to_owned(),
        existing: match existing {
            Node::File { data, .. } => format!("a different file of {} bytes", data.len()),
            Node::Symlink { target } => format!("a symlink to {target}"),
            other => other.kind().to_string(),
        },
    }
}

/// What ties entries together in the newc stream, worked out once per write.
struct Links<'a> {
    /// Inode number of every entry but hard links (they share their file's).
    ino: BTreeMap<&'a str, u32>,
    /// The names of each hard-linked file (itself included), sorted.
    groups: BTreeMap<&'a str, Vec<&'a str>>,
    /// How many subdirectories each directory has.
    subdirs: BTreeMap<&'a str, u32>,
}

fn join(comps: &[String]) -> String {
    comps.join("/")
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolve the parents of `path` inside the archive without changing it.
    /// Stops at the first missing parent directory.
    fn walk(&self, path: &str) -> Result<Walk, InitrdError> {
        let comps = normalize(path)?;
        let (leaf, parents) = comps.split_last().ok_or_else(|| InitrdError::InvalidPath {
            path: path.to_owned(),
            reason: "names the archive root".into(),
        })?;
        let mut queue: VecDeque<String> = parents.iter().map(|c| (*c).to_owned()).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    // Only reachable through a symlink target; at the root ".." stays at the root.
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let p = join(&cur);
            match self.nodes.get(&p) {
                None => return Ok(Walk::Missing(p)),
                Some(Node::Dir { .. }) => {}
                Some(Node::Symlink { target }) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(InitrdError::SymlinkLoop {
                            path: path.to_owned(),
                            limit: MAX_SYMLINK_HOPS,
                        });
                    }
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    for t in target.split('/').rev() {
                        queue.push_front(t.to_owned());
                    }
                }
                Some(_) => {
                    return Err(InitrdError::NotADirectory {
                        path: path.to_owned(),
                        parent: p,
                    })
                }
            }
        }
        let mut full = cur.clone();
        full.push((*leaf).to_owned());
        let full = join(&full);
        if full.len() > MAX_NAME_LEN {
            return Err(InitrdError::InvalidPath {
                path: path.to_owned(),
                reason: format!("resolves to more than {MAX_NAME_LEN} bytes"),
            });
        }
        Ok(Walk::Found { parent: cur, full })
    }

    /// Resolve the parents of `path` inside the archive, creating missing
    /// directories; returns the parent components and the physical archive
    /// path of the leaf.
    fn place(&mut self, path: &str) -> Result<(Vec<String>, String), InitrdError> {
        // Each round creates one directory, so the bound is the name length.
        for _ in 0..=MAX_NAME_LEN {
            match self.walk(path)? {
                Walk::Found { parent, full } => return Ok((parent, full)),
                Walk::Missing(dir) => {
                    self.nodes.insert(
                        dir.clone(),
                        Node::Dir {
                            mode: IMPLICIT_DIR_MODE,
                        },
                    );
                    self.reasons
                        .entry(dir)
                        .or_insert_with(|| REASON_PARENT.to_owned());
                }
            }
        }
        Err(InitrdError::InvalidPath {
            path: path.to_owned(),
            reason: "too many parent directories".into(),
        })
    }

    /// Where `path` is stored in the archive (parents resolved through archive
    /// symlinks), if it exists. Does not create anything.
    pub fn resolve(&self, path: &str) -> Option<String> {
        match self.walk(path) {
            Ok(Walk::Found { full, .. }) if self.nodes.contains_key(&full) => Some(full),
            _ => None,
        }
    }

    /// The kind of the entry stored at the physical archive path `full`
    /// (parents are not resolved), inherited ones included.
    pub(crate) fn kind_at(&self, full: &str) -> Option<EntryKind> {
        self.nodes.get(full).map(Node::kind)
    }

    /// The target of the symlink stored at the physical path `full`.
    pub(crate) fn symlink_target_at(&self, full: &str) -> Option<&str> {
        match self.nodes.get(full) {
            Some(Node::Symlink { target }) => Some(target),
            _ => None,
        }
    }

    /// The content of the regular file (or hard link to one) stored at the
    /// physical path `full`; inherited files have none here.
    pub(crate) fn file_data_at(&self, full: &str) -> Option<&[u8]> {
        let file = match self.nodes.get(full)? {
            Node::HardLink { target } => self.nodes.get(target)?,
            other => other,
        };
        match file {
            Node::File { data, .. } => Some(data),
            _ => None,
        }
    }

    /// Insert `node` at the physical path `full`; an identical existing entry
    /// is accepted (adding the same library twice is not an error), anything
    /// else already there is a conflict. An explicit directory sets the mode
    /// (the last call wins over earlier ones and over an implicit parent). Over an inherited entry the
    /// kernel's rules for a later archive apply (see [`Archive::overlay`]).
    fn insert(&mut self, path: &str, full: String, node: Node) -> Result<(), InitrdError> {
        if self.inherited.contains(&full) {
            return self.insert_over_inherited(path, full, node);
        }
        match self.nodes.get(&full) {
            None => {
                self.nodes.insert(full, node);
                Ok(())
            }
            Some(existing) if *existing == node => Ok(()),
            Some(Node::Dir { .. }) if matches!(node, Node::Dir { .. }) => {
                // An explicit mode wins over the implicit parent one.
                if self.reasons.get(&full).map(String::as_str) == Some(REASON_PARENT) {
                    self.reasons.remove(&full);
                }
                self.nodes.insert(full, node);
                Ok(())
            }
            Some(existing) => Err(conflict(path, existing)),
        }
    }

    /// What `init/initramfs.c` does with an entry of a later archive whose path
    /// exists: a directory gets the new mode, a regular file is truncated and
    /// rewritten, but an existing symlink is left as it is (symlink(2) fails
    /// with EEXIST, silently) and a kind change may fail half way. So: same
    /// directory or symlink is a no-op, a file is replaced, the rest refused.
    fn insert_over_inherited(
        &mut self,
        path: &str,
        full: String,
        node: Node,
    ) -> Result<(), InitrdError> {
        let existing = self.nodes.get(&full);
        match (existing, &node) {
            (Some(Node::Dir { mode: a }), Node::Dir { mode: b }) if a == b => Ok(()),
            (Some(Node::Symlink { target: a }), Node::Symlink { target: b }) if a == b => Ok(()),
            (Some(Node::Dir { .. }), Node::Dir { .. })
            | (Some(Node::File { .. } | Node::HardLink { .. }), Node::File { .. }) => {
                self.inherited.remove(&full);
                self.nodes.insert(full, node);
                Ok(())
            }
            (Some(existing), _) => Err(conflict(path, existing)),
            (None, _) => {
                self.inherited.remove(&full);
                self.nodes.insert(full, node);
                Ok(())
            }
        }
    }

    /// An empty archive to be appended after `base` (concatenated initramfs):
    /// paths resolve through `base`'s directories and symlinks exactly as the
    /// kernel will resolve them when it unpacks this archive over `base`'s
    /// tree, and `base`'s entries are not written again. Use it for the
    /// small per-run archive that follows a cached base archive, so that e.g.
    /// a program's `/lib/...` libraries land in the base's `lib` directory
    /// instead of a `lib -> usr/lib` symlink the kernel would refuse to create.
    pub fn overlay(base: &Archive) -> Archive {
        let nodes: BTreeMap<String, Node> = base
            .nodes
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    // Only the tree matters; the data stays in the base.
                    Node::File { mode, .. } => Node::File {
                        mode: *mode,
                        data: Vec::new(),
                    },
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        let inherited = nodes.keys().cloned().collect();
        Archive {
            nodes,
            reasons: BTreeMap::new(),
            inherited,
        }
    }

    /// [`Archive::overlay`] from the manifest of the base (when the base itself
    /// is cached and only its listing is at hand).
    pub fn overlay_from_manifest(base: &[ManifestEntry]) -> Result<Archive, InitrdError> {
        let mut nodes = BTreeMap::new();
        for e in base {
            let comps = normalize(&e.path)?;
            let node = match e.kind {
                EntryKind::Dir => Node::Dir { mode: e.mode },
                EntryKind::File => Node::File {
                    mode: e.mode,
                    data: Vec::new(),
                },
                EntryKind::Symlink | EntryKind::HardLink => {
                    let target = e.target.clone().ok_or_else(|| InitrdError::InvalidPath {
                        path: e.path.clone(),
                        reason: format!("{} without a target in the manifest", e.kind),
                    })?;
                    if e.kind == EntryKind::Symlink {
                        Node::Symlink { target }
                    } else {
                        Node::HardLink { target }
                    }
                }
                EntryKind::CharDev => Node::CharDev {
                    mode: e.mode,
                    major: 0,
                    minor: 0,
                },
                EntryKind::BlockDev => Node::BlockDev {
                    mode: e.mode,
                    major: 0,
                    minor: 0,
                },
            };
            nodes.insert(comps.join("/"), node);
        }
        let inherited = nodes.keys().cloned().collect();
        Ok(Archive {
            nodes,
            reasons: BTreeMap::new(),
            inherited,
        })
    }

    /// Whether `full` (a physical archive path) comes from the base of an overlay.
    pub(crate) fn is_inherited(&self, full: &str) -> bool {
        self.inherited.contains(full)
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), InitrdError> {
        let (_, full) = self.place(path)?;
        if let Some(Node::Symlink { .. }) = self.nodes.get(&full) {
            // "mkdir -p" semantics: a symlink to a directory already provides it.
            if let Ok(Walk::Found { full: inner, .. }) = self.walk(&format!("{full}/x")) {
                if let Some((dir, _)) = inner.rsplit_once('/') {
                    if matches!(self.nodes.get(dir), Some(Node::Dir { .. })) {
                        return Ok(());
                    }
                }
            }
        }
        self.insert(
            path,
            full,
            Node::Dir {
                mode: mode & PERM_MASK,
            },
        )
    }

    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), InitrdError> {
        if data.len() as u64 > MAX_FILE_SIZE {
            return Err(InitrdError::TooLarge {
                path: path.to_owned(),
                size: data.len() as u64,
                limit: MAX_FILE_SIZE,
            });
        }
        let (_, full) = self.place(path)?;
        self.insert(
            path,
            full,
            Node::File {
                mode: mode & PERM_MASK,
                data,
            },
        )
    }

    /// Reads `src` from the host (following the host path's symlinks is the caller's choice:
    /// this reads the file contents); mode from the source's permission bits.
    pub fn add_file_from(&mut self, path: &str, src: &std::path::Path) -> Result<(), InitrdError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(src).map_err(|e| InitrdError::io("stat", src, e))?;
        if !meta.is_file() {
            return Err(InitrdError::UnsupportedFileType {
                path: src.to_owned(),
                kind: file_kind_name(&meta),
            });
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(InitrdError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
                limit: MAX_FILE_SIZE,
            });
        }
        let data = std::fs::read(src).map_err(|e| InitrdError::io("read", src, e))?;
        self.add_file(path, meta.permissions().mode(), data)
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), InitrdError> {
        let (parent, full) = self.place(path)?;
        check_symlink_target(path, &parent, target)?;
        self.insert(
            path,
            full,
            Node::Symlink {
                target: target.to_owned(),
            },
        )
    }

    pub fn add_char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), InitrdError> {
        self.add_node(
            path,
            Node::CharDev {
                mode: mode & PERM_MASK,
                major,
                minor,
            },
        )
    }

    pub fn add_block_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), InitrdError> {
        self.add_node(
            path,
            Node::BlockDev {
                mode: mode & PERM_MASK,
                major,
                minor,
            },
        )
    }

    fn add_node(&mut self, path: &str, node: Node) -> Result<(), InitrdError> {
        let (_, full) = self.place(path)?;
        self.insert(path, full, node)
    }

    /// A second name for the regular file `existing` (an archive path). The
    /// data is written once, with the last name of the group, as GNU cpio does;
    /// the kernel links the names by inode number.
    pub fn add_hardlink(&mut self, path: &str, existing: &str) -> Result<(), InitrdError> {
        let mut target = self
            .resolve(existing)
            .ok_or_else(|| InitrdError::BadHardLink {
                path: path.to_owned(),
                target: existing.to_owned(),
            })?;
        if let Some(Node::HardLink { target: t }) = self.nodes.get(&target) {
            target = t.clone();
        }
        // A hard link can only join names within one archive: the kernel
        // forgets inode numbers at each TRAILER!!!.
        if !matches!(self.nodes.get(&target), Some(Node::File { .. }))
            || self.inherited.contains(&target)
        {
            return Err(InitrdError::BadHardLink {
                path: path.to_owned(),
                target: existing.to_owned(),
            });
        }
        let (_, full) = self.place(path)?;
        if full == target {
            return Ok(());
        }
        self.insert(path, full, Node::HardLink { target })
    }

    /// Whether `path` names an entry (after resolving archive symlinks in its parents).
    pub fn contains(&self, path: &str) -> bool {
        self.resolve(path).is_some()
    }

    /// Number of entries (without the trailer).
    pub fn len(&self) -> usize {
        self.own().count()
    }

    pub fn is_empty(&self) -> bool {
        self.own().next().is_none()
    }

    /// The entries this archive writes (not those inherited from a base).
    fn own(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes
            .iter()
            .filter(|(k, _)| !self.inherited.contains(*k))
    }

    /// Record why `path` is in the archive. May be called before or after the
    /// entry is added; the reason is keyed by the entry's physical path when
    /// it exists, by the normalised path otherwise. Invalid paths are ignored.
    pub fn set_reason(&mut self, path: &str, reason: &str) {
        let key = match self.resolve(path) {
            Some(full) => full,
            None => match normalize(path) {
                Ok(comps) => comps.join("/"),
                Err(_) => return,
            },
        };
        self.reasons.insert(key, reason.to_owned());
    }

    /// Set the reason only when none was recorded yet.
    pub(crate) fn default_reason(&mut self, full: &str, reason: &str) {
        self.reasons
            .entry(full.to_owned())
            .or_insert_with(|| reason.to_owned());
    }

    /// Every entry: path, kind, size, and the `reason` recorded for it (see add_reason).
    pub fn manifest(&self) -> Vec<ManifestEntry> {
        self.own()
            .map(|(path, node)| ManifestEntry {
                path: path.clone(),
                kind: node.kind(),
                size: match node {
                    Node::File { data, .. } => data.len() as u64,
                    Node::Symlink { target } => target.len() as u64,
                    Node::HardLink { target } => match self.nodes.get(target) {
                        Some(Node::File { data, .. }) => data.len() as u64,
                        _ => 0,
                    },
                    _ => 0,
                },
                reason: self.reasons.get(path).cloned().unwrap_or_default(),
                mode: match node {
                    Node::Dir { mode } | Node::File { mode, .. } => *mode,
                    Node::CharDev { mode, .. } | Node::BlockDev { mode, .. } => *mode,
                    Node::Symlink { .. } => 0o777,
                    Node::HardLink { target } => match self.nodes.get(target) {
                        Some(Node::File { mode, .. }) => *mode,
                        _ => 0,
                    },
                },
                target: match node {
                    Node::Symlink { target } | Node::HardLink { target } => Some(target.clone()),
                    _ => None,
                },
            })
            .collect()
    }

    /// Total bytes of file data (each hard-linked file counted once).
    pub fn data_size(&self) -> u64 {
        self.own()
            .map(|(_, n)| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Deterministic newc ("070701") cpio: entries sorted by path (parents first), fixed inode
    /// numbers, uid/gid 0, the given mtime, 4-byte padding, TRAILER!!!.
    pub fn write_newc(&self, out: &mut dyn Write, mtime: u32) -> Result<(), InitrdError> {
        let links = Links {
            ino: self.inode_numbers()?,
            groups: self.hard_link_groups(),
            subdirs: self.subdirectory_counts(),
        };
        for (path, node) in self.own() {
            let (mut h, data) = self.record(path, node, &links)?;
            h.mtime = mtime;
            newc::write_record(out, &h, path, data)?;
        }
        newc::write_trailer(out)
    }

    /// Inode numbers: 1.. in path order, hard links share their file's.
    fn inode_numbers(&self) -> Result<BTreeMap<&str, u32>, InitrdError> {
        let mut ino: BTreeMap<&str, u32> = BTreeMap::new();
        let mut next = 1u32;
        for (path, node) in self.own() {
            if !matches!(node, Node::HardLink { .. }) {
                ino.insert(path, next);
                next = next.checked_add(1).ok_or_else(|| InitrdError::TooLarge {
                    path: path.clone(),
                    size: u64::from(next),
                    limit: u64::from(u32::MAX),
                })?;
            }
        }
        Ok(ino)
    }

    /// Names of each hard-linked file, in path order; the last carries the data.
    fn hard_link_groups(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (path, node) in self.own() {
            if let Node::HardLink { target } = node {
                groups
                    .entry(target.as_str())
                    .or_insert_with(|| vec![target.as_str()])
                    .push(path);
            }
        }
        for names in groups.values_mut() {
            names.sort_unstable();
        }
        groups
    }

    /// Directory link counts: 2 + subdirectories, as on a real file system.
    fn subdirectory_counts(&self) -> BTreeMap<&str, u32> {
        let mut subdirs: BTreeMap<&str, u32> = BTreeMap::new();
        for (path, node) in self.own() {
            if let (Node::Dir { .. }, Some((parent, _))) = (node, path.rsplit_once('/')) {
                *subdirs.entry(parent).or_default() += 1;
            }
        }
        subdirs
    }

    /// The header (without mtime) and data of one entry.
    fn record<'a>(
        &'a self,
        path: &str,
        node: &'a Node,
        links: &Links<'_>,
    ) -> Result<(Header, &'a [u8]), InitrdError> {
        let mut h = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        let mut data: &[u8] = &[];
        match node {
            Node::Dir { mode } => {
                h.mode = S_IFDIR | mode;
                h.nlink = 2 + links.subdirs.get(path).copied().unwrap_or(0);
            }
            Node::File { .. } | Node::HardLink { .. } => {
                let file = match node {
                    Node::HardLink { target } => target.as_str(),
                    _ => path,
                };
                let Some(Node::File { mode, data: d }) = self.nodes.get(file) else {
                    return Err(InitrdError::BadHardLink {
                        path: path.to_owned(),
                        target: file.to_owned(),
                    });
                };
                h.mode = S_IFREG | mode;
                match links.groups.get(file) {
                    Some(names) => {
                        h.nlink = u32::try_from(names.len()).unwrap_or(u32::MAX);
                        if names.last() == Some(&path) {
                            data = d;
                        }
                    }
                    None => data = d,
                }
            }
            Node::Symlink { target } => {
                h.mode = S_IFLNK | 0o777;
                data = target.as_bytes();
            }
            Node::CharDev { mode, major, minor } => {
                h.mode = S_IFCHR | mode;
                h.rdev_major = *major;
                h.rdev_minor = *minor;
            }
            Node::BlockDev { mode, major, minor } => {
                h.mode = S_IFBLK | mode;
                h.rdev_major = *major;
                h.rdev_minor = *minor;
            }
        }
        let ino_key = match node {
            Node::HardLink { target } => target.as_str(),
            _ => path,
        };
        h.ino = links.ino.get(ino_key).copied().unwrap_or(0);
        h.filesize = u32::try_from(data.len()).map_err(|_| InitrdError::TooLarge {
            path: path.to_owned(),
            size: data.len() as u64,
            limit: MAX_FILE_SIZE,
        })?;
        Ok((h, data))
    }

    /// [`Archive::write_newc`] into a new buffer.
    pub fn to_newc(&self, mtime: u32) -> Result<Vec<u8>, InitrdError> {
        let mut out = Vec::with_capacity(
            usize::try_from(self.data_size()).unwrap_or(0) + self.nodes.len() * 160,
        );
        self.write_newc(&mut out, mtime)?;
        Ok(out)
    }

    /// The archive, serialised and compressed: one part of a (possibly
    /// concatenated) initramfs.
    pub fn to_compressed(&self, mtime: u32, c: crate::Compression) -> Result<Vec<u8>, InitrdError> {
        crate::compress(&self.to_newc(mtime)?, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slash_and_implicit_parents() {
        let mut a = Archive::new();
        a.add_file("/lib/modules/x.ko", 0o644, b"m".to_vec())
            .unwrap();
        let m = a.manifest();
        let paths: Vec<_> = m.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["lib", "lib/modules", "lib/modules/x.ko"]);
        assert_eq!(m[0].kind, EntryKind::Dir);
        assert_eq!(m[0].reason, REASON_PARENT);
        assert_eq!(m[2].size, 1);
    }

    #[test]
    fn dotdot_is_refused() {
        let mut a = Archive::new();
        for p in ["../etc/passwd", "a/../../b", "/..", "x/.."] {
            assert!(
                matches!(
                    a.add_file(p, 0o644, vec![]),
                    Err(InitrdError::PathEscape { .. })
                ),
                "{p}"
            );
        }
        assert!(matches!(
            a.add_file("", 0o644, vec![]),
            Err(InitrdError::InvalidPath { .. })
        ));
        assert!(matches!(
            a.add_file("/", 0o644, vec![]),
            Err(InitrdError::InvalidPath { .. })
        ));
        assert!(matches!(
            a.add_file("a\0b", 0o644, vec![]),
            Err(InitrdError::InvalidPath { .. })
        ));
        assert!(matches!(
            a.add_file("a\nb", 0o644, vec![]),
            Err(InitrdError::InvalidPath { .. })
        ));
        assert!(matches!(
            a.add_symlink("l", "x\ny"),
            Err(InitrdError::InvalidPath { .. })
        ));
        assert!(a.is_empty());
    }

    #[test]
    fn relative_symlink_climbing_out_is_refused() {
        let mut a = Archive::new();
        assert!(matches!(
            a.add_symlink("a/b", "../../etc"),
            Err(InitrdError::PathEscape { .. })
        ));
        assert!(matches!(
            a.add_symlink("top", ".."),
            Err(InitrdError::PathEscape { .. })
        ));
        a.add_symlink("a/c", "../etc").unwrap();
        a.add_symlink("a/d", "/etc/passwd").unwrap();
        a.add_symlink("a/e", "x/../../y").unwrap();
    }

    #[test]
    fn parents_resolve_through_archive_symlinks() {
        let mut a = Archive::new();
        a.add_symlink("lib", "usr/lib").unwrap();
        a.add_file("lib/modules/m.ko", 0o644, b"ko".to_vec())
            .unwrap();
        assert!(a.nodes.contains_key("usr/lib/modules/m.ko"));
        assert!(!a.nodes.contains_key("lib/modules/m.ko"));
        assert_eq!(
            a.resolve("/lib/modules/m.ko").as_deref(),
            Some("usr/lib/modules/m.ko")
        );
        // Absolute target: from the archive root.
        a.add_symlink("usr/lib64", "/usr/lib").unwrap();
        a.add_file("usr/lib64/x", 0o644, vec![]).unwrap();
        assert!(a.nodes.contains_key("usr/lib/x"));
        // A link climbing to the root through ".." of an absolute target stays inside.
        a.add_symlink("up", "/../../usr").unwrap();
        a.add_file("up/y", 0o644, vec![]).unwrap();
        assert!(a.nodes.contains_key("usr/y"));
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let mut a = Archive::new();
        a.add_symlink("a", "b").unwrap();
        a.add_symlink("b", "a").unwrap();
        assert!(matches!(
            a.add_file("a/x", 0o644, vec![]),
            Err(InitrdError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn file_under_a_file_is_refused() {
        let mut a = Archive::new();
        a.add_file("f", 0o644, vec![]).unwrap();
        assert!(matches!(
            a.add_file("f/x", 0o644, vec![]),
            Err(InitrdError::NotADirectory { .. })
        ));
    }

    #[test]
    fn duplicates_same_ok_different_conflict() {
        let mut a = Archive::new();
        a.add_file("f", 0o644, b"1".to_vec()).unwrap();
        a.add_file("f", 0o644, b"1".to_vec()).unwrap();
        assert!(matches!(
            a.add_file("f", 0o644, b"2".to_vec()),
            Err(InitrdError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_dir("f", 0o755),
            Err(InitrdError::Conflict { .. })
        ));
        a.add_file("d/x", 0o644, vec![]).unwrap();
        a.add_dir("d", 0o700).unwrap();
        assert_eq!(a.nodes.get("d"), Some(&Node::Dir { mode: 0o700 }));
        assert_eq!(a.manifest()[0].reason, "");
    }

    #[test]
    fn reasons_before_and_after() {
        let mut a = Archive::new();
        a.set_reason("/init", "the init");
        a.add_file("init", 0o755, vec![]).unwrap();
        a.add_symlink("lib", "usr/lib").unwrap();
        a.add_file("lib/x", 0o644, vec![]).unwrap();
        a.set_reason("lib/x", "asked");
        let m = a.manifest();
        let r: BTreeMap<_, _> = m
            .iter()
            .map(|e| (e.path.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(r["init"], "the init");
        assert_eq!(r["usr/lib/x"], "asked");
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut a = Archive::new();
        a.add_file("b/z", 0o644, b"z".to_vec()).unwrap();
        a.add_file("a", 0o600, b"a".to_vec()).unwrap();
        a.add_symlink("c", "a").unwrap();
        let mut b = Archive::new();
        b.add_symlink("c", "a").unwrap();
        b.add_file("a", 0o600, b"a".to_vec()).unwrap();
        b.add_file("b/z", 0o644, b"z".to_vec()).unwrap();
        assert_eq!(a.to_newc(5).unwrap(), b.to_newc(5).unwrap());
    }

    #[test]
    fn overlay_resolves_through_base_and_writes_only_its_own() {
        let mut base = Archive::new();
        base.add_file("lib/modules/6.1/m.ko", 0o644, b"ko".to_vec())
            .unwrap();
        base.add_file("etc/a", 0o644, b"a".to_vec()).unwrap();
        base.add_symlink("bin", "usr/bin").unwrap();
        for mut run in [
            Archive::overlay(&base),
            Archive::overlay_from_manifest(&base.manifest()).unwrap(),
        ] {
            assert!(run.is_empty());
            assert!(run.contains("lib/modules/6.1/m.ko"));
            run.add_file("bin/payload", 0o755, b"p".to_vec()).unwrap();
            run.add_file("/lib/x/libc.so", 0o644, b"c".to_vec())
                .unwrap();
            run.add_symlink("bin", "usr/bin").unwrap();
            run.add_dir("lib", 0o755).unwrap();
            assert!(matches!(
                run.add_symlink("bin", "elsewhere"),
                Err(InitrdError::Conflict { .. })
            ));
            assert!(matches!(
                run.add_symlink("lib", "usr/lib"),
                Err(InitrdError::Conflict { .. })
            ));
            assert!(matches!(
                run.add_hardlink("h", "etc/a"),
                Err(InitrdError::BadHardLink { .. })
            ));
            run.add_file("etc/a", 0o600, b"override".to_vec()).unwrap();
            let paths: Vec<_> = run.manifest().into_iter().map(|e| e.path).collect();
            assert_eq!(
                paths,
                [
                    "etc/a",
                    "lib/x",
                    "lib/x/libc.so",
                    "usr",
                    "usr/bin",
                    "usr/bin/payload"
                ]
            );
            let newc = run.to_newc(0).unwrap();
            let (entries, _) = crate::parse_newc(&newc).unwrap();
            assert_eq!(entries.len(), paths.len());
            assert_eq!(entries[0].data, b"override");
        }
    }

    #[test]
    fn hardlink_data_written_once() {
        let mut a = Archive::new();
        a.add_file("x/one", 0o644, b"payload".to_vec()).unwrap();
        a.add_hardlink("x/two", "x/one").unwrap();
        a.add_hardlink("a/zero", "x/two").unwrap();
        let out = a.to_newc(0).unwrap();
        let hits = out.windows(7).filter(|w| *w == b"payload").count();
        assert_eq!(hits, 1);
        assert!(matches!(
            a.add_hardlink("y", "x"),
            Err(InitrdError::BadHardLink { .. })
        ));
        assert!(matches!(
            a.add_hardlink("y", "nope"),
            Err(InitrdError::BadHardLink { .. })
        ));
    }
}
