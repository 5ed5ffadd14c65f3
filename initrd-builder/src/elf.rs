//! What the dynamic loader needs from an ELF file: its interpreter (PT_INTERP),
//! DT_NEEDED libraries and search paths (DT_RPATH, DT_RUNPATH). Read from the
//! program headers, like ld.so does, so stripped files without section
//! headers work too. Pure: bytes in, values out.

use crate::InitrdError;
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::StringTable;
use object::{Endianness, FileKind};
use std::path::Path;

/// The loader-relevant facts of one ELF file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElfInfo {
    pub is_64: bool,
    pub machine: u16,
    pub big_endian: bool,
    /// PT_INTERP, e.g. "/lib64/ld-linux-x86-64.so.2".
    pub interpreter: Option<String>,
    /// DT_NEEDED in file order.
    pub needed: Vec<String>,
    /// DT_RPATH entries (colon-separated lists, split).
    pub rpath: Vec<String>,
    /// DT_RUNPATH entries (split).
    pub runpath: Vec<String>,
    pub soname: Option<String>,
}

impl ElfInfo {
    /// Whether a library with `other`'s header can be loaded into this program.
    pub fn compatible(&self, other: &ElfInfo) -> bool {
        self.is_64 == other.is_64
            && self.machine == other.machine
            && self.big_endian == other.big_endian
    }
}

/// Whether `data` starts with the ELF magic.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// Parse the loader-relevant parts of an ELF file; `path` only names it in errors.
pub fn parse_elf(path: &Path, data: &[u8]) -> Result<ElfInfo, InitrdError> {
    let err = |reason: String| InitrdError::Elf {
        path: path.to_owned(),
        reason,
    };
    let kind = FileKind::parse(data).map_err(|e| err(e.to_string()))?;
    let parsed = match kind {
        FileKind::Elf32 => parse_generic::<elf::FileHeader32<Endianness>>(data),
        FileKind::Elf64 => parse_generic::<elf::FileHeader64<Endianness>>(data),
        other => return Err(err(format!("not an ELF file ({other:?})"))),
    };
    parsed.map_err(err)
}

fn text(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn split_paths(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(':').filter(|s| !s.is_empty()).map(str::to_owned)
}

fn parse_generic<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfInfo, String> {
    let header = Elf::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?;
    let mut info = ElfInfo {
        is_64: header.is_type_64(),
        machine: header.e_machine(endian),
        big_endian: endian == Endianness::Big,
        ..ElfInfo::default()
    };
    let mut dynamic = None;
    for ph in phdrs {
        if let Some(interp) = ph.interpreter(endian, data).map_err(|e| e.to_string())? {
            info.interpreter = Some(text(interp, "PT_INTERP")?);
        }
        if let Some(d) = ph.dynamic(endian, data).map_err(|e| e.to_string())? {
            dynamic = Some(d);
        }
    }
    let Some(dynamic) = dynamic else {
        return Ok(info); // static
    };
    let mut strtab_addr = None;
    let mut strsz = None;
    for d in dynamic {
        match d.tag32(endian) {
            Some(elf::DT_NULL) => break,
            Some(elf::DT_STRTAB) => strtab_addr = Some(d.d_val(endian).into()),
            Some(elf::DT_STRSZ) => strsz = Some(d.d_val(endian).into()),
            _ => {}
        }
    }
    let (Some(addr), Some(size)) = (strtab_addr, strsz) else {
        return Err("PT_DYNAMIC without DT_STRTAB/DT_STRSZ".into());
    };
    // DT_STRTAB is a virtual address: map it through the PT_LOAD segments.
    let offset = phdrs
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .find_map(|ph| {
            let vaddr: u64 = ph.p_vaddr(endian).into();
            let filesz: u64 = ph.p_filesz(endian).into();
            let off: u64 = ph.p_offset(endian).into();
            (addr >= vaddr && addr < vaddr.saturating_add(filesz)).then(|| off + (addr - vaddr))
        })
        .ok_or("DT_STRTAB is outside every PT_LOAD segment")?;
    let end = offset.checked_add(size).ok_or("DT_STRSZ overflows")?;
    let strings = StringTable::new(data, offset, end);
    for d in dynamic {
        let tag = d.tag32(endian);
        if tag == Some(elf::DT_NULL) {
            break;
        }
        let get = || -> Result<String, String> {
            let s = d.string(endian, strings).map_err(|e| e.to_string())?;
            text(s, "a dynamic string")
        };
        match tag {
            Some(elf::DT_NEEDED) => info.needed.push(get()?),
            Some(elf::DT_RPATH) => info.rpath.extend(split_paths(&get()?)),
            Some(elf::DT_RUNPATH) => info.runpath.extend(split_paths(&get()?)),
            Some(elf::DT_SONAME) => info.soname = Some(get()?),
            _ => {}
        }
    }
    Ok(info)
}

/// The interpreter line of a script ("#!/bin/sh -e" gives ("/bin/sh", Some("-e"))),
/// or `None` when `data` does not start with "#!". The kernel reads at most
/// BINPRM_BUF_SIZE (256) bytes of it.
pub fn parse_shebang(data: &[u8]) -> Option<(String, Option<String>)> {
    const BINPRM_BUF_SIZE: usize = 256;
    let rest = data.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line
        .get(..BINPRM_BUF_SIZE.saturating_sub(2))
        .unwrap_or(line);
    let line = std::str::from_utf8(line).ok()?.trim();
    let (interp, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim().to_owned()).filter(|a| !a.is_empty())),
        None => (line, None),
    };
    (!interp.is_empty()).then(|| (interp.to_owned(), arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_sh_has_interpreter_and_libc() {
        let data = std::fs::read("/bin/sh").unwrap();
        let info = parse_elf(Path::new("/bin/sh"), &data).unwrap();
        assert!(info.interpreter.as_deref().unwrap().contains("ld-linux"));
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [
            &b""[..],
            b"\x7fELF",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\xff\xff",
            b"#!/bin/sh\n",
        ] {
            assert!(parse_elf(Path::new("x"), data).is_err());
        }
        // Truncations of a real binary never panic.
        let data = std::fs::read("/bin/sh").unwrap();
        for len in (0..4096).step_by(7) {
            let _ = parse_elf(Path::new("x"), &data[..len]);
        }
    }

    #[test]
    fn shebang() {
        assert_eq!(
            parse_shebang(b"#!/bin/sh\necho"),
            Some(("/bin/sh".into(), None))
        );
        assert_eq!(
            parse_shebang(b"#! /usr/bin/env  python3 \n"),
            Some(("/usr/bin/env".into(), Some("python3".into())))
        );
        assert_eq!(parse_shebang(b"#!\n"), None);
        assert_eq!(parse_shebang(b"\x7fELF"), None);
    }
}
