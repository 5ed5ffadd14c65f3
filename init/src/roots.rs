//! Every place the init reads or writes, as parameters: the live boot
//! uses [`Roots::live`], tests point them at fixture trees in a temporary
//! directory ([`Roots::under`]).

use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// The initramfs root (`/`), holding the baked config and the init.
    pub top: PathBuf,
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub run: PathBuf,
    /// The module trees (`/lib/modules`).
    pub modules: PathBuf,
    /// modprobe.d directories, in kmod's order of precedence.
    pub modprobe_dirs: Vec<PathBuf>,
    /// Where the root filesystem is mounted before the switch.
    pub new_root: PathBuf,
}

impl Roots {
    /// The live system.
    pub fn live() -> Roots {
        Roots::under(Path::new("/"))
    }

    /// The same layout under another directory.
    pub fn under(top: &Path) -> Roots {
        let at = |p: &str| top.join(p);
        Roots {
            top: top.to_owned(),
            proc: at("proc"),
            sys: at("sys"),
            dev: at("dev"),
            run: at("run"),
            modules: at("lib/modules"),
            modprobe_dirs: vec![
                at("etc/modprobe.d"),
                at("run/modprobe.d"),
                at("lib/modprobe.d"),
            ],
            new_root: at("sysroot"),
        }
    }

    /// A path of the initramfs (`/kestrel/run` → TOP/kestrel/run).
    pub fn in_top(&self, absolute: &str) -> PathBuf {
        self.top.join(absolute.trim_start_matches('/'))
    }
}
