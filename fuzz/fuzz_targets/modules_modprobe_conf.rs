//! `Config::parse` (modprobe.d) and `Config::apply_kernel_cmdline` on any
//! bytes: a value or the `install` refusal, never a panic. What is parsed
//! is well-formed (names are single words, options never empty or with a
//! tab, softdep words never `pre:`/`post:`), alias and blacklist lines read
//! back the same when written out again, and a plan over the config (each
//! alias requested, modules made from its words) is a valid load order.
//!
//! Input: the config file, then (after the first NUL) kernel command line
//! parameters separated by spaces.
#![no_main]

#[path = "../common/plans.rs"]
mod plans;

use std::path::Path;

use kestrel_modules::{Config, ModuleIndex, ModulesError, Request};
use libfuzzer_sys::fuzz_target;
use plans::check_plan;

const FILE: &str = "fuzz.conf";
/// Modules in the synthetic tree, and alias requests per input.
const MAX_MODULES: usize = 64;

fn is_word(w: &str) -> bool {
    !w.is_empty() && !w.contains([' ', '\t', '\n'])
}

fn check(config: &Config) {
    for a in &config.aliases {
        assert!(is_word(&a.pattern) && is_word(&a.module), "{a:?}");
    }
    for b in &config.blacklist {
        assert!(is_word(b), "{b:?}");
    }
    for o in &config.options {
        assert!(is_word(&o.module), "{o:?}");
        assert!(
            !o.options.is_empty() && !o.options.contains(['\t', '\n']),
            "{o:?}"
        );
    }
    for s in &config.softdeps {
        assert!(is_word(&s.pattern), "{s:?}");
        assert_eq!(s.file, FILE);
        for w in s.pre.iter().chain(&s.post) {
            assert!(is_word(w) && w != "pre:" && w != "post:", "{s:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, cmdline) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let parsed = match Config::parse(text, FILE) {
        Ok(c) => c,
        Err(ModulesError::InstallUnsupported { file, .. }) => {
            assert_eq!(file, FILE);
            return;
        }
        Err(e) => panic!("unexpected error: {e}"),
    };
    check(&parsed);

    // Alias and blacklist lines read back as they were (the trailing blank
    // keeps a word ending in '\' from continuing the line).
    let mut again = String::new();
    for a in &parsed.aliases {
        again.push_str(&format!("alias {} {} \n", a.pattern, a.module));
    }
    for b in &parsed.blacklist {
        again.push_str(&format!("blacklist {b} \n"));
    }
    let reparsed = Config::parse(again.as_bytes(), FILE).expect("written back");
    assert_eq!(reparsed.aliases, parsed.aliases);
    assert_eq!(reparsed.blacklist, parsed.blacklist);

    let mut config = parsed;
    let params: Vec<String> = String::from_utf8_lossy(cmdline)
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    config.apply_kernel_cmdline(&params);
    assert!(config.hard_blacklist.iter().all(|b| !b.is_empty()));
    for o in &config.options {
        assert!(!o.module.is_empty() && !o.options.is_empty(), "{o:?}");
    }

    // Plans over the config: every word naming a module.
    let mut words: Vec<String> = Vec::new();
    for a in &config.aliases {
        words.push(a.module.clone());
    }
    for s in &config.softdeps {
        words.push(s.pattern.clone());
        words.extend(s.pre.iter().chain(&s.post).cloned());
    }
    words.retain(|w| w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    words.sort();
    words.dedup();
    words.truncate(MAX_MODULES);
    let dep: String = words.iter().map(|w| format!("kernel/{w}.ko:\n")).collect();
    let index = ModuleIndex::from_bytes(
        Path::new("/lib/modules/fuzz"),
        dep.into_bytes(),
        Vec::new(),
        None,
        None,
        None,
    )
    .expect("a synthetic modules.dep is valid")
    .with_config(config);
    let requests: Vec<Request> = index
        .config()
        .aliases
        .iter()
        .take(MAX_MODULES)
        .map(|a| Request::Alias(a.pattern.clone()))
        .chain(words.iter().cloned().map(Request::Name))
        .collect();
    check_plan(&index.plan_lenient(&requests));
});
