//! The event wire format: the one definition shared by the writer (the init,
//! in the guest) and the reader (the host tools).
//!
//! One record per line, ASCII only, grep-able:
//!
//! ```text
//! @kestrel 1.234567890 module name=virtio_blk dur_us=812 thread=1 result=ok
//! ```
//!
//! - `@kestrel` marks the line (so records can share a stream with other text);
//! - the guest's CLOCK_BOOTTIME in seconds with nanoseconds (9 digits);
//! - the kind, `[a-z_]+`;
//! - fields `key=value`; a value is arbitrary bytes with every byte outside
//!   `!`..`~`, and `\` itself, written as `\xHH`. So spaces, newlines,
//!   non-UTF-8 and non-ASCII values survive unchanged, and a line never holds
//!   a raw space inside a value.
//!
//! The guest writes records; the host answers a `poweroff` record with the
//! line [`ACK`] so the guest knows everything before it was received.

use std::fmt;

/// Marks a record line.
pub const PREFIX: &str = "@kestrel";
/// Name of the virtio-console port that carries the events.
pub const EVENTS_PORT: &str = "org.kestrel.events";
/// What the host writes back to the events port after it has read `poweroff`.
pub const ACK: &[u8] = b"ack\n";
/// A record longer than this is refused by the parser (output is chunked
/// well below it by the writer).
pub const MAX_LINE: usize = 64 * 1024;

/// Kinds of records, in rough boot order. Analysis keys on these names.
pub mod kind {
    /// First thing PID 1 does; fields: `version`.
    pub const INIT_START: &str = "init_start";
    /// A filesystem mounted; fields: `target`, `fstype`.
    pub const MOUNT: &str = "mount";
    /// One record of the kernel log forwarded from /dev/kmsg; fields:
    /// `prio`, `seq`, `ts_us` (kernel monotonic), `msg`.
    pub const KMSG: &str = "kmsg";
    /// Device discovery finished a pass; fields: `devices`, `new_modaliases`.
    pub const COLDPLUG: &str = "coldplug";
    /// A module load plan was made; fields: `modules`, `threads`.
    pub const MODULES_PLAN: &str = "modules_plan";
    /// One module load attempt; fields: `name`, `start_ns`, `dur_us`,
    /// `thread`, `result` (`ok`, `exists`, `error`; a module skipped because
    /// a dependency failed is an `error` saying so), `error`.
    pub const MODULE: &str = "module";
    /// All modules of the plan were tried; fields: `loaded`, `failed`, `skipped`.
    pub const MODULES_DONE: &str = "modules_done";
    /// A virtio port the init waited for appeared; fields: `name`, `dev`.
    pub const PORT_OPEN: &str = "port_open";
    /// Everything the hand-over needs is there; no fields.
    pub const READY: &str = "ready";
    /// The root filesystem was mounted; fields: `dev`, `fstype`, `mode`
    /// (`ro`/`rw`), `spec` (as given by `root=`).
    pub const ROOT: &str = "root";
    /// The init is about to exec the real init in the new root; fields: `init`.
    pub const SWITCH_ROOT: &str = "switch_root";
    /// The payload was started; fields: `pid`, `argv` (each arg its own `arg` field).
    pub const PAYLOAD_START: &str = "payload_start";
    /// Payload output; fields: `fd` (1 or 2), `data`.
    pub const OUTPUT: &str = "out";
    /// The payload ended; fields: `status` (exit code, or 128+N for signal N),
    /// and `signal` when killed by one.
    pub const PAYLOAD_EXIT: &str = "payload_exit";
    /// Something went wrong; fields: `msg`, `fatal` (`yes`/`no`).
    pub const ERROR: &str = "error";
    /// A warning that does not stop the boot; fields: `msg`.
    pub const WARN: &str = "warn";
    /// The init is about to power off; fields: `status` (the boot's result),
    /// `dropped` (events lost to a full buffer).
    pub const POWEROFF: &str = "poweroff";
}

/// A parsed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Guest CLOCK_BOOTTIME, nanoseconds.
    pub t_ns: u64,
    pub kind: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Event {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as (lossy) text.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The first value of `key` as an unsigned number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        std::str::from_utf8(self.get(key)?).ok()?.parse().ok()
    }

    /// Every value of `key`, in order (e.g. each `arg` of `payload_start`).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// Why a line is not a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventParseError {
    #[error("not a kestrel record (no {PREFIX} prefix)")]
    NotARecord,
    #[error("record longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("bad timestamp {0:?}")]
    BadTime(String),
    #[error("bad kind {0:?}")]
    BadKind(String),
    #[error("bad field {0:?}")]
    BadField(String),
    #[error("bad escape in value of {0:?}")]
    BadEscape(String),
}

fn is_plain(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'\\'
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// Appends `value` escaped to `out`.
pub fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    fn hex(nibble: u8) -> u8 {
        if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        }
    }
    for &b in value {
        if is_plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'\\', b'x', hex(b >> 4), hex(b & 0xf)]);
        }
    }
}

fn unescape(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'\\' {
            let (hex, tail) = match tail {
                [b'x', h, l, tail @ ..] => ([*h, *l], tail),
                _ => return None,
            };
            let s = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            rest = tail;
        } else {
            if !is_plain(b) {
                return None;
            }
            out.push(b);
            rest = tail;
        }
    }
    Some(out)
}

/// Appends one record, newline included, to `out`. Keys must be
/// `[a-z0-9_]+` (they are compile-time names in practice).
pub fn format_into(out: &mut Vec<u8>, t_ns: u64, kind: &str, fields: &[(&str, &[u8])]) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{PREFIX} {}.{:09} {kind}",
        t_ns / 1_000_000_000,
        t_ns % 1_000_000_000
    );
    for (k, v) in fields {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        escape_into(out, v);
    }
    out.push(b'\n');
}

/// Parses one line (with or without its trailing newline). Text before the
/// prefix is not allowed: a record starts its line.
pub fn parse_line(line: &[u8]) -> Result<Event, EventParseError> {
    if line.len() > MAX_LINE {
        return Err(EventParseError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_prefix(PREFIX.as_bytes())
        .and_then(|r| r.strip_prefix(b" "))
        .ok_or(EventParseError::NotARecord)?;
    let mut parts = rest.split(|&b| b == b' ');
    let time = parts.next().unwrap_or_default();
    let t_ns = parse_time(time)
        .ok_or_else(|| EventParseError::BadTime(String::from_utf8_lossy(time).into_owned()))?;
    let kind = parts.next().unwrap_or_default();
    if kind.is_empty() || !kind.iter().all(|&b| is_key_byte(b)) {
        return Err(EventParseError::BadKind(
            String::from_utf8_lossy(kind).into_owned(),
        ));
    }
    let mut fields = Vec::new();
    for part in parts {
        let bad = || EventParseError::BadField(String::from_utf8_lossy(part).into_owned());
        let eq = part.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = part.split_at(eq);
        let value = value.get(1..).unwrap_or_default();
        if key.is_empty() || !key.iter().all(|&b| is_key_byte(b)) {
            return Err(bad());
        }
        let key = String::from_utf8_lossy(key).into_owned();
        let value = unescape(value).ok_or_else(|| EventParseError::BadEscape(key.clone()))?;
        fields.push((key, value));
    }
    Ok(Event {
        t_ns,
        kind: String::from_utf8_lossy(kind).into_owned(),
        fields,
    })
}

fn parse_time(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?;
    let (secs, nanos) = s.split_once('.')?;
    if nanos.len() != 9 || !secs.bytes().all(|b| b.is_ascii_digit()) || secs.is_empty() {
        return None;
    }
    if !nanos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let nanos: u64 = nanos.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<(&str, &[u8])> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let mut out = Vec::new();
        format_into(&mut out, self.t_ns, &self.kind, &fields);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses_a_module_record() {
        let mut out = Vec::new();
        format_into(
            &mut out,
            1_234_567_890,
            kind::MODULE,
            &[("name", b"virtio_blk"), ("dur_us", b"812")],
        );
        assert_eq!(
            out,
            b"@kestrel 1.234567890 module name=virtio_blk dur_us=812\n"
        );
        let e = parse_line(&out).unwrap();
        assert_eq!(e.t_ns, 1_234_567_890);
        assert_eq!(e.kind, "module");
        assert_eq!(e.get_str("name").as_deref(), Some("virtio_blk"));
        assert_eq!(e.get_u64("dur_us"), Some(812));
    }

    #[test]
    fn escapes_spaces_backslashes_and_non_ascii() {
        let mut out = Vec::new();
        format_into(&mut out, 0, "out", &[("data", "a b\\ ü\n".as_bytes())]);
        assert_eq!(
            out,
            b"@kestrel 0.000000000 out data=a\\x20b\\x5c\\x20\\xc3\\xbc\\x0a\n"
        );
        assert_eq!(
            parse_line(&out).unwrap().get("data"),
            Some("a b\\ ü\n".as_bytes())
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(parse_line(b"hello"), Err(EventParseError::NotARecord));
        assert!(matches!(
            parse_line(b"@kestrel 1.5 x"),
            Err(EventParseError::BadTime(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 Bad"),
            Err(EventParseError::BadKind(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 k novalue"),
            Err(EventParseError::BadField(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 k a=\\x4"),
            Err(EventParseError::BadEscape(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 99999999999999999999.000000000 k"),
            Err(EventParseError::BadTime(_))
        ));
    }

    proptest! {
        #[test]
        fn any_fields_round_trip(
            t in any::<u64>(),
            kind in "[a-z_]{1,12}",
            fields in proptest::collection::vec(("[a-z0-9_]{1,8}", proptest::collection::vec(any::<u8>(), 0..64)), 0..6),
        ) {
            let borrowed: Vec<(&str, &[u8])> = fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let mut out = Vec::new();
            format_into(&mut out, t, &kind, &borrowed);
            prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            let e = parse_line(&out).unwrap();
            prop_assert_eq!(e.t_ns, t);
            prop_assert_eq!(e.kind, kind);
            prop_assert_eq!(e.fields, fields);
        }

        #[test]
        fn parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line(&line);
        }
    }
}
