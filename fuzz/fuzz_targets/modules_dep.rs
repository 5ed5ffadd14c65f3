//! `ModuleIndex::from_bytes` on any modules.dep: a value or a parse error,
//! never a panic, and what the index lists can be used: every module name
//! has a path, the subset of all names (what the initrd builder writes)
//! reads back as the same index, and the plan of a module is a valid load
//! order that contains it, strict and lenient agreeing.
#![no_main]

#[path = "../common/plans.rs"]
mod plans;

use std::collections::BTreeSet;
use std::path::Path;

use kestrel_modules::{ModuleIndex, ModulesError, PlanNote, Request};
use libfuzzer_sys::fuzz_target;
use plans::{check_plan, check_strict};

const DIR: &str = "/lib/modules/fuzz";
/// Modules planned per input (a plan walks the whole closure).
const PLANNED: usize = 16;

/// Each module once, every dependency earlier, soft ones among them.

fn load(dep: Vec<u8>) -> Result<ModuleIndex, ModulesError> {
    ModuleIndex::from_bytes(Path::new(DIR), dep, Vec::new(), None, None, None)
}

fuzz_target!(|data: &[u8]| {
    let index = match load(data.to_vec()) {
        Ok(i) => i,
        Err(ModulesError::Parse { .. }) => return,
        Err(e) => panic!("unexpected error: {e}"),
    };
    let names: Vec<String> = index.module_names().map(str::to_owned).collect();
    assert_eq!(names.len(), index.module_count());
    for n in &names {
        assert!(index.module_path(n).is_some(), "{n:?} has no path");
    }

    // The subset of every module is the same index.
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let dep = index
        .subset_files(&all)
        .into_iter()
        .find(|(f, _)| f == "modules.dep")
        .map(|(_, text)| text)
        .unwrap_or_default();
    let again = load(dep).expect("a subset reads back");
    assert!(again.module_names().eq(index.module_names()));
    for n in &names {
        assert_eq!(again.module_relpath(n), index.module_relpath(n));
    }

    for n in names.iter().take(PLANNED) {
        let request = [Request::Name(n.clone())];
        let lenient = index.plan_lenient(&request);
        check_plan(&lenient);
        let not_found = lenient
            .notes
            .iter()
            .any(|note| matches!(note, PlanNote::NotFound { .. }));
        if !not_found {
            assert!(
                lenient.modules.iter().any(|m| &m.name == n),
                "{n} not planned"
            );
        }
        check_strict(&index, &request, &lenient, not_found);
    }
});
