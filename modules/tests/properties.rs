//! Property tests: any input gives a value or a typed error, never a panic,
//! and every plan is a valid load order.

// Test code: a failed expectation must stop the run loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;
use std::path::Path;

use kestrel_modules::config::Config;
use kestrel_modules::{ModuleIndex, Plan, Request};
use proptest::prelude::*;

/// Every module once, every dependency index earlier than its user.
fn check_plan(plan: &Plan) {
    let mut seen = HashSet::new();
    for (k, m) in plan.modules.iter().enumerate() {
        assert!(seen.insert(m.name.clone()), "{} twice", m.name);
        for &d in &m.deps {
            assert!(d < k, "{} (#{k}) depends on #{d}", m.name);
        }
    }
}

/// 2,000 cases per property by default; PROPTEST_CASES overrides.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Arbitrary bytes in every index file and config.
    #[test]
    fn arbitrary_files_never_panic(
        dep in proptest::collection::vec(any::<u8>(), 0..300),
        alias in proptest::collection::vec(any::<u8>(), 0..300),
        softdep in proptest::collection::vec(any::<u8>(), 0..200),
        builtin in proptest::collection::vec(any::<u8>(), 0..100),
        modinfo in proptest::collection::vec(any::<u8>(), 0..100),
        config in proptest::collection::vec(any::<u8>(), 0..200),
        query in "[ -~]{0,40}",
    ) {
        let _ = Config::parse(&config, "fuzz.conf");
        if let Ok(index) = ModuleIndex::from_bytes(Path::new("/m"), dep, alias, Some(softdep), Some(builtin), Some(modinfo)) {
            let _ = index.lookup_alias(&query);
            let plan = index.plan_lenient(&[Request::Alias(query.clone()), Request::Name(query.clone())]);
            check_plan(&plan);
            if let Ok(plan) = index.plan(&[Request::Alias(query)]) {
                check_plan(&plan);
            }
        }
    }

    /// Random module graphs with random softdeps (cycles included) and
    /// glob aliases: lenient plans are always valid and closed under hard
    /// dependencies; strict plans are valid or report a cycle.
    #[test]
    fn random_graphs_plan_validly(
        deps in proptest::collection::vec(proptest::collection::vec(0usize..12, 0..4), 12),
        soft in proptest::collection::vec((0usize..12, proptest::collection::vec(0usize..12, 0..3), proptest::collection::vec(0usize..12, 0..2)), 0..6),
        builtin in proptest::collection::vec(0usize..12, 0..3),
        requests in proptest::collection::vec((0usize..12, any::<bool>()), 1..6),
    ) {
        let name = |i: usize| format!("m{i}");
        let builtin: HashSet<usize> = builtin.into_iter().collect();
        let mut dep_text = String::new();
        for (i, ds) in deps.iter().enumerate() {
            if builtin.contains(&i) {
                continue;
            }
            dep_text.push_str(&format!("kernel/{}.ko:", name(i)));
            let mut listed = HashSet::new();
            for &d in ds {
                if d != i && !builtin.contains(&d) && listed.insert(d) {
                    dep_text.push_str(&format!(" kernel/{}.ko", name(d)));
                }
            }
            dep_text.push('\n');
        }
        let mut alias_text = String::new();
        for i in 0..12 {
            alias_text.push_str(&format!("alias dev:{i}* {}\n", name(i)));
            alias_text.push_str(&format!("alias dev:[{}]x* {}\n", i % 10, name(i)));
        }
        let mut softdep_text = String::new();
        for (m, pre, post) in &soft {
            softdep_text.push_str(&format!("softdep {} pre:", name(*m)));
            for p in pre { softdep_text.push_str(&format!(" {}", name(*p))); }
            softdep_text.push_str(" post:");
            for p in post { softdep_text.push_str(&format!(" {}", name(*p))); }
            softdep_text.push('\n');
        }
        let builtin_text: String = builtin.iter().map(|&b| format!("kernel/{}.ko\n", name(b))).collect();
        let index = ModuleIndex::from_bytes(
            Path::new("/m"),
            dep_text.into_bytes(),
            alias_text.into_bytes(),
            Some(softdep_text.into_bytes()),
            Some(builtin_text.into_bytes()),
            None,
        ).unwrap();
        let requests: Vec<Request> = requests
            .into_iter()
            .map(|(i, by_alias)| if by_alias { Request::Alias(format!("dev:{i}")) } else { Request::Name(name(i)) })
            .collect();
        let plan = index.plan_lenient(&requests);
        check_plan(&plan);
        let planned: HashSet<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
        for m in &plan.modules {
            let i: usize = m.name[1..].parse().unwrap();
            for &d in &deps[i] {
                if d != i && !builtin.contains(&d) {
                    prop_assert!(planned.contains(name(d).as_str()), "{} planned without its dependency {}", m.name, name(d));
                }
            }
            prop_assert!(!builtin.contains(&i), "builtin {} planned", m.name);
        }
        match index.plan(&requests) {
            Ok(strict) => {
                check_plan(&strict);
                prop_assert_eq!(&strict.modules, &plan.modules);
            }
            Err(e) => prop_assert!(e.to_string().contains("dependency cycle"), "{}", e),
        }
    }
}
