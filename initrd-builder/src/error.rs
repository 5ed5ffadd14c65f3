//! The crate's one error type.

use std::fs::Metadata;
use std::path::PathBuf;

/// Everything that can go wrong while building an initramfs.
///
/// Messages read "failed to VERB PATH: CAUSE"; path escapes have their own
/// variant so a caller (and a test) can tell a hostile input from an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// Reading or writing a host file failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the archive stream failed.
    #[error("failed to write the archive: {0}")]
    Write(#[source] std::io::Error),
    /// An archive path or a symlink target would leave the archive root.
    #[error("failed to add {path}: path escapes the archive root ({reason})")]
    PathEscape { path: String, reason: String },
    /// An archive path is malformed (empty, NUL byte, too long).
    #[error("failed to add {path:?}: invalid archive path ({reason})")]
    InvalidPath { path: String, reason: String },
    /// The path already exists in the archive with a different kind or content.
    #[error("failed to add {path}: already in the archive as {existing}")]
    Conflict { path: String, existing: String },
    /// A parent component exists in the archive but is not a directory.
    #[error("failed to add {path}: {parent} is not a directory in the archive")]
    NotADirectory { path: String, parent: String },
    /// Too many symlinks followed while resolving a path (a loop).
    #[error("failed to resolve {path}: too many levels of symbolic links (more than {limit})")]
    SymlinkLoop { path: String, limit: usize },
    /// Scripts whose interpreters are scripts, nested beyond the bound.
    #[error("failed to add {path}: more than {limit} nested script interpreters")]
    InterpreterLoop { path: String, limit: usize },
    /// A hard link refers to something that is not a regular file in the archive.
    #[error("failed to link {path}: {target} is not a regular file in the archive")]
    BadHardLink { path: String, target: String },
    /// A host file has a kind the builder does not copy (socket, fifo, device in a tree).
    #[error("failed to add {}: unsupported file type {kind}", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A file is larger than newc can describe (4 GiB) or a named bound.
    #[error("failed to add {path}: {size} bytes is more than the limit of {limit}")]
    TooLarge { path: String, size: u64, limit: u64 },
    /// A host file could not be parsed as ELF.
    #[error("failed to parse ELF {}: {reason}", path.display())]
    Elf { path: PathBuf, reason: String },
    /// A DT_NEEDED library was not found in any search directory.
    #[error("failed to find library {name} needed by {}: searched {searched}", needed_by.display())]
    LibraryNotFound {
        name: String,
        needed_by: PathBuf,
        searched: String,
    },
    /// A program given by name was not found on the search path.
    #[error("failed to find program {name} in {searched}")]
    ProgramNotFound { name: String, searched: String },
    /// Compression or decompression failed.
    #[error("failed to {action} {format}: {source}")]
    Codec {
        action: &'static str,
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An unknown compression name.
    #[error("failed to parse compression {0:?}: expected none, gzip, zstd or xz")]
    UnknownCompression(String),
    /// The kernel configuration says the chosen compression cannot be unpacked.
    #[error("failed to use {compression} for the initramfs: the kernel config {} has {option} {state}", config.display())]
    CompressionUnsupported {
        compression: &'static str,
        option: &'static str,
        state: String,
        config: PathBuf,
    },
    /// SOURCE_DATE_EPOCH is set but not a valid time stamp.
    #[error(
        "failed to parse SOURCE_DATE_EPOCH {0:?}: expected seconds since 1970 that fit in 32 bits"
    )]
    BadSourceDateEpoch(String),
    /// A cpio stream being read back is malformed.
    #[error("failed to parse the archive at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    /// A module file has an unknown extension or compressed payload.
    #[error("failed to read module {}: {reason}", path.display())]
    BadModule { path: PathBuf, reason: String },
}

impl InitrdError {
    /// Shorthand for an [`InitrdError::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Human name of a host file's type, for [`InitrdError::UnsupportedFileType`].
pub(crate) fn file_kind_name(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}
