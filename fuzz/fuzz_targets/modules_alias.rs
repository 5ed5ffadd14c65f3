//! `ModuleIndex::from_bytes` on any modules.alias: never panics, and every
//! alias it lists is found again: a literal pattern looked up as itself,
//! and a pattern of `*` and `?` through a string it matches, give (among
//! others) its module. This checks the literal-head hash index and the
//! byte filter against fnmatch.
#![no_main]

use std::path::Path;

use kestrel_modules::fnmatch::fnmatch;
use kestrel_modules::names::normalize_name_bytes;
use kestrel_modules::ModuleIndex;
use libfuzzer_sys::fuzz_target;

/// Patterns checked per input (each lookup probes every head length).
const CHECKED: usize = 256;

/// A string `pattern` matches, when it has only `*` and `?` as wildcards.
fn concrete(pattern: &str) -> Option<String> {
    if pattern.contains(['[', ']', '\\']) {
        return None;
    }
    Some(
        pattern
            .chars()
            .filter(|&c| c != '*')
            .map(|c| if c == '?' { 'x' } else { c })
            .collect(),
    )
}

fuzz_target!(|data: &[u8]| {
    // No modules.dep lines: a module name can never answer before the
    // aliases (kmod's lookup chain).
    let index = ModuleIndex::from_bytes(
        Path::new("/lib/modules/fuzz"),
        Vec::new(),
        data.to_vec(),
        None,
        None,
        None,
    )
    .expect("modules.alias alone never fails");
    assert_eq!(index.alias_patterns().count(), index.alias_count());
    for (pattern, module) in index.alias_patterns().take(CHECKED) {
        let Ok(pattern) = std::str::from_utf8(pattern) else {
            continue;
        };
        let Some(query) = concrete(pattern) else {
            continue;
        };
        assert!(fnmatch(pattern.as_bytes(), query.as_bytes()));
        let module = normalize_name_bytes(module);
        let found = index.lookup_alias(&query);
        assert!(
            found.contains(&module),
            "{query:?} (from {pattern:?}) gives {found:?}, not {module:?}"
        );
    }
});
