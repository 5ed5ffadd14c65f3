//! `fnmatch(3)` with flags 0 in the C locale, as kmod calls it for module
//! aliases, softdep and install patterns.
//!
//! Semantics follow glibc's `internal_fnmatch` for single-byte strings:
//! `*` matches any run of bytes (including `/` and a leading `.`, since kmod
//! passes no flags), `?` one byte, `[...]` a bracket expression with `!`/`^`
//! negation, ranges by byte value, `[:class:]`, `[=c=]` and `[.c.]`; a
//! backslash escapes the next byte; a trailing lone backslash never matches;
//! an unterminated `[` is an ordinary byte. The property test in this file
//! compares every answer with the C library's `fnmatch`.

/// Outcome of reading one bracket expression against one subject byte.
enum Bracket {
    /// Well-formed; `matched` says whether the byte is in the set (negation
    /// applied); `next` is the pattern index after the closing `]`.
    Done { matched: bool, next: usize },
    /// Unterminated: glibc treats the `[` as a literal byte.
    Literal,
    /// glibc returns FNM_NOMATCH for this position.
    Fail,
}

/// Does `pattern` match all of `subject` under `fnmatch(pattern, subject, 0)`?
pub fn fnmatch(pattern: &[u8], subject: &[u8]) -> bool {
    let mut p = 0usize;
    let mut s = 0usize;
    // Where to resume after the last `*`: (pattern index after it, subject index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        let step = match pattern.get(p) {
            None => {
                if s == subject.len() {
                    return true;
                }
                Step::Mismatch
            }
            Some(b'*') => {
                p += 1;
                star = Some((p, s));
                continue;
            }
            Some(&pc) => match subject.get(s) {
                None => Step::Mismatch,
                Some(&sc) => match pc {
                    b'?' => Step::Advance(p + 1),
                    b'\\' => match pattern.get(p + 1) {
                        // A trailing backslash loses.
                        None => Step::Mismatch,
                        Some(&esc) if esc == sc => Step::Advance(p + 2),
                        Some(_) => Step::Mismatch,
                    },
                    b'[' => match bracket(pattern, p + 1, sc) {
                        Bracket::Done {
                            matched: true,
                            next,
                        } => Step::Advance(next),
                        Bracket::Done { matched: false, .. } | Bracket::Fail => Step::Mismatch,
                        Bracket::Literal if sc == b'[' => Step::Advance(p + 1),
                        Bracket::Literal => Step::Mismatch,
                    },
                    lit if lit == sc => Step::Advance(p + 1),
                    _ => Step::Mismatch,
                },
            },
        };
        match step {
            Step::Advance(next) => {
                p = next;
                s += 1;
            }
            Step::Mismatch => match star {
                // Let the last `*` swallow one more byte and retry; every
                // other token consumes exactly one byte, so one resume point
                // is enough.
                Some((sp, ss)) if ss < subject.len() => {
                    star = Some((sp, ss + 1));
                    p = sp;
                    s = ss + 1;
                }
                _ => return false,
            },
        }
    }
}

enum Step {
    Advance(usize),
    Mismatch,
}

/// Names glibc accepts in `[:name:]` (C locale).
fn class_matches(name: &[u8], c: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c.is_ascii_control(),
        b"digit" => c.is_ascii_digit(),
        b"graph" => c.is_ascii_graphic(),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => c.is_ascii_graphic() || c == b' ',
        b"punct" => c.is_ascii_punctuation(),
        b"space" => matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'),
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// The longest class name glibc reads before giving up (CHAR_CLASS_MAX_LENGTH).
const CHAR_CLASS_MAX_LENGTH: usize = 256;

/// A `[.x.]` collating symbol: `p` is at the `.`. Returns its byte and the
/// index after `.]`; glibc fails the match when `.]` is missing or the name
/// is not exactly one byte (the C locale has no named symbols).
fn collating_symbol(pat: &[u8], p: usize) -> Option<(u8, usize)> {
    let body = pat.get(p + 1..)?;
    let end = body.windows(2).position(|w| w == b".]")?;
    match body.get(..end)? {
        [one] => Some((*one, p + 1 + end + 2)),
        _ => None,
    }
}

/// Reads the bracket expression whose body starts at `start` (just after
/// `[`) and tests byte `sc` against it: a port of glibc's state machine
/// (posix/fnmatch_loop.c, C locale), where reading past the end gives NUL.
fn bracket(pat: &[u8], start: usize, sc: u8) -> Bracket {
    let mut p = start;
    let negate = matches!(byte_at(pat, p), b'!' | b'^');
    if negate {
        p += 1;
    }
    match scan_members(pat, p, sc) {
        Scan::Unmatched { next } => Bracket::Done {
            matched: negate,
            next,
        },
        Scan::Matched { at } => match skip_rest(pat, at) {
            Ok(next) => Bracket::Done {
                matched: !negate,
                next,
            },
            Err(outcome) => outcome,
        },
        Scan::Done(outcome) => outcome,
    }
}

/// The pattern byte at `i`; NUL past the end, as C reads it.
fn byte_at(pat: &[u8], i: usize) -> u8 {
    pat.get(i).copied().unwrap_or(0)
}

/// Outcome of phase 1 of a bracket expression.
enum Scan {
    /// A member matched; glibc's skip phase starts at `at`.
    Matched { at: usize },
    /// The closing `]` came first; `next` is the index after it.
    Unmatched { next: usize },
    /// The answer is known without the rest (unterminated, or a failure).
    Done(Bracket),
}

/// Where phase 1 stands after one member.
enum Member {
    /// `sc` is in the set; the skip phase starts at this index.
    Matched(usize),
    /// Not this member: `c` is the next byte, `p` the index after it.
    Next { c: u8, p: usize },
    /// The answer is known without the rest.
    Done(Bracket),
}

/// Phase 1: members until one matches or the closing `]` (`p` is the
/// first member).
fn scan_members(pat: &[u8], p: usize, sc: u8) -> Scan {
    let mut c = byte_at(pat, p);
    let mut p = p + 1;
    loop {
        let member = match (c, byte_at(pat, p)) {
            (b'\\', _) => escaped_member(pat, p, sc),
            (b'[', b':') => class_member(pat, p, sc),
            // Unterminated: the '[' is an ordinary byte.
            (0, _) => Member::Done(Bracket::Literal),
            (b'[', b'=') => equivalence_member(pat, p, sc),
            (b'[', b'.') => collating_member(pat, p, sc),
            _ => ordinary_member(pat, c, p, sc),
        };
        match member {
            Member::Matched(at) => return Scan::Matched { at },
            Member::Done(outcome) => return Scan::Done(outcome),
            Member::Next {
                c: next_c,
                p: next_p,
            } => {
                c = next_c;
                p = next_p;
            }
        }
        if c == b']' {
            return Scan::Unmatched { next: p };
        }
    }
}

/// glibc's `normal_bracket`: the byte member `m` (`p` just after it),
/// alone or as the start of a range.
fn ordinary_member(pat: &[u8], m: u8, p: usize, sc: u8) -> Member {
    let is_range = byte_at(pat, p) == b'-' && !matches!(byte_at(pat, p + 1), 0 | b']');
    if !is_range && m == sc {
        return Member::Matched(p);
    }
    range_after(pat, p, m, sc)
}

/// The range step after member `m`: `p` is at the byte after the member.
fn range_after(pat: &[u8], p: usize, m: u8, sc: u8) -> Member {
    let mut c = byte_at(pat, p);
    let mut p = p + 1;
    match range(pat, &mut p, &mut c, m, sc) {
        Err(()) => Member::Done(Bracket::Fail),
        Ok(true) => Member::Matched(p),
        Ok(false) => Member::Next { c, p },
    }
}

/// `\x`: the byte after the backslash (`p`) is an ordinary member.
fn escaped_member(pat: &[u8], p: usize, sc: u8) -> Member {
    match byte_at(pat, p) {
        0 => Member::Done(Bracket::Fail),
        m => ordinary_member(pat, m, p + 1, sc),
    }
}

/// `[:name:]` (`p` at the first `:`); not a class name (glibc reads
/// `a`..`y` only) makes the `[` an ordinary member.
fn class_member(pat: &[u8], p: usize, sc: u8) -> Member {
    let mut q = p;
    let mut len = 0usize;
    let is_class = loop {
        if len == CHAR_CLASS_MAX_LENGTH {
            return Member::Done(Bracket::Fail);
        }
        q += 1;
        let b = byte_at(pat, q);
        if b == b':' && byte_at(pat, q + 1) == b']' {
            break true;
        }
        // glibc's test is `c < 'a' || c >= 'z'`: 'z' ends the name.
        if !(b'a'..=b'y').contains(&b) {
            break false;
        }
        len += 1;
    };
    if !is_class {
        return ordinary_member(pat, b'[', p, sc);
    }
    let name = pat.get(p + 1..q).unwrap_or_default();
    let after = q + 2;
    match class_matches(name, sc) {
        None => Member::Done(Bracket::Fail),
        Some(true) => Member::Matched(after),
        Some(false) => Member::Next {
            c: byte_at(pat, after),
            p: after + 1,
        },
    }
}

/// `[=c=]` (`p` at the `=`); a malformed one makes the `[` an ordinary
/// member.
fn equivalence_member(pat: &[u8], p: usize, sc: u8) -> Member {
    let x = byte_at(pat, p + 1);
    if x == 0 || byte_at(pat, p + 2) != b'=' || byte_at(pat, p + 3) != b']' {
        return ordinary_member(pat, b'[', p, sc);
    }
    let after = p + 4;
    if x == sc {
        return Member::Matched(after);
    }
    Member::Next {
        c: byte_at(pat, after),
        p: after + 1,
    }
}

/// `[.c.]` (`p` at the first `.`), alone or as the start of a range.
fn collating_member(pat: &[u8], p: usize, sc: u8) -> Member {
    let Some((sym, after)) = collating_symbol(pat, p) else {
        return Member::Done(Bracket::Fail);
    };
    let is_range = byte_at(pat, after) == b'-' && byte_at(pat, after + 1) != 0;
    if !is_range && sym == sc {
        return Member::Matched(after);
    }
    range_after(pat, after, sym, sc)
}

/// Phase 2 (glibc's `matched:`): skip the rest of the expression from `p`;
/// the index after its closing `]`, or the outcome when that is not found.
fn skip_rest(pat: &[u8], mut p: usize) -> Result<usize, Bracket> {
    loop {
        let mut c = byte_at(pat, p);
        p += 1;
        if c == 0 {
            return Err(Bracket::Literal);
        }
        if c == b'\\' {
            if byte_at(pat, p) == 0 {
                return Err(Bracket::Fail);
            }
            p += 1;
        } else if c == b'[' && byte_at(pat, p) == b':' {
            p = skip_class(pat, p)?;
        } else if c == b'[' && byte_at(pat, p) == b'=' {
            if byte_at(pat, p + 1) == 0
                || byte_at(pat, p + 2) != b'='
                || byte_at(pat, p + 3) != b']'
            {
                return Err(Bracket::Fail);
            }
            (c, p) = byte_after(pat, p + 4)?;
        } else if c == b'[' && byte_at(pat, p) == b'.' {
            let body = pat.get(p + 1..).unwrap_or_default();
            let Some(end) = body.windows(2).position(|w| w == b".]") else {
                return Err(Bracket::Fail);
            };
            (c, p) = byte_after(pat, p + 1 + end + 2)?;
        }
        if c == b']' {
            return Ok(p);
        }
    }
}

/// The byte at `p` and the index after it; glibc fails the match at NUL.
fn byte_after(pat: &[u8], p: usize) -> Result<(u8, usize), Bracket> {
    match byte_at(pat, p) {
        0 => Err(Bracket::Fail),
        c => Ok((c, p + 1)),
    }
}

/// Skips a `[:name:]` in phase 2 (`p` at the first `:`): the index after
/// it, or after the `[` when it is not a class.
fn skip_class(pat: &[u8], p: usize) -> Result<usize, Bracket> {
    let mut q = p;
    let mut len = 0usize;
    loop {
        q += 1;
        let b = byte_at(pat, q);
        len += 1;
        if len == CHAR_CLASS_MAX_LENGTH {
            return Err(Bracket::Fail);
        }
        if b == b':' && byte_at(pat, q + 1) == b']' {
            return Ok(q + 2);
        }
        if !(b'a'..=b'y').contains(&b) {
            // Not a class: go on after the '['.
            return Ok(p);
        }
    }
}

/// glibc's range step after a member `cold`: `c` is the byte after the
/// member, `p` the index after `c`. `Ok(true)` when `sc` is in the range,
/// `Err` when glibc fails the match.
fn range(pat: &[u8], p: &mut usize, c: &mut u8, cold: u8, sc: u8) -> Result<bool, ()> {
    let at = |i: usize| byte_at(pat, i);
    if *c != b'-' || at(*p) == b']' {
        return Ok(false);
    }
    let mut cend = at(*p);
    *p += 1;
    if cend == b'\\' {
        cend = at(*p);
        *p += 1;
    } else if cend == b'[' && at(*p) == b'.' {
        let (sym, next) = collating_symbol(pat, *p).ok_or(())?;
        cend = sym;
        *p = next;
    }
    if cend == 0 {
        return Err(());
    }
    if cold <= sc && sc <= cend {
        return Ok(true);
    }
    *c = at(*p);
    *p += 1;
    Ok(false)
}

/// The literal prefix of a pattern: the bytes before the first byte that
/// makes it a glob (`*`, `?`, `[`, `\`). Used to index alias patterns.
pub fn literal_prefix_len(pattern: &[u8]) -> usize {
    pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::CString;

    fn libc_fnmatch(p: &[u8], s: &[u8]) -> bool {
        let p = CString::new(p).unwrap();
        let s = CString::new(s).unwrap();
        // SAFETY: both are valid NUL-terminated strings that outlive the call.
        #[allow(unsafe_code)]
        let r = unsafe { libc::fnmatch(p.as_ptr(), s.as_ptr(), 0) };
        r == 0
    }

    #[test]
    fn modalias_patterns() {
        let p = b"pci:v00001AF4d00001001sv*sd*bc*sc*i*";
        assert!(fnmatch(
            p,
            b"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"
        ));
        assert!(!fnmatch(
            p,
            b"pci:v00001AF4d00001000sv00001AF4sd00000002bc01sc00i00"
        ));
        assert!(fnmatch(
            b"usb:v13FDp3940d0[0-2]*dc*",
            b"usb:v13FDp3940d0100dcFF"
        ));
        assert!(!fnmatch(
            b"usb:v13FDp3940d0[0-2]*dc*",
            b"usb:v13FDp3940d0300dcFF"
        ));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(!fnmatch(b"a?c", b"ac"));
        assert!(fnmatch(b"*", b""));
        assert!(fnmatch(b"", b""));
        assert!(!fnmatch(b"", b"a"));
        assert!(fnmatch(b"[!a]", b"b"));
        assert!(fnmatch(b"[^a]", b"b"));
        assert!(fnmatch(b"[]]", b"]"));
        assert!(fnmatch(b"[a-]", b"-"));
        assert!(fnmatch(b"\\*", b"*"));
        assert!(!fnmatch(b"a\\", b"a\\"));
        assert!(fnmatch(b"[[:digit:]x]", b"7"));
        assert!(fnmatch(b"[ab", b"[ab"));
    }

    #[test]
    fn agrees_with_libc_on_classes_and_odd_brackets() {
        let pats: &[&[u8]] = &[
            b"[[:alpha:]]",
            b"[[:digit:]]",
            b"[[:space:]]",
            b"[[:upper:][:lower:]]",
            b"[[:bogus:]]",
            b"[[:alpha]",
            b"[[=a=]]",
            b"[[.a.]]",
            b"[[.a.]-c]",
            b"[a-[.c.]]",
            b"[\\]]",
            b"[\\",
            b"[a\\",
            b"[[a",
            b"[[",
            b"[",
            b"[!",
            b"[!]",
            b"[]",
            b"[]a]",
            b"[!]a]",
            b"[z-a]",
            b"[a-\\z]",
            b"[:a:]",
            b"*[a",
            b"*[b",
            b"a*[",
            b"[[:zz:]]",
            b"[[:a-z:]]",
            b"[[=ab=]]",
        ];
        let subjects: &[&[u8]] = &[
            b"a", b"b", b"c", b"z", b"A", b"7", b" ", b"[", b"]", b"\\", b"-", b":", b"[a", b"[[a",
            b"[[", b"xa", b"x[b", b"a[", b"", b"=", b".",
        ];
        for p in pats {
            for s in subjects {
                assert_eq!(
                    fnmatch(p, s),
                    libc_fnmatch(p, s),
                    "pattern {:?} subject {:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(s)
                );
            }
        }
    }

    fn small_bytes(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(alphabet), 0..max)
    }

    /// 20,000 cases per property by default; PROPTEST_CASES overrides.
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]
        #[test]
        fn agrees_with_libc(
            p in small_bytes(b"ab*?[]!^-\\:", 10),
            s in small_bytes(b"ab[]-\\!:", 8),
        ) {
            prop_assert_eq!(fnmatch(&p, &s), libc_fnmatch(&p, &s),
                "pattern {:?} subject {:?}", String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
        }

        #[test]
        fn agrees_with_libc_on_bracket_syntax(
            p in small_bytes(b"a[]!:=.-*\\", 10),
            s in small_bytes(b"a[]!:=.-\\", 6),
        ) {
            prop_assert_eq!(fnmatch(&p, &s), libc_fnmatch(&p, &s),
                "pattern {:?} subject {:?}", String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
        }

        #[test]
        fn agrees_with_libc_on_modalias_like_input(
            p in small_bytes(b"v0d1*?[]-:", 14),
            s in small_bytes(b"v0d1:-", 12),
        ) {
            prop_assert_eq!(fnmatch(&p, &s), libc_fnmatch(&p, &s),
                "pattern {:?} subject {:?}", String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
        }
    }
}
