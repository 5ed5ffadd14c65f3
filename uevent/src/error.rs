//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while parsing, receiving or walking uevents.
///
/// Parse errors carry the byte offset of the offending record so a captured
/// datagram can be inspected; I/O errors carry the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    /// The input was empty.
    #[error("empty uevent")]
    Empty,
    /// The input is larger than [`crate::UEVENT_MAX`].
    #[error("uevent of {len} bytes is larger than the maximum of {max} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The bound it exceeded.
        max: usize,
    },
    /// The datagram is udev's own `libudev` multicast format, not the kernel's.
    #[error("datagram is in libudev's format, not the kernel's; only kernel uevents are accepted")]
    LibudevFormat,
    /// The netlink datagram does not end with a NUL byte.
    #[error("uevent datagram is not NUL-terminated")]
    Unterminated,
    /// The netlink datagram does not start with `ACTION@DEVPATH`.
    #[error("uevent datagram does not start with an ACTION@DEVPATH header")]
    MissingHeader,
    /// The action is none of the kernel's.
    #[error("unknown uevent action {0:?}")]
    UnknownAction(String),
    /// The devpath is empty, does not start with `/`, or contains a NUL byte.
    #[error("invalid devpath {0:?}")]
    InvalidDevpath(String),
    /// An empty `KEY=VALUE` record in the middle of the input.
    #[error("empty record at byte {offset}")]
    EmptyRecord {
        /// Byte offset of the record.
        offset: usize,
    },
    /// A record without `=`.
    #[error("record without '=' at byte {offset}")]
    MissingEquals {
        /// Byte offset of the record.
        offset: usize,
    },
    /// A record with an empty key (`=VALUE`).
    #[error("record with an empty key at byte {offset}")]
    EmptyKey {
        /// Byte offset of the record.
        offset: usize,
    },
    /// SEQNUM, MAJOR or MINOR is not a decimal number that fits.
    #[error("{key} is not a valid decimal number")]
    InvalidNumber {
        /// The key whose value is invalid.
        key: &'static str,
    },
    /// The `ACTION=` or `DEVPATH=` record disagrees with the datagram header.
    #[error("{key}= record disagrees with the ACTION@DEVPATH header")]
    Inconsistent {
        /// The key that disagrees.
        key: &'static str,
    },
    /// A filesystem operation failed.
    #[error("failed to {op} {path}: {source}")]
    Io {
        /// What was being done ("read", "open directory", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("failed to {op} the uevent netlink socket: {source}")]
    Socket {
        /// What was being done ("create", "bind", "receive on", ...).
        op: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The kernel's datagram was larger than the receive buffer (`MSG_TRUNC`).
    #[error("uevent datagram truncated: {len} bytes do not fit the {max}-byte buffer")]
    Truncated {
        /// The datagram's length as reported by the kernel.
        len: usize,
        /// The buffer size.
        max: usize,
    },
    /// The socket's receive buffer overflowed (`ENOBUFS`): events were lost.
    /// The caller must re-walk /sys to learn the current state.
    #[error("uevent netlink socket overflowed (ENOBUFS): events were lost, re-walk /sys")]
    Overflow,
    /// The walk found more devices than [`crate::walk::WALK_MAX_DEVICES`].
    #[error("walk of {path} found more than {max} devices")]
    TooManyDevices {
        /// The sysfs root being walked.
        path: PathBuf,
        /// The bound.
        max: usize,
    },
}
