//! The initrd of a boot, one pipeline for `kestrel run` and `kestrel
//! build`: two concatenated archives (the kernel unpacks them in order).
//! The base archive (the init, device nodes, the modules the machine's
//! devices need and their index slices) depends only on the init, the
//! kernel and the machine, so it is compressed once and cached by the hash
//! of its contents; the small run archive (the payload program with its
//! libraries and its argv, environment and working directory) is made per
//! run, resolved against the base's tree.

use crate::kernel::Kernel;
use crate::machine::Target;
use anyhow::{bail, Context, Result};
use kestrel_initrd::{Archive, Cache, Compression, KeyHasher, ManifestEntry};
use kestrel_modules::{ModuleIndex, Plan, PlanNote, Request};
use kestrel_proto::config::{self, Config};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the static init binary.
pub const INIT_ENV: &str = "KESTREL_INIT";
/// Where `make init` puts the static init, relative to a cargo target dir
/// (the init's own target folder, `target/init`, is inside it).
pub const INIT_IN_TARGET: &str = "init/x86_64-unknown-linux-gnu/release/kestrel-init";
/// The root filesystem a root-mode boot gets modules for unless told.
pub const DEFAULT_ROOT_FS: &str = "ext4";

/// Directories every guest root has; /dev/console makes the kernel open
/// fds 0-2 for the init.
const BASE_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("etc", 0o755),
];

/// How to build, besides the machine and the kernel.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Compression of the cached base archive.
    pub compression: Compression,
    /// Bake the module plan into the initrd: the init loads it in order
    /// and skips device discovery.
    pub frozen_plan: bool,
    /// The VM will be exactly the target (`kestrel run` made it, with no
    /// raw qemu argument): the init loads the devices' modules at once
    /// and does not walk /sys for them. Off for initrds booted elsewhere.
    pub known_machine: bool,
    /// Modules named by the user (`--module`), besides the devices' own.
    pub modules: Vec<String>,
    /// Also the modules this host's own devices use (their MODALIAS).
    pub host_modules: bool,
    /// The filesystem of the root a root-mode boot mounts: its modules go
    /// in. None: [`DEFAULT_ROOT_FS`] in root mode, nothing with a payload.
    pub root_fs: Option<String>,
    /// More host programs (with their libraries) or files for the guest.
    pub include: Vec<PathBuf>,
    /// Take modules from this tree instead of /lib/modules/RELEASE.
    pub modules_dir: Option<PathBuf>,
}

/// The payload as the host was asked to run it, and its world: what the
/// run archive bakes for the init.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// The program on the host, resolved through PATH.
    pub program: PathBuf,
    pub argv: Vec<OsString>,
    pub env: Vec<OsString>,
    pub cwd: Option<OsString>,
    /// The payload gets the serial console (an interactive boot).
    pub console: bool,
    /// The host streams stdin to it over the events port.
    pub stdin: bool,
    /// Run as this user (the host user's ids, when sharing).
    pub user: Option<config::User>,
    /// Host folders the init mounts.
    pub shares: Vec<config::Share>,
    /// The tag of the share that is the payload's root (`--root host`):
    /// the program is then run from there, not carried in the initrd.
    pub host_root: Option<String>,
    /// The address the init gives the first interface.
    pub net: Option<config::Net>,
}

/// Resolves `argv[0]` like a shell would, before any VM starts, so a
/// missing program is a clear error here and not a failed boot.
pub fn resolve_payload(argv: &[OsString]) -> Result<Payload> {
    let Some(first) = argv.first() else {
        bail!("no command given (kestrel run -- CMD ARGS...)")
    };
    let first_path = Path::new(first);
    let program = if first.as_bytes().contains(&b'/') {
        // `./prog` runs in the guest from wherever --cwd says: keep the
        // host's meaning by making it absolute.
        std::path::absolute(first_path).with_context(|| format!("failed to resolve {first:?}"))?
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(first_path))
            .find(|p| p.is_file())
            .with_context(|| format!("payload program {:?} not found on PATH", first))?
    };
    if !program.is_file() {
        bail!("payload program {} does not exist", program.display());
    }
    Ok(Payload {
        program,
        argv: argv.to_vec(),
        ..Payload::default()
    })
}

/// Where `make install` puts the init, relative to the folder of the
/// installed `kestrel` (PREFIX/bin/kestrel, PREFIX/lib/kestrel/kestrel-init).
pub const INIT_INSTALLED: &str = "../lib/kestrel/kestrel-init";
/// The init's file name next to a copied `kestrel`.
pub const INIT_NAME: &str = "kestrel-init";

/// Where the init is looked for, in order, for the executable `exe`:
/// next to it, under its PREFIX/lib/kestrel, then in a cargo target
/// folder above it (a build tree).
fn init_candidates(exe: &Path) -> Vec<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let mut out = vec![dir.join(INIT_NAME), dir.join(INIT_INSTALLED)];
    out.extend(exe.ancestors().skip(1).map(|d| d.join(INIT_IN_TARGET)));
    out
}

/// Whether `path` is a static ELF program (no interpreter); the error
/// says why not.
fn check_static(path: &Path) -> Result<()> {
    let data = std::fs::read(path)
        .with_context(|| format!("failed to read the init {}", path.display()))?;
    let info = kestrel_initrd::parse_elf(path, &data)
        .with_context(|| format!("{} is not an ELF program", path.display()))?;
    if info.interpreter.is_some() {
        bail!(
            "{} is dynamically linked; build it static with `make init`",
            path.display()
        );
    }
    Ok(())
}

/// Finds the static init: $KESTREL_INIT, else beside this executable or
/// where `make install` put it, else in a cargo target dir above it. A
/// dynamically linked init cannot boot: refused (one found beside a build
/// tree's own `kestrel`, such as target/debug/kestrel-init, is skipped).
fn find_init() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(INIT_ENV) {
        let path = PathBuf::from(p);
        check_static(&path)?;
        return Ok(path);
    }
    let exe = std::env::current_exe().context("failed to find the kestrel executable")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let mut skipped = Vec::new();
    for candidate in init_candidates(&exe).into_iter().filter(|p| p.is_file()) {
        match check_static(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) => skipped.push(format!("{e:#}")),
        }
    }
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    };
    bail!(
        "no static kestrel-init for {exe}: looked in {near}, {installed} and cargo target folders above it{skipped}. \
         Build it with `make init` in Kestrel's source tree, then either `make install PREFIX=...` \
         (kestrel in PREFIX/bin, the init in PREFIX/lib/kestrel), copy \
         target/{INIT_IN_TARGET} to {near}, or set {INIT_ENV}=/path/to/kestrel-init",
        exe = exe.display(),
        near = dir.join(INIT_NAME).display(),
        installed = dir.join(INIT_INSTALLED).display(),
    )
}

/// A built initrd: the cached base and the run part that follows it.
#[derive(Debug)]
pub struct Initrd {
    /// The compressed base archive, in the cache.
    pub base: PathBuf,
    /// The run archive (newc, uncompressed), when there is a payload.
    pub run: Option<Vec<u8>>,
    /// Every entry of both, with its size and why it is there.
    pub manifest: Vec<ManifestEntry>,
}

impl Initrd {
    /// Writes base + run as one file for qemu (or a boot loader).
    pub fn write(&self, out: &Path) -> Result<()> {
        let base = std::fs::read(&self.base)
            .with_context(|| format!("failed to read {}", self.base.display()))?;
        let file = std::fs::File::create(out)
            .with_context(|| format!("failed to create {}", out.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let mut parts: Vec<&[u8]> = vec![&base];
        parts.extend(self.run.as_deref());
        kestrel_initrd::concat_archives(&mut w, &parts)?;
        w.flush()
            .with_context(|| format!("failed to write {}", out.display()))
    }

    /// The module files in the initrd, by name ("virtio_mmio").
    pub fn module_names(&self) -> BTreeSet<String> {
        self.manifest
            .iter()
            .filter_map(|e| e.path.strip_suffix(".ko"))
            .filter_map(|p| p.rsplit('/').next())
            .map(|n| n.replace('-', "_"))
            .collect()
    }
}

/// The initrd for `payload` (root mode without one) on `target` with
/// `kernel`: the base archive built and cached (a hit costs its hash), the
/// run archive made.
pub fn build(
    opts: &BuildOptions,
    target: &Target,
    kernel: &Kernel,
    payload: Option<&Payload>,
    cache: &Cache,
) -> Result<Initrd> {
    let init = find_init()?;
    check_compression(kernel, opts.compression)?;
    let base = base_archive(opts, target, kernel, payload.is_none(), &init)?;
    let mtime = mtime()?;
    let cached = cache_base(&base, opts.compression, mtime, cache)?;
    let mut manifest = base.manifest();
    let run = match payload {
        Some(p) => {
            let run = run_archive(&base, p, &opts.include)?;
            manifest.extend(run.manifest());
            Some(run.to_newc(mtime)?)
        }
        None => None,
    };
    Ok(Initrd {
        base: cached,
        run,
        manifest,
    })
}

/// A compression the kernel cannot unpack (its config says no RD_*) is
/// refused here, not discovered as a silent boot failure.
fn check_compression(kernel: &Kernel, c: Compression) -> Result<()> {
    Ok(kestrel_initrd::check_compression(&kernel.config, c)?)
}

/// The module tree of a build: `--modules-dir` (the tree itself or an
/// INSTALL_MOD_PATH holding lib/modules/RELEASE), else the kernel's.
fn modules_dir(opts: &BuildOptions, kernel: &Kernel) -> Result<Option<PathBuf>> {
    match &opts.modules_dir {
        Some(given) => crate::kernel::find_module_tree(given, &kernel.release)
            .map(Some)
            .with_context(|| {
                format!(
                    "--modules-dir {}: no modules.dep there nor in {}/lib/modules/{} (run depmod, or make modules_install INSTALL_MOD_PATH=...)",
                    given.display(),
                    given.display(),
                    kernel.release
                )
            }),
        None => Ok(kernel.modules_dir.clone()),
    }
}

/// What a kernel has to offer: its module tree (if any) and its config.
struct Provides<'a> {
    index: Option<&'a ModuleIndex>,
    config: Option<String>,
}

impl Provides<'_> {
    fn state(&self, option: &str) -> Option<&str> {
        Some(kestrel_initrd::kconfig_option(
            self.config.as_deref()?,
            option,
        ))
    }

    /// None when the kernel has `module` (in its tree or built in); else
    /// what is missing, naming the kernel option.
    fn missing(&self, module: &str) -> Option<String> {
        let option = crate::machine::module_option(module);
        let present = match self.index {
            Some(index) => index.module_path(module).is_some() || index.is_builtin(module),
            // No module tree: only what the config builds in.
            None => option.and_then(|o| self.state(o)).is_none_or(|s| s == "y"),
        };
        if present {
            return None;
        }
        Some(match option {
            Some(option) => match self.state(option) {
                Some("m") => format!(
                    "{module} ({option}=m, but the module is not in the tree: make modules_install)"
                ),
                Some("y") | None => format!("{module} ({option})"),
                Some("n") => format!("{module} ({option} is not set: enable it)"),
                Some(other) => format!("{module} ({option} is {other}: enable it)"),
            },
            None => module.to_owned(),
        })
    }
}

fn read_config(kernel: &Kernel) -> Option<String> {
    std::fs::read(&kernel.config)
        .ok()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
}

/// Every module the devices need is in the tree or built in; else the
/// error names the kernel option to turn on, before any VM starts.
fn check_device_modules(
    index: Option<&ModuleIndex>,
    target: &Target,
    kernel: &Kernel,
) -> Result<()> {
    let provides = Provides {
        index,
        config: read_config(kernel),
    };
    let missing: Vec<String> = target
        .device_modules()
        .into_iter()
        .filter_map(|m| provides.missing(m))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let tree = index.map_or_else(
        || "no module tree".to_owned(),
        |i| format!("modules in {}", i.dir().display()),
    );
    bail!(
        "kernel {} cannot drive this VM's devices: it lacks {} ({tree}, config {})",
        kernel.release,
        missing.join(", "),
        kernel.config.display()
    )
}

/// What of `modules` the kernel lacks (neither in its module tree, as
/// `opts` finds it, nor built in), each naming its kernel option: for
/// choosing among devices before the initrd is built.
pub fn kernel_lacks(opts: &BuildOptions, kernel: &Kernel, modules: &[&str]) -> Result<Vec<String>> {
    let index = match modules_dir(opts, kernel)? {
        Some(dir) => Some(
            ModuleIndex::load(&dir)
                .with_context(|| format!("failed to load the module index of {}", dir.display()))?,
        ),
        None => None,
    };
    let provides = Provides {
        index: index.as_ref(),
        config: read_config(kernel),
    };
    Ok(modules.iter().filter_map(|m| provides.missing(m)).collect())
}

/// What the module plan is asked for: the devices' modules, the user's,
/// the root filesystem's (root mode), the host's devices' aliases.
fn module_requests(opts: &BuildOptions, target: &Target, root_mode: bool) -> Result<Vec<Request>> {
    let mut requests: Vec<Request> = target
        .device_modules()
        .into_iter()
        .map(|m| Request::Name(m.to_owned()))
        .chain(opts.modules.iter().cloned().map(Request::Name))
        .collect();
    if let Some(fs) = root_fs(opts, root_mode) {
        requests.push(Request::Alias(format!("fs-{fs}")));
    }
    if opts.host_modules {
        requests.extend(host_modaliases()?.into_iter().map(Request::Alias));
    }
    Ok(requests)
}

fn root_fs(opts: &BuildOptions, root_mode: bool) -> Option<&str> {
    match &opts.root_fs {
        Some(fs) => Some(fs),
        None if root_mode => Some(DEFAULT_ROOT_FS),
        None => None,
    }
}

/// The base archive: init, device nodes, modules.
fn base_archive(
    opts: &BuildOptions,
    target: &Target,
    kernel: &Kernel,
    root_mode: bool,
    init: &Path,
) -> Result<Archive> {
    let mut a = Archive::new();
    add_skeleton(&mut a, init)?;
    let Some(dir) = modules_dir(opts, kernel)? else {
        check_device_modules(None, target, kernel)?;
        let looked = if kernel.path.is_dir() {
            format!(
                "no modules_install output in {} (mods/, .virtme_mods/, $INSTALL_MOD_PATH)",
                kernel.path.display()
            )
        } else {
            format!(
                "no {}/{} on the host",
                crate::kernel::MODULES_ROOT,
                kernel.release
            )
        };
        eprintln!("kestrel: {looked}; assuming its drivers are built in");
        return Ok(a);
    };
    let index = ModuleIndex::load(&dir)
        .with_context(|| format!("failed to load the module index of {}", dir.display()))?;
    check_device_modules(Some(&index), target, kernel)?;
    let plan = index
        .plan(&module_requests(opts, target, root_mode)?)
        .context("failed to resolve the module closure")?;
    if let Some(fs) = root_fs(opts, root_mode) {
        check_root_fs(&plan, fs, &dir)?;
    }
    add_modules(&mut a, &index, &plan, &kernel.release)?;
    // The root filesystem's modules are the longest chain of a root boot:
    // the init starts them at t=0, beside discovery.
    let early = root_fs(opts, root_mode)
        .map(|fs| index.lookup_alias(&format!("fs-{fs}")))
        .unwrap_or_default();
    let known = opts.known_machine.then(|| {
        target
            .device_modules()
            .into_iter()
            .map(String::from)
            .collect()
    });
    add_base_config(
        &mut a,
        Config {
            plan: opts
                .frozen_plan
                .then(|| plan.modules.iter().map(|m| m.name.clone()).collect()),
            early,
            known_devices: known,
            ..Config::default()
        },
    )?;
    Ok(a)
}

/// Directories, the console node, the host's merged-/usr links, the init.
fn add_skeleton(a: &mut Archive, init: &Path) -> Result<()> {
    for (dir, mode) in BASE_DIRS {
        a.add_dir(dir, *mode)?;
    }
    a.add_char_dev("dev/console", 0o600, 5, 1)?;
    a.set_reason(
        "dev/console",
        "the kernel opens it as the init's stdin/stdout/stderr",
    );
    // The run archive's programs bring the host's paths, and the kernel
    // cannot turn a directory the base archive made into a link.
    a.mirror_root_symlinks(Path::new("/"))?;
    a.add_file_from("init", init)?;
    a.set_reason("init", "kestrel-init, PID 1");
    Ok(())
}

/// A root filesystem with no module and not built in is an error here.
fn check_root_fs(plan: &Plan, fs: &str, dir: &Path) -> Result<()> {
    let alias = format!("fs-{fs}");
    if plan
        .notes
        .iter()
        .any(|n| matches!(n, PlanNote::NoMatch { alias: a } if *a == alias))
    {
        bail!(
            "no module for the root filesystem {fs:?} in {} (and it is not built in)",
            dir.display()
        );
    }
    Ok(())
}

/// Strips the compression suffix: modules are stored decompressed (the
/// initrd is compressed as a whole, and the init then needs no decoder).
pub(crate) fn stored_relpath(relpath: &str) -> &str {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(stem) = relpath.strip_suffix(ext) {
            return stem;
        }
    }
    relpath
}

fn strip_compression_suffixes(dep: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(dep);
    text.replace(".ko.xz", ".ko")
        .replace(".ko.zst", ".ko")
        .replace(".ko.gz", ".ko")
        .into_bytes()
}

/// The plan's module files (decompressed), their firmware, and the slices
/// of the module index that name them.
fn add_modules(a: &mut Archive, index: &ModuleIndex, plan: &Plan, release: &str) -> Result<()> {
    let dest = format!("lib/modules/{release}");
    let mut names = BTreeSet::new();
    for entry in &plan.modules {
        let rel = index
            .module_relpath(&entry.name)
            .with_context(|| format!("module {} has no path in modules.dep", entry.name))?;
        let data = kestrel_initrd::read_module(&entry.path)?;
        // A module we cannot read the firmware list of still goes in: the
        // kernel is the judge of a module file, and reports it at boot.
        if let Err(e) = a.add_module_firmware(
            &entry.name,
            &data,
            Path::new(kestrel_initrd::FIRMWARE_DIR),
            release,
        ) {
            eprintln!(
                "kestrel: warning: module {}: cannot read its firmware list: {e}",
                entry.name
            );
        }
        let path = format!("{dest}/{}", stored_relpath(rel));
        a.add_file(&path, 0o644, data)?;
        a.set_reason(&path, &entry.reason);
        names.insert(entry.name.clone());
    }
    for (file, data) in index.subset_files(&names) {
        let data = if file == "modules.dep" {
            strip_compression_suffixes(&data)
        } else {
            data
        };
        let path = format!("{dest}/{file}");
        a.add_file(&path, 0o644, data)?;
        a.set_reason(&path, "module index for the included modules");
    }
    Ok(())
}

/// The base archive's config: the frozen plan (when asked for), the
/// modules to start at once in a root boot, the known machine's modules.
fn add_base_config(a: &mut Archive, baked: Config) -> Result<()> {
    if baked == Config::default() {
        return Ok(());
    }
    let path = config::BASE_CONFIG.trim_start_matches('/');
    a.add_file(path, 0o644, baked.encode_base())?;
    a.set_reason(
        path,
        "modules loaded at once: a frozen plan (no discovery), the root filesystem's, the known machine's devices'",
    );
    Ok(())
}

/// The MODALIAS of every device of this host (`--host-modules`): an
/// initrd that boots this machine's own hardware.
fn host_modaliases() -> Result<Vec<String>> {
    let walk =
        kestrel_uevent::walk::walk_devices(Path::new("/sys")).context("failed to walk /sys")?;
    let mut aliases: Vec<String> = walk
        .devices
        .iter()
        .filter_map(|d| d.modalias())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    aliases.sort();
    aliases.dedup();
    Ok(aliases)
}

fn archive_path(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_owned()
}

/// The run archive: the payload and its configuration, over the base.
fn run_archive(base: &Archive, payload: &Payload, include: &[PathBuf]) -> Result<Archive> {
    let mut a = Archive::overlay(base);
    if payload.host_root.is_some() && !include.is_empty() {
        eprintln!("kestrel: warning: --include goes into the initramfs, which a payload on the host's root does not see");
    }
    for path in include {
        // ELF programs and scripts bring what they need; other files come as they are.
        a.add_program(path)
            .with_context(|| format!("failed to include {}", path.display()))?;
        a.set_reason(&archive_path(path), "--include");
    }
    // On the host's root the program is there already, with its libraries.
    if payload.host_root.is_none() {
        a.add_program(&payload.program).with_context(|| {
            format!(
                "failed to add {} and its libraries",
                payload.program.display()
            )
        })?;
        a.set_reason(&archive_path(&payload.program), "the payload");
    }
    // The guest execs exactly what was resolved here (its PATH may differ);
    // argv[0] stays as typed.
    let baked = Config {
        payload: Some(config::Payload {
            argv: payload.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            exe: Some(payload.program.as_os_str().as_bytes().to_vec()),
            env: payload.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
            cwd: payload.cwd.as_ref().map(|c| c.as_bytes().to_vec()),
            console: payload.console,
            stdin: payload.stdin,
            user: payload.user.clone(),
        }),
        shares: payload.shares.clone(),
        host_root: payload.host_root.clone(),
        net: payload.net,
        ..Config::default()
    };
    let path = config::RUN_CONFIG.trim_start_matches('/');
    a.add_file(path, 0o644, baked.encode_run()?)?;
    a.set_reason(
        path,
        "the payload's argv, environment, working directory, user, shares and network",
    );
    Ok(a)
}

/// The fixed mtime of every entry: SOURCE_DATE_EPOCH, else 0.
fn mtime() -> Result<u32> {
    let v = std::env::var("SOURCE_DATE_EPOCH").ok();
    Ok(kestrel_initrd::mtime_from_source_date_epoch(v.as_deref())?)
}

/// The base archive compressed into the cache, keyed by the hash of its
/// uncompressed bytes and the compression; an existing entry is reused.
fn cache_base(base: &Archive, c: Compression, mtime: u32, cache: &Cache) -> Result<PathBuf> {
    let newc = base.to_newc(mtime)?;
    let key = KeyHasher::new()
        .add_str("artifact", "initrd base")
        .add_str("compression", c.name())
        .add_bytes("newc", &newc)
        .finish();
    let suffix = format!(".initrd{}", c.extension());
    let entry = cache.get_or_build(&key, &suffix, |w| {
        w.write_all(&kestrel_initrd::compress(&newc, c)?)
            .map_err(kestrel_initrd::InitrdError::Write)
    })?;
    Ok(entry.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{
        debian_61, has_pvh_note, installed_kernels, read_kernel, Installed, KernelReason, BOOT_DIR,
    };
    use crate::machine::{Device, Machine, Profile};

    #[test]
    fn a_missing_payload_is_an_error_before_any_vm() {
        let e = resolve_payload(&["/no/such/program".into()]).unwrap_err();
        assert!(e.to_string().contains("/no/such/program"), "{e}");
        let e = resolve_payload(&["no-such-program-kestrel".into()]).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
        assert!(resolve_payload(&[]).is_err());
        let p = resolve_payload(&["sh".into(), "-c".into()]).unwrap();
        assert!(p.program.is_absolute());
    }

    /// The modules of the base archive for `target` on an installed kernel.
    fn modules_in_base(k: &Installed, target: &Target) -> BTreeSet<String> {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let kernel = read_kernel(&k.path, KernelReason::Given, &cache, false).unwrap();
        let opts = BuildOptions::default();
        let base = base_archive(&opts, target, &kernel, false, Path::new("/bin/true")).unwrap();
        let initrd = Initrd {
            base: PathBuf::new(),
            run: None,
            manifest: base.manifest(),
        };
        initrd.module_names()
    }

    /// kmod's closure: the union of `modprobe -S RELEASE --show-depends`.
    fn kmod_closure(release: &str, modules: &[&str]) -> BTreeSet<String> {
        let mut kmod = BTreeSet::new();
        for m in modules {
            let out = std::process::Command::new("modprobe")
                .args(["-S", release, "--show-depends", m])
                .output()
                .unwrap();
            assert!(out.status.success(), "modprobe --show-depends {m}");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(path) = line.strip_prefix("insmod ") {
                    let file = stored_relpath(path.trim()).rsplit('/').next().unwrap();
                    kmod.insert(file.trim_end_matches(".ko").replace('-', "_"));
                }
            }
        }
        kmod
    }

    /// The initrd of `kestrel run -- /bin/true` on the default machine
    /// holds the transport and the console port's driver with their
    /// dependencies and nothing else: on Debian's 6.1 exactly kmod's
    /// closure of virtio_mmio and virtio_console; on 6.12, where
    /// virtio_console is built in, virtio_mmio alone; on q35 under 6.12,
    /// where virtio_pci is built in too, no module at all.
    #[test]
    fn a_bare_run_carries_only_the_modules_of_its_devices() {
        let target = Machine::default().target();
        let Some(k61) = debian_61() else {
            eprintln!("SKIP: no Debian 6.1 kernel in /boot (make setup)");
            return;
        };
        let ours = modules_in_base(&k61, &target);
        assert_eq!(
            ours,
            kmod_closure(&k61.release, &["virtio_mmio", "virtio_console"])
        );
        assert!(
            ours.contains("virtio_mmio") && ours.contains("virtio_console"),
            "{ours:?}"
        );
        let k612 = installed_kernels(Path::new(BOOT_DIR))
            .unwrap()
            .into_iter()
            .rfind(|k| k.release.starts_with("6.12.") && !k.release.contains("cloud"));
        if let Some(k612) = k612 {
            let ours = modules_in_base(&k612, &target);
            assert_eq!(
                ours,
                kmod_closure(&k612.release, &["virtio_mmio", "virtio_console"])
            );
            assert_eq!(ours, BTreeSet::from(["virtio_mmio".to_owned()]));
            let q35 = Machine {
                profile: Profile::Q35,
                ..Machine::default()
            };
            let ours = modules_in_base(&k612, &q35.target());
            assert!(ours.is_empty(), "{}: {ours:?}", k612.release);
        }
    }

    /// With a disk, the network and rng on q35, the closure is kmod's for
    /// the same device table (the old full set, minus the filesystem).
    #[test]
    fn every_device_brings_its_closure() {
        let target = Target {
            profile: Profile::Q35,
            devices: vec![Device::Disk, Device::Net, Device::Rng],
        };
        let Some(k61) = debian_61() else {
            eprintln!("SKIP: no Debian 6.1 kernel in /boot (make setup)");
            return;
        };
        let ours = modules_in_base(&k61, &target);
        assert_eq!(ours, kmod_closure(&k61.release, &target.device_modules()));
        assert!(
            ours.contains("virtio_net") && !ours.contains("ext4"),
            "{ours:?}"
        );
    }

    /// Four runs at once on one cold cache: each reads the kernel (its
    /// PVH vmlinux extracted and cached) and builds the initrd (its base
    /// cached); all succeed, agree on the entries, and the cache holds
    /// whole entries and no temporary file.
    #[test]
    fn concurrent_runs_share_a_cold_cache_safely() {
        let Some(k61) = debian_61() else {
            eprintln!("SKIP: no Debian 6.1 kernel in /boot (make setup)");
            return;
        };
        if find_init().is_err() {
            eprintln!("SKIP: no static init (make init)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let target = Machine::default().target();
        let payload = resolve_payload(&["true".into()]).unwrap();
        let results: Vec<(PathBuf, PathBuf)> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let kernel =
                            read_kernel(&k61.path, KernelReason::Given, &cache, true).unwrap();
                        let initrd = build(
                            &BuildOptions::default(),
                            &target,
                            &kernel,
                            Some(&payload),
                            &cache,
                        )
                        .unwrap();
                        (kernel.boot_image, initrd.base)
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        let (vmlinux, base) = &results[0];
        assert!(has_pvh_note(&std::fs::read(vmlinux).unwrap()));
        let newc = std::fs::read(base).unwrap();
        assert!(kestrel_initrd::parse_newc(&newc).is_ok());
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn root_mode_brings_the_root_filesystem() {
        let opts = BuildOptions::default();
        let target = Machine::default().target();
        let root = module_requests(&opts, &target, true).unwrap();
        assert!(root.contains(&Request::Alias("fs-ext4".into())), "{root:?}");
        let run = module_requests(&opts, &target, false).unwrap();
        assert!(
            !run.iter().any(|r| matches!(r, Request::Alias(_))),
            "{run:?}"
        );
        let xfs = BuildOptions {
            root_fs: Some("xfs".into()),
            ..BuildOptions::default()
        };
        let reqs = module_requests(&xfs, &target, true).unwrap();
        assert!(reqs.contains(&Request::Alias("fs-xfs".into())), "{reqs:?}");
    }

    /// Without a module tree (a kernel built without modules), the
    /// config says what is built in; a share's transport that is not is
    /// named with its option.
    #[test]
    fn a_missing_transport_names_its_kernel_option() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join(".config");
        std::fs::write(
            &config,
            "CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_CONSOLE=y\nCONFIG_9P_FS=y\n# CONFIG_NET_9P_VIRTIO is not set\n",
        )
        .unwrap();
        let kernel = Kernel {
            path: tmp.path().to_owned(),
            boot_image: PathBuf::new(),
            release: "6.1.0-tiny".into(),
            modules_dir: None,
            config,
            reason: KernelReason::Given,
        };
        let bare = Machine::default().target();
        assert!(check_device_modules(None, &bare, &kernel).is_ok());
        let p9 = Target {
            profile: Profile::Microvm,
            devices: vec![Device::Share9p],
        };
        let e = check_device_modules(None, &p9, &kernel)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lacks 9pnet_virtio (CONFIG_NET_9P_VIRTIO is not set: enable it)")
                && !e.contains("CONFIG_9P_FS"),
            "{e}"
        );
    }

    /// An installed or copied kestrel looks beside itself, then in
    /// ../lib/kestrel, then in cargo target folders above it.
    #[test]
    fn the_init_is_looked_for_beside_then_under_prefix_then_in_target() {
        let c = init_candidates(Path::new("/opt/k/bin/kestrel"));
        assert_eq!(c[0], Path::new("/opt/k/bin/kestrel-init"));
        assert_eq!(c[1], Path::new("/opt/k/bin/../lib/kestrel/kestrel-init"));
        assert_eq!(c[2], Path::new("/opt/k/bin").join(INIT_IN_TARGET), "{c:?}");
        assert!(check_static(Path::new("/bin/true")).is_err());
    }

    #[test]
    fn stores_modules_decompressed() {
        assert_eq!(
            stored_relpath("kernel/fs/ext4/ext4.ko.zst"),
            "kernel/fs/ext4/ext4.ko"
        );
        assert_eq!(
            stored_relpath("kernel/fs/ext4/ext4.ko"),
            "kernel/fs/ext4/ext4.ko"
        );
        assert_eq!(
            strip_compression_suffixes(b"kernel/a.ko.xz: kernel/b.ko.gz\n"),
            b"kernel/a.ko: kernel/b.ko\n"
        );
    }
}
