//! The one syscall rustix cannot make soundly for us: `recvmsg` with
//! `SCM_CREDENTIALS` on a uevent socket.
//!
//! The kernel stamps its uevents with credentials `pid 0, uid 0, gid 0`.
//! rustix 1.x decodes `SCM_CREDENTIALS` into `UCred { pid: Pid, .. }` where
//! `Pid` wraps a `NonZeroI32`, so a kernel message would produce an invalid
//! value (undefined behaviour), and its `RecvAncillaryBuffer` decodes on drop.
//! So the call is made through libc here, and the control messages are decoded
//! by a small safe parser ([`parse_credentials`]).
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Credentials of the sender, as `struct ucred` carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// What one `recvmsg` returned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    /// Bytes of the datagram (its full length when `truncated`).
    pub len: usize,
    /// `MSG_TRUNC`: the datagram did not fit.
    pub truncated: bool,
    /// The sender's netlink port id, if the kernel gave a netlink address.
    pub sender_port: Option<u32>,
    /// `SCM_CREDENTIALS`, if present and not truncated (`MSG_CTRUNC`).
    pub credentials: Option<Credentials>,
}

/// Room for one `SCM_CREDENTIALS` message and then some, as `u64`s so that it
/// is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;

/// `recvmsg(fd, buf, MSG_DONTWAIT | MSG_TRUNC)`.
pub(crate) fn recv_with_credentials(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data (musl adds private padding fields, so
    // it cannot be built as a literal); all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = socklen_of::<libc::sockaddr_nl>();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points to a live local (`addr`, `iov`,
    // `control`) or to `buf`, with the lengths given, and they all outlive
    // the call; the kernel writes only within those bounds. MSG_TRUNC makes
    // the return value the datagram's real length, not the copied length.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // msg_controllen is size_t on glibc but socklen_t on musl.
    #[allow(clippy::useless_conversion)]
    let control_len = usize::try_from(msg.msg_controllen).unwrap_or(0);
    let control_bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let credentials = if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        None
    } else {
        parse_credentials(control_bytes.get(..control_len).unwrap_or(&[]))
    };
    let is_netlink = msg.msg_namelen >= socklen_of::<libc::sockaddr_nl>()
        && i32::from(addr.nl_family) == libc::AF_NETLINK;
    Ok(Received {
        len,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0 || len > buf.len(),
        sender_port: is_netlink.then_some(addr.nl_pid),
        credentials,
    })
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(mem::size_of::<T>()).unwrap_or(0)
}

/// Finds `SCM_CREDENTIALS` in the control buffer of a `recvmsg`.
///
/// Layout (Linux, `struct cmsghdr`): `size_t cmsg_len; int cmsg_level; int
/// cmsg_type;` then the data, each message padded to `size_t` alignment.
pub(crate) fn parse_credentials(control: &[u8]) -> Option<Credentials> {
    const WORD: usize = mem::size_of::<usize>();
    const HEADER: usize = WORD + 8;
    const UCRED: usize = 12;
    let mut pos = 0;
    while let Some(rest) = control.get(pos..) {
        let cmsg_len = usize::from_ne_bytes(rest.get(..WORD)?.try_into().ok()?);
        if cmsg_len < HEADER || cmsg_len > rest.len() {
            return None;
        }
        let level = i32::from_ne_bytes(rest.get(WORD..WORD + 4)?.try_into().ok()?);
        let kind = i32::from_ne_bytes(rest.get(WORD + 4..HEADER)?.try_into().ok()?);
        if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS && cmsg_len >= HEADER + UCRED
        {
            let data = rest.get(HEADER..HEADER + UCRED)?;
            return Some(Credentials {
                pid: i32::from_ne_bytes(data.get(0..4)?.try_into().ok()?),
                uid: u32::from_ne_bytes(data.get(4..8)?.try_into().ok()?),
                gid: u32::from_ne_bytes(data.get(8..12)?.try_into().ok()?),
            });
        }
        pos += cmsg_len.div_ceil(WORD) * WORD;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let word = mem::size_of::<usize>();
        let len = word + 8 + data.len();
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(data);
        v.resize(len.div_ceil(word) * word, 0);
        v
    }

    fn ucred(pid: i32, uid: u32, gid: u32) -> Vec<u8> {
        [pid.to_ne_bytes(), uid.to_ne_bytes(), gid.to_ne_bytes()].concat()
    }

    proptest::proptest! {
        #[test]
        fn any_control_bytes_are_safe(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            let _ = parse_credentials(&bytes);
        }
    }

    #[test]
    fn finds_kernel_credentials_with_pid_zero() {
        let c = cmsg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &ucred(0, 0, 0));
        assert_eq!(
            parse_credentials(&c),
            Some(Credentials {
                pid: 0,
                uid: 0,
                gid: 0
            })
        );
    }

    #[test]
    fn skips_other_messages_and_rejects_garbage() {
        let mut c = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &5i32.to_ne_bytes());
        c.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SCM_CREDENTIALS,
            &ucred(42, 1000, 1000),
        ));
        assert_eq!(
            parse_credentials(&c),
            Some(Credentials {
                pid: 42,
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(parse_credentials(&[]), None);
        assert_eq!(parse_credentials(&[0xff; 7]), None);
        let mut short = cmsg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &ucred(0, 0, 0));
        short.truncate(20);
        assert_eq!(parse_credentials(&short), None);
        // A zero-length header must not loop forever.
        assert_eq!(parse_credentials(&[0; 32]), None);
    }
}
