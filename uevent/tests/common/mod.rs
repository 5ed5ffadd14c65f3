//! Shared by the fixture tests and the benchmark: where the captures are,
//! and how a capture directory's datagrams are read.

use bytes::Bytes;
use std::fs;
use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The raw datagrams (`*.bin`) of a capture directory, in the order received.
pub fn read_datagrams(dir: &str) -> Vec<Bytes> {
    let mut files: Vec<_> = fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| Bytes::from(fs::read(p).unwrap()))
        .collect()
}
