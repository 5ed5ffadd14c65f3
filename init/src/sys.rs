//! The few syscalls std and rustix do not wrap: signalfd, the signal mask,
//! kill(-1), and checking which of fds 0/1/2 are open. Every `unsafe`
//! block of the init lives here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

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
