//! `/etc/ld.so.conf` and its `include`s: the directories ldconfig puts in
//! ld.so.cache, which is where the loader finds libraries after RPATH/RUNPATH.
//! Parsing is pure; expansion of includes reads the host under a sysroot.

use std::path::{Path, PathBuf};

/// Nesting bound for `include` (ldconfig has none; loops must not hang us).
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// One meaningful line of ld.so.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdConfLine {
    /// A library directory.
    Dir(String),
    /// `include PATTERN` (a glob, relative to the including file's directory when not absolute).
    Include(String),
}

/// Parse ld.so.conf text: comments (#), blank lines, `include`, `hwcap` (ignored),
/// directories (the obsolete `dir=type` suffix is dropped).
pub fn parse_ld_so_conf(data: &[u8]) -> Vec<LdConfLine> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            out.extend(
                rest.split_whitespace()
                    .map(|p| LdConfLine::Include(p.to_owned())),
            );
        } else if line.starts_with("hwcap") && line.get(5..6).is_some_and(|c| c == " " || c == "\t")
        {
            continue;
        } else {
            for word in line.split([' ', '\t', ',', ':']).filter(|w| !w.is_empty()) {
                let dir = word.split('=').next().unwrap_or(word);
                if dir.starts_with('/') {
                    out.push(LdConfLine::Dir(dir.trim_end_matches('/').to_owned()).normalized());
                }
            }
        }
    }
    out
}

impl LdConfLine {
    fn normalized(self) -> Self {
        match self {
            Self::Dir(d) if d.is_empty() => Self::Dir("/".into()),
            other => other,
        }
    }
}

/// Shell-style wildcard match of one file name (`*` and `?` only, like the
/// patterns ld.so.conf uses).
pub fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == b'?' || Some(c) == name.get(n) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|c| *c == b'*')
}

/// The library directories of `conf` (an absolute path inside `sysroot`),
/// includes expanded in sorted order like glob(3). Unreadable files are skipped:
/// a host without ld.so.conf simply has no extra directories.
pub fn ld_so_conf_dirs(sysroot: &Path, conf: &str) -> Vec<String> {
    let mut out = Vec::new();
    expand(sysroot, conf, 0, &mut out);
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|d| seen.insert(d.clone()));
    out
}

fn in_root(sysroot: &Path, path: &str) -> PathBuf {
    sysroot.join(path.trim_start_matches('/'))
}

fn expand(sysroot: &Path, conf: &str, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_INCLUDE_DEPTH {
        return;
    }
    let Ok(data) = std::fs::read(in_root(sysroot, conf)) else {
        return;
    };
    let base = conf.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    for line in parse_ld_so_conf(&data) {
        match line {
            LdConfLine::Dir(d) => out.push(d),
            LdConfLine::Include(pattern) => {
                let pattern = if pattern.starts_with('/') {
                    pattern
                } else {
                    format!("{base}/{pattern}")
                };
                let (dir, file_pat) = pattern.rsplit_once('/').unwrap_or(("", pattern.as_str()));
                if dir.contains(['*', '?', '[']) {
                    continue; // wildcards only in the last component are supported
                }
                let Ok(entries) = std::fs::read_dir(in_root(sysroot, dir)) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| wildcard_match(file_pat.as_bytes(), n.as_bytes()))
                    .collect();
                names.sort();
                for n in names {
                    expand(sysroot, &format!("{dir}/{n}"), depth + 1, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lines() {
        let conf = b"# c\ninclude /etc/ld.so.conf.d/*.conf\n/usr/local/lib  # x\n\nhwcap 0 nosegneg\n/opt/lib=libc6, /opt/b:/opt/c/\nrelative\n";
        assert_eq!(
            parse_ld_so_conf(conf),
            vec![
                LdConfLine::Include("/etc/ld.so.conf.d/*.conf".into()),
                LdConfLine::Dir("/usr/local/lib".into()),
                LdConfLine::Dir("/opt/lib".into()),
                LdConfLine::Dir("/opt/b".into()),
                LdConfLine::Dir("/opt/c".into()),
            ]
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"libc.conf"));
        assert!(wildcard_match(b"*.conf", b".conf"));
        assert!(!wildcard_match(b"*.conf", b"libc.conf.bak"));
        assert!(wildcard_match(b"a?c*", b"abcdef"));
        assert!(!wildcard_match(b"a?c", b"ac"));
        assert!(wildcard_match(b"*a*b", b"xxaxxb"));
    }

    #[test]
    fn include_expansion_sorted_and_bounded() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("ld.so.conf.d")).unwrap();
        std::fs::write(
            etc.join("ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n/first\n",
        )
        .unwrap();
        std::fs::write(etc.join("ld.so.conf.d/b.conf"), "/b\n").unwrap();
        std::fs::write(etc.join("ld.so.conf.d/a.conf"), "/a\ninclude loop.inc\n").unwrap();
        std::fs::write(
            etc.join("ld.so.conf.d/loop.inc"),
            "/loop\ninclude loop.inc\n",
        )
        .unwrap();
        std::fs::write(etc.join("ld.so.conf.d/c.txt"), "/nope\n").unwrap();
        assert_eq!(
            ld_so_conf_dirs(root.path(), "/etc/ld.so.conf"),
            ["/a", "/loop", "/b", "/first"]
        );
    }
}
