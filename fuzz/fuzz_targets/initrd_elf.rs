//! `parse_elf`, `modinfo_firmware` and `parse_shebang` on any bytes: a value
//! or a typed error, never a panic, and what they return is well-formed
//! (names non-empty and without NUL, the interpreter of a script one word).
#![no_main]

use std::path::Path;

use kestrel_initrd::{modinfo_firmware, parse_elf, parse_shebang};
use libfuzzer_sys::fuzz_target;

fn name_ok(s: &str) -> bool {
    !s.contains('\0')
}

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = parse_elf(Path::new("fuzz"), data) {
        assert!(data.starts_with(b"\x7fELF"));
        for n in info.needed.iter().chain(&info.rpath).chain(&info.runpath) {
            assert!(name_ok(n), "{n:?}");
        }
        for n in info.interpreter.iter().chain(&info.soname) {
            assert!(name_ok(n), "{n:?}");
        }
    }
    if let Ok(firmware) = modinfo_firmware(data) {
        for f in firmware {
            assert!(name_ok(&f), "{f:?}");
        }
    }
    if let Some((interp, arg)) = parse_shebang(data) {
        assert!(data.starts_with(b"#!"));
        assert!(
            !interp.is_empty() && !interp.contains([' ', '\t', '\n']),
            "{interp:?}"
        );
        if let Some(arg) = arg {
            assert!(
                !arg.is_empty() && !arg.contains('\n') && arg.trim() == arg,
                "{arg:?}"
            );
        }
    }
});
