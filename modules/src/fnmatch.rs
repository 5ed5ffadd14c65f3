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
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let mut p = start;
    let negate = matches!(at(p), b'!' | b'^');
    if negate {
        p += 1;
    }
    let mut c = at(p);
    p += 1;
    // Phase 1: members until one matches (then `matched` holds the index
    // where glibc's skip phase starts) or the closing ']'.
    let matched: Option<usize> = 'scan: loop {
        // `Some(m)`: glibc's `normal_bracket` with member m, p just after it.
        let mut normal: Option<u8> = None;
        if c == b'\\' {
            if at(p) == 0 {
                return Bracket::Fail;
            }
            normal = Some(at(p));
            p += 1;
        } else if c == b'[' && at(p) == b':' {
            let startp = p;
            let mut q = p;
            let mut len = 0usize;
            let is_class = loop {
                if len == CHAR_CLASS_MAX_LENGTH {
                    return Bracket::Fail;
                }
                q += 1;
                let b = at(q);
                if b == b':' && at(q + 1) == b']' {
                    break true;
                }
                // glibc's test is `c < 'a' || c >= 'z'`: 'z' ends the name.
                if !(b'a'..=b'y').contains(&b) {
                    break false;
                }
                len += 1;
            };
            if is_class {
                let name = pat.get(startp + 1..q).unwrap_or_default();
                p = q + 2;
                match class_matches(name, sc) {
                    None => return Bracket::Fail,
                    Some(true) => break 'scan Some(p),
                    Some(false) => {}
                }
                c = at(p);
                p += 1;
            } else {
                p = startp;
                normal = Some(b'[');
            }
        } else if c == 0 {
            // Unterminated: the '[' is an ordinary byte.
            return Bracket::Literal;
        } else if c == b'[' && at(p) == b'=' {
            let x = at(p + 1);
            if x == 0 || at(p + 2) != b'=' || at(p + 3) != b']' {
                normal = Some(b'[');
            } else {
                p += 4;
                if x == sc {
                    break 'scan Some(p);
                }
                c = at(p);
                p += 1;
            }
        } else if c == b'[' && at(p) == b'.' {
            let Some((sym, next)) = collating_symbol(pat, p) else {
                return Bracket::Fail;
            };
            p = next;
            let is_range = at(p) == b'-' && at(p + 1) != 0;
            if !is_range && sym == sc {
                break 'scan Some(p);
            }
            c = at(p);
            p += 1;
            match range(pat, &mut p, &mut c, sym, sc) {
                Err(()) => return Bracket::Fail,
                Ok(true) => break 'scan Some(p),
                Ok(false) => {}
            }
        } else {
            normal = Some(c);
        }
        if let Some(m) = normal {
            let is_range = at(p) == b'-' && at(p + 1) != 0 && at(p + 1) != b']';
            if !is_range && m == sc {
                break 'scan Some(p);
            }
            c = at(p);
            p += 1;
            match range(pat, &mut p, &mut c, m, sc) {
                Err(()) => return Bracket::Fail,
                Ok(true) => break 'scan Some(p),
                Ok(false) => {}
            }
        }
        if c == b']' {
            break 'scan None;
        }
    };
    let Some(mut p) = matched else {
        return Bracket::Done {
            matched: negate,
            next: p,
        };
    };
    // Phase 2 (glibc's `matched:`): skip the rest of the expression.
    loop {
        let mut c = at(p);
        p += 1;
        if c == 0 {
            return Bracket::Literal;
        }
        if c == b'\\' {
            if at(p) == 0 {
                return Bracket::Fail;
            }
            p += 1;
        } else if c == b'[' && at(p) == b':' {
            let startp = p;
            let mut len = 0usize;
            loop {
                p += 1;
                let b = at(p);
                len += 1;
                if len == CHAR_CLASS_MAX_LENGTH {
                    return Bracket::Fail;
                }
                if b == b':' && at(p + 1) == b']' {
                    p += 2;
                    break;
                }
                if !(b'a'..=b'y').contains(&b) {
                    // Not a class: go on after the '['.
                    p = startp;
                    break;
                }
            }
        } else if c == b'[' && at(p) == b'=' {
            if at(p + 1) == 0 || at(p + 2) != b'=' || at(p + 3) != b']' {
                return Bracket::Fail;
            }
            p += 4;
            c = at(p);
            p += 1;
            if c == 0 {
                return Bracket::Fail;
            }
        } else if c == b'[' && at(p) == b'.' {
            let body = pat.get(p + 1..).unwrap_or_default();
            let Some(end) = body.windows(2).position(|w| w == b".]") else {
                return Bracket::Fail;
            };
            p += 1 + end + 2;
            c = at(p);
            p += 1;
            if c == 0 {
                return Bracket::Fail;
            }
        }
        if c == b']' {
            break;
        }
    }
    Bracket::Done {
        matched: !negate,
        next: p,
    }
}

/// glibc's range step after a member `cold`: `c` is the byte after the
/// member, `p` the index after `c`. `Ok(true)` when `sc` is in the range,
/// `Err` when glibc fails the match.
fn range(pat: &[u8], p: &mut usize, c: &mut u8, cold: u8, sc: u8) -> Result<bool, ()> {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
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
