//! Checks every module-plan fuzz target makes (included with `#[path]`).
// Each target takes what it needs.
#![allow(dead_code)]

use std::collections::HashSet;

use kestrel_modules::{ModuleIndex, ModulesError, Plan, PlanNote, Request};

/// Each module once, every dependency earlier, soft edges among the hard.
pub fn check_plan(plan: &Plan) {
    let mut seen = HashSet::new();
    for (k, m) in plan.modules.iter().enumerate() {
        assert!(seen.insert(m.name.as_str()), "{} twice", m.name);
        assert!(m.deps.iter().all(|&d| d < k), "{} depends forward", m.name);
        assert!(m.soft_deps.iter().all(|d| m.deps.contains(d)));
    }
}

/// The strict plan equals the lenient one, or names a cycle the lenient
/// one broke, or (when `not_found` says a request named nothing) fails
/// on it.
pub fn check_strict(index: &ModuleIndex, requests: &[Request], lenient: &Plan, not_found: bool) {
    match index.plan(requests) {
        Ok(strict) => assert_eq!(&strict, lenient),
        Err(ModulesError::DependencyCycle { cycle }) => {
            assert_eq!(cycle.first(), cycle.last());
            assert!(lenient
                .notes
                .iter()
                .any(|note| matches!(note, PlanNote::CycleBroken { .. })));
        }
        Err(ModulesError::ModuleNotFound { .. }) if not_found => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
}
