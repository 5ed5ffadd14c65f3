//! modprobe.d configuration (`alias`, `options`, `blacklist`, `softdep`)
//! and the module parameters of the kernel command line, parsed the way
//! libkmod does (libkmod-config.c).
//!
//! `install` lines are rejected: Kestrel never runs shell commands to load a
//! module. `remove`, `include` and `config` lines do not affect loading; they
//! are ignored with a warning, as kmod ignores lines it cannot use.

use std::path::{Path, PathBuf};

use crate::names::normalize_config_word;
use crate::ModulesError;

/// Directories kmod 30 reads by default, in its priority order: a file name
/// found in an earlier directory hides the same name in a later one.
pub const DEFAULT_CONFIG_DIRS: [&str; 4] = [
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
];

/// A config file or line longer than this is refused (named bound; real
/// modprobe.d files are a few KiB).
pub const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

/// The name libkmod gives modules.softdep among the config files: it is
/// sorted with them by file name.
pub(crate) const MODULES_SOFTDEP: &str = "modules.softdep";

/// `alias PATTERN MODULE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigAlias {
    /// The glob (normalised as kmod does).
    pub pattern: String,
    /// The module it names (normalised).
    pub module: String,
}

/// `options MODULE TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOptions {
    /// Module name or alias it applies to (normalised).
    pub module: String,
    /// The parameters, tabs turned into spaces, otherwise verbatim.
    pub options: String,
}

/// `softdep MODULE pre: A B post: C`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSoftdep {
    /// The glob matched against module names (first match wins).
    pub pattern: String,
    /// Looked up (like modprobe arguments) and loaded before the module.
    pub pre: Vec<String>,
    /// Looked up and loaded after the module.
    pub post: Vec<String>,
    /// File name (without directory) the line came from: kmod orders its
    /// sources by file name, and modules.softdep takes part in that order.
    pub file: String,
}

/// Parsed modprobe.d-style configuration plus kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `alias` lines, in file order.
    pub aliases: Vec<ConfigAlias>,
    /// `options` lines, then command line parameters, in that order.
    pub options: Vec<ConfigOptions>,
    /// `blacklist` lines and `modprobe.blacklist=`: skipped when found by
    /// alias, loaded when named.
    pub blacklist: Vec<String>,
    /// `module_blacklist=` (enforced by the kernel itself): never requested.
    pub hard_blacklist: Vec<String>,
    /// `softdep` lines.
    pub softdeps: Vec<ConfigSoftdep>,
    /// Lines that were ignored, with file and line number.
    pub warnings: Vec<String>,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one modprobe.d file. `file` names it in messages and decides
    /// its place among softdep sources (its file name).
    pub fn parse(text: &[u8], file: &str) -> Result<Config, ModulesError> {
        let mut config = Config::new();
        config.parse_into(text, file)?;
        Ok(config)
    }

    /// Appends everything in `other` after what is already here (kmod
    /// appends each file's lines to one list, in file order).
    pub fn merge(&mut self, other: Config) {
        self.aliases.extend(other.aliases);
        self.options.extend(other.options);
        self.blacklist.extend(other.blacklist);
        self.hard_blacklist.extend(other.hard_blacklist);
        self.softdeps.extend(other.softdeps);
        self.warnings.extend(other.warnings);
    }

    /// Reads config directories (or single files) the way kmod does: files
    /// ending in `.conf` or `.alias`, not starting with `.`, all sorted
    /// together by file name; a name already seen in an earlier path is
    /// skipped. Missing paths are fine.
    pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Config, ModulesError> {
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        let add = |name: String, path: PathBuf, files: &mut Vec<(String, PathBuf)>| {
            if name == MODULES_SOFTDEP || files.iter().any(|(n, _)| *n == name) {
                return;
            }
            files.push((name, path));
        };
        for path in paths {
            let path = path.as_ref();
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ModulesError::Read {
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
            };
            if meta.is_file() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                add(name, path.to_path_buf(), &mut files);
                continue;
            }
            let entries = std::fs::read_dir(path).map_err(|e| ModulesError::Read {
                path: path.to_path_buf(),
                source: e,
            })?;
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| ModulesError::Read {
                    path: path.to_path_buf(),
                    source: e,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.')
                    || name.len() < 6
                    || !(name.ends_with(".conf") || name.ends_with(".alias"))
                {
                    continue;
                }
                if entry.path().is_dir() {
                    continue;
                }
                names.push(name);
            }
            names.sort();
            for name in names {
                let full = path.join(&name);
                add(name, full, &mut files);
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut config = Config::new();
        for (name, path) in files {
            let text = read_bounded(&path)?;
            config
                .parse_into(&text, &name)
                .map_err(|e| e.with_path(&path))?;
        }
        Ok(config)
    }

    /// Adds kernel command line parameters, already tokenised (quotes
    /// removed): `modprobe.blacklist=a,b`, `module_blacklist=a,b` and
    /// `NAME.param=value`. Call it after loading files: kmod appends the
    /// command line after them.
    pub fn apply_kernel_cmdline<S: AsRef<str>>(&mut self, params: &[S]) {
        for param in params {
            let param = param.as_ref();
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            if key == "module_blacklist" {
                for name in value.split(',').filter(|n| !n.is_empty()) {
                    self.hard_blacklist.push(normalize_config_word(name));
                }
                continue;
            }
            let Some((module, name)) = key.split_once('.') else {
                continue;
            };
            if module.is_empty() || name.is_empty() {
                continue;
            }
            if module == "modprobe" && name == "blacklist" {
                // kmod stores these without normalising; we normalise so that
                // `modprobe.blacklist=snd-pcsp` works (documented deviation).
                for entry in value.split(',') {
                    self.blacklist.push(normalize_config_word(entry));
                }
                continue;
            }
            let value = if value.contains(char::is_whitespace) {
                format!("\"{value}\"")
            } else {
                value.to_owned()
            };
            self.options.push(ConfigOptions {
                module: normalize_config_word(module),
                options: format!("{name}={value}"),
            });
        }
    }

    fn parse_into(&mut self, text: &[u8], file: &str) -> Result<(), ModulesError> {
        for (lineno, line) in logical_lines(text) {
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut rest = line.as_str();
            let Some(cmd) = next_word(&mut rest) else {
                continue;
            };
            let bad = |what: &str| {
                format!("{file} line {lineno}: ignoring bad line starting with '{what}'")
            };
            match cmd {
                "alias" => {
                    let (Some(pattern), Some(module)) =
                        (next_word(&mut rest), next_word(&mut rest))
                    else {
                        self.warnings.push(bad(cmd));
                        continue;
                    };
                    self.aliases.push(ConfigAlias {
                        pattern: normalize_config_word(pattern),
                        module: normalize_config_word(module),
                    });
                }
                "blacklist" => {
                    let Some(module) = next_word(&mut rest) else {
                        self.warnings.push(bad(cmd));
                        continue;
                    };
                    self.blacklist.push(normalize_config_word(module));
                }
                "options" => {
                    let (Some(module), Some(options)) = (next_word(&mut rest), remainder(rest))
                    else {
                        self.warnings.push(bad(cmd));
                        continue;
                    };
                    self.options.push(ConfigOptions {
                        module: normalize_config_word(module),
                        options: options.replace('\t', " "),
                    });
                }
                "softdep" => {
                    let (Some(module), Some(deps)) = (next_word(&mut rest), remainder(rest)) else {
                        self.warnings.push(bad(cmd));
                        continue;
                    };
                    let (pre, post) = parse_softdep(deps);
                    self.softdeps.push(ConfigSoftdep {
                        pattern: normalize_config_word(module),
                        pre,
                        post,
                        file: file.to_owned(),
                    });
                }
                "install" => {
                    let module = next_word(&mut rest).unwrap_or_default().to_owned();
                    return Err(ModulesError::InstallUnsupported {
                        file: file.to_owned(),
                        line: lineno,
                        module,
                    });
                }
                "remove" | "include" | "config" => {
                    self.warnings.push(format!(
                        "{file} line {lineno}: '{cmd}' lines are not used by Kestrel; ignored"
                    ));
                }
                _ => self.warnings.push(bad(cmd)),
            }
        }
        Ok(())
    }
}

/// Reads a whole file, refusing files over [`MAX_CONFIG_FILE`].
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, ModulesError> {
    let meta = std::fs::metadata(path).map_err(|e| ModulesError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    if meta.len() > MAX_CONFIG_FILE {
        return Err(ModulesError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_FILE,
        });
    }
    std::fs::read(path).map_err(|e| ModulesError::Read {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Lines joined across a trailing backslash (kmod `getline_wrapped`), with
/// the number of the line each starts on (1-based).
fn logical_lines(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, Vec<u8>)> = None;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let (start, mut buf) = current.take().unwrap_or((i + 1, Vec::new()));
        if let Some(stripped) = raw.strip_suffix(b"\\") {
            buf.extend_from_slice(stripped);
            current = Some((start, buf));
            continue;
        }
        buf.extend_from_slice(raw);
        out.push((start, buf));
    }
    if let Some(pending) = current {
        out.push(pending);
    }
    // A final "\n" leaves one empty trailing element, harmless (skipped).
    out
}

/// `strtok_r(.., "\t ")`: skips leading blanks, returns the word and moves
/// `rest` to just after the one delimiter that ended it.
fn next_word<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = rest.trim_start_matches([' ', '\t']);
    if s.is_empty() {
        *rest = s;
        return None;
    }
    match s.find([' ', '\t']) {
        Some(end) => {
            let (word, tail) = s.split_at(end);
            *rest = tail.get(1..).unwrap_or_default();
            Some(word)
        }
        None => {
            *rest = "";
            Some(s)
        }
    }
}

/// `strtok_r(NULL, "\0", ..)`: the rest of the line, `None` when empty.
fn remainder(rest: &str) -> Option<&str> {
    if rest.is_empty() {
        None
    } else {
        Some(rest)
    }
}

/// kmod `kmod_config_add_softdep`: words after `pre:` go to pre, after
/// `post:` to post; words before either are ignored.
fn parse_softdep(text: &str) -> (Vec<String>, Vec<String>) {
    #[derive(Clone, Copy)]
    enum Mode {
        None,
        Pre,
        Post,
    }
    let mut mode = Mode::None;
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    for word in text
        .split(|c: char| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        match (word, mode) {
            ("pre:", _) => mode = Mode::Pre,
            ("post:", _) => mode = Mode::Post,
            (_, Mode::Pre) => pre.push(word.to_owned()),
            (_, Mode::Post) => post.push(word.to_owned()),
            (_, Mode::None) => {}
        }
    }
    (pre, post)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_directive() {
        let text = b"# comment\n\
            alias my-alias snd-pcsp\n\
            options snd-pcsp index=-2\tfoo=1\n\
            options  ext4  a=1\n\
            blacklist pcspkr\n\
            softdep uhci-hcd pre: ehci-hcd post: x y\n\
            softdep cifs gcm\n\
            remove foo /bin/true\n\
            bogus line\n\
            options lonely\n\
            \n   \n";
        let c = Config::parse(text, "test.conf").unwrap();
        assert_eq!(
            c.aliases,
            vec![ConfigAlias {
                pattern: "my_alias".into(),
                module: "snd_pcsp".into()
            }]
        );
        assert_eq!(
            c.options,
            vec![
                ConfigOptions {
                    module: "snd_pcsp".into(),
                    options: "index=-2 foo=1".into()
                },
                // kmod keeps the blanks after the one delimiter that ended the name.
                ConfigOptions {
                    module: "ext4".into(),
                    options: " a=1".into()
                },
            ]
        );
        assert_eq!(c.blacklist, vec!["pcspkr".to_owned()]);
        assert_eq!(c.softdeps.len(), 2);
        assert_eq!(c.softdeps[0].pattern, "uhci_hcd");
        assert_eq!(c.softdeps[0].pre, vec!["ehci-hcd".to_owned()]);
        assert_eq!(c.softdeps[0].post, vec!["x".to_owned(), "y".to_owned()]);
        assert!(c.softdeps[1].pre.is_empty() && c.softdeps[1].post.is_empty());
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    }

    #[test]
    fn install_is_rejected_with_a_clear_message() {
        let err = Config::parse(
            b"options a b=1\ninstall foo /sbin/modprobe --ignore-install foo\n",
            "x.conf",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.conf line 2"), "{msg}");
        assert!(msg.contains("install"), "{msg}");
        assert!(msg.contains("foo"), "{msg}");
    }

    #[test]
    fn continuation_lines() {
        let c = Config::parse(b"softdep a pre: \\\n b c\nblacklist d\n", "x.conf").unwrap();
        assert_eq!(c.softdeps[0].pre, vec!["b".to_owned(), "c".to_owned()]);
        assert_eq!(c.blacklist, vec!["d".to_owned()]);
    }

    #[test]
    fn kernel_cmdline() {
        let mut c = Config::new();
        c.apply_kernel_cmdline(&[
            "root=/dev/vda1",
            "quiet",
            "modprobe.blacklist=snd-pcsp,floppy",
            "module_blacklist=evil",
            "virtio-net.napi_tx=1",
            "foo.bar=a b",
            "foo.flag",
            "console=ttyS0,115200n8.x",
            "e1000e.InterruptThrottleRate=1.5",
        ]);
        assert_eq!(
            c.blacklist,
            vec!["snd_pcsp".to_owned(), "floppy".to_owned()]
        );
        assert_eq!(c.hard_blacklist, vec!["evil".to_owned()]);
        assert_eq!(
            c.options,
            vec![
                ConfigOptions {
                    module: "virtio_net".into(),
                    options: "napi_tx=1".into()
                },
                ConfigOptions {
                    module: "foo".into(),
                    options: "bar=\"a b\"".into()
                },
                ConfigOptions {
                    module: "e1000e".into(),
                    options: "InterruptThrottleRate=1.5".into()
                },
            ]
        );
    }

    #[test]
    fn load_paths_sorts_by_name_and_first_dir_wins() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("z.conf"), "blacklist from_a_z\n").unwrap();
        std::fs::write(b.path().join("z.conf"), "blacklist from_b_z\n").unwrap();
        std::fs::write(b.path().join("a.conf"), "blacklist from_b_a\n").unwrap();
        std::fs::write(b.path().join("ignored.txt"), "blacklist nope\n").unwrap();
        std::fs::write(b.path().join("m.alias"), "blacklist from_b_m\n").unwrap();
        let c =
            Config::load_paths(&[a.path(), b.path(), Path::new("/nonexistent/kestrel")]).unwrap();
        assert_eq!(
            c.blacklist,
            vec![
                "from_b_a".to_owned(),
                "from_b_m".to_owned(),
                "from_a_z".to_owned()
            ]
        );
    }
}
