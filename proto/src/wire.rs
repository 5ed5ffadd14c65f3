//! The framing of the events port, both directions.
//!
//! Every record starts with one header line, ASCII only and grep-able:
//!
//! ```text
//! @kestrel 1.234567890 module name=virtio_blk start_ns=1230000000 dur_us=812 thread=1 result=ok
//! @kestrel 2.000000000 out fd=1 len=6
//! hello
//! ```
//!
//! - `@kestrel` marks the line, so records can share a stream with other
//!   text (the serial console);
//! - the sender's CLOCK_BOOTTIME in seconds with nanoseconds (9 digits);
//! - the kind, `[a-z_]+`;
//! - fields `key=value`, keys `[a-z0-9_]+`; a value is any bytes, with every
//!   byte outside `!`..`~` and `\` itself written as `\xHH`, so a header
//!   never holds a raw space or newline inside a value;
//! - a last field `len=N` says that exactly N raw bytes follow the newline:
//!   payload output and stdin travel unescaped, any byte values, at full
//!   speed. N is at most [`CHUNK`].
//!
//! Limits are named and hold for anything the encoder makes: text values
//! are cut at [`MAX_TEXT`] (with a visible mark), so a header never exceeds
//! [`MAX_HEADER`] and a frame never exceeds the decoder's bounds.

use std::fmt;

/// Marks a record line.
pub const PREFIX: &str = "@kestrel";
/// Name of the virtio-console port that carries the records.
pub const EVENTS_PORT: &str = "org.kestrel.events";
/// Largest payload of one frame: output and stdin go in chunks of at most
/// this (the size of a Linux pipe's default buffer, so one read of a full
/// pipe is one frame).
pub const CHUNK: usize = 64 * 1024;
/// Longest text value before escaping; longer values are cut and end with
/// [`TRUNCATED_MARK`]. Messages and paths are far shorter in practice.
pub const MAX_TEXT: usize = 2048;
/// Appended to a text value that was cut at [`MAX_TEXT`].
pub const TRUNCATED_MARK: &str = "...[truncated]";
/// Longest header line, newline included. No record has more than six
/// text fields, each at most 4 * ([`MAX_TEXT`] + the mark) escaped bytes.
pub const MAX_HEADER: usize = 64 * 1024;
/// The key of the payload length, always the last field of its header.
pub const LEN_KEY: &str = "len";

/// One frame, as read off the stream, before it is typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The sender's CLOCK_BOOTTIME, nanoseconds.
    pub t_ns: u64,
    pub kind: String,
    /// Fields in order, values unescaped (`len` is not among them).
    pub fields: Vec<(String, Vec<u8>)>,
    /// The raw bytes after the header, when it had `len=`.
    pub payload: Option<Vec<u8>>,
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("not a kestrel record (no {PREFIX} prefix): {0:?}")]
    NotARecord(String),
    #[error("record header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("bad timestamp {0:?}")]
    BadTime(String),
    #[error("bad kind {0:?}")]
    BadKind(String),
    #[error("bad field {0:?}")]
    BadField(String),
    #[error("bad escape in the value of {0:?}")]
    BadEscape(String),
    #[error("payload of {0} bytes, more than the limit of {CHUNK}")]
    PayloadTooLong(u64),
    #[error("a payload where none may be (`{LEN_KEY}=` in a console line)")]
    UnexpectedPayload,
    #[error("the stream ended inside a record ({0} bytes left over)")]
    Truncated(usize),
}

/// A short, printable excerpt of bad input for error messages.
fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b.get(..80).unwrap_or(b));
    s.into_owned()
}

fn is_plain(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'\\'
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// Appends `value` escaped to `out`.
pub fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in value {
        if is_plain(b) {
            out.push(b);
        } else {
            let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            out.extend_from_slice(&[b'\\', b'x', hi, lo]);
        }
    }
}

/// The inverse of [`escape_into`]; None for a value it cannot have made.
pub fn unescape(value: &[u8]) -> Option<Vec<u8>> {
    fn nibble(h: u8) -> Option<u8> {
        match h {
            b'0'..=b'9' => Some(h - b'0'),
            b'a'..=b'f' => Some(h - b'a' + 10),
            b'A'..=b'F' => Some(h - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'\\' {
            let [b'x', h, l, tail @ ..] = tail else {
                return None;
            };
            out.push(nibble(*h)? << 4 | nibble(*l)?);
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

/// Writes one frame into a buffer. Keys are compile-time names of the
/// record types, `[a-z0-9_]+`.
pub struct FrameWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> FrameWriter<'a> {
    /// Starts a header: prefix, time, kind.
    pub fn new(out: &'a mut Vec<u8>, t_ns: u64, kind: &str) -> Self {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{PREFIX} {}.{:09} {kind}",
            t_ns / 1_000_000_000,
            t_ns % 1_000_000_000
        );
        FrameWriter { out }
    }

    fn key(&mut self, key: &str) {
        self.out.push(b' ');
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'=');
    }

    /// A number.
    pub fn num(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        use std::io::Write;
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// A text value, cut at [`MAX_TEXT`] bytes with [`TRUNCATED_MARK`].
    pub fn text(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.key(key);
        match value.get(..MAX_TEXT) {
            Some(cut) if value.len() > MAX_TEXT => {
                escape_into(self.out, cut);
                escape_into(self.out, TRUNCATED_MARK.as_bytes());
            }
            _ => escape_into(self.out, value),
        }
        self
    }

    /// Ends the header (no payload).
    pub fn end(&mut self) {
        self.out.push(b'\n');
    }

    /// Ends the header with `len=N` and appends the payload raw. The
    /// caller cuts payloads at [`CHUNK`]; a longer one is cut here rather
    /// than sent as a frame the reader refuses.
    pub fn end_with_payload(&mut self, payload: &[u8]) {
        let payload = payload.get(..CHUNK).unwrap_or(payload);
        self.num(LEN_KEY, payload.len());
        self.out.push(b'\n');
        self.out.extend_from_slice(payload);
    }
}

fn parse_time(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?;
    let (secs, nanos) = s.split_once('.')?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if nanos.len() != 9 || !digits(secs) || !digits(nanos) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let nanos: u64 = nanos.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A parsed header: the frame without its payload, and the payload's length.
fn parse_header(line: &[u8]) -> Result<(Frame, Option<usize>), WireError> {
    if line.len() >= MAX_HEADER {
        return Err(WireError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_prefix(PREFIX.as_bytes())
        .and_then(|r| r.strip_prefix(b" "))
        .ok_or_else(|| WireError::NotARecord(excerpt(line)))?;
    let mut parts = rest.split(|&b| b == b' ');
    let time = parts.next().unwrap_or_default();
    let t_ns = parse_time(time).ok_or_else(|| WireError::BadTime(excerpt(time)))?;
    let kind = parts.next().unwrap_or_default();
    if kind.is_empty() || !kind.iter().all(|&b| is_key_byte(b)) {
        return Err(WireError::BadKind(excerpt(kind)));
    }
    let mut fields = Vec::new();
    let mut len = None;
    for part in parts {
        let bad = || WireError::BadField(excerpt(part));
        if len.is_some() {
            // `len` must be last: nothing may follow it on the line.
            return Err(bad());
        }
        let eq = part.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = part.split_at(eq);
        let value = value.get(1..).unwrap_or_default();
        if key.is_empty() || !key.iter().all(|&b| is_key_byte(b)) {
            return Err(bad());
        }
        let key = String::from_utf8_lossy(key).into_owned();
        if key == LEN_KEY {
            let n: u64 = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?;
            if n > CHUNK as u64 {
                return Err(WireError::PayloadTooLong(n));
            }
            len = usize::try_from(n).ok();
            continue;
        }
        let value = unescape(value).ok_or_else(|| WireError::BadEscape(key.clone()))?;
        fields.push((key, value));
    }
    let frame = Frame {
        t_ns,
        kind: String::from_utf8_lossy(kind).into_owned(),
        fields,
        payload: None,
    };
    Ok((frame, len))
}

/// Parses one line that must be a whole record without payload (a record
/// on the serial console, or a line of a saved log).
pub fn parse_line(line: &[u8]) -> Result<Frame, WireError> {
    match parse_header(line)? {
        (frame, None) => Ok(frame),
        (_, Some(_)) => Err(WireError::UnexpectedPayload),
    }
}

/// A streaming frame decoder with bounded memory: at most one header
/// ([`MAX_HEADER`]) and one payload ([`CHUNK`]) plus what was fed last.
/// A bad header is reported once and skipped up to its newline; the
/// decoder then goes on with the next line.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    start: usize,
    /// Inside an over-long line: drop bytes up to the next newline.
    skipping: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes fed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// At the end of the stream: an error when a frame was cut short.
    pub fn finish(&self) -> Option<WireError> {
        (self.buffered() > 0 && !self.skipping).then(|| WireError::Truncated(self.buffered()))
    }

    /// The next complete frame, an error for bad input (skipped), or None
    /// when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, WireError>> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let newline = pending.iter().position(|&b| b == b'\n');
        if self.skipping {
            match newline {
                Some(nl) => {
                    self.start += nl + 1;
                    self.skipping = false;
                }
                None => {
                    self.start = self.buf.len();
                    return None;
                }
            }
            return self.next_frame();
        }
        let Some(nl) = newline else {
            if pending.len() >= MAX_HEADER {
                self.start = self.buf.len();
                self.skipping = true;
                return Some(Err(WireError::TooLong));
            }
            return None;
        };
        let line = pending.get(..=nl).unwrap_or_default();
        match parse_header(line) {
            Err(e) => {
                self.start += nl + 1;
                Some(Err(e))
            }
            Ok((frame, None)) => {
                self.start += nl + 1;
                Some(Ok(frame))
            }
            Ok((mut frame, Some(len))) => {
                let payload = pending.get(nl + 1..nl + 1 + len)?;
                frame.payload = Some(payload.to_vec());
                self.start += nl + 1 + len;
                Some(Ok(frame))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(
        out: &mut Vec<u8>,
        t: u64,
        kind: &str,
        fields: &[(&str, &[u8])],
        payload: Option<&[u8]>,
    ) {
        let mut w = FrameWriter::new(out, t, kind);
        for (k, v) in fields {
            w.text(k, v);
        }
        match payload {
            Some(p) => w.end_with_payload(p),
            None => w.end(),
        }
    }

    fn decode_all(bytes: &[u8], step: usize) -> Vec<Result<Frame, WireError>> {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            d.feed(piece);
            while let Some(f) = d.next_frame() {
                got.push(f);
            }
        }
        got
    }

    #[test]
    fn escapes_spaces_backslashes_and_non_ascii() {
        let mut out = Vec::new();
        frame(
            &mut out,
            0,
            "warn",
            &[("msg", "a b\\ ü\n".as_bytes())],
            None,
        );
        assert_eq!(
            out,
            b"@kestrel 0.000000000 warn msg=a\\x20b\\x5c\\x20\\xc3\\xbc\\x0a\n"
        );
        let f = parse_line(&out).unwrap();
        assert_eq!(
            f.fields,
            vec![("msg".to_owned(), "a b\\ ü\n".as_bytes().to_vec())]
        );
    }

    #[test]
    fn payloads_are_raw_and_exact() {
        let mut out = Vec::new();
        frame(
            &mut out,
            5,
            "out",
            &[("fd", b"1")],
            Some(b"a\nb\0\xff @kestrel 1 x\n"),
        );
        frame(&mut out, 6, "in_eof", &[], None);
        assert!(out.starts_with(b"@kestrel 0.000000005 out fd=1 len=19\na\nb\0"));
        for step in [1, 3, 7, 1000] {
            let got = decode_all(&out, step);
            assert_eq!(got.len(), 2, "step {step}");
            let first = got[0].as_ref().unwrap();
            assert_eq!(
                first.payload.as_deref(),
                Some(&b"a\nb\0\xff @kestrel 1 x\n"[..])
            );
            assert_eq!(got[1].as_ref().unwrap().kind, "in_eof");
        }
    }

    #[test]
    fn long_text_is_cut_visibly_and_fits_the_header() {
        let mut out = Vec::new();
        let big = vec![b' '; 10 * MAX_TEXT];
        frame(
            &mut out,
            1,
            "warn",
            &[
                ("a", &big),
                ("b", &big),
                ("c", &big),
                ("d", &big),
                ("e", &big),
                ("f", &big),
            ],
            None,
        );
        assert!(out.len() < MAX_HEADER, "{}", out.len());
        let f = parse_line(&out).unwrap();
        assert!(f.fields[0].1.ends_with(TRUNCATED_MARK.as_bytes()));
        assert_eq!(f.fields[0].1.len(), MAX_TEXT + TRUNCATED_MARK.len());
    }

    #[test]
    fn rejects_malformed_headers_and_goes_on() {
        assert!(matches!(
            parse_line(b"hello"),
            Err(WireError::NotARecord(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.5 x"),
            Err(WireError::BadTime(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 Bad"),
            Err(WireError::BadKind(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 k novalue"),
            Err(WireError::BadField(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 k a=\\x4"),
            Err(WireError::BadEscape(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 99999999999999999999.000000000 k"),
            Err(WireError::BadTime(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 k len=1"),
            Err(WireError::UnexpectedPayload)
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 k len=1 a=b"),
            Err(WireError::BadField(_))
        ));
        assert!(matches!(
            parse_line(b"@kestrel 1.000000000 k len=99999999"),
            Err(WireError::PayloadTooLong(99999999))
        ));
        let got = decode_all(b"junk\n@kestrel 1.000000000 ready\n", 4);
        assert!(matches!(got[0], Err(WireError::NotARecord(_))));
        assert_eq!(got[1].as_ref().unwrap().kind, "ready");
    }

    #[test]
    fn an_endless_line_is_one_error_and_bounded_memory() {
        let mut d = Decoder::new();
        let mut errors = 0;
        for _ in 0..64 {
            d.feed(&[b'x'; 8192]);
            while let Some(f) = d.next_frame() {
                assert_eq!(f, Err(WireError::TooLong));
                errors += 1;
            }
            assert!(d.buffered() <= MAX_HEADER + 8192);
        }
        d.feed(b"\n@kestrel 0.000000001 ready\n");
        assert_eq!(d.next_frame().unwrap().unwrap().kind, "ready");
        assert_eq!(errors, 1);
        assert_eq!(d.finish(), None);
        d.feed(b"@kestrel 0.000000001 out len=5\nab");
        assert!(d.next_frame().is_none());
        assert!(matches!(d.finish(), Some(WireError::Truncated(_))));
    }

    proptest! {
        #[test]
        fn any_frames_round_trip_in_any_pieces(
            frames in proptest::collection::vec((
                any::<u64>(),
                "[a-z_]{1,12}",
                proptest::collection::vec(("[a-z0-9_]{1,8}".prop_filter("reserved", |k| k != LEN_KEY), proptest::collection::vec(any::<u8>(), 0..64)), 0..6),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            ), 1..8),
            step in 1usize..200,
        ) {
            let mut out = Vec::new();
            for (t, kind, fields, payload) in &frames {
                let borrowed: Vec<(&str, &[u8])> = fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                frame(&mut out, *t, kind, &borrowed, payload.as_deref());
            }
            let got = decode_all(&out, step);
            prop_assert_eq!(got.len(), frames.len());
            for (g, (t, kind, fields, payload)) in got.into_iter().zip(frames) {
                let g = g.unwrap();
                prop_assert_eq!(g.t_ns, t);
                prop_assert_eq!(g.kind, kind);
                prop_assert_eq!(g.fields, fields);
                prop_assert_eq!(g.payload, payload);
            }
        }

        #[test]
        fn the_decoder_never_panics_and_stays_bounded(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..20),
        ) {
            let mut d = Decoder::new();
            for p in &pieces {
                d.feed(p);
                while d.next_frame().is_some() {}
                prop_assert!(d.buffered() <= MAX_HEADER + CHUNK + 2000);
            }
        }
    }
}
