//! The optional project file, `kestrel.toml`: defaults for the VM of a
//! project (its kernel, memory, vCPUs, shares, timeout, the host root),
//! found by walking up from the current directory, so a crate's tests
//! run the same way from any of its folders. Flags win over it. Paths in
//! it are relative to the file's folder.
//!
//! ```toml
//! kernel = "/boot/vmlinuz-6.1.0-57-amd64"   # a file or a built source tree
//! memory = 1024                             # MiB
//! cpus = 2
//! timeout = 300                             # seconds
//! shares = [".", "data:/srv/data,rw"]       # as --share
//! root = "host"                             # as --root host
//! ```

use crate::share::ShareSpec;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The project file's name.
pub const PROJECT_FILE: &str = "kestrel.toml";

/// The file as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    kernel: Option<PathBuf>,
    memory: Option<u32>,
    cpus: Option<u32>,
    timeout: Option<f64>,
    #[serde(default)]
    shares: Vec<String>,
    root: Option<String>,
}

/// A project's defaults, paths made absolute.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Project {
    /// The file they came from.
    pub file: PathBuf,
    pub kernel: Option<PathBuf>,
    pub memory: Option<u32>,
    pub cpus: Option<u32>,
    pub timeout: Option<std::time::Duration>,
    pub shares: Vec<ShareSpec>,
    pub host_root: bool,
}

/// The nearest `kestrel.toml` in `start` or a folder above it.
pub fn find(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(PROJECT_FILE))
        .find(|p| p.is_file())
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Project> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    parse(&text, path).with_context(|| format!("in {}", path.display()))
}

/// The nearest project's defaults for the current directory, if any.
pub fn current() -> Result<Option<Project>> {
    let cwd = std::env::current_dir().context("failed to read the current directory")?;
    find(&cwd).map(|p| load(&p)).transpose()
}

fn parse(text: &str, file: &Path) -> Result<Project> {
    let raw: Raw = toml::from_str(text)?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    let host_root = match raw.root.as_deref() {
        None => false,
        Some("host") => true,
        Some(other) => bail!("root = {other:?}: the only value is \"host\""),
    };
    let timeout = raw
        .timeout
        .map(std::time::Duration::try_from_secs_f64)
        .transpose()
        .context("timeout: not a usable number of seconds")?;
    let shares = raw
        .shares
        .iter()
        .map(|s| {
            let mut spec: ShareSpec = s.parse().map_err(anyhow::Error::msg)?;
            spec.host = dir.join(&spec.host);
            Ok(spec)
        })
        .collect::<Result<_>>()?;
    Ok(Project {
        file: file.to_owned(),
        kernel: raw.kernel.map(|k| dir.join(k)),
        memory: raw.memory,
        cpus: raw.cpus,
        timeout,
        shares,
        host_root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_defaults_with_paths_relative_to_the_file() {
        let p = parse(
            "kernel = \"linux\"\nmemory = 1024\ncpus = 2\ntimeout = 2.5\nshares = [\".\", \"/srv:/mnt,rw\"]\nroot = \"host\"\n",
            Path::new("/proj/kestrel.toml"),
        )
        .unwrap();
        assert_eq!(p.kernel, Some(PathBuf::from("/proj/linux")));
        assert_eq!((p.memory, p.cpus), (Some(1024), Some(2)));
        assert_eq!(p.timeout, Some(std::time::Duration::from_millis(2500)));
        assert_eq!(p.shares[0].host, PathBuf::from("/proj/."));
        assert_eq!(p.shares[1].host, PathBuf::from("/srv"));
        assert!(p.shares[1].writable);
        assert!(p.host_root);
        assert_eq!(parse("", Path::new("/k.toml")).unwrap().memory, None);
    }

    #[test]
    fn refuses_unknown_keys_and_values() {
        let e = parse("memroy = 1\n", Path::new("/k.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("memroy"), "{e:#}");
        assert!(parse("root = \"disk\"\n", Path::new("/k.toml")).is_err());
        assert!(parse("timeout = -1\n", Path::new("/k.toml")).is_err());
    }

    #[test]
    fn is_found_by_walking_up() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join(PROJECT_FILE), "").unwrap();
        assert_eq!(
            find(&tmp.path().join("a/b")),
            Some(tmp.path().join(PROJECT_FILE))
        );
    }
}
