//! Prints how long each step of loading the index takes (release build):
//! `cargo run --release -p kestrel-modules --example index_timing [DIR]`;
//! without DIR, the installed tree the benchmark uses (tests/common).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use kestrel_modules::ModuleIndex;

#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> Result<(), kestrel_modules::ModulesError> {
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => match common::tree_or_skip(common::Layout::Plain, "index_timing") {
            Some(tree) => tree.dir,
            None => return Ok(()),
        },
    };
    let dir = dir.as_path();
    let t = Instant::now();
    let dep = std::fs::read(dir.join("modules.dep")).unwrap_or_default();
    let alias = std::fs::read(dir.join("modules.alias")).unwrap_or_default();
    let softdep = std::fs::read(dir.join("modules.softdep")).ok();
    let builtin = std::fs::read(dir.join("modules.builtin")).ok();
    let modinfo = std::fs::read(dir.join("modules.builtin.modinfo")).ok();
    let read = t.elapsed();
    // The machine is shared: report the minimum over many runs.
    let mut parse = std::time::Duration::MAX;
    let mut index = None;
    for _ in 0..50 {
        let t = Instant::now();
        let i = ModuleIndex::from_bytes(
            dir,
            dep.clone(),
            alias.clone(),
            softdep.clone(),
            builtin.clone(),
            modinfo.clone(),
        )?;
        parse = parse.min(t.elapsed());
        index = Some(i);
    }
    let Some(index) = index else { return Ok(()) };
    // Each file on its own, to see where the time goes.
    let min_of = |f: &dyn Fn() -> Result<ModuleIndex, kestrel_modules::ModulesError>| {
        let mut best = std::time::Duration::MAX;
        for _ in 0..30 {
            let t = Instant::now();
            let i = f();
            best = best.min(t.elapsed());
            drop(i);
        }
        best
    };
    let only_dep =
        min_of(&|| ModuleIndex::from_bytes(dir, dep.clone(), Vec::new(), None, None, None));
    let only_alias =
        min_of(&|| ModuleIndex::from_bytes(dir, Vec::new(), alias.clone(), None, None, None));
    let rest = min_of(&|| {
        ModuleIndex::from_bytes(
            dir,
            Vec::new(),
            Vec::new(),
            softdep.clone(),
            builtin.clone(),
            modinfo.clone(),
        )
    });
    println!(
        "modules.dep alone {only_dep:?}, modules.alias alone {only_alias:?}, the others {rest:?}"
    );
    let mut load = std::time::Duration::MAX;
    let mut index2 = None;
    for _ in 0..50 {
        let t = Instant::now();
        let i = ModuleIndex::load(dir)?;
        load = load.min(t.elapsed());
        index2 = Some(i);
    }
    let Some(index2) = index2 else { return Ok(()) };
    println!(
        "read {read:?}, parse (min of 50) {parse:?}, load (min of 50) {load:?}: {} modules, {} aliases ({} again)",
        index.module_count(),
        index.alias_count(),
        index2.alias_count()
    );
    Ok(())
}
