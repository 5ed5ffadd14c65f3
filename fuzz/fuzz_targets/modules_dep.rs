//! `ModuleIndex::from_bytes` on any modules.dep: a value or a parse error,
//! never a panic, and what the index lists can be used: every module name
//! has a path, the subset of all names (what the initrd builder writes)
//! reads back as the same index, and the plan of a module is a valid load
//! order that contains it, strict and lenient agreeing.
#![no_main]

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use kestrel_modules::{ModuleIndex, ModulesError, Plan, PlanNote, Request};
use libfuzzer_sys::fuzz_target;

const DIR: &str = "/lib/modules/fuzz";
/// Modules planned per input (a plan walks the whole closure).
const PLANNED: usize = 16;

/// Each module once, every dependency earlier, soft ones among them.
fn check_plan(plan: &Plan) {
    let mut seen = HashSet::new();
    for (k, m) in plan.modules.iter().enumerate() {
        assert!(seen.insert(m.name.as_str()), "{} twice", m.name);
        assert!(m.deps.iter().all(|&d| d < k), "{} depends forward", m.name);
        assert!(m.soft_deps.iter().all(|d| m.deps.contains(d)));
    }
}

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
        match index.plan(&request) {
            Ok(strict) => assert_eq!(strict, lenient),
            Err(ModulesError::DependencyCycle { cycle }) => {
                assert_eq!(cycle.first(), cycle.last());
                assert!(lenient
                    .notes
                    .iter()
                    .any(|note| matches!(note, PlanNote::CycleBroken { .. })));
            }
            Err(ModulesError::ModuleNotFound { .. }) => assert!(not_found),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
});
