//! modules.builtin and modules.builtin.modinfo on any bytes: never panic,
//! and what they list is found: every builtin path's module is builtin and
//! looked up as itself; every literal `NAME.alias=PATTERN` record gives its
//! module (unless the pattern is itself a builtin name, which kmod's lookup
//! chain answers first).
//!
//! Input: 2 bytes (little-endian) of modules.builtin length, that many bytes
//! of modules.builtin, the rest is modules.builtin.modinfo.
#![no_main]

use std::path::Path;

use kestrel_modules::names::{name_from_path, normalize_name_bytes, normalize_query};
use kestrel_modules::ModuleIndex;
use libfuzzer_sys::fuzz_target;

/// Records checked per input.
const CHECKED: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (builtin, modinfo) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
    let index = ModuleIndex::from_bytes(
        Path::new("/lib/modules/fuzz"),
        Vec::new(),
        Vec::new(),
        None,
        Some(builtin.to_vec()),
        Some(modinfo.to_vec()),
    )
    .expect("builtin files alone never fail");

    for line in builtin.split(|&b| b == b'\n').take(CHECKED) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let name = name_from_path(line);
        assert!(index.is_builtin(&name), "{name:?}");
        if normalize_query(&name).as_deref() == Some(name.as_str()) {
            assert_eq!(index.lookup_alias(&name), [name]);
        }
    }

    for rec in modinfo.split(|&b| b == 0).take(CHECKED) {
        let Some(dot) = rec.iter().position(|&b| b == b'.') else {
            continue;
        };
        let (module, kv) = rec.split_at(dot);
        let Some(pattern) = kv.strip_prefix(b".alias=") else {
            continue;
        };
        let Ok(pattern) = std::str::from_utf8(pattern) else {
            continue;
        };
        // Literal patterns only, without what normalisation or the name
        // rules change ('-', '.', brackets).
        if pattern.contains(['*', '?', '[', ']', '\\', '-', '.']) || index.is_builtin(pattern) {
            continue;
        }
        let module = normalize_name_bytes(module);
        let found = index.lookup_alias(pattern);
        assert!(
            found.contains(&module),
            "{pattern:?} gives {found:?}, not {module:?}"
        );
    }
});
