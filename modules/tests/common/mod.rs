//! Shared by the integration tests and the benchmark: which installed
//! Debian module tree a test runs against, chosen by the layout it needs.
//!
//! A machine may carry several kernels (here 6.1 with plain `.ko` files,
//! its `-cloud` flavour, and 6.12 with `.ko.xz`): "the newest tree" changes
//! layout from one machine to the next, so each test names the layout it
//! depends on and gets the tree with the most modules of that layout (the
//! generic flavour before `-cloud`).

use std::path::{Path, PathBuf};

/// Where distributions install module trees, one directory per kernel.
pub const MODULES_ROOT: &str = "/lib/modules";

/// How the modules of a tree are stored, as its modules.dep names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Uncompressed `.ko` files (Debian's 6.1 kernels).
    Plain,
    /// `.ko.xz` files (Debian's 6.12 kernels).
    Xz,
}

impl Layout {
    /// The file name ending of every module of this layout.
    fn suffix(self) -> &'static str {
        match self {
            Layout::Plain => ".ko",
            Layout::Xz => ".ko.xz",
        }
    }
}

/// One installed module tree.
#[derive(Clone, Debug)]
pub struct Tree {
    /// The kernel release (`uname -r`), as `modprobe -S` takes it.
    pub version: String,
    /// `/lib/modules/<version>`.
    pub dir: PathBuf,
}

/// The layout of the tree at `dir`, from the first module line of its
/// modules.dep; `None` without one.
fn layout_of(dir: &Path) -> Option<Layout> {
    let dep = std::fs::read_to_string(dir.join("modules.dep")).ok()?;
    let first = dep.lines().find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let (path, _) = first.split_once(':')?;
    [Layout::Xz, Layout::Plain]
        .into_iter()
        .find(|l| path.ends_with(l.suffix()))
}

/// The installed tree of `layout` with the most modules (ties: the higher
/// version), or `None` when none is installed.
pub fn tree(layout: Layout) -> Option<Tree> {
    let mut found: Vec<(usize, String)> = std::fs::read_dir(MODULES_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| layout_of(&e.path()) == Some(layout))
        .filter_map(|e| {
            let lines = std::fs::read_to_string(e.path().join("modules.dep"))
                .ok()?
                .lines()
                .count();
            Some((lines, e.file_name().into_string().ok()?))
        })
        .collect();
    found.sort();
    let (_, version) = found.pop()?;
    Some(Tree {
        dir: Path::new(MODULES_ROOT).join(&version),
        version,
    })
}

/// [`tree`], or a `SKIP:` line naming what `what` needed when there is
/// none. The tree used is printed, so a failure says which one it was.
pub fn tree_or_skip(layout: Layout, what: &str) -> Option<Tree> {
    match tree(layout) {
        Some(t) => {
            eprintln!(
                "{what}: using {} (kernel {}, {layout:?} modules)",
                t.dir.display(),
                t.version
            );
            Some(t)
        }
        None => {
            eprintln!(
                "SKIP: {what}: no module tree with {} modules under {MODULES_ROOT}",
                layout.suffix()
            );
            None
        }
    }
}
