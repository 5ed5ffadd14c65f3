//! `kestrel-modules`: a kmod equivalent for Kestrel's PID 1 and its initrd
//! builder.
//!
//! It reads the module indexes depmod writes (modules.dep, modules.alias,
//! modules.softdep, modules.builtin, modules.builtin.modinfo) and
//! modprobe.d-style configuration, matches a MODALIAS against every alias
//! pattern with kmod's fnmatch semantics and order, turns requests into a
//! load plan (a dependency DAG in kmod's order) and loads the plan with
//! `finit_module` on a small pool of threads.
//!
//! Everything except [`loader`] is pure: it takes bytes or paths in and
//! returns values, never touching the live system. Nothing here may panic or
//! exit: every failure is a [`ModulesError`] or a [`loader::LoadError`]. It
//! never runs commands (`install` lines are rejected) and never decompresses
//! modules (the initrd builder does that at build time when the kernel
//! cannot).
//!
//! # Use
//!
//! In the init (PID 1):
//!
//! ```no_run
//! use kestrel_modules::{config::Config, loader, ModuleIndex, Request};
//! # fn demo(modaliases: Vec<String>, cmdline_tokens: &[&str]) -> Result<(), kestrel_modules::ModulesError> {
//! let mut config = Config::load_paths(&["/etc/modprobe.d", "/lib/modprobe.d"])?;
//! config.apply_kernel_cmdline(cmdline_tokens); // modprobe.blacklist=, NAME.param=...
//! let index = ModuleIndex::load("/lib/modules/6.1.0-56-amd64".as_ref())?.with_config(config);
//! let requests: Vec<Request> = modaliases.into_iter().map(Request::Alias).collect();
//! // plan_lenient: one unknown name or a softdep cycle must not stop the rest.
//! let plan = index.plan_lenient(&requests);
//! let report = loader::load_plan(&plan, 4, &|event| eprintln!("{} {:?}", event.entry.name, event.duration));
//! # let _ = report; Ok(()) }
//! ```
//!
//! In the initrd builder: [`ModuleIndex::plan`] with [`Request::Name`] gives
//! the closure, [`ModuleIndex::module_relpath`] where each file goes,
//! [`ModuleIndex::subset_files`] the index files to write next to them, and
//! [`decompress_needed`] which files to decompress for the target kernel.
//!
//! # Agreement with kmod
//!
//! `tests/oracle.rs` compares plans with `modprobe --show-depends` of the
//! real kmod for every alias pattern of Debian's modules.alias, every module
//! and builtin name, the captured guest MODALIAS lists and a crafted
//! modprobe.d. Known, deliberate differences:
//! - `modprobe.blacklist=snd-pcsp` is normalised (kmod compares it raw, so
//!   a `-` there never matches);
//! - `module_blacklist=` (the kernel's own) is honoured: such modules are
//!   never requested;
//! - modules.symbols is not read (`symbol:` lookups, used only by
//!   `symbol_request()`, find nothing);
//! - builtin aliases (modules.builtin.modinfo) come in file order;
//! - `install` lines are an error, `remove` lines are ignored;
//! - each module appears once, at its first place in kmod's order (kmod
//!   prints some twice); kmod's trailing space after options is not added.

pub mod compression;
pub mod config;
pub mod fnmatch;
mod index;
pub mod loader;
pub mod names;
mod plan;

use std::path::{Path, PathBuf};

pub use compression::{decompress_needed, Compression};
pub use config::Config;
pub use index::ModuleIndex;
pub use plan::{Plan, PlanEntry, PlanNote, Request};

/// Errors of the index, the configuration and the planner.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// A file or directory could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A file is larger than the named bound for its kind.
    #[error("failed to read {path}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: u64,
    },
    /// A line of an index file is malformed.
    #[error("failed to parse {path} line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// modprobe.d `install` lines would run shell commands; Kestrel refuses.
    #[error(
        "failed to load config {file} line {line}: 'install {module} ...' runs a command, which Kestrel does not \
         support; remove the line or replace it with options/softdep lines"
    )]
    InstallUnsupported {
        /// Config file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The module the command was for.
        module: String,
    },
    /// A module requested by name is neither in modules.dep, nor builtin,
    /// nor an alias.
    #[error("failed to find module {name} in {dir}")]
    ModuleNotFound {
        /// The requested name.
        name: String,
        /// The index directory.
        dir: PathBuf,
    },
    /// The dependencies (hard or soft) of the requested modules form a cycle.
    #[error("failed to order modules: dependency cycle {}", cycle.join(" -> "))]
    DependencyCycle {
        /// The modules on the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
}

impl ModulesError {
    /// Puts the full path into a config error raised while parsing one file.
    fn with_path(self, path: &Path) -> Self {
        match self {
            ModulesError::InstallUnsupported { line, module, .. } => {
                ModulesError::InstallUnsupported {
                    file: path.display().to_string(),
                    line,
                    module,
                }
            }
            other => other,
        }
    }
}
