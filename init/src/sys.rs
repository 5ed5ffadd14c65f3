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
use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
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
/// [`spawn`], and the real init gets [`unblock_signals`].
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

/// How a child relates to PID 1's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Its own process group, so signals to the group spare PID 1.
    Group,
    /// A new session with the console (its stdin) as controlling
    /// terminal, so a shell there has job control and Ctrl-C reaches it.
    Console,
}

/// Who a child runs as.
pub struct Credentials<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
}

/// A program to start: everything prepared before the fork, so the child
/// only makes async-signal-safe calls.
pub struct Spawn<'a> {
    /// The path to exec (no PATH search here), inside `root`.
    pub program: &'a CStr,
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    /// chroot here first (the payload's own root).
    pub root: Option<&'a CStr>,
    pub cwd: Option<&'a CStr>,
    /// Drop root for this user (after chroot, before exec).
    pub user: Option<Credentials<'a>>,
    /// Put on fds 0, 1, 2; None keeps PID 1's (the console).
    pub stdio: [Option<BorrowedFd<'a>>; 3],
    pub session: Session,
}

/// A null-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// fork + execve, the way std::process does it but without its weight
/// (the init's size is a target): the child resets its signal mask, takes
/// its session and fds, and execs; an exec failure comes back as the
/// errno through a close-on-exec pipe.
pub fn spawn(spec: &Spawn<'_>) -> io::Result<rustix::process::Pid> {
    use std::os::fd::{AsRawFd, RawFd};
    let argv = pointers(spec.argv);
    let envp = pointers(spec.envp);
    let stdio: [RawFd; 3] = spec.stdio.map(|fd| fd.map_or(-1, |fd| fd.as_raw_fd()));
    let cwd = spec.cwd.map_or(std::ptr::null(), CStr::as_ptr);
    let root = spec.root.map_or(std::ptr::null(), CStr::as_ptr);
    let groups: Vec<libc::gid_t> = spec
        .user
        .as_ref()
        .map(|u| u.groups.to_vec())
        .unwrap_or_default();
    let ids = spec.user.as_ref().map(|u| (u.uid, u.gid));
    let (err_read, err_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let set = handled_set();
    // SAFETY: fork has no memory arguments; the child below only makes
    // async-signal-safe calls on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child: async-signal-safe calls only, on pointers
        // that stay valid (the parent's memory, copied by fork); it never
        // returns (execve or _exit).
        unsafe {
            let fail = |fd: RawFd| -> ! {
                let errno = *libc::__errno_location();
                libc::write(
                    fd,
                    (&errno as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>(),
                );
                libc::_exit(127)
            };
            let err_fd = err_write.as_raw_fd();
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            match spec.session {
                Session::Group => {
                    if libc::setpgid(0, 0) < 0 {
                        fail(err_fd);
                    }
                }
                Session::Console => {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 1) < 0 {
                        fail(err_fd);
                    }
                }
            }
            for (target, fd) in (0..).zip(stdio) {
                if fd >= 0 && libc::dup2(fd, target) < 0 {
                    fail(err_fd);
                }
            }
            if !root.is_null() && (libc::chroot(root) < 0 || libc::chdir(c"/".as_ptr()) < 0) {
                fail(err_fd);
            }
            if !cwd.is_null() && libc::chdir(cwd) < 0 {
                fail(err_fd);
            }
            if let Some((uid, gid)) = ids {
                // Groups first: after setuid there is no right to change them.
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0
                {
                    fail(err_fd);
                }
            }
            libc::execve(spec.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(err_fd)
        }
    }
    drop(err_write);
    let mut errno = [0u8; 4];
    let got = loop {
        match rustix::io::read(&err_read, &mut errno) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other,
        }
    };
    let pid =
        rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
    match got {
        Ok(4) => {
            // The child failed before exec and exited: reap it here.
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        _ => Ok(pid),
    }
}

/// fork(2): Some(child) in the parent, None in the child. PID 1 has no
/// threads, so the child may run ordinary code; it must end with
/// [`exit_now`], never by returning into PID 1's code.
pub fn fork() -> io::Result<Option<rustix::process::Pid>> {
    // SAFETY: fork has no memory arguments; the process is single threaded
    // (the init starts no threads), so the child's copy of every lock and
    // allocator state is consistent.
    let pid = unsafe { libc::fork() };
    match pid {
        p if p < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(rustix::process::Pid::from_raw(p)),
    }
}

/// _exit(2): ends a forked child without running PID 1's cleanup.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// execv in this process (the real init replaces PID 1); returns only
/// the error.
pub fn exec(program: &CStr, argv: &[CString]) -> io::Error {
    let argv = pointers(argv);
    // SAFETY: `program` and the pointers in `argv` are valid C strings
    // that outlive the call; the array is null-terminated.
    unsafe { libc::execv(program.as_ptr(), argv.as_ptr()) };
    io::Error::last_os_error()
}

/// Interface requests for the network's ioctls (SIOCSIF*): the name of an
/// interface, NUL-terminated, at most IFNAMSIZ bytes.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(addr: [u8; 4]) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; sockaddr is the
    // generic view the ioctls take.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(sock: &OwnedFd, request: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `arg` points to the struct `request` expects, alive for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, arg) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn inet_socket() -> io::Result<OwnedFd> {
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    Ok(socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Brings an interface up (SIOCSIFFLAGS with IFF_UP).
pub fn link_up(name: &str) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    ioctl(
        &sock,
        libc::SIOCGIFFLAGS,
        (&mut req as *mut libc::ifreq).cast(),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS,
        (&mut req as *mut libc::ifreq).cast(),
    )
}

/// Gives an interface an IPv4 address and netmask.
pub fn set_address(name: &str, addr: [u8; 4], netmask: [u8; 4]) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(
        &sock,
        libc::SIOCSIFADDR,
        (&mut req as *mut libc::ifreq).cast(),
    )?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        (&mut req as *mut libc::ifreq).cast(),
    )
}

/// Adds the default route through `gateway` (SIOCADDRT).
pub fn add_default_route(gateway: [u8; 4]) -> io::Result<()> {
    let sock = inet_socket()?;
    // SAFETY: rtentry is plain data; all zeroes is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_in([0; 4]);
    route.rt_genmask = sockaddr_in([0; 4]);
    route.rt_gateway = sockaddr_in(gateway);
    route.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
    ioctl(
        &sock,
        libc::SIOCADDRT,
        (&mut route as *mut libc::rtentry).cast(),
    )
}
