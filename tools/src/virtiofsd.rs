//! The virtio-fs daemon of a share: found on the host, its flavour told
//! apart (qemu's C daemon, which needs root and cannot refuse writes; the
//! Rust virtiofsd, which runs unprivileged and has `--readonly`), its
//! argv, and the process: started before qemu (qemu connects to its
//! vhost-user socket), in its own process group, dying with us
//! (PR_SET_PDEATHSIG), and killed with the VM, never left behind.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon's program name on PATH.
pub const PROGRAM: &str = "virtiofsd";
/// Where distributions install it outside PATH: Fedora and the Rust
/// package (/usr/libexec), Debian's qemu (/usr/lib/qemu).
pub const LIBEXEC_PATHS: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];
/// How long the daemon may take to make its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);
/// What is kept of the daemon's log for an error message.
const LOG_TAIL: usize = 2048;

/// Which virtiofsd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// qemu's C daemon (qemu ≤ 7.2): `-o source=`, needs root, no
    /// read-only mode.
    Qemu,
    /// The Rust daemon (gitlab virtio-fs/virtiofsd): `--shared-dir`,
    /// `--sandbox none` without root; `--readonly` in newer versions, and
    /// `--no-announce-submounts` where submounts are announced by default.
    Rust { readonly: bool, submounts: bool },
}

/// A virtiofsd found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    pub path: PathBuf,
    pub flavour: Flavour,
}

/// The flavour from the text of `virtiofsd --help`.
fn flavour_from_help(help: &str) -> Flavour {
    if help.contains("--shared-dir") {
        Flavour::Rust {
            readonly: help.contains("--readonly"),
            submounts: help.contains("--no-announce-submounts"),
        }
    } else {
        Flavour::Qemu
    }
}

/// The first virtiofsd on PATH, else in the distributions' libexec
/// folders; its flavour read from its `--help`.
pub fn find() -> Option<Daemon> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join(PROGRAM))
        .chain(LIBEXEC_PATHS.iter().map(PathBuf::from))
        .find(|p| p.is_file())?;
    let out = Command::new(&found)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let help = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    Some(Daemon {
        flavour: flavour_from_help(&help),
        path: found,
    })
}

impl Daemon {
    /// Why this daemon cannot serve us, if it cannot: qemu's needs root.
    pub fn unusable_reason(&self, root: bool) -> Option<String> {
        match self.flavour {
            Flavour::Qemu if !root => Some(format!(
                "{} is qemu's virtiofsd, which needs root",
                self.path.display()
            )),
            _ => None,
        }
    }

    /// Whether the daemon has a read-only mode of its own.
    fn own_readonly(&self) -> bool {
        matches!(self.flavour, Flavour::Rust { readonly: true, .. })
    }

    /// Whether a read-only share this daemon serves is read-only on the
    /// host (else only the guest's mount says so, which the guest's root
    /// can undo): by the daemon's own mode, or (as root) by the folder's
    /// read-only view in a mount namespace of the daemon's own (qemu's C
    /// daemon has no read-only mode).
    pub fn enforces_readonly(&self, root: bool) -> bool {
        self.own_readonly() || self.makes_view(root)
    }

    /// Whether a read-only share is served from a read-only view: the
    /// daemon has no read-only mode, and one can be made here.
    fn makes_view(&self, root: bool) -> bool {
        !self.own_readonly() && root && can_make_views()
    }

    /// The daemon's argv (without the program) for `dir` on `socket`.
    pub fn args(&self, socket: &Path, dir: &Path, writable: bool, root: bool) -> Vec<String> {
        let socket = format!("--socket-path={}", socket.display());
        match self.flavour {
            // `-o` values are split at commas by the C daemon's option
            // parser: a comma in the path is escaped with a backslash. Its
            // default sandbox pivots into the folder, which fails for /
            // ("pivot_root(., .): Device or resource busy") and inside
            // containers; chroot works for both.
            Flavour::Qemu => vec![
                socket,
                "-o".into(),
                format!("source={}", dir.display().to_string().replace(',', "\\,")),
                "-o".into(),
                format!("cache={}", cache_mode(writable)),
                "-o".into(),
                "sandbox=chroot".into(),
            ],
            Flavour::Rust {
                readonly,
                submounts,
            } => {
                let mut a = vec![
                    socket,
                    format!("--shared-dir={}", dir.display()),
                    format!("--cache={}", cache_mode(writable)),
                    // Without root there is no namespace to build.
                    format!("--sandbox={}", if root { "namespace" } else { "none" }),
                ];
                if readonly && !writable {
                    a.push("--readonly".into());
                }
                // Announced, the host's mount points are automounts in the
                // guest, on which nothing can be mounted (EREMOTE): the
                // host root's /proc under the overlay. One filesystem, as
                // qemu's daemon and 9p show it.
                if submounts {
                    a.push("--no-announce-submounts".into());
                }
                a
            }
        }
    }
}

/// Whether a read-only view can be made here (as root): tried once, on
/// folders of our own, with the very hook a daemon gets. A container's
/// root without CAP_SYS_ADMIN, a kernel before 5.12, a seccomp filter or
/// a chroot whose root is no mount point each make it fail.
fn can_make_views() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| {
        let Ok(tmp) = tempfile::tempdir() else {
            return false;
        };
        let (dir, at) = (tmp.path().join("dir"), tmp.path().join("at"));
        let mut cmd = Command::new("true");
        let made = std::fs::create_dir(&dir).is_ok()
            && std::fs::create_dir(&at).is_ok()
            && crate::sys::read_only_view(&mut cmd, &dir, &at).is_ok();
        made && cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The daemon's cache mode: a read-only share (the host root above all)
/// is cached in the guest for the whole run (`always`: measured under TCG,
/// `python3 -c pass` on the host root took 10.0 s against 25.8 s with
/// `auto`, the C daemon's default); a writable one stays coherent with
/// the host (`auto`).
fn cache_mode(writable: bool) -> &'static str {
    if writable {
        "auto"
    } else {
        "always"
    }
}

/// A running virtiofsd; killed with its process group when dropped.
pub struct Running {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Running {
    /// Starts the daemon for `dir` and waits (bounded) for its socket;
    /// its log goes to `log`, whose tail an error quotes.
    pub fn start(
        daemon: &Daemon,
        socket: &Path,
        dir: &Path,
        writable: bool,
        log: &Path,
    ) -> Result<Running> {
        let root = rustix::process::geteuid().is_root();
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("failed to create {}", log.display()))?;
        let mut cmd = Command::new(&daemon.path);
        // A read-only share the daemon cannot keep read-only itself is
        // served from a read-only view of it, where one can be made (else
        // the choice of transport said so).
        let source = if !writable && daemon.makes_view(root) {
            let at = log.with_extension("ro");
            std::fs::create_dir(&at)
                .with_context(|| format!("failed to create {}", at.display()))?;
            crate::sys::read_only_view(&mut cmd, dir, &at)
                .with_context(|| format!("{} has a NUL byte", dir.display()))?;
            at
        } else {
            dir.to_owned()
        };
        cmd.args(daemon.args(socket, &source, writable, root))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .process_group(0);
        crate::sys::prepare_child(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", daemon.path.display()))?;
        let mut running = Running {
            child,
            dir: dir.to_owned(),
            log: log.to_owned(),
        };
        let t0 = Instant::now();
        while !socket.exists() {
            if let Ok(Some(status)) = running.child.try_wait() {
                bail!(
                    "{} for {} exited ({status}) before making its socket: {}",
                    daemon.path.display(),
                    dir.display(),
                    log_tail(log)
                );
            }
            if t0.elapsed() > SOCKET_WAIT {
                bail!(
                    "{} for {} made no socket within {SOCKET_WAIT:?}: {}",
                    daemon.path.display(),
                    dir.display(),
                    log_tail(log)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(running)
    }

    /// Why the daemon is gone, when it exited on its own: the guest's
    /// share then hangs, so the run ends with this.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        Some(format!(
            "virtiofsd for {} exited ({status}): {}",
            self.dir.display(),
            log_tail(&self.log)
        ))
    }

    /// Kills the daemon and whatever it forked (qemu's forks into a
    /// namespace), then reaps it.
    pub fn kill(&mut self) {
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL);
    String::from_utf8_lossy(text.get(start..).unwrap_or_default())
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_flavours_apart_and_builds_their_argv() {
        let qemu = Daemon {
            path: "/usr/lib/qemu/virtiofsd".into(),
            flavour: flavour_from_help("usage: virtiofsd [options]\n -o source=PATH\n"),
        };
        assert_eq!(qemu.flavour, Flavour::Qemu);
        assert!(qemu.unusable_reason(false).unwrap().contains("needs root"));
        assert_eq!(qemu.unusable_reason(true), None);
        assert!(!qemu.enforces_readonly(false));
        assert_eq!(
            qemu.args(Path::new("/r/s.sock"), Path::new("/a,b"), false, true),
            [
                "--socket-path=/r/s.sock",
                "-o",
                "source=/a\\,b",
                "-o",
                "cache=always",
                "-o",
                "sandbox=chroot"
            ]
        );
        let rust = Daemon {
            path: "/usr/libexec/virtiofsd".into(),
            flavour: flavour_from_help(
                "--shared-dir <SHARED_DIR>\n--readonly\n--sandbox\n--no-announce-submounts",
            ),
        };
        assert_eq!(
            rust.flavour,
            Flavour::Rust {
                readonly: true,
                submounts: true
            }
        );
        assert_eq!(rust.unusable_reason(false), None);
        assert_eq!(
            rust.args(Path::new("/r/s.sock"), Path::new("/d"), false, false),
            [
                "--socket-path=/r/s.sock",
                "--shared-dir=/d",
                "--cache=always",
                "--sandbox=none",
                "--readonly",
                "--no-announce-submounts"
            ]
        );
        assert!(!rust
            .args(Path::new("/s"), Path::new("/d"), true, true)
            .contains(&"--readonly".to_owned()));
    }
}
