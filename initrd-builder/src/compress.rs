//! Compression of the archive and decompression of module files, in-process
//! (flate2, zstd, xz2), with settings the kernel's early decompressors accept.

use crate::InitrdError;
use std::io::{Read, Write};
use std::path::Path;

/// gzip level: the kernel's inflate speed barely depends on it, size does.
pub const GZIP_LEVEL: u32 = 9;
/// zstd level. The kernel's unzstd allocates the frame's window; level 19
/// uses an 8 MiB window, well under the kernel's 128 MiB limit.
pub const ZSTD_LEVEL: i32 = 19;
/// xz preset (LZMA2).
pub const XZ_PRESET: u32 = 6;
/// xz dictionary: the kernel's `usr/Makefile` builds initramfs images with
/// `xz --check=crc32 --lzma2=dict=1MiB`; the early decompressor allocates
/// the whole dictionary, so a small one keeps boot memory low.
pub const XZ_DICT_SIZE: u32 = 1 << 20;
/// Refuse to inflate a module beyond this (a kernel module is a few MiB at most).
pub const MAX_MODULE_SIZE: u64 = 256 << 20;

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    /// All variants, for benchmarks and loops in tests.
    pub const ALL: [Compression; 4] = [Self::None, Self::Gzip, Self::Zstd, Self::Xz];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
        }
    }

    /// The usual file suffix ("" for none).
    pub fn extension(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Gzip => ".gz",
            Self::Zstd => ".zst",
            Self::Xz => ".xz",
        }
    }

    /// Recognise a compressed stream by its magic bytes (as the kernel's
    /// `decompress_method` does). Uncompressed and unknown data give `None`.
    pub fn detect(data: &[u8]) -> Option<Self> {
        if data.starts_with(&[0x1f, 0x8b]) {
            Some(Self::Gzip)
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Self::Zstd)
        } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Self::Xz)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = InitrdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            "xz" => Ok(Self::Xz),
            other => Err(InitrdError::UnknownCompression(other.to_owned())),
        }
    }
}

fn codec(action: &'static str, c: Compression) -> impl FnOnce(std::io::Error) -> InitrdError {
    move |source| InitrdError::Codec {
        action,
        format: c.name(),
        source,
    }
}

/// Highest zstd level accepted: above 19 ("ultra") the frame window grows to
/// 64-128 MiB, which the kernel's unzstd must allocate at boot.
pub const MAX_ZSTD_LEVEL: u32 = 19;

impl Compression {
    /// The level [`compress`] uses: the smallest output the kernel handles
    /// comfortably (decompression speed hardly depends on the level; the
    /// cost is build time, paid once per cache key).
    pub fn default_level(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Gzip => GZIP_LEVEL,
            Self::Zstd => ZSTD_LEVEL.unsigned_abs(),
            Self::Xz => XZ_PRESET,
        }
    }

    /// The accepted levels (gzip 0-9, zstd 1-19, xz presets 0-9).
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Self::None => 0..=0,
            Self::Gzip | Self::Xz => 0..=9,
            Self::Zstd => 1..=MAX_ZSTD_LEVEL,
        }
    }
}

/// Compress a whole archive. Output is deterministic: gzip has mtime 0 and no
/// name; xz uses a CRC32 check (the kernel's xz decoder does not do CRC64 for
/// the initramfs) and a 1 MiB dictionary; zstd is single-threaded.
pub fn compress(data: &[u8], c: Compression) -> Result<Vec<u8>, InitrdError> {
    compress_level(data, c, c.default_level())
}

/// [`compress`] at a chosen level (see [`Compression::levels`]); e.g. zstd 3
/// builds ~100x faster than 19 for a ~30% larger archive.
pub fn compress_level(data: &[u8], c: Compression, level: u32) -> Result<Vec<u8>, InitrdError> {
    if !c.levels().contains(&level) {
        let r = c.levels();
        return Err(codec("compress", c)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("level {level} is outside {}..={}", r.start(), r.end()),
        )));
    }
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(3) // Unix, independent of the build host
                .write(
                    Vec::with_capacity(data.len() / 3),
                    flate2::Compression::new(level),
                );
            enc.write_all(data).map_err(codec("compress", c))?;
            enc.finish().map_err(codec("compress", c))
        }
        Compression::Zstd => {
            let level = i32::try_from(level).unwrap_or(ZSTD_LEVEL);
            zstd::bulk::compress(data, level).map_err(codec("compress", c))
        }
        Compression::Xz => {
            let mut opts = xz2::stream::LzmaOptions::new_preset(level)
                .map_err(|e| codec("compress", c)(std::io::Error::other(e)))?;
            opts.dict_size(XZ_DICT_SIZE);
            let mut filters = xz2::stream::Filters::new();
            filters.lzma2(&opts);
            let stream =
                xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::Crc32)
                    .map_err(|e| codec("compress", c)(std::io::Error::other(e)))?;
            let mut enc =
                xz2::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 4), stream);
            enc.write_all(data).map_err(codec("compress", c))?;
            enc.finish().map_err(codec("compress", c))
        }
    }
}

/// Decompress `data` compressed with `c`, refusing output beyond `limit` bytes.
pub fn decompress_limited(data: &[u8], c: Compression, limit: u64) -> Result<Vec<u8>, InitrdError> {
    let reader: Box<dyn Read + '_> = match c {
        Compression::None => Box::new(data),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(data).map_err(codec("decompress", c))?)
        }
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(data)),
    };
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(codec("decompress", c))?;
    if out.len() as u64 > limit {
        return Err(InitrdError::TooLarge {
            path: format!("{c} stream"),
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

/// Decompress the one stream at the start of `data` (a gzip member, a zstd
/// frame, an xz stream); returns the output and the bytes of `data` it used,
/// so a caller can go on with what follows (concatenated initramfs parts).
pub fn decompress_one(
    data: &[u8],
    c: Compression,
    limit: u64,
) -> Result<(Vec<u8>, usize), InitrdError> {
    let mut out = Vec::new();
    let take = limit.saturating_add(1);
    let rest: &[u8] = match c {
        Compression::None => {
            out = data.to_vec();
            &[]
        }
        Compression::Gzip => {
            let mut d = flate2::bufread::GzDecoder::new(data);
            (&mut d)
                .take(take)
                .read_to_end(&mut out)
                .map_err(codec("decompress", c))?;
            d.into_inner()
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(codec("decompress", c))?
                .single_frame();
            (&mut d)
                .take(take)
                .read_to_end(&mut out)
                .map_err(codec("decompress", c))?;
            d.finish()
        }
        Compression::Xz => {
            // xz2's bufread decoder reports trailing data after the stream as
            // corruption, so drive liblzma directly and stop at StreamEnd.
            let err = |m: String| {
                codec("decompress", c)(std::io::Error::new(std::io::ErrorKind::InvalidData, m))
            };
            let mut stream = xz2::stream::Stream::new_stream_decoder(u64::MAX, 0)
                .map_err(|e| err(e.to_string()))?;
            loop {
                let used = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
                let input = data.get(used..).unwrap_or_default();
                if out.len() as u64 > limit {
                    break;
                }
                out.reserve(64 << 10);
                let before = (stream.total_in(), out.len());
                let status = stream
                    .process_vec(input, &mut out, xz2::stream::Action::Run)
                    .map_err(|e| err(e.to_string()))?;
                if status == xz2::stream::Status::StreamEnd {
                    break;
                }
                if (stream.total_in(), out.len()) == before && out.len() < out.capacity() {
                    return Err(err("truncated xz stream".into()));
                }
            }
            let used = usize::try_from(stream.total_in()).unwrap_or(data.len());
            data.get(used..).unwrap_or_default()
        }
    };
    if out.len() as u64 > limit {
        return Err(InitrdError::TooLarge {
            path: format!("{c} stream"),
            size: out.len() as u64,
            limit,
        });
    }
    Ok((out, data.len() - rest.len()))
}

/// Decompress `data` compressed with `c` (no bound beyond memory; for trusted input).
pub fn decompress(data: &[u8], c: Compression) -> Result<Vec<u8>, InitrdError> {
    decompress_limited(data, c, u64::MAX - 1)
}

/// Decompress a module file (.ko.xz / .ko.zst / .ko.gz) at build time; `.ko` returned as is.
///
/// The suffix decides, and the magic must agree: a `.ko.xz` that is not xz is
/// an error rather than garbage loaded later by the init.
pub fn read_module(path: &Path) -> Result<Vec<u8>, InitrdError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let c = if name.ends_with(".ko") {
        Compression::None
    } else if name.ends_with(".ko.xz") {
        Compression::Xz
    } else if name.ends_with(".ko.zst") {
        Compression::Zstd
    } else if name.ends_with(".ko.gz") {
        Compression::Gzip
    } else {
        return Err(InitrdError::BadModule {
            path: path.to_owned(),
            reason: "expected a .ko, .ko.xz, .ko.zst or .ko.gz file name".into(),
        });
    };
    let data = std::fs::read(path).map_err(|e| InitrdError::io("read", path, e))?;
    if c == Compression::None {
        return Ok(data);
    }
    if Compression::detect(&data) != Some(c) {
        return Err(InitrdError::BadModule {
            path: path.to_owned(),
            reason: format!("the content is not {c} compressed"),
        });
    }
    decompress_limited(&data, c, MAX_MODULE_SIZE).map_err(|e| InitrdError::BadModule {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        assert!("lz4".parse::<Compression>().is_err());
    }

    #[test]
    fn in_process_round_trip_and_determinism() {
        let data = sample();
        for c in Compression::ALL {
            let a = compress(&data, c).unwrap();
            let b = compress(&data, c).unwrap();
            assert_eq!(a, b, "{c} is not deterministic");
            assert_eq!(
                Compression::detect(&a),
                if c == Compression::None {
                    None
                } else {
                    Some(c)
                }
            );
            assert_eq!(decompress(&a, c).unwrap(), data, "{c}");
        }
    }

    #[test]
    fn levels_are_checked_and_change_the_output() {
        let data = sample();
        assert!(compress_level(&data, Compression::Zstd, 20).is_err());
        assert!(compress_level(&data, Compression::Gzip, 10).is_err());
        assert!(compress_level(&data, Compression::Zstd, 0).is_err());
        let fast = compress_level(&data, Compression::Zstd, 1).unwrap();
        assert_eq!(decompress(&fast, Compression::Zstd).unwrap(), data);
        assert_eq!(
            compress(&data, Compression::Zstd).unwrap(),
            compress_level(&data, Compression::Zstd, 19).unwrap()
        );
        for c in Compression::ALL {
            assert!(c.levels().contains(&c.default_level()));
        }
    }

    #[test]
    fn xz_uses_crc32_check() {
        let a = compress(b"hello", Compression::Xz).unwrap();
        // Stream flags: byte 6 is 0, byte 7 is the check type (1 = CRC32).
        assert_eq!(a[7], 0x01);
    }

    #[test]
    fn decompress_one_stops_at_the_end_of_the_stream() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::Xz] {
            let mut data = compress(b"first", c).unwrap();
            let n = data.len();
            data.extend_from_slice(b"\0\0\x00070701tail");
            let (out, used) = decompress_one(&data, c, 100).unwrap();
            assert_eq!((out.as_slice(), used), (&b"first"[..], n), "{c}");
        }
    }

    #[test]
    fn decompress_limit() {
        let a = compress(&sample(), Compression::Gzip).unwrap();
        assert!(matches!(
            decompress_limited(&a, Compression::Gzip, 1000),
            Err(InitrdError::TooLarge { .. })
        ));
    }

    #[test]
    fn read_module_variants() {
        let dir = tempfile::tempdir().unwrap();
        let ko = b"\x7fELF fake module".to_vec();
        for c in Compression::ALL {
            let name = format!("m.ko{}", c.extension());
            let p = dir.path().join(&name);
            std::fs::write(&p, compress(&ko, c).unwrap()).unwrap();
            assert_eq!(read_module(&p).unwrap(), ko, "{name}");
        }
        let bad = dir.path().join("bad.ko.xz");
        std::fs::write(&bad, &ko).unwrap();
        assert!(matches!(
            read_module(&bad),
            Err(InitrdError::BadModule { .. })
        ));
        let other = dir.path().join("m.o");
        std::fs::write(&other, &ko).unwrap();
        assert!(matches!(
            read_module(&other),
            Err(InitrdError::BadModule { .. })
        ));
    }
}
