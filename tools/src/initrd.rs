//! `kestrel build`: the initrd of a boot, as two concatenated archives (the
//! kernel unpacks them in order). The base archive (the init, device
//! nodes, the module closure and its index slices) depends only on the init
//! and the kernel, so it is compressed once and cached by the hash of its
//! contents; the small run archive (the payload program with its libraries
//! and its argv, environment and working directory) is made per run.

use crate::kernel::Kernel;
use anyhow::{bail, Context, Result};
use kestrel_initrd::{Archive, Compression};
use kestrel_modules::{ModuleIndex, Request};
use kestrel_proto::config::{self, Config};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the static init binary.
pub const INIT_ENV: &str = "KESTREL_INIT";
/// Where `make init` puts the static init, relative to a cargo target dir.
pub const INIT_IN_TARGET: &str = "x86_64-unknown-linux-gnu/release/kestrel-init";

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

/// Top-level directories that merged-/usr hosts make links into /usr.
const MERGED_USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Finds the static init: $KESTREL_INIT, else in a cargo target dir above
/// this executable. A dynamically linked init cannot boot: refused.
pub fn find_init() -> Result<PathBuf> {
    let path = match std::env::var_os(INIT_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().context("failed to find the kestrel executable")?;
            exe.ancestors()
                .map(|d| d.join(INIT_IN_TARGET))
                .find(|p| p.is_file())
                .with_context(|| format!("no static kestrel-init found above {} (run `make init`, or set {INIT_ENV})", exe.display()))?
        }
    };
    let data = std::fs::read(&path)
        .with_context(|| format!("failed to read the init {}", path.display()))?;
    let info = kestrel_initrd::parse_elf(&path, &data)
        .with_context(|| format!("{} is not an ELF program", path.display()))?;
    if info.interpreter.is_some() {
        bail!(
            "{} is dynamically linked; build it static with `make init`",
            path.display()
        );
    }
    Ok(path)
}

/// The payload as the host was asked to run it.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// The program on the host, resolved through PATH.
    pub program: PathBuf,
    pub argv: Vec<OsString>,
    pub env: Vec<OsString>,
    pub cwd: Option<OsString>,
}

/// Resolves `argv[0]` like a shell would, before any VM starts, so a
/// missing program is a clear error here and not a failed boot.
pub fn resolve_payload(
    argv: &[OsString],
    env: Vec<OsString>,
    cwd: Option<OsString>,
) -> Result<Payload> {
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
        env,
        cwd,
    })
}

/// What goes into a build.
pub struct BuildSpec<'a> {
    pub init: &'a Path,
    pub kernel: &'a Kernel,
    pub modules: Vec<String>,
    /// MODALIAS values whose modules are included too (`--host-modules`).
    pub aliases: Vec<String>,
    pub compression: Compression,
    /// Bake the plan's order as a frozen plan (see `kestrel_proto::config`).
    pub frozen_plan: bool,
}

fn archive_path(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_owned()
}

/// Strips the compression suffix: modules are stored decompressed (the
/// initrd is compressed as a whole, and the init then needs no decoder).
fn stored_relpath(relpath: &str) -> &str {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(stem) = relpath.strip_suffix(ext) {
            return stem;
        }
    }
    relpath
}

/// The base archive: init, device nodes, modules. A compression the
/// kernel cannot unpack (its config says no RD_*) is refused here, not
/// discovered as a silent boot failure.
pub fn base_archive(spec: &BuildSpec) -> Result<Archive> {
    let config = kestrel_initrd::kernel_config_path(
        Path::new(crate::kernel::BOOT_DIR),
        &spec.kernel.release,
    );
    kestrel_initrd::check_compression(&config, spec.compression)?;
    let mut a = Archive::new();
    for (dir, mode) in BASE_DIRS {
        a.add_dir(dir, *mode)?;
    }
    a.add_char_dev("dev/console", 0o600, 5, 1)?;
    a.set_reason(
        "dev/console",
        "the kernel opens it as the init's stdin/stdout/stderr",
    );
    // Mirror the host's merged-/usr links (/lib -> usr/lib...): the run
    // archive's programs bring the same links, and the kernel cannot turn a
    // directory the base archive made into a link when it unpacks them.
    for top in MERGED_USR_LINKS {
        if let Ok(target) = std::fs::read_link(Path::new("/").join(top)) {
            a.add_symlink(top, &target.to_string_lossy())?;
            a.set_reason(top, "merged /usr, as on the host");
        }
    }
    a.add_file_from("init", spec.init)?;
    a.set_reason("init", "kestrel-init, PID 1");
    let Some(dir) = spec.kernel.modules_dir.as_ref() else {
        if !spec.modules.is_empty() {
            eprintln!(
                "kestrel: no /lib/modules/{} on the host; assuming its drivers are built in",
                spec.kernel.release
            );
        }
        return Ok(a);
    };
    let index = ModuleIndex::load(dir)
        .with_context(|| format!("failed to load the module index of {}", dir.display()))?;
    let requests: Vec<Request> = spec
        .modules
        .iter()
        .cloned()
        .map(Request::Name)
        .chain(spec.aliases.iter().cloned().map(Request::Alias))
        .collect();
    let plan = index
        .plan(&requests)
        .context("failed to resolve the module closure")?;
    let dest = format!("lib/modules/{}", spec.kernel.release);
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
            &spec.kernel.release,
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
    if spec.frozen_plan {
        let baked = Config {
            plan: Some(plan.modules.iter().map(|m| m.name.clone()).collect()),
            ..Config::default()
        };
        let path = config::BASE_CONFIG.trim_start_matches('/');
        a.add_file(path, 0o644, baked.encode_base())?;
        a.set_reason(path, "frozen module plan: these modules, no discovery");
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
    Ok(a)
}

fn strip_compression_suffixes(dep: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(dep);
    text.replace(".ko.xz", ".ko")
        .replace(".ko.zst", ".ko")
        .replace(".ko.gz", ".ko")
        .into_bytes()
}

/// The MODALIAS of every device of this host (`--host-modules`): an
/// initrd that boots this machine's own hardware.
pub fn host_modaliases() -> Result<Vec<String>> {
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

/// The run archive: the payload and its configuration.
pub fn run_archive(
    payload: &Payload,
    include: &[PathBuf],
    interactive: bool,
    stdin: bool,
) -> Result<Archive> {
    let mut a = Archive::new();
    for path in include {
        // ELF programs and scripts bring what they need; other files come as they are.
        a.add_program(path)
            .with_context(|| format!("failed to include {}", path.display()))?;
        a.set_reason(&archive_path(path), "--include");
    }
    a.add_program(&payload.program).with_context(|| {
        format!(
            "failed to add {} and its libraries",
            payload.program.display()
        )
    })?;
    a.set_reason(&archive_path(&payload.program), "the payload");
    // The guest execs exactly what was resolved here (its PATH may differ);
    // argv[0] stays as typed.
    let baked = Config {
        payload: Some(config::Payload {
            argv: payload.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            exe: Some(payload.program.as_os_str().as_bytes().to_vec()),
            env: payload.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
            cwd: payload.cwd.as_ref().map(|c| c.as_bytes().to_vec()),
            console: interactive,
            stdin,
        }),
        ..Config::default()
    };
    let path = config::RUN_CONFIG.trim_start_matches('/');
    a.add_file(path, 0o644, baked.encode_run()?)?;
    a.set_reason(
        path,
        "the payload's argv, environment and working directory",
    );
    Ok(a)
}

/// The fixed mtime of every entry: SOURCE_DATE_EPOCH, else 0.
pub fn mtime() -> Result<u32> {
    let v = std::env::var("SOURCE_DATE_EPOCH").ok();
    Ok(kestrel_initrd::mtime_from_source_date_epoch(v.as_deref())?)
}

/// Writes the base archive compressed into the cache, named by the hash
/// of its uncompressed bytes; an existing file is reused without work.
pub fn cached_base(archive: &Archive, compression: Compression, cache: &Path) -> Result<PathBuf> {
    let newc = archive.to_newc(mtime()?)?;
    let hash = crate::kernel::hex(&Sha256::digest(&newc));
    let path = cache.join(format!("initrd-base-{}.{compression}", &hash[..20]));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache)
        .with_context(|| format!("failed to create {}", cache.display()))?;
    let data = kestrel_initrd::compress(&newc, compression)?;
    crate::run::write_atomically(&path, &data)?;
    Ok(path)
}

/// base (compressed, cached) + run (uncompressed) as one file for qemu.
pub fn write_initrd(base: &Path, run: Option<&Archive>, out: &Path) -> Result<()> {
    let mut data =
        std::fs::read(base).with_context(|| format!("failed to read {}", base.display()))?;
    if let Some(run) = run {
        // Each archive member must start 4-byte aligned.
        data.resize(data.len().next_multiple_of(4), 0);
        data.extend(run.to_newc(mtime()?)?);
    }
    std::fs::write(out, data).with_context(|| format!("failed to write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_payload_is_an_error_before_any_vm() {
        let e = resolve_payload(&["/no/such/program".into()], vec![], None).unwrap_err();
        assert!(e.to_string().contains("/no/such/program"), "{e}");
        let e = resolve_payload(&["no-such-program-kestrel".into()], vec![], None).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
        assert!(resolve_payload(&[], vec![], None).is_err());
        let p = resolve_payload(&["sh".into(), "-c".into()], vec![], None).unwrap();
        assert!(p.program.is_absolute());
    }

    /// The closure the builder puts in for the default machine is exactly
    /// kmod's: the union of `modprobe --show-depends` for each module.
    #[test]
    fn default_machine_closure_equals_kmod() {
        let Ok(kernel_path) = crate::kernel::default_kernel() else {
            eprintln!("SKIP: no kernel in /boot");
            return;
        };
        let kernel =
            crate::kernel::read_kernel(&kernel_path, &std::env::temp_dir(), false).unwrap();
        let spec = BuildSpec {
            init: Path::new("/bin/true"),
            kernel: &kernel,
            modules: crate::qemu::PCI_MODULES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            aliases: vec![],
            compression: Compression::None,
            frozen_plan: false,
        };
        let archive = base_archive(&spec).unwrap();
        let ours: BTreeSet<String> = archive
            .manifest()
            .into_iter()
            .filter(|e| e.path.ends_with(".ko"))
            .map(|e| e.path.rsplit('/').next().unwrap().to_owned())
            .collect();
        let mut kmod = BTreeSet::new();
        for m in crate::qemu::PCI_MODULES {
            let out = std::process::Command::new("modprobe")
                .args(["-S", &kernel.release, "--show-depends", m])
                .output()
                .unwrap();
            assert!(out.status.success(), "modprobe --show-depends {m}");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(path) = line.strip_prefix("insmod ") {
                    kmod.insert(
                        stored_relpath(path.trim())
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_owned(),
                    );
                }
            }
        }
        assert_eq!(ours, kmod);
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
