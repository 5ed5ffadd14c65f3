//! Name and alias normalisation, exactly as libkmod does it.
//!
//! Module names treat `-` and `_` as the same byte; kmod stores `_`.
//! Aliases get the same treatment outside bracket expressions, so the glob
//! `[a-z]` keeps its range.

/// libkmod `modname_normalize`: `-` becomes `_`, and the name ends at the
/// first `.` (so `ext4.ko` is `ext4`).
pub fn normalize_name(name: &str) -> String {
    normalize_name_bytes(name.as_bytes())
}

/// Normalises a module name held as bytes into a `String` (lossy for
/// non-UTF-8, which kernel module names never contain).
pub fn normalize_name_bytes(name: &[u8]) -> String {
    let end = name.iter().position(|&b| b == b'.').unwrap_or(name.len());
    let head = name.get(..end).unwrap_or_default();
    let mut out = String::from_utf8_lossy(head).into_owned();
    if out.contains('-') {
        out = out.replace('-', "_");
    }
    out
}

/// The module name of a path in modules.dep: its file name up to the first
/// `.`, normalised (libkmod `path_to_modname`).
pub fn name_from_path(path: &[u8]) -> String {
    let base = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => path.get(i + 1..).unwrap_or_default(),
        None => path,
    };
    normalize_name_bytes(base)
}

/// libkmod `alias_normalize` for a looked-up string: `-` becomes `_` outside
/// brackets; an unmatched `]` or `[` makes the string invalid (`None`), and
/// kmod then reports "not found".
pub fn normalize_query(alias: &str) -> Option<String> {
    let bytes = alias.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'-' => out.push(b'_'),
            b']' => return None,
            b'[' => {
                let rest = bytes.get(i..).unwrap_or_default();
                let close = rest.iter().position(|&c| c == b']')?;
                out.extend_from_slice(rest.get(..=close).unwrap_or_default());
                i += close;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// depmod `underscores2` for alias patterns written to modules.alias.bin:
/// `-` becomes `_` outside brackets; an unmatched bracket drops the alias
/// (`None`), as depmod does.
pub fn normalize_pattern(pattern: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while let Some(&b) = pattern.get(i) {
        match b {
            b'-' => out.push(b'_'),
            b']' => return None,
            b'[' => {
                let rest = pattern.get(i..).unwrap_or_default();
                let close = rest.iter().position(|&c| c == b']')?;
                out.extend_from_slice(rest.get(..=close).unwrap_or_default());
                i += close;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// libkmod-config `underscores`: like [`normalize_pattern`] but never
/// fails (an unmatched bracket is only logged by kmod; the rest of the
/// string is left as it is).
pub fn normalize_config_word(word: &str) -> String {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'-' => out.push(b'_'),
            b'[' => {
                let rest = bytes.get(i..).unwrap_or_default();
                match rest.iter().position(|&c| c == b']') {
                    Some(close) => {
                        out.extend_from_slice(rest.get(..=close).unwrap_or_default());
                        i += close;
                    }
                    None => {
                        out.extend_from_slice(rest);
                        break;
                    }
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize_name("snd-hda-intel"), "snd_hda_intel");
        assert_eq!(normalize_name("ext4.ko"), "ext4");
        assert_eq!(
            name_from_path(b"kernel/drivers/usb/host/ehci-hcd.ko"),
            "ehci_hcd"
        );
        assert_eq!(name_from_path(b"kernel/fs/ext4/ext4.ko.xz"), "ext4");
        assert_eq!(name_from_path(b"virtio_blk.ko"), "virtio_blk");
    }

    #[test]
    fn aliases() {
        assert_eq!(
            normalize_query("crypto-crc32c").as_deref(),
            Some("crypto_crc32c")
        );
        assert_eq!(normalize_query("a[x-y]-b").as_deref(), Some("a[x-y]_b"));
        assert_eq!(normalize_query("a]"), None);
        assert_eq!(normalize_query("a[b"), None);
        assert_eq!(
            normalize_pattern(b"usb:v1-[0-2]*").as_deref(),
            Some(&b"usb:v1_[0-2]*"[..])
        );
        assert_eq!(normalize_pattern(b"x[0-"), None);
        assert_eq!(normalize_config_word("uhci-hcd"), "uhci_hcd");
        assert_eq!(normalize_config_word("a[-]-b"), "a[-]_b");
        assert_eq!(normalize_config_word("a[-b"), "a[-b");
    }
}
