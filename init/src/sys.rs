//! The boot's side effects behind one small trait, [`Sys`]: mounts, device
//! nodes, links, removal, entering the new root. [`Kernel`] calls the
//! kernel; tests use [`Recorder`], which stores each call typed and applies
//! the file effects under a temporary root, so the boot's logic is tested
//! on fixture trees without a VM (youki's `Syscall` and its test double).
//!
//! The few syscalls std and rustix do not wrap (signalfd and the signal
//! mask, kill(-1), dup2 onto 0-2) also live here: every `unsafe` block of
//! the init is in this file.
#![allow(unsafe_code)]

use rustix::mount::MountFlags;
use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

/// Character or block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
}

/// The side effects of the boot.
pub trait Sys {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &CStr,
    ) -> io::Result<()>;
    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Unmounts; `detach` makes it lazy (never blocks on a busy mount).
    fn unmount(&self, target: &Path, detach: bool) -> io::Result<()>;
    fn mknod(
        &self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()>;
    /// Makes `link` point at `target`, replacing what was there.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// chdir into `new_root`, move it onto /, chroot into it: the last
    /// steps of switch_root before the exec.
    fn enter_root(&self, new_root: &Path) -> io::Result<()>;
}

/// The real thing.
pub struct Kernel;

impl Sys for Kernel {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &CStr,
    ) -> io::Result<()> {
        Ok(rustix::mount::mount(source, target, fstype, flags, data)?)
    }

    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        Ok(rustix::mount::mount_move(from, to)?)
    }

    fn unmount(&self, target: &Path, detach: bool) -> io::Result<()> {
        let flags = if detach {
            rustix::mount::UnmountFlags::DETACH
        } else {
            rustix::mount::UnmountFlags::empty()
        };
        Ok(rustix::mount::unmount(target, flags)?)
    }

    fn mknod(
        &self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
        let kind = match kind {
            NodeKind::Char => FileType::CharacterDevice,
            NodeKind::Block => FileType::BlockDevice,
        };
        Ok(mknodat(
            CWD,
            path,
            kind,
            Mode::from_raw_mode(mode),
            makedev(major, minor),
        )?)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        replace_symlink(target, link)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn enter_root(&self, new_root: &Path) -> io::Result<()> {
        rustix::process::chdir(new_root)?;
        rustix::mount::mount_move(".", "/")?;
        rustix::process::chroot(".")?;
        Ok(rustix::process::chdir("/")?)
    }
}

fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, link)
}

/// One recorded side effect.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: String,
        target: std::path::PathBuf,
        fstype: String,
        read_only: bool,
        data: String,
    },
    MoveMount {
        from: std::path::PathBuf,
        to: std::path::PathBuf,
    },
    Unmount {
        target: std::path::PathBuf,
        detach: bool,
    },
    Mknod {
        path: std::path::PathBuf,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    },
    Symlink {
        target: std::path::PathBuf,
        link: std::path::PathBuf,
    },
    RemoveFile(std::path::PathBuf),
    RemoveDir(std::path::PathBuf),
    EnterRoot(std::path::PathBuf),
}

/// The recording fake: every call is stored; nodes become empty files,
/// links real links, directories real directories (under a test's temp
/// root); mounts only recorded, and refused (ENODEV) for targets in
/// `fail_mounts` and filesystem types in `missing_fs`.
#[cfg(test)]
#[derive(Default)]
pub struct Recorder {
    pub calls: std::sync::Mutex<Vec<Call>>,
    pub fail_mounts: Vec<std::path::PathBuf>,
    pub missing_fs: Vec<&'static str>,
}

#[cfg(test)]
impl Recorder {
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
    }
}

#[cfg(test)]
impl Sys for Recorder {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &CStr,
    ) -> io::Result<()> {
        self.record(Call::Mount {
            source: source.to_owned(),
            target: target.to_owned(),
            fstype: fstype.to_owned(),
            read_only: flags.contains(MountFlags::RDONLY),
            data: data.to_string_lossy().into_owned(),
        });
        if self.fail_mounts.iter().any(|t| t == target) || self.missing_fs.contains(&fstype) {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        Ok(())
    }

    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(Call::MoveMount {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        Ok(())
    }

    fn unmount(&self, target: &Path, detach: bool) -> io::Result<()> {
        self.record(Call::Unmount {
            target: target.to_owned(),
            detach,
        });
        Ok(())
    }

    fn mknod(
        &self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        self.record(Call::Mknod {
            path: path.to_owned(),
            kind,
            mode,
            major,
            minor,
        });
        std::fs::write(path, b"")
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Call::Symlink {
            target: target.to_owned(),
            link: link.to_owned(),
        });
        replace_symlink(target, link)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.record(Call::RemoveFile(path.to_owned()));
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::RemoveDir(path.to_owned()));
        std::fs::remove_dir(path)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn enter_root(&self, new_root: &Path) -> io::Result<()> {
        self.record(Call::EnterRoot(new_root.to_owned()));
        Ok(())
    }
}

/// The signals PID 1 takes through its signalfd instead of handlers.
pub const HANDLED_SIGNALS: &[libc::c_int] = &[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT];

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &sig in HANDLED_SIGNALS {
        // SAFETY: as above; `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set
}

/// Blocks the handled signals in this thread (and threads started after)
/// and returns a non-blocking signalfd that reads them. Children inherit
/// the mask (std does not reset it): every child is started through
/// [`unblock_in_child`], and the real init gets [`unblock_signals`].
pub fn signalfd() -> io::Result<OwnedFd> {
    let set = handled_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: -1 asks for a new fd; `set` is initialised.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unblocks the handled signals in the calling thread. Only `sigprocmask`,
/// which is async-signal-safe, so it may run between fork and exec.
pub fn unblock_signals() -> io::Result<()> {
    let set = handled_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The child gets the default signal mask back before it execs, so a
/// payload can be stopped with SIGTERM and sees its children exit.
pub fn unblock_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook only calls sigprocmask (async-signal-safe) and
    // touches no memory of the parent.
    unsafe {
        cmd.pre_exec(unblock_signals);
    }
}

/// Reads one pending signal number from a signalfd, if any.
pub fn read_signal(fd: &OwnedFd) -> Option<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: signalfd_siginfo is plain data, fully written by read.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes; fd is open.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (usize::try_from(n).ok() == Some(size)).then(|| i32::try_from(info.ssi_signo).unwrap_or(0))
}

/// Sends `sig` to every process but PID 1 itself (kill(-1) as PID 1).
pub fn kill_all(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory arguments.
    if unsafe { libc::kill(-1, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `fd` is an open descriptor.
pub fn fd_is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0
}

/// Makes `target` a duplicate of `src` (dup2).
pub fn dup_onto(src: &OwnedFd, target: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 has no memory arguments; `src` is open.
    if unsafe { libc::dup2(src.as_raw_fd(), target) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The child starts a new session and takes the console (its inherited
/// stdin) as controlling terminal, so a shell there has job control and
/// Ctrl-C reaches it; its signal mask is reset as in [`unblock_in_child`].
pub fn console_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe and touch
    // no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            unblock_signals()?;
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 1) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
