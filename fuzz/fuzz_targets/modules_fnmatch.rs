//! `kestrel_modules::fnmatch::fnmatch` on any pattern and subject: never
//! panics, agrees with the C library's `fnmatch(3)` (flags 0, C locale)
//! where that is cheap to ask, and is consistent with itself: an escaped
//! string matches exactly itself, and a leading `*` never loses a match.
//!
//! Input: 1 byte of pattern length, the pattern, the rest is the subject.
#![no_main]

use std::ffi::CString;

use kestrel_modules::fnmatch::fnmatch;
use libfuzzer_sys::fuzz_target;

/// glibc backtracks recursively at each `*`: beyond a few stars and a
/// short subject it can take exponential time, which says nothing.
const ORACLE_MAX_STARS: usize = 3;
const ORACLE_MAX_SUBJECT_WITH_STARS: usize = 24;

fn libc_fnmatch(p: &[u8], s: &[u8]) -> Option<bool> {
    let p = CString::new(p).ok()?;
    let s = CString::new(s).ok()?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let r = unsafe { libc::fnmatch(p.as_ptr(), s.as_ptr(), 0) };
    Some(r == 0)
}

fn escaped(s: &[u8]) -> Vec<u8> {
    s.iter().flat_map(|&b| [b'\\', b]).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (pattern, subject) = rest.split_at(usize::from(n).min(rest.len()));
    let ours = fnmatch(pattern, subject);

    let stars = pattern.iter().filter(|&&b| b == b'*').count();
    if stars == 0 || (stars <= ORACLE_MAX_STARS && subject.len() <= ORACLE_MAX_SUBJECT_WITH_STARS) {
        if let Some(theirs) = libc_fnmatch(pattern, subject) {
            assert_eq!(
                ours,
                theirs,
                "pattern {:?} subject {:?}",
                pattern.escape_ascii().to_string(),
                subject.escape_ascii().to_string()
            );
        }
    }

    assert!(fnmatch(&escaped(subject), subject));
    assert_eq!(fnmatch(&escaped(pattern), subject), pattern == subject);
    if ours {
        let mut starred = vec![b'*'];
        starred.extend_from_slice(pattern);
        assert!(fnmatch(&starred, subject));
    }
});
