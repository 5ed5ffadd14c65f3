//! modules.softdep (read with the modprobe.d parser) on any bytes: never
//! panics, and plans over it are valid. Every name-like word of the input
//! becomes a module of a synthetic modules.dep (each depending on an earlier
//! one, so hard and soft edges mix), then all of them are requested at
//! once: each module once, every dependency earlier, each requested module
//! in the plan; a strict plan equals the lenient one or names a cycle the
//! lenient one broke.
#![no_main]

#[path = "../common/plans.rs"]
mod plans;

use std::path::Path;

use kestrel_modules::{ModuleIndex, ModulesError, Request};
use libfuzzer_sys::fuzz_target;
use plans::{check_plan, check_strict};

/// Modules in the synthetic tree.
const MAX_MODULES: usize = 64;

/// The distinct words of `text` that can be module names, in order.
fn names(text: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')) {
        let Ok(w) = std::str::from_utf8(w) else {
            continue;
        };
        let n = w.replace('-', "_");
        if !n.is_empty() && !out.contains(&n) && out.len() < MAX_MODULES {
            out.push(n);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let modules = names(data);
    let mut dep = String::new();
    for (i, m) in modules.iter().enumerate() {
        dep.push_str(&format!("kernel/{m}.ko:"));
        if i > 0 {
            dep.push_str(&format!(" kernel/{}.ko", modules[(i - 1) / 2]));
        }
        dep.push('\n');
    }
    let index = match ModuleIndex::from_bytes(
        Path::new("/lib/modules/fuzz"),
        dep.into_bytes(),
        Vec::new(),
        Some(data.to_vec()),
        None,
        None,
    ) {
        Ok(i) => i,
        Err(ModulesError::InstallUnsupported { .. }) => return,
        Err(e) => panic!("unexpected error: {e}"),
    };
    let requests: Vec<Request> = modules.iter().cloned().map(Request::Name).collect();
    let lenient = index.plan_lenient(&requests);
    check_plan(&lenient);
    for m in &modules {
        assert!(
            lenient.modules.iter().any(|e| &e.name == m),
            "{m} not planned"
        );
    }
    check_strict(&index, &requests, &lenient, false);
});
