//! A content-addressed cache of built archives: the key is a SHA-256 of every
//! input (labelled and length-prefixed, so two different input lists can never
//! hash the same), the value a file named by the key. A hit costs a `stat`.

use crate::InitrdError;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Hashes the inputs of a build. Feed it everything the output depends on
/// (the kernel version, module files, the init binary, the payload, the
/// options and the builder's own version) in a fixed order.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    sha: Sha256,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyHasher {
    /// A hasher already seeded with this crate's name and version, so a new
    /// builder never reuses an old builder's output.
    pub fn new() -> Self {
        let mut h = Self { sha: Sha256::new() };
        h.add_str(
            "builder",
            concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
        );
        h
    }

    /// Add a labelled byte string.
    pub fn add_bytes(&mut self, label: &str, data: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), data] {
            self.sha.update((part.len() as u64).to_le_bytes());
            self.sha.update(part);
        }
        self
    }

    pub fn add_str(&mut self, label: &str, value: &str) -> &mut Self {
        self.add_bytes(label, value.as_bytes())
    }

    /// Add a host file by content (and its permission bits, which end up in the archive).
    pub fn add_file(&mut self, label: &str, path: &Path) -> Result<&mut Self, InitrdError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| InitrdError::io("stat", path, e))?;
        let data = std::fs::read(path).map_err(|e| InitrdError::io("read", path, e))?;
        self.add_bytes(label, &meta.permissions().mode().to_le_bytes());
        Ok(self.add_bytes(label, &data))
    }

    pub fn finish(&self) -> CacheKey {
        let digest = self.sha.clone().finalize();
        CacheKey(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// A hex SHA-256 naming one cached artifact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Cache::get_or_build`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOutcome {
    /// The cached file.
    pub path: PathBuf,
    /// True when it was already there and `build` did not run.
    pub hit: bool,
}

/// A directory of artifacts named by their [`CacheKey`].
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `key` (whether or not it exists); `suffix` like ".cpio.zst".
    pub fn path_for(&self, key: &CacheKey, suffix: &str) -> PathBuf {
        self.dir.join(format!("{key}{suffix}"))
    }

    /// The cached file for `key`, if present.
    pub fn get(&self, key: &CacheKey, suffix: &str) -> Option<PathBuf> {
        let p = self.path_for(key, suffix);
        p.is_file().then_some(p)
    }

    /// Return the cached file for `key`, or run `build` to write it. The file
    /// appears atomically (written to a temporary name, then renamed), so a
    /// crash or a concurrent build never leaves a truncated artifact under the
    /// key; two concurrent builds of one key both succeed, one rename wins.
    pub fn get_or_build<F>(
        &self,
        key: &CacheKey,
        suffix: &str,
        build: F,
    ) -> Result<CacheOutcome, InitrdError>
    where
        F: FnOnce(&mut dyn Write) -> Result<(), InitrdError>,
    {
        if let Some(path) = self.get(key, suffix) {
            return Ok(CacheOutcome { path, hit: true });
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| InitrdError::io("create directory", &self.dir, e))?;
        let path = self.path_for(key, suffix);
        let (tmp, file) = self.create_temp(key, suffix)?;
        let result = (|| {
            let mut w = std::io::BufWriter::new(file);
            build(&mut w)?;
            let file = w
                .into_inner()
                .map_err(|e| InitrdError::io("write", &tmp, e.into_error()))?;
            file.sync_all()
                .map_err(|e| InitrdError::io("sync", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| InitrdError::io("rename", &tmp, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| CacheOutcome { path, hit: false })
    }

    /// A temporary file of this writer alone: the process id and a counter
    /// of this process name it, and it must not exist yet (`O_EXCL`), so two
    /// threads (or a pid reused after a crash) never write into one file.
    fn create_temp(
        &self,
        key: &CacheKey,
        suffix: &str,
    ) -> Result<(PathBuf, std::fs::File), InitrdError> {
        static WRITERS: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = WRITERS.fetch_add(1, Ordering::Relaxed);
            let tmp = self
                .dir
                .join(format!(".{key}{suffix}.{}.{n}.tmp", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => return Ok((tmp, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(InitrdError::io("create", &tmp, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input_and_its_boundaries() {
        let k = |parts: &[(&str, &str)]| {
            let mut h = KeyHasher::new();
            for (l, v) in parts {
                h.add_str(l, v);
            }
            h.finish()
        };
        assert_eq!(k(&[("a", "1")]), k(&[("a", "1")]));
        assert_ne!(k(&[("a", "1")]), k(&[("a", "2")]));
        assert_ne!(k(&[("a", "12")]), k(&[("a", "1"), ("", "2")]));
        assert_ne!(k(&[("ab", "")]), k(&[("a", "b")]));
        assert_eq!(k(&[]).as_str().len(), 64);
    }

    #[test]
    fn get_or_build_hits_and_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("c"));
        let mut h = KeyHasher::new();
        h.add_str("kernel", "6.1");
        let key = h.finish();
        let mut runs = 0;
        let out = cache
            .get_or_build(&key, ".cpio", |w| {
                runs += 1;
                w.write_all(b"archive").map_err(InitrdError::Write)
            })
            .unwrap();
        assert!(!out.hit);
        assert_eq!(std::fs::read(&out.path).unwrap(), b"archive");
        let again = cache
            .get_or_build(&key, ".cpio", |_| unreachable!("cached"))
            .unwrap();
        assert!(again.hit);
        assert_eq!(again.path, out.path);
        assert_eq!(runs, 1);
        // A changed input is another key: built again.
        h.add_str("module", "virtio_blk");
        let other = cache
            .get_or_build(&h.finish(), ".cpio", |w| {
                w.write_all(b"b").map_err(InitrdError::Write)
            })
            .unwrap();
        assert!(!other.hit);
        assert_ne!(other.path, out.path);
    }

    /// Two threads of one process building the same key at the same time
    /// each write their own temporary file: both succeed and the entry is
    /// whole (with one shared temporary name, the second truncated the
    /// first's file and one rename failed).
    #[test]
    fn concurrent_builders_of_one_key_do_not_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = KeyHasher::new().finish();
        let data = vec![7u8; 1 << 20];
        let both_writing = std::sync::Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        cache.get_or_build(&key, ".img", |w| {
                            w.write_all(&data[..1000]).map_err(InitrdError::Write)?;
                            w.flush().map_err(InitrdError::Write)?;
                            both_writing.wait();
                            w.write_all(&data[1000..]).map_err(InitrdError::Write)
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results {
            assert!(r.is_ok(), "{r:?}");
        }
        let path = cache.get(&key, ".img").unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
        // Nothing but the entry is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = KeyHasher::new().finish();
        let r = cache.get_or_build(&key, "", |w| {
            w.write_all(b"half").map_err(InitrdError::Write)?;
            Err(InitrdError::UnknownCompression("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(cache.get(&key, "").is_none());
    }
}
