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
                        Bracket::Done { matched: true, next } => Step::Advance(next),
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

/// Reads the bracket expression whose body starts at `start` (just after
/// `[`) and tests byte `c` against it, the way glibc does.
fn bracket(pat: &[u8], start: usize, c: u8) -> Bracket {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let mut p = start;
    let negate = matches!(at(p), b'!' | b'^');
    if negate {
        p += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut ch = at(p);
        if ch == 0 && p >= pat.len() {
            let _ = matched;
            return Bracket::Literal;
        }
        if ch == b']' && !first {
            p += 1;
            break;
        }
        first = false;
        // One member: a single byte (maybe escaped or a [=c=]/[.c.]), a
        // class, or the start of a range.
        let lo: u8;
        if ch == b'\\' {
            if p + 1 >= pat.len() {
                return Bracket::Fail;
            }
            lo = at(p + 1);
            p += 2;
        } else if ch == b'[' && at(p + 1) == b':' {
            // [:name:]; glibc only accepts names of bytes in 'a'..'y'.
            let name_start = p + 2;
            let mut q = name_start;
            let mut is_class = true;
            loop {
                if q - name_start >= CHAR_CLASS_MAX_LENGTH {
                    return Bracket::Fail;
                }
                let b = at(q);
                if b == b':' && at(q + 1) == b']' {
                    break;
                }
                // glibc's test is `c < 'a' || c >= 'z'`: 'z' itself ends the name.
                if !(b'a'..=b'y').contains(&b) {
                    is_class = false;
                    break;
                }
                q += 1;
            }
            if is_class {
                let name = pat.get(name_start..q).unwrap_or_default();
                match class_matches(name, c) {
                    None => return Bracket::Fail,
                    Some(true) => matched = true,
                    Some(false) => {}
                }
                p = q + 2;
                continue;
            }
            // Not a class: the '[' is an ordinary member.
            lo = b'[';
            p += 1;
        } else if ch == b'[' && (at(p + 1) == b'=' || at(p + 1) == b'.') {
            // [=c=] or [.c.]: one byte in the C locale.
            let delim = at(p + 1);
            let sym = at(p + 2);
            if p + 4 < pat.len() + 1 && at(p + 3) == delim && at(p + 4) == b']' && p + 2 < pat.len() {
                lo = sym;
                p += 5;
                if delim == b'=' {
                    if lo == c {
                        matched = true;
                    }
                    continue;
                }
            } else {
                return Bracket::Fail;
            }
        } else {
            lo = ch;
            p += 1;
        }
        ch = at(p);
        if ch == b'-' && at(p + 1) != b']' && p + 1 < pat.len() {
            // A range lo-hi.
            let mut hi = at(p + 1);
            p += 2;
            if hi == b'\\' {
                if p >= pat.len() {
                    return Bracket::Fail;
                }
                hi = at(p);
                p += 1;
            } else if hi == b'[' && at(p) == b'.' {
                let sym = at(p + 1);
                if p + 3 <= pat.len() && at(p + 2) == b'.' && at(p + 3) == b']' && p + 1 < pat.len() {
                    hi = sym;
                    p += 4;
                } else {
                    return Bracket::Fail;
                }
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        } else if lo == c {
            matched = true;
        }
    }
    Bracket::Done { matched: matched != negate, next: p }
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
        assert!(fnmatch(p, b"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"));
        assert!(!fnmatch(p, b"pci:v00001AF4d00001000sv00001AF4sd00000002bc01sc00i00"));
        assert!(fnmatch(b"usb:v13FDp3940d0[0-2]*dc*", b"usb:v13FDp3940d0100dcFF"));
        assert!(!fnmatch(b"usb:v13FDp3940d0[0-2]*dc*", b"usb:v13FDp3940d0300dcFF"));
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
            b"[[:alpha:]]", b"[[:digit:]]", b"[[:space:]]", b"[[:upper:][:lower:]]", b"[[:bogus:]]",
            b"[[:alpha]", b"[[=a=]]", b"[[.a.]]", b"[[.a.]-c]", b"[a-[.c.]]", b"[\\]]", b"[\\", b"[a\\",
            b"[[a", b"[[", b"[", b"[!", b"[!]", b"[]", b"[]a]", b"[!]a]", b"[z-a]", b"[a-\\z]", b"[:a:]",
            b"*[a", b"*[b", b"a*[", b"[[:zz:]]", b"[[:a-z:]]", b"[[=ab=]]",
        ];
        let subjects: &[&[u8]] = &[
            b"a", b"b", b"c", b"z", b"A", b"7", b" ", b"[", b"]", b"\\", b"-", b":", b"[a", b"[[a", b"[[", b"xa", b"x[b",
            b"a[", b"", b"=", b".",
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]
        #[test]
        fn agrees_with_libc(
            p in small_bytes(b"ab*?[]!^-\\:", 10),
            s in small_bytes(b"ab[]-\\!:", 8),
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
