//! The NETLINK_KOBJECT_UEVENT socket: the kernel's multicast group only, every
//! sender checked, overflow reported, never blocking.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::BytesMut;
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{bind, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};

use crate::sys::{recv_with_credentials, Received};
use crate::{parse_netlink, Uevent, UeventError, UEVENT_MAX};

/// The kernel's uevent multicast group (udev's own re-broadcast is group 2,
/// which is never joined).
pub const KERNEL_GROUP: u32 = 1;

/// Receive buffer requested with `SO_RCVBUFFORCE` (as root), else
/// `SO_RCVBUF` (capped by `net.core.rmem_max`). It is a limit, not an
/// allocation; a coldplug burst of a few thousand events fits comfortably.
/// systemd-udevd asks for the same.
pub const RECV_BUFFER_BYTES: usize = 128 * 1024 * 1024;

/// How many `EINTR`s in a row `recv` retries before reporting the error.
const EINTR_RETRIES: usize = 16;

/// The receive arena: datagrams are received into it and split off as
/// `Bytes`, so one allocation serves many events.
const ARENA_BYTES: usize = 16 * UEVENT_MAX;

/// A non-blocking NETLINK_KOBJECT_UEVENT socket bound to the kernel's group.
///
/// Poll its fd for readability, then call [`UeventSocket::recv`] until it
/// returns `Ok(None)`.
pub struct UeventSocket {
    fd: OwnedFd,
    arena: BytesMut,
    dropped: u64,
    overflows: u64,
    forced_buffer: bool,
}

impl UeventSocket {
    /// Opens the socket: close-on-exec, non-blocking, `SO_PASSCRED`, a large
    /// receive buffer, bound to [`KERNEL_GROUP`] with a kernel-chosen port id.
    pub fn open() -> Result<Self, UeventError> {
        Self::open_with_buffer(RECV_BUFFER_BYTES)
    }

    /// [`UeventSocket::open`] with a receive buffer of `bytes` (the kernel
    /// doubles it and enforces a minimum); a small one is how tests provoke
    /// an overflow.
    pub fn open_with_buffer(bytes: usize) -> Result<Self, UeventError> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )
        .map_err(|e| sock_err("create", e))?;
        // SO_RCVBUFFORCE needs CAP_NET_ADMIN (PID 1 has it); fall back so that
        // unprivileged use (tests, tools) still works with a smaller buffer.
        let forced_buffer = sockopt::set_socket_recv_buffer_size_force(&fd, bytes).is_ok();
        if !forced_buffer {
            sockopt::set_socket_recv_buffer_size(&fd, bytes)
                .map_err(|e| sock_err("set SO_RCVBUF on", e))?;
        }
        sockopt::set_socket_passcred(&fd, true).map_err(|e| sock_err("set SO_PASSCRED on", e))?;
        bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP)).map_err(|e| sock_err("bind", e))?;
        Ok(UeventSocket {
            fd,
            arena: BytesMut::new(),
            dropped: 0,
            overflows: 0,
            forced_buffer,
        })
    }

    /// The next kernel uevent, or `Ok(None)` when nothing is pending.
    ///
    /// Datagrams not from the kernel (sender port id not 0, or credentials
    /// missing or not uid 0) are dropped and counted in
    /// [`UeventSocket::dropped`], and the next one is read. A datagram the
    /// kernel truncated is [`UeventError::Truncated`]; `ENOBUFS` is
    /// [`UeventError::Overflow`]: events were lost, re-walk /sys. After any
    /// error the socket stays usable.
    pub fn recv(&mut self) -> Result<Option<Uevent>, UeventError> {
        let mut eintr = 0;
        loop {
            if self.arena.capacity() < UEVENT_MAX {
                // Reuses the old allocation when every event split from it
                // has been dropped; allocates a fresh arena otherwise.
                self.arena.reserve(ARENA_BYTES);
            }
            self.arena.resize(UEVENT_MAX, 0);
            let got = recv_with_credentials(self.fd.as_fd(), &mut self.arena);
            let received = match got {
                Ok(r) => r,
                Err(e) => {
                    self.arena.clear();
                    match Errno::from_io_error(&e) {
                        Some(Errno::AGAIN) => return Ok(None),
                        Some(Errno::INTR) if eintr < EINTR_RETRIES => {
                            eintr += 1;
                            continue;
                        }
                        Some(Errno::NOBUFS) => {
                            self.overflows += 1;
                            return Err(UeventError::Overflow);
                        }
                        _ => {
                            return Err(UeventError::Socket {
                                op: "receive on",
                                source: e,
                            })
                        }
                    }
                }
            };
            if received.truncated {
                self.arena.clear();
                return Err(UeventError::Truncated {
                    len: received.len,
                    max: UEVENT_MAX,
                });
            }
            if !is_from_kernel(&received) {
                self.arena.clear();
                self.dropped += 1;
                continue;
            }
            self.arena.truncate(received.len);
            let datagram = self.arena.split().freeze();
            return parse_netlink(datagram).map(Some);
        }
    }

    /// How many datagrams were dropped because they were not from the kernel.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// How many times the receive buffer overflowed (`ENOBUFS`).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// True when `SO_RCVBUFFORCE` succeeded (the full [`RECV_BUFFER_BYTES`]).
    pub fn has_forced_buffer(&self) -> bool {
        self.forced_buffer
    }
}

impl std::fmt::Debug for UeventSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the arena: it holds up to 128 KiB of old datagrams.
        f.debug_struct("UeventSocket")
            .field("fd", &self.fd)
            .field("dropped", &self.dropped)
            .field("overflows", &self.overflows)
            .field("forced_buffer", &self.forced_buffer)
            .finish()
    }
}

impl AsFd for UeventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel sends from port id 0 with credentials uid 0. A process can
/// neither bind port id 0 nor forge its credentials (the kernel fills them).
fn is_from_kernel(r: &Received) -> bool {
    r.sender_port == Some(0) && r.credentials.is_some_and(|c| c.uid == 0)
}

fn sock_err(op: &'static str, e: Errno) -> UeventError {
    UeventError::Socket {
        op,
        source: io::Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Credentials;

    fn received(port: Option<u32>, creds: Option<Credentials>) -> Received {
        Received {
            len: 10,
            truncated: false,
            sender_port: port,
            credentials: creds,
        }
    }

    #[test]
    fn only_port_zero_with_root_credentials_is_the_kernel() {
        let root = Credentials {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let user = Credentials {
            pid: 77,
            uid: 1000,
            gid: 1000,
        };
        assert!(is_from_kernel(&received(Some(0), Some(root))));
        assert!(!is_from_kernel(&received(Some(4242), Some(root))));
        assert!(!is_from_kernel(&received(Some(0), Some(user))));
        assert!(!is_from_kernel(&received(Some(0), None)));
        assert!(!is_from_kernel(&received(None, Some(root))));
    }

    #[test]
    fn opens_and_reports_nothing_pending() {
        // Opening needs no privilege (NL_CFG_F_NONROOT_RECV); a sandbox
        // without netlink is the only reason to fail.
        let mut s = match UeventSocket::open() {
            Ok(s) => s,
            Err(e) => panic!("open failed: {e}"),
        };
        // Drain whatever the host is doing; it must end with Ok(None).
        let mut n = 0;
        loop {
            match s.recv() {
                Ok(None) => break,
                Ok(Some(_)) | Err(UeventError::Overflow) => n += 1,
                Err(e) => panic!("recv failed: {e}"),
            }
            assert!(n < 100_000, "socket never drained");
        }
        assert_eq!(s.dropped(), 0);
    }
}
