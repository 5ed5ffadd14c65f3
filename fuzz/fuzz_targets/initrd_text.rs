//! The small text parsers of the initrd builder on any bytes, chosen by the
//! first byte: `.modinfo` records, ld.so.conf, a kernel config's RD_*
//! options, SOURCE_DATE_EPOCH. Never a panic, and what they return is
//! well-formed.
#![no_main]

use kestrel_initrd::{
    mtime_from_source_date_epoch, parse_ld_so_conf, parse_modinfo, Compression, LdConfLine,
    RdSupport,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            for (k, v) in parse_modinfo(input) {
                assert!(!k.contains(['=', '\0']) && !v.contains('\0'), "{k:?}={v:?}");
            }
        }
        1 => {
            for line in parse_ld_so_conf(input) {
                match line {
                    LdConfLine::Dir(d) => {
                        assert!(d.starts_with('/'), "{d:?}");
                        assert!(d == "/" || !d.ends_with('/'), "{d:?}");
                        assert!(!d.contains([' ', '\t', ',', ':', '=', '#']), "{d:?}");
                    }
                    LdConfLine::Include(p) => {
                        assert!(!p.is_empty() && !p.contains(char::is_whitespace), "{p:?}");
                    }
                }
            }
        }
        2 => {
            let rd = RdSupport::parse(input);
            for c in Compression::ALL {
                assert_eq!(rd.supports(c), rd.supported().contains(&c));
                if rd.supports(c) {
                    assert_eq!(rd.state(c), "y");
                }
            }
        }
        _ => {
            let text = String::from_utf8_lossy(input);
            if let Ok(t) = mtime_from_source_date_epoch(Some(&text)) {
                let expected = match text.trim() {
                    "" => Some(0),
                    v => v.parse::<u32>().ok(),
                };
                assert_eq!(expected, Some(t));
            }
        }
    }
});
