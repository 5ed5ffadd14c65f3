//! Copying from the host: programs with their ELF interpreter and shared
//! libraries, and whole directory trees.
//!
//! The host file system is seen through a `sysroot` ("/" for the real host):
//! absolute symlinks on the host resolve inside the sysroot, never outside it,
//! so a hostile or foreign root cannot make the builder read the build
//! machine's own files. A host path is mirrored into the archive component by
//! component: a host symlink on the way (e.g. `/lib64 -> usr/lib64`) becomes
//! the same symlink in the archive unless the archive already has something
//! there, in which case the archive's layout wins and the host side is
//! resolved to the matching physical directory.

use crate::archive::{
    check_symlink_target, Archive, EntryKind, IMPLICIT_DIR_MODE, MAX_SYMLINK_HOPS, REASON_PARENT,
};
use crate::elf::{is_elf, parse_elf, parse_shebang, ElfInfo};
use crate::error::file_kind_name;
use crate::ldconf::ld_so_conf_dirs;
use crate::newc::MAX_FILE_SIZE;
use crate::InitrdError;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the loader configuration lives (inside the sysroot).
pub const LD_SO_CONF: &str = "/etc/ld.so.conf";
/// Search path for programs named without a '/', and for `#!/usr/bin/env NAME`.
/// Fixed, not `$PATH`, so the archive does not depend on the caller's shell.
pub const PROGRAM_SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
/// Bound on the depth of script → interpreter chains (the kernel allows 4 levels).
pub const MAX_PROGRAM_DEPTH: usize = 8;
/// Bound on the shared libraries of one program (large GUI programs have ~200).
pub const MAX_LIBRARIES: usize = 4096;

fn parent_dir(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((d, _)) => d.to_owned(),
    }
}

/// One file `add_program` put in the archive (or found already there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramFile {
    /// The path as the loader or the caller names it on the host ("/lib64/ld-linux-x86-64.so.2").
    pub host_path: String,
    /// The physical host path it resolves to (inside the sysroot).
    pub resolved: String,
    /// Where its content is stored in the archive.
    pub archive_path: String,
    /// Why it is there.
    pub reason: String,
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty()).map(str::to_owned)
}

fn abs(comps: &[String]) -> String {
    format!("/{}", comps.join("/"))
}

fn in_root(sysroot: &Path, comps: &[String]) -> PathBuf {
    let mut p = sysroot.to_path_buf();
    p.extend(comps);
    p
}

fn read_link_str(p: &Path) -> Result<String, InitrdError> {
    let t = std::fs::read_link(p).map_err(|e| InitrdError::io("read link", p, e))?;
    t.into_os_string()
        .into_string()
        .map_err(|t| InitrdError::InvalidPath {
            path: p.display().to_string(),
            reason: format!("symlink target {t:?} is not UTF-8"),
        })
}

/// Resolve `path` physically inside `sysroot` (like `realpath` in a chroot):
/// every symlink followed, absolute targets from the sysroot, `..` at the top
/// stays at the top. Returns the components of the physical path.
pub(crate) fn resolve_host(sysroot: &Path, path: &str) -> Result<Vec<String>, InitrdError> {
    let mut queue: VecDeque<String> = components(path).collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(c);
        let p = in_root(sysroot, &cur);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| InitrdError::io("stat", &p, e))?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(InitrdError::SymlinkLoop {
                    path: path.to_owned(),
                    limit: MAX_SYMLINK_HOPS,
                });
            }
            let target = read_link_str(&p)?;
            cur.pop();
            if target.starts_with('/') {
                cur.clear();
            }
            for t in target.split('/').rev().filter(|t| !t.is_empty()) {
                queue.push_front(t.to_owned());
            }
        }
    }
    Ok(cur)
}

/// A file added by `add_object`: its physical host path, its ELF facts when
/// it is ELF, its `#!` line when it is a script.
type AddedObject = (String, Option<ElfInfo>, Option<(String, Option<String>)>);

/// Where the mirroring of one host path stands: the components still to
/// walk, and the physical directories reached so far in the archive and on
/// the host (they part where the archive's layout differs from the host's).
struct HostWalk<'a> {
    /// The path as given, for errors.
    literal: &'a str,
    queue: VecDeque<String>,
    arch: Vec<String>,
    host: Vec<String>,
    hops: usize,
}

/// One component of a [`HostWalk`], seen from both sides.
struct Component {
    /// The last component: the file itself (only `.` may follow).
    leaf: bool,
    /// The archive directory components plus this one, and their path.
    arch_path: Vec<String>,
    arch_key: String,
    /// The host directory components plus this one, and the host file.
    host_path: Vec<String>,
    host_file: PathBuf,
}

impl<'a> HostWalk<'a> {
    fn new(literal: &'a str) -> Self {
        HostWalk {
            literal,
            queue: components(literal).collect(),
            arch: Vec::new(),
            host: Vec::new(),
            hops: 0,
        }
    }

    /// Component `c` below the directories reached so far.
    fn step(&self, sysroot: &Path, c: String) -> Component {
        let leaf = self.queue.iter().all(|q| q == ".");
        let mut arch_path = self.arch.clone();
        arch_path.push(c.clone());
        let mut host_path = self.host.clone();
        host_path.push(c);
        Component {
            leaf,
            arch_key: arch_path.join("/"),
            arch_path,
            host_file: in_root(sysroot, &host_path),
            host_path,
        }
    }

    /// Continue through a symlink's `target` (from the root when absolute),
    /// at most [`MAX_SYMLINK_HOPS`] times.
    fn follow(&mut self, target: &str) -> Result<(), InitrdError> {
        self.hops += 1;
        if self.hops > MAX_SYMLINK_HOPS {
            return Err(InitrdError::SymlinkLoop {
                path: self.literal.to_owned(),
                limit: MAX_SYMLINK_HOPS,
            });
        }
        if target.starts_with('/') {
            self.arch.clear();
            self.host.clear();
        }
        for t in target.split('/').rev().filter(|t| !t.is_empty()) {
            self.queue.push_front(t.to_owned());
        }
        Ok(())
    }
}

/// The state of one `add_program` call.
struct Collector<'a> {
    archive: &'a mut Archive,
    sysroot: PathBuf,
    ld_dirs: Option<Vec<String>>,
    report: Vec<ProgramFile>,
    /// Parsed ELF headers by physical host path (library candidates are probed once).
    elf_cache: BTreeMap<String, Option<ElfInfo>>,
}

impl Collector<'_> {
    /// Mirror the host file named by `literal` into the archive; returns the
    /// physical host path and the archive path of the file.
    fn add_host_path(
        &mut self,
        literal: &str,
        reason: &str,
    ) -> Result<(String, String), InitrdError> {
        let mut walk = HostWalk::new(literal);
        while let Some(c) = walk.queue.pop_front() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    walk.arch.pop();
                    walk.host.pop();
                    continue;
                }
                _ => {}
            }
            let at = walk.step(&self.sysroot, c);
            // The archive's own symlink decides, whatever the host has there.
            if let Some(target) = self.archive.symlink_target_at(&at.arch_key) {
                let target = target.to_owned();
                walk.follow(&target)?;
                continue;
            }
            let meta = std::fs::symlink_metadata(&at.host_file)
                .map_err(|e| InitrdError::io("stat", &at.host_file, e))?;
            match self.archive.kind_at(&at.arch_key) {
                Some(EntryKind::Dir) => self.enter_archive_dir(&mut walk, at, &meta)?,
                Some(EntryKind::File | EntryKind::HardLink) if at.leaf => {
                    return self.reuse_archive_file(at);
                }
                Some(_) => {
                    return Err(InitrdError::Conflict {
                        path: literal.to_owned(),
                        existing: format!("{} (not a directory)", at.arch_key),
                    })
                }
                None if meta.file_type().is_symlink() => {
                    self.mirror_host_symlink(&mut walk, &at, reason)?;
                }
                None if meta.is_dir() => self.mirror_host_dir(&mut walk, at)?,
                None if meta.is_file() => return self.copy_host_file(literal, at, &meta, reason),
                None => {
                    return Err(InitrdError::UnsupportedFileType {
                        path: at.host_file,
                        kind: file_kind_name(&meta),
                    })
                }
            }
        }
        Err(InitrdError::InvalidPath {
            path: literal.to_owned(),
            reason: "names a directory, not a file".into(),
        })
    }

    /// The archive has a directory here: descend into it, and on the host
    /// into the physical directory the host path names.
    fn enter_archive_dir(
        &self,
        walk: &mut HostWalk<'_>,
        at: Component,
        meta: &Metadata,
    ) -> Result<(), InitrdError> {
        if at.leaf {
            return Err(InitrdError::UnsupportedFileType {
                path: at.host_file,
                kind: "directory",
            });
        }
        walk.arch = at.arch_path;
        walk.host = if meta.file_type().is_symlink() {
            resolve_host(&self.sysroot, &abs(&at.host_path))?
        } else {
            at.host_path
        };
        Ok(())
    }

    /// The archive already has the file (an earlier program's library, or
    /// the base's): nothing to copy.
    fn reuse_archive_file(&self, at: Component) -> Result<(String, String), InitrdError> {
        let phys = resolve_host(&self.sysroot, &abs(&at.host_path))?;
        Ok((abs(&phys), at.arch_key))
    }

    /// A host symlink on the way: the same symlink in the archive, then
    /// follow it on both sides.
    fn mirror_host_symlink(
        &mut self,
        walk: &mut HostWalk<'_>,
        at: &Component,
        reason: &str,
    ) -> Result<(), InitrdError> {
        let target = read_link_str(&at.host_file)?;
        self.archive.add_symlink(&at.arch_key, &target)?;
        self.archive.default_reason(
            &at.arch_key,
            &format!("symlink on the host path {} ({reason})", walk.literal),
        );
        walk.follow(&target)
    }

    /// A host directory on the way: a parent directory in the archive.
    fn mirror_host_dir(
        &mut self,
        walk: &mut HostWalk<'_>,
        at: Component,
    ) -> Result<(), InitrdError> {
        if at.leaf {
            return Err(InitrdError::UnsupportedFileType {
                path: at.host_file,
                kind: "directory",
            });
        }
        self.archive.add_dir(&at.arch_key, IMPLICIT_DIR_MODE)?;
        self.archive.default_reason(&at.arch_key, REASON_PARENT);
        walk.arch = at.arch_path;
        walk.host = at.host_path;
        Ok(())
    }

    /// The host file itself: its content and permission bits, at the same
    /// place in the archive.
    fn copy_host_file(
        &mut self,
        literal: &str,
        at: Component,
        meta: &Metadata,
        reason: &str,
    ) -> Result<(String, String), InitrdError> {
        if !at.leaf {
            return Err(InitrdError::NotADirectory {
                path: literal.to_owned(),
                parent: abs(&at.host_path),
            });
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(InitrdError::TooLarge {
                path: literal.to_owned(),
                size: meta.len(),
                limit: MAX_FILE_SIZE,
            });
        }
        let data =
            std::fs::read(&at.host_file).map_err(|e| InitrdError::io("read", &at.host_file, e))?;
        self.archive
            .add_file(&at.arch_key, meta.permissions().mode(), data)?;
        self.archive.default_reason(&at.arch_key, reason);
        Ok((abs(&at.host_path), at.arch_key))
    }

    fn ld_dirs(&mut self) -> Vec<String> {
        self.ld_dirs
            .get_or_insert_with(|| ld_so_conf_dirs(&self.sysroot, LD_SO_CONF))
            .clone()
    }

    /// Parse the ELF header of a host file (cached); `None` for non-ELF or unreadable.
    fn probe_elf(&mut self, phys: &str) -> Option<ElfInfo> {
        if let Some(hit) = self.elf_cache.get(phys) {
            return hit.clone();
        }
        let p = in_root(&self.sysroot, &components(phys).collect::<Vec<_>>());
        let info = std::fs::read(&p)
            .ok()
            .filter(|d| is_elf(d))
            .and_then(|d| parse_elf(&p, &d).ok());
        self.elf_cache.insert(phys.to_owned(), info.clone());
        info
    }

    /// The directories the loader searches for the DT_NEEDED entries of `obj`.
    fn search_dirs(&mut self, obj: &ElfInfo, origin: &str, main_rpath: &[String]) -> Vec<String> {
        let mut dirs = Vec::new();
        // ld.so: DT_RPATH of the object and of the executable only when the
        // object has no DT_RUNPATH; then DT_RUNPATH; then the cache; then the defaults.
        if obj.runpath.is_empty() {
            dirs.extend(obj.rpath.iter().filter_map(|d| expand_dst(d, origin, obj)));
            dirs.extend(main_rpath.iter().cloned());
        }
        dirs.extend(
            obj.runpath
                .iter()
                .filter_map(|d| expand_dst(d, origin, obj)),
        );
        dirs.extend(self.ld_dirs());
        dirs.extend(default_lib_dirs(obj));
        dirs
    }

    fn find_library(
        &mut self,
        name: &str,
        obj: &ElfInfo,
        origin: &str,
        main_rpath: &[String],
        needed_by: &str,
    ) -> Result<String, InitrdError> {
        if name.contains('/') {
            return Ok(name.to_owned());
        }
        let dirs = self.search_dirs(obj, origin, main_rpath);
        for d in &dirs {
            let cand = format!("{}/{name}", d.trim_end_matches('/'));
            let Ok(phys) = resolve_host(&self.sysroot, &cand) else {
                continue;
            };
            let phys = abs(&phys);
            if !in_root(&self.sysroot, &components(&phys).collect::<Vec<_>>()).is_file() {
                continue;
            }
            if self
                .probe_elf(&phys)
                .is_some_and(|lib| obj.compatible(&lib))
            {
                return Ok(cand);
            }
        }
        Err(InitrdError::LibraryNotFound {
            name: name.to_owned(),
            needed_by: needed_by.into(),
            searched: dirs.join(":"),
        })
    }

    /// Add one host file (program, interpreter or library), record it in the
    /// report, and return its ELF facts when it is an ELF file.
    fn add_object(&mut self, literal: &str, reason: &str) -> Result<AddedObject, InitrdError> {
        let (phys, arch) = self.add_host_path(literal, reason)?;
        self.report.push(ProgramFile {
            host_path: literal.to_owned(),
            resolved: phys.clone(),
            archive_path: arch.clone(),
            reason: reason.to_owned(),
        });
        let host_data;
        let data = if self.archive.is_inherited(&arch) {
            // The base archive holds this file; its dependencies are the host file's.
            let p = in_root(&self.sysroot, &components(&phys).collect::<Vec<_>>());
            host_data = std::fs::read(&p).map_err(|e| InitrdError::io("read", &p, e))?;
            &host_data
        } else {
            match self.archive.file_data_at(&arch) {
                Some(data) => data,
                None => return Ok((phys, None, None)),
            }
        };
        if is_elf(data) {
            if let Some(Some(info)) = self.elf_cache.get(&phys) {
                return Ok((phys, Some(info.clone()), None));
            }
            let info = parse_elf(Path::new(&phys), data)?;
            self.elf_cache.insert(phys.clone(), Some(info.clone()));
            return Ok((phys, Some(info), None));
        }
        let shebang = parse_shebang(data);
        Ok((phys, None, shebang))
    }

    /// One program, as one process would load it: the interpreter first, then
    /// DT_NEEDED breadth first, a name already satisfied by a loaded object
    /// (by the name it was requested as, or its DT_SONAME) not searched again,
    /// as ld.so's `_dl_map_object` does. Scripts pull in their interpreter.
    fn add_program(
        &mut self,
        literal: &str,
        reason: &str,
        depth: usize,
    ) -> Result<(), InitrdError> {
        if depth > MAX_PROGRAM_DEPTH {
            return Err(InitrdError::InterpreterLoop {
                path: literal.to_owned(),
                limit: MAX_PROGRAM_DEPTH,
            });
        }
        let (phys, info, shebang) = self.add_object(literal, reason)?;
        if let Some((interp, arg)) = shebang {
            self.add_program(
                &interp,
                &format!("interpreter of script {literal}"),
                depth + 1,
            )?;
            // "#!/usr/bin/env NAME": NAME is the real interpreter.
            if interp.rsplit('/').next() == Some("env") {
                if let Some(name) = arg
                    .as_deref()
                    .and_then(|a| a.split_whitespace().next())
                    .filter(|a| !a.starts_with('-'))
                {
                    let found = self.find_program(name)?;
                    self.add_program(
                        &found,
                        &format!("interpreter of script {literal} via env"),
                        depth + 1,
                    )?;
                }
            }
            return Ok(());
        }
        let Some(info) = info else {
            return Ok(()); // plain data file
        };
        // $ORIGIN of the executable: its real directory (ld.so asks the kernel).
        let origin = parent_dir(&phys);
        let main_rpath: Vec<String> = info
            .rpath
            .iter()
            .filter_map(|d| expand_dst(d, &origin, &info))
            .collect();
        let mut loaded: BTreeSet<String> = BTreeSet::new();
        if let Some(interp) = &info.interpreter {
            let (_, interp_info, _) =
                self.add_object(interp, &format!("ELF interpreter of {literal}"))?;
            loaded.insert(interp.clone());
            if let Some(soname) = interp_info.and_then(|i| i.soname) {
                loaded.insert(soname);
            }
        }
        // (name, the object needing it, that object's $ORIGIN, its path)
        let mut queue: VecDeque<(String, ElfInfo, String, String)> = info
            .needed
            .iter()
            .map(|n| (n.clone(), info.clone(), origin.clone(), literal.to_owned()))
            .collect();
        let mut count = 0usize;
        while let Some((name, requester, req_origin, req_path)) = queue.pop_front() {
            if loaded.contains(&name) {
                continue;
            }
            count += 1;
            if count > MAX_LIBRARIES {
                return Err(InitrdError::TooLarge {
                    path: literal.to_owned(),
                    size: count as u64,
                    limit: MAX_LIBRARIES as u64,
                });
            }
            let lib = self.find_library(&name, &requester, &req_origin, &main_rpath, &req_path)?;
            let (_, lib_info, _) =
                self.add_object(&lib, &format!("{name} needed by {req_path}"))?;
            loaded.insert(name.clone());
            loaded.insert(lib.clone());
            let Some(lib_info) = lib_info else { continue };
            if let Some(soname) = &lib_info.soname {
                loaded.insert(soname.clone());
            }
            // A library's $ORIGIN is the directory it was found in.
            let lib_origin = parent_dir(&lib);
            for n in &lib_info.needed {
                queue.push_back((n.clone(), lib_info.clone(), lib_origin.clone(), lib.clone()));
            }
        }
        Ok(())
    }

    fn find_program(&self, name: &str) -> Result<String, InitrdError> {
        if name.contains('/') {
            return Ok(name.to_owned());
        }
        for d in PROGRAM_SEARCH_PATH {
            let cand = format!("{d}/{name}");
            if let Ok(phys) = resolve_host(&self.sysroot, &cand) {
                if in_root(&self.sysroot, &phys).is_file() {
                    return Ok(cand);
                }
            }
        }
        Err(InitrdError::ProgramNotFound {
            name: name.to_owned(),
            searched: PROGRAM_SEARCH_PATH.join(":"),
        })
    }
}

/// Expand the dynamic string tokens of an RPATH/RUNPATH entry. Entries with
/// tokens we cannot know, or relative ones (relative to the process's working
/// directory at run time), are skipped.
fn expand_dst(entry: &str, origin: &str, obj: &ElfInfo) -> Option<String> {
    let lib = if obj.is_64 { "lib64" } else { "lib" };
    let platform = platform_name(obj.machine);
    let mut s = entry
        .replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin);
    s = s.replace("${LIB}", lib).replace("$LIB", lib);
    if let Some(p) = platform {
        s = s.replace("${PLATFORM}", p).replace("$PLATFORM", p);
    }
    (s.starts_with('/') && !s.contains('$')).then_some(s)
}

fn platform_name(machine: u16) -> Option<&'static str> {
    match machine {
        object::elf::EM_X86_64 => Some("x86_64"),
        object::elf::EM_386 => Some("i686"),
        object::elf::EM_AARCH64 => Some("aarch64"),
        _ => None,
    }
}

/// Debian/Ubuntu multiarch triplet of a machine.
fn multiarch(obj: &ElfInfo) -> Option<&'static str> {
    use object::elf::*;
    match (obj.machine, obj.is_64) {
        (EM_X86_64, true) => Some("x86_64-linux-gnu"),
        (EM_X86_64, false) => Some("x86_64-linux-gnux32"),
        (EM_386, _) => Some("i386-linux-gnu"),
        (EM_AARCH64, _) => Some("aarch64-linux-gnu"),
        (EM_ARM, _) => Some("arm-linux-gnueabihf"),
        (EM_RISCV, true) => Some("riscv64-linux-gnu"),
        (EM_PPC64, _) => Some("powerpc64le-linux-gnu"),
        (EM_S390, _) => Some("s390x-linux-gnu"),
        _ => None,
    }
}

/// The loader's built-in directories: multiarch ones (Debian builds them into
/// ld.so), then lib64 for 64-bit, then lib. Incompatible candidates are skipped
/// by the caller, so listing a directory too many is harmless.
fn default_lib_dirs(obj: &ElfInfo) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(t) = multiarch(obj) {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    if obj.is_64 {
        dirs.push("/lib64".into());
        dirs.push("/usr/lib64".into());
    }
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    dirs
}

impl Archive {
    /// A host program and everything it needs to run: its ELF interpreter and DT_NEEDED
    /// libraries (recursively, resolved via DT_RUNPATH/DT_RPATH ($ORIGIN), /etc/ld.so.conf(.d)
    /// and the default dirs, read from the ELF, not ldd), placed at the same paths as on the
    /// host; symlinks on the host library path (e.g. /lib64/ld-linux-x86-64.so.2 -> ...) become
    /// symlinks in the archive plus their targets. Scripts (#!) pull in their interpreter.
    ///
    /// A `program` without '/' is looked up in [`PROGRAM_SEARCH_PATH`].
    pub fn add_program(&mut self, program: &Path) -> Result<(), InitrdError> {
        self.add_program_in(Path::new("/"), program).map(|_| ())
    }

    /// [`Archive::add_program`] with the host seen through `sysroot` (absolute
    /// paths and symlinks resolve inside it). Returns every file it visited, in
    /// order, with the reason it was needed.
    pub fn add_program_in(
        &mut self,
        sysroot: &Path,
        program: &Path,
    ) -> Result<Vec<ProgramFile>, InitrdError> {
        let name = program.to_str().ok_or_else(|| InitrdError::InvalidPath {
            path: program.display().to_string(),
            reason: "not UTF-8".into(),
        })?;
        let mut c = Collector {
            archive: self,
            sysroot: sysroot.to_path_buf(),
            ld_dirs: None,
            report: Vec::new(),
            elf_cache: BTreeMap::new(),
        };
        let literal = if name.starts_with('/') {
            name.to_owned()
        } else if name.contains('/') {
            let cwd = std::env::current_dir()
                .map_err(|e| InitrdError::io("read the current directory", ".", e))?;
            cwd.join(name)
                .to_str()
                .map(str::to_owned)
                .unwrap_or_default()
        } else {
            c.find_program(name)?
        };
        c.add_program(&literal, "requested program", 0)?;
        Ok(c.report)
    }

    /// Mirror the symlinks at the top of the host's root (`/bin -> usr/bin`,
    /// `/lib -> usr/lib`, `/lib64 -> usr/lib64`, ... on a merged-/usr host)
    /// that the archive does not have yet; returns the links added. Call it
    /// first on a base archive: files added later at `lib/...` then land in
    /// `usr/lib/...` exactly as on the host, and an appended archive built
    /// with [`Archive::add_program`] agrees with the base on what `lib` is
    /// (the kernel will not replace a directory of an earlier archive by a
    /// symlink). Only links to folders, with relative targets that stay
    /// inside the root, are taken.
    pub fn mirror_root_symlinks(&mut self, sysroot: &Path) -> Result<Vec<String>, InitrdError> {
        let rd = std::fs::read_dir(sysroot)
            .map_err(|e| InitrdError::io("read directory", sysroot, e))?;
        let mut links = Vec::new();
        for e in rd {
            let e = e.map_err(|e| InitrdError::io("read directory", sysroot, e))?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let p = e.path();
            let is_link = std::fs::symlink_metadata(&p)
                .map_err(|e| InitrdError::io("stat", &p, e))?
                .file_type()
                .is_symlink();
            if !is_link {
                continue;
            }
            let target = read_link_str(&p)?;
            if target.starts_with('/') || check_symlink_target(&name, &[], &target).is_err() {
                continue;
            }
            // Links to folders only: /vmlinuz and /initrd.img point at the
            // host's boot files, which the guest does not have.
            if !std::fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            links.push((name, target));
        }
        links.sort();
        let mut added = Vec::new();
        for (name, target) in links {
            if self.kind_at(&name).is_some() {
                continue;
            }
            self.add_symlink(&name, &target)?;
            self.default_reason(&name, "mirrors the host's root layout");
            added.push(name);
        }
        Ok(added)
    }

    /// Copy the host directory `src_dir` to `dest` in the archive: directories,
    /// regular files (hard links kept as hard links), symlinks as symlinks.
    /// Symlinks inside the tree are never followed (only `src_dir` itself is),
    /// so nothing outside the tree is read; relative links that would climb
    /// above the archive root are refused. Fifos, sockets and device files are
    /// refused. Entries are visited in sorted order.
    pub fn add_tree(&mut self, dest: &str, src_dir: &Path) -> Result<(), InitrdError> {
        let meta = std::fs::metadata(src_dir).map_err(|e| InitrdError::io("stat", src_dir, e))?;
        if !meta.is_dir() {
            return Err(InitrdError::UnsupportedFileType {
                path: src_dir.to_owned(),
                kind: file_kind_name(&meta),
            });
        }
        self.add_dir(dest, meta.permissions().mode())?;
        let mut links: BTreeMap<(u64, u64), String> = BTreeMap::new();
        let dest = dest.trim_end_matches('/').to_owned();
        self.add_tree_inner(&dest, src_dir, &mut links)
    }

    fn add_tree_inner(
        &mut self,
        dest: &str,
        dir: &Path,
        links: &mut BTreeMap<(u64, u64), String>,
    ) -> Result<(), InitrdError> {
        let rd = std::fs::read_dir(dir).map_err(|e| InitrdError::io("read directory", dir, e))?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|e| InitrdError::io("read directory", dir, e))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| InitrdError::InvalidPath {
                    path: dir.display().to_string(),
                    reason: format!("file name {n:?} is not UTF-8"),
                })?;
            names.push(name);
        }
        names.sort();
        for name in names {
            let src = dir.join(&name);
            let path = format!("{dest}/{name}");
            let meta =
                std::fs::symlink_metadata(&src).map_err(|e| InitrdError::io("stat", &src, e))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = read_link_str(&src)?;
                self.add_symlink(&path, &target)?;
            } else if ft.is_dir() {
                self.add_dir(&path, meta.permissions().mode())?;
                self.add_tree_inner(&path, &src, links)?;
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                        let first = first.clone();
                        self.add_hardlink(&path, &first)?;
                        continue;
                    }
                    links.insert((meta.dev(), meta.ino()), path.clone());
                }
                // Read through the already-checked handle's path: it is a regular file, not a link.
                if meta.len() > MAX_FILE_SIZE {
                    return Err(InitrdError::TooLarge {
                        path,
                        size: meta.len(),
                        limit: MAX_FILE_SIZE,
                    });
                }
                let data = std::fs::read(&src).map_err(|e| InitrdError::io("read", &src, e))?;
                self.add_file(&path, meta.permissions().mode(), data)?;
            } else {
                return Err(InitrdError::UnsupportedFileType {
                    path: src,
                    kind: file_kind_name(&meta),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolve_host_stays_in_sysroot() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("usr/lib/f"), b"x").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/../../../usr/lib/f", r.join("abs")).unwrap();
        assert_eq!(resolve_host(r, "/lib/f").unwrap(), ["usr", "lib", "f"]);
        assert_eq!(resolve_host(r, "/abs").unwrap(), ["usr", "lib", "f"]);
        assert_eq!(
            resolve_host(r, "/../../lib/../lib/f").unwrap(),
            ["usr", "lib", "f"]
        );
        symlink("loop", r.join("loop")).unwrap();
        assert!(matches!(
            resolve_host(r, "/loop"),
            Err(InitrdError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn root_symlinks_are_mirrored_when_safe() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["usr/lib", "usr/bin", "usr/sbin", "etc", "boot"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("boot/vmlinuz-6.1"), b"").unwrap();
        symlink("boot/vmlinuz-6.1", r.join("vmlinuz")).unwrap(); // a file: skipped
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("usr/sbin", r.join("sbin")).unwrap();
        symlink("/usr/lib64", r.join("lib64")).unwrap(); // absolute: host-specific, skipped
        symlink("../outside", r.join("evil")).unwrap(); // climbs out: skipped
        let mut a = Archive::new();
        a.add_dir("sbin", 0o755).unwrap(); // already there: kept
        assert_eq!(a.mirror_root_symlinks(r).unwrap(), ["bin", "lib"]);
        a.add_file("lib/modules/6.1/x.ko", 0o644, vec![]).unwrap();
        assert_eq!(a.kind_at("usr/lib/modules/6.1/x.ko"), Some(EntryKind::File));
        // The overlay of such a base and a program from the real host agree.
        let mut host_base = Archive::new();
        host_base.mirror_root_symlinks(Path::new("/")).unwrap();
        host_base
            .add_file("lib/modules/v/m.ko", 0o644, vec![1])
            .unwrap();
        let mut run = Archive::overlay(&host_base);
        run.add_program(Path::new("/bin/sh")).unwrap();
        assert!(run
            .manifest()
            .iter()
            .all(|e| e.kind != EntryKind::Symlink || host_base.kind_at(&e.path).is_none()));
    }

    #[test]
    fn self_interpreting_script_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("loop");
        std::fs::write(&script, format!("#!{}\n", script.display())).unwrap();
        let e = Archive::new().add_program(&script).unwrap_err();
        assert!(matches!(e, InitrdError::InterpreterLoop { .. }), "{e}");
    }

    #[test]
    fn dst_expansion() {
        let info = ElfInfo {
            is_64: true,
            machine: object::elf::EM_X86_64,
            ..ElfInfo::default()
        };
        assert_eq!(
            expand_dst("$ORIGIN/../lib", "/opt/app/bin", &info).as_deref(),
            Some("/opt/app/bin/../lib")
        );
        assert_eq!(
            expand_dst("${ORIGIN}/x", "/o", &info).as_deref(),
            Some("/o/x")
        );
        assert_eq!(
            expand_dst("/usr/$LIB", "/o", &info).as_deref(),
            Some("/usr/lib64")
        );
        assert_eq!(expand_dst("relative/dir", "/o", &info), None);
        assert_eq!(expand_dst("/x/$UNKNOWN", "/o", &info), None);
    }
}
