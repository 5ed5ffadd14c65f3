//! The load plan: requests become the list of modules to insert, in the
//! order `modprobe` would insert them, with the dependency edges that let
//! the loader run independent modules in parallel.
//!
//! The order is libkmod's `kmod_module_get_probe_list` for each request
//! (softdep pre, hard dependencies from modules.dep in reverse, the module,
//! softdep post), requests one after the other, each module kept at its
//! first appearance. A stable topological sort then guarantees every module
//! comes after all its dependencies (it changes nothing for a depmod-written
//! modules.dep); a real cycle is an error (or, in [`ModuleIndex::plan_lenient`],
//! broken and noted). Pure: no syscalls.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::index::{ModuleIndex, Resolved};
use crate::names::normalize_name;
use crate::ModulesError;

/// Bound on nested softdep expansion (kmod has none; a pathological config
/// must not exhaust the stack of PID 1).
pub const MAX_SOFTDEP_DEPTH: usize = 64;

/// What to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A module by name (`modprobe NAME`): an error if nothing matches.
    Name(String),
    /// A MODALIAS from a device: no match simply means no driver.
    Alias(String),
}

/// The load plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Modules to insert, topologically ordered.
    pub modules: Vec<PlanEntry>,
    /// What was left out and why (builtin, blacklisted, no match, ...).
    pub notes: Vec<PlanNote>,
}

/// One module to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    /// Normalised module name.
    pub name: String,
    /// Absolute path of the module file.
    pub path: PathBuf,
    /// Indices into [`Plan::modules`] of modules that must be live first
    /// (hard deps + softdep pre, and the module whose softdep post this is).
    pub deps: Vec<usize>,
    /// The part of `deps` that only orders the load (softdeps, not symbol
    /// dependencies): when one of these fails, this module still loads,
    /// as with kmod. E.g. ext4's `pre: crc32c` matches crc32c_intel, which
    /// fails with ENODEV on a CPU without SSE4.2; crc32c_generic serves.
    pub soft_deps: Vec<usize>,
    /// Parameters for finit_module ("" if none).
    pub options: String,
    /// Why it is in the plan: "alias pci:v00001AF4d...", "name ext4",
    /// "dependency of virtio_blk", "softdep pre of ext4".
    pub reason: String,
}

/// Something the planner left out or worked around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanNote {
    /// An alias request that no module matches.
    NoMatch {
        /// The MODALIAS.
        alias: String,
    },
    /// A name request that nothing matches (only from `plan_lenient`).
    NotFound {
        /// The name.
        name: String,
    },
    /// Compiled into the kernel: nothing to load.
    Builtin {
        /// Module name.
        module: String,
        /// Why it was wanted.
        reason: String,
    },
    /// Found through an alias but blacklisted (`blacklist`, `modprobe.blacklist=`).
    Blacklisted {
        /// Module name.
        module: String,
        /// The request that found it.
        request: String,
    },
    /// Refused by the kernel's `module_blacklist=`: never requested.
    KernelBlacklisted {
        /// Module name.
        module: String,
        /// The request that found it.
        request: String,
    },
    /// Named by a config alias or softdep, but has no file and is not builtin.
    Unknown {
        /// Module name.
        module: String,
        /// Why it was wanted.
        reason: String,
    },
    /// A dependency cycle (only from `plan_lenient`): the edges closing it
    /// were dropped, the modules load in kmod's order.
    CycleBroken {
        /// The modules on the cycle.
        cycle: Vec<String>,
    },
}

/// One step of kmod's probe list.
struct Item {
    name: String,
    id: Option<u32>,
    builtin: bool,
    alias: Option<String>,
    reason: String,
}

/// Softdeps of a module, resolved.
#[derive(Default, Clone)]
struct Soft {
    pre: Vec<Resolved>,
    post: Vec<Resolved>,
}

struct Walk<'a> {
    index: &'a ModuleIndex,
    items: Vec<Item>,
    visited: HashSet<String>,
    soft_cache: HashMap<String, Soft>,
}

impl<'a> Walk<'a> {
    fn softdeps(&mut self, name: &str) -> Soft {
        if let Some(s) = self.soft_cache.get(name) {
            return s.clone();
        }
        let mut soft = Soft::default();
        // kmod: the first softdep whose pattern matches wins.
        if let Some(sd) = self
            .index
            .softdeps
            .iter()
            .find(|sd| crate::fnmatch::fnmatch(sd.pattern.as_bytes(), name.as_bytes()))
        {
            for p in &sd.pre {
                soft.pre.extend(self.index.lookup(p));
            }
            for p in &sd.post {
                soft.post.extend(self.index.lookup(p));
            }
        }
        self.soft_cache.insert(name.to_owned(), soft.clone());
        soft
    }

    /// kmod `__kmod_module_get_probe_list`.
    fn probe(&mut self, r: &Resolved, reason: String, depth: usize) {
        if !self.visited.insert(r.name.clone()) || depth > MAX_SOFTDEP_DEPTH {
            return;
        }
        let deps =
            r.id.map(|id| hard_dep_order(self.index, id))
                .unwrap_or_default();
        for d in deps {
            let Some(m) = self.index.modules.get(d as usize) else {
                continue;
            };
            let dep = Resolved {
                name: m.name.clone(),
                id: Some(d),
                builtin: false,
                alias: None,
            };
            self.fill_softdep(&dep, format!("dependency of {}", r.name), depth);
        }
        self.fill_softdep(r, reason, depth);
    }

    /// kmod `__kmod_module_fill_softdep`.
    fn fill_softdep(&mut self, r: &Resolved, reason: String, depth: usize) {
        let soft = self.softdeps(&r.name);
        for p in &soft.pre {
            self.probe(p, format!("softdep pre of {}", r.name), depth + 1);
        }
        self.items.push(Item {
            name: r.name.clone(),
            id: r.id,
            builtin: r.builtin,
            alias: r.alias.clone(),
            reason,
        });
        for p in &soft.post {
            self.probe(p, format!("softdep post of {}", r.name), depth + 1);
        }
    }
}

/// The hard dependencies of `id` in load order. libkmod prepends while
/// parsing the dep line, so it walks the list in reverse, which depmod's
/// sort makes dependencies-first; it does not look at the dependencies'
/// own lines, because depmod lists the whole closure. A depth-first walk
/// over that reversed list gives exactly kmod's order for a depmod-written
/// file, and stays correct for a hand-written one that lists only direct
/// dependencies or lists them out of order.
fn hard_dep_order(index: &ModuleIndex, id: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut seen: HashSet<u32> = HashSet::from([id]);
    // (module, next dependency to look at): an explicit stack, no recursion.
    let mut stack: Vec<(u32, usize)> = Vec::new();
    for &top in index.deps_of(id).iter().rev() {
        if !seen.insert(top) {
            continue;
        }
        stack.push((top, 0));
        while let Some((m, i)) = stack.pop() {
            let deps = index.deps_of(m);
            // Walk this module's list in reverse too.
            match deps.len().checked_sub(i + 1).and_then(|j| deps.get(j)) {
                Some(&d) => {
                    stack.push((m, i + 1));
                    if seen.insert(d) {
                        stack.push((d, 0));
                    }
                }
                None => out.push(m),
            }
        }
    }
    out
}

impl ModuleIndex {
    /// The load plan for these requests: closure of dependencies (and
    /// softdeps), topologically ordered (every module after all its
    /// dependencies), builtin modules left out, each module once.
    ///
    /// Errors: a [`Request::Name`] that matches nothing, a dependency cycle.
    pub fn plan(&self, requests: &[Request]) -> Result<Plan, ModulesError> {
        self.plan_inner(requests, true)
    }

    /// Like [`ModuleIndex::plan`] but never fails: unknown names and broken
    /// cycles become [`PlanNote`]s and the rest is planned. This is what a
    /// PID 1 wants: one bad request must not stop the others.
    pub fn plan_lenient(&self, requests: &[Request]) -> Plan {
        // plan_inner cannot fail in lenient mode; an empty plan is the safe
        // answer if it ever did.
        self.plan_inner(requests, false).unwrap_or_default()
    }

    fn plan_inner(&self, requests: &[Request], strict: bool) -> Result<Plan, ModulesError> {
        let mut notes = Vec::new();
        let mut walk = self.walk_requests(requests, strict, &mut notes)?;
        let order = keep_first_appearances(&walk.items, &mut notes);
        let mut edges = dependency_edges(&mut walk, &order);
        let sorted = sort_topologically(&mut edges.deps, &order, &walk.items, strict, &mut notes)?;
        let modules = self.plan_entries(&walk.items, &order, &edges, &sorted);
        Ok(Plan { modules, notes })
    }

    /// kmod's probe list of every request, one after the other; what is
    /// not found or blacklisted becomes a note (or, strict, an unknown name
    /// an error).
    fn walk_requests(
        &self,
        requests: &[Request],
        strict: bool,
        notes: &mut Vec<PlanNote>,
    ) -> Result<Walk<'_>, ModulesError> {
        let mut walk = Walk {
            index: self,
            items: Vec::new(),
            visited: HashSet::new(),
            soft_cache: HashMap::new(),
        };
        for request in requests {
            let (query, label, is_name) = match request {
                Request::Name(n) => (n.as_str(), format!("name {n}"), true),
                Request::Alias(a) => (a.as_str(), format!("alias {a}"), false),
            };
            let found = self.lookup(query);
            if found.is_empty() {
                if is_name {
                    if strict {
                        return Err(ModulesError::ModuleNotFound {
                            name: query.to_owned(),
                            dir: self.dir().to_path_buf(),
                        });
                    }
                    notes.push(PlanNote::NotFound {
                        name: query.to_owned(),
                    });
                } else {
                    notes.push(PlanNote::NoMatch {
                        alias: query.to_owned(),
                    });
                }
                continue;
            }
            for r in found {
                if self.config.hard_blacklist.contains(&r.name) {
                    notes.push(PlanNote::KernelBlacklisted {
                        module: r.name.clone(),
                        request: label.clone(),
                    });
                    continue;
                }
                // kmod applies the blacklist only to modules found through an
                // alias (KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY).
                if r.alias.is_some() && self.config.blacklist.contains(&r.name) {
                    notes.push(PlanNote::Blacklisted {
                        module: r.name.clone(),
                        request: label.clone(),
                    });
                    continue;
                }
                // Each top-level module gets a fresh probe list in kmod.
                walk.visited.clear();
                walk.probe(&r, label.clone(), 0);
            }
        }
        Ok(walk)
    }

    /// The plan's entries in `sorted` order, their dependencies renumbered
    /// to positions in the plan.
    fn plan_entries(
        &self,
        items: &[Item],
        order: &FirstAppearances,
        edges: &Edges,
        sorted: &[usize],
    ) -> Vec<PlanEntry> {
        let mut new_index = vec![0usize; sorted.len()];
        for (new, &k) in sorted.iter().enumerate() {
            if let Some(slot) = new_index.get_mut(k) {
                *slot = new;
            }
        }
        let renumber = |list: Option<&Vec<usize>>| -> Vec<usize> {
            list.map(|xs| {
                xs.iter()
                    .filter_map(|&x| new_index.get(x).copied())
                    .collect()
            })
            .unwrap_or_default()
        };
        let mut modules = Vec::with_capacity(sorted.len());
        for &k in sorted {
            let Some(item) = order.items.get(k).and_then(|&i| items.get(i)) else {
                continue;
            };
            // Never drop an entry here: the dependency indices count them all.
            let rel = item
                .id
                .and_then(|id| self.rel_bytes_of(id))
                .unwrap_or_default();
            let mut deps = renumber(edges.deps.get(k));
            deps.sort_unstable();
            let hard_of = renumber(edges.hard.get(k));
            let soft_deps: Vec<usize> = deps
                .iter()
                .copied()
                .filter(|x| !hard_of.contains(x))
                .collect();
            modules.push(PlanEntry {
                name: item.name.clone(),
                path: self.dir().join(std::ffi::OsStr::from_bytes(rel)),
                deps,
                soft_deps,
                options: self.options_for(&item.name, item.alias.as_deref()),
                reason: item.reason.clone(),
            });
        }
        modules
    }

    /// kmod `kmod_module_get_options`: every `options` entry for the name or
    /// for the alias the module was found through, joined with spaces.
    pub fn options_for(&self, name: &str, alias: Option<&str>) -> String {
        let name = normalize_name(name);
        let mut out = String::new();
        for o in &self.config.options {
            if (o.module == name || Some(o.module.as_str()) == alias) && !o.options.is_empty() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&o.options);
            }
        }
        out
    }
}

/// The modules of the probe list, each at its first appearance (kmod's
/// position), with the way back from a name.
struct FirstAppearances {
    /// Indices into the probe list, in kmod's order.
    items: Vec<usize>,
    /// Module name -> its position in `items`.
    pos: HashMap<String, usize>,
}

/// Keep each module at its first appearance; builtin and unknown modules
/// become notes instead.
fn keep_first_appearances(items: &[Item], notes: &mut Vec<PlanNote>) -> FirstAppearances {
    let mut order = FirstAppearances {
        items: Vec::new(),
        pos: HashMap::new(),
    };
    let mut noted: HashSet<String> = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if order.pos.contains_key(&item.name) || noted.contains(&item.name) {
            continue;
        }
        match (item.id, item.builtin) {
            (Some(_), _) => {
                order.pos.insert(item.name.clone(), order.items.len());
                order.items.push(i);
            }
            (None, true) => {
                noted.insert(item.name.clone());
                notes.push(PlanNote::Builtin {
                    module: item.name.clone(),
                    reason: item.reason.clone(),
                });
            }
            (None, false) => {
                noted.insert(item.name.clone());
                notes.push(PlanNote::Unknown {
                    module: item.name.clone(),
                    reason: item.reason.clone(),
                });
            }
        }
    }
    order
}

/// The edges between the modules kept, by position in kmod's order.
struct Edges {
    /// Everything each module waits for, sorted.
    deps: Vec<Vec<usize>>,
    /// The part of `deps` from modules.dep (symbol dependencies).
    hard: Vec<Vec<usize>>,
}

/// Edges: hard deps, softdep pre, and "after the module whose post softdep
/// this is" when it did come after it.
fn dependency_edges(walk: &mut Walk<'_>, order: &FirstAppearances) -> Edges {
    let n = order.items.len();
    let index = walk.index;
    let mut edges = Edges {
        deps: vec![Vec::new(); n],
        hard: vec![Vec::new(); n],
    };
    for (k, &i) in order.items.iter().enumerate() {
        let Some(item) = walk.items.get(i) else {
            continue;
        };
        let mut mine: Vec<usize> = Vec::new();
        if let Some(id) = item.id {
            for &d in index.deps_of(id) {
                if let Some(&p) = index
                    .modules
                    .get(d as usize)
                    .and_then(|dm| order.pos.get(&dm.name))
                {
                    mine.push(p);
                    if let Some(h) = edges.hard.get_mut(k) {
                        h.push(p);
                    }
                }
            }
        }
        let item_name = item.name.clone();
        let soft = walk.softdeps(&item_name);
        for r in &soft.pre {
            if let Some(&p) = order.pos.get(&r.name) {
                mine.push(p);
            }
        }
        for r in &soft.post {
            if let Some(&q) = order.pos.get(&r.name) {
                if q > k {
                    if let Some(d) = edges.deps.get_mut(q) {
                        d.push(k);
                    }
                }
            }
        }
        mine.retain(|&p| p != k);
        if let Some(d) = edges.deps.get_mut(k) {
            d.extend(mine);
        }
    }
    for d in &mut edges.deps {
        d.sort_unstable();
        d.dedup();
    }
    edges
}

/// Stable topological sort (Kahn, smallest kmod position first). On a
/// cycle: report it (strict) or drop its edges that point forward in kmod's
/// order, which is the order kmod would load it in, and start again
/// (lenient).
fn sort_topologically(
    deps: &mut [Vec<usize>],
    order: &FirstAppearances,
    items: &[Item],
    strict: bool,
    notes: &mut Vec<PlanNote>,
) -> Result<Vec<usize>, ModulesError> {
    loop {
        let (sorted, done) = kahn(deps);
        if sorted.len() == deps.len() {
            return Ok(sorted);
        }
        let cycle = find_cycle(deps, &done).unwrap_or_default();
        let names: Vec<String> = cycle
            .iter()
            .filter_map(|&k| {
                order
                    .items
                    .get(k)
                    .and_then(|&i| items.get(i))
                    .map(|it| it.name.clone())
            })
            .collect();
        if strict {
            return Err(ModulesError::DependencyCycle { cycle: names });
        }
        notes.push(PlanNote::CycleBroken { cycle: names });
        break_cycle(deps, &cycle);
    }
}

/// Drops the edges of `cycle` that point forward in kmod's order (a cycle
/// always has one), or, should it have none, all its edges: never loop.
fn break_cycle(deps: &mut [Vec<usize>], cycle: &[usize]) {
    let mut dropped = false;
    for &c in cycle {
        if let Some(ds) = deps.get_mut(c) {
            let before = ds.len();
            ds.retain(|&d| d < c);
            dropped |= ds.len() != before;
        }
    }
    if !dropped {
        for &c in cycle {
            if let Some(ds) = deps.get_mut(c) {
                ds.retain(|d| !cycle.contains(d));
            }
        }
    }
}

/// Kahn's algorithm taking the smallest ready index first: the order and
/// which nodes were sorted (the others wait on a cycle).
fn kahn(deps: &[Vec<usize>]) -> (Vec<usize>, Vec<bool>) {
    let n = deps.len();
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, ds) in deps.iter().enumerate() {
        for &d in ds {
            if let Some(u) = users.get_mut(d) {
                u.push(k);
            }
        }
    }
    let mut heap: BinaryHeap<Reverse<usize>> = remaining
        .iter()
        .enumerate()
        .filter(|(_, &r)| r == 0)
        .map(|(k, _)| Reverse(k))
        .collect();
    let mut sorted = Vec::with_capacity(n);
    let mut done = vec![false; n];
    while let Some(Reverse(k)) = heap.pop() {
        match done.get_mut(k) {
            Some(d) if !*d => *d = true,
            _ => continue,
        }
        sorted.push(k);
        for &u in users.get(k).map(Vec::as_slice).unwrap_or_default() {
            if let Some(r) = remaining.get_mut(u) {
                *r = r.saturating_sub(1);
                if *r == 0 {
                    heap.push(Reverse(u));
                }
            }
        }
    }
    (sorted, done)
}

/// A cycle among the not-yet-sorted nodes, as node indices with the first
/// repeated at the end.
fn find_cycle(deps: &[Vec<usize>], done: &[bool]) -> Option<Vec<usize>> {
    let start = (0..deps.len()).find(|&k| !done.get(k).copied().unwrap_or(true))?;
    let mut path = vec![start];
    let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut cur = start;
    loop {
        // Every unsorted node has an unsorted dependency (else Kahn would
        // have taken it), so this walk must revisit a node.
        let next = deps
            .get(cur)?
            .iter()
            .copied()
            .find(|&d| !done.get(d).copied().unwrap_or(true))?;
        if let Some(&at) = seen.get(&next) {
            let mut cycle: Vec<usize> = path.get(at..)?.to_vec();
            cycle.push(next);
            // Report in dependency order: a needs b needs ... needs a.
            return Some(cycle);
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::loader::{load_plan_with, KernelInserter, LoadError, LoadEvent};
    use std::path::Path;
    use std::sync::Mutex;

    const DEP: &str = "kernel/core.ko:\n\
        kernel/mid.ko: kernel/core.ko\n\
        kernel/top.ko: kernel/mid.ko kernel/core.ko\n\
        kernel/pre.ko:\n\
        kernel/post.ko:\n\
        kernel/black.ko: kernel/core.ko\n\
        kernel/cyc_a.ko:\n\
        kernel/cyc_b.ko:\n\
        kernel/gone.ko:\n\
        kernel/needs-gone.ko: kernel/gone.ko\n\
        kernel/hw.ko:\n\
        kernel/usesbuiltin.ko:\n";
    const ALIAS: &str = "# Aliases extracted from modules themselves.\n\
        alias pci:v1234d* black\n\
        alias pci:v1234d* hw\n\
        alias fs-top top\n";
    const SOFTDEP: &str = "# Soft dependencies extracted from modules themselves.\n\
        softdep top pre: pre post: post\n\
        softdep cyc_a pre: cyc_b\n\
        softdep cyc_b pre: cyc_a\n\
        softdep usesbuiltin pre: builtin-mod\n";
    const BUILTIN: &str = "kernel/fs/builtin-mod.ko\n";

    fn index(dir: &Path, config: &str, cmdline: &[&str]) -> ModuleIndex {
        // "a.conf" sorts before "modules.softdep", as a real /etc file would not
        // necessarily: see config_softdep_order_follows_file_names.
        let mut c = Config::parse(config.as_bytes(), "a.conf").unwrap();
        c.apply_kernel_cmdline(cmdline);
        ModuleIndex::from_bytes(
            dir,
            DEP.as_bytes().to_vec(),
            ALIAS.as_bytes().to_vec(),
            Some(SOFTDEP.as_bytes().to_vec()),
            Some(BUILTIN.as_bytes().to_vec()),
            None,
        )
        .unwrap()
        .with_config(c)
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.modules.iter().map(|m| m.name.as_str()).collect()
    }

    fn pos(plan: &Plan, name: &str) -> usize {
        plan.modules.iter().position(|m| m.name == name).unwrap()
    }

    #[test]
    fn softdeps_pre_before_post_after_in_kmod_order() {
        let i = index(Path::new("/m"), "", &[]);
        let plan = i.plan(&[Request::Name("top".into())]).unwrap();
        assert_eq!(names(&plan), vec!["core", "mid", "pre", "top", "post"]);
        let top = &plan.modules[pos(&plan, "top")];
        assert_eq!(top.deps, vec![0, 1, 2], "core, mid and the pre softdep");
        assert_eq!(top.reason, "name top");
        assert_eq!(top.path, PathBuf::from("/m/kernel/top.ko"));
        let post = &plan.modules[pos(&plan, "post")];
        assert_eq!(post.deps, vec![3], "post softdep loads after top");
        assert_eq!(post.reason, "softdep post of top");
        assert_eq!(plan.modules[pos(&plan, "pre")].reason, "softdep pre of top");
        assert_eq!(plan.modules[pos(&plan, "core")].reason, "dependency of top");
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn config_softdep_order_follows_file_names() {
        // "a.conf" sorts before "modules.softdep": its softdep is the first match.
        let i = index(Path::new("/m"), "softdep top pre: hw\n", &[]);
        let plan = i.plan(&[Request::Name("top".into())]).unwrap();
        assert_eq!(names(&plan), vec!["core", "mid", "hw", "top"]);
        // "z.conf" sorts after it: modules.softdep wins, as in kmod.
        let z = Config::parse(b"softdep top pre: hw\n", "z.conf").unwrap();
        let i = index(Path::new("/m"), "", &[]).with_config(z);
        let plan = i.plan(&[Request::Name("top".into())]).unwrap();
        assert_eq!(names(&plan), vec!["core", "mid", "pre", "top", "post"]);
    }

    #[test]
    fn options_from_config_alias_and_cmdline() {
        let i = index(
            Path::new("/m"),
            "options top x=1\noptions fs_top via_alias=1\noptions core y=2\n",
            &["top.z=3", "core.w=\"a\"", "quiet"],
        );
        let plan = i.plan(&[Request::Alias("fs-top".into())]).unwrap();
        assert_eq!(
            plan.modules[pos(&plan, "top")].options,
            "x=1 via_alias=1 z=3"
        );
        assert_eq!(plan.modules[pos(&plan, "core")].options, "y=2 w=\"a\"");
        assert_eq!(plan.modules[pos(&plan, "mid")].options, "");
        let plan = i.plan(&[Request::Name("top".into())]).unwrap();
        assert_eq!(
            plan.modules[pos(&plan, "top")].options,
            "x=1 z=3",
            "alias options only via the alias"
        );
    }

    #[test]
    fn blacklist_applies_to_aliases_not_names() {
        let i = index(Path::new("/m"), "blacklist black\n", &[]);
        let plan = i.plan(&[Request::Alias("pci:v1234d0001".into())]).unwrap();
        assert_eq!(names(&plan), vec!["hw"]);
        assert_eq!(
            plan.notes,
            vec![PlanNote::Blacklisted {
                module: "black".into(),
                request: "alias pci:v1234d0001".into()
            }]
        );
        let plan = i.plan(&[Request::Name("black".into())]).unwrap();
        assert_eq!(names(&plan), vec!["core", "black"]);
        // modprobe.blacklist= on the command line works the same way.
        let i = index(Path::new("/m"), "", &["modprobe.blacklist=hw,other"]);
        let plan = i.plan(&[Request::Alias("pci:v1234d0001".into())]).unwrap();
        assert_eq!(names(&plan), vec!["core", "black"]);
        // module_blacklist= is enforced by the kernel: never requested at all.
        let i = index(Path::new("/m"), "", &["module_blacklist=hw"]);
        let plan = i.plan(&[Request::Name("hw".into())]).unwrap();
        assert!(plan.modules.is_empty());
        assert_eq!(
            plan.notes,
            vec![PlanNote::KernelBlacklisted {
                module: "hw".into(),
                request: "name hw".into()
            }]
        );
    }

    #[test]
    fn builtin_modules_are_left_out() {
        let i = index(Path::new("/m"), "", &[]);
        assert!(i.is_builtin("builtin-mod"));
        let plan = i.plan(&[Request::Name("builtin_mod".into())]).unwrap();
        assert!(plan.modules.is_empty());
        assert_eq!(
            plan.notes,
            vec![PlanNote::Builtin {
                module: "builtin_mod".into(),
                reason: "name builtin_mod".into()
            }]
        );
        // A softdep on a builtin module: nothing to wait for.
        let plan = i.plan(&[Request::Name("usesbuiltin".into())]).unwrap();
        assert_eq!(names(&plan), vec!["usesbuiltin"]);
        assert!(plan.modules[0].deps.is_empty());
        assert_eq!(
            plan.notes,
            vec![PlanNote::Builtin {
                module: "builtin_mod".into(),
                reason: "softdep pre of usesbuiltin".into()
            }]
        );
    }

    #[test]
    fn softdep_cycle_is_reported_not_looped_on() {
        let i = index(Path::new("/m"), "", &[]);
        let err = i.plan(&[Request::Name("cyc_a".into())]).unwrap_err();
        match &err {
            ModulesError::DependencyCycle { cycle } => {
                assert!(
                    cycle.contains(&"cyc_a".to_owned()) && cycle.contains(&"cyc_b".to_owned()),
                    "{cycle:?}"
                );
                assert_eq!(cycle.first(), cycle.last());
            }
            other => panic!("unexpected {other}"),
        }
        assert!(
            err.to_string()
                .starts_with("failed to order modules: dependency cycle cyc_"),
            "{err}"
        );
        // Lenient: kmod's order (cyc_b, then cyc_a), the cycle noted.
        let plan = i.plan_lenient(&[Request::Name("cyc_a".into()), Request::Name("hw".into())]);
        assert_eq!(names(&plan), vec!["cyc_b", "cyc_a", "hw"]);
        assert!(matches!(
            plan.notes.as_slice(),
            [PlanNote::CycleBroken { .. }]
        ));
        for (k, m) in plan.modules.iter().enumerate() {
            assert!(m.deps.iter().all(|&d| d < k), "{m:?}");
        }
    }

    #[test]
    fn hard_dependency_cycle_in_modules_dep() {
        let dep = b"kernel/x.ko: kernel/y.ko\nkernel/y.ko: kernel/x.ko\n".to_vec();
        let i =
            ModuleIndex::from_bytes(Path::new("/m"), dep, Vec::new(), None, None, None).unwrap();
        assert!(matches!(
            i.plan(&[Request::Name("x".into())]),
            Err(ModulesError::DependencyCycle { .. })
        ));
    }

    #[test]
    fn hand_written_dep_order_is_fixed_topologically() {
        // kmod would insert b before c although b needs c.
        let dep = b"kernel/a.ko: kernel/c.ko kernel/b.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n"
            .to_vec();
        let i =
            ModuleIndex::from_bytes(Path::new("/m"), dep, Vec::new(), None, None, None).unwrap();
        let plan = i.plan(&[Request::Name("a".into())]).unwrap();
        assert_eq!(names(&plan), vec!["c", "b", "a"]);
    }

    #[test]
    fn each_module_once_across_requests() {
        let i = index(Path::new("/m"), "", &[]);
        let plan = i
            .plan(&[
                Request::Name("mid".into()),
                Request::Name("top".into()),
                Request::Alias("fs-top".into()),
            ])
            .unwrap();
        assert_eq!(names(&plan), vec!["core", "mid", "pre", "top", "post"]);
        assert_eq!(plan.modules[1].reason, "name mid");
    }

    #[test]
    fn unknown_names_and_unmatched_aliases() {
        let i = index(Path::new("/m"), "", &[]);
        let err = i
            .plan(&[Request::Name("nope".into())])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "failed to find module nope in /m");
        let plan = i.plan(&[Request::Alias("usb:v9999".into())]).unwrap();
        assert!(plan.modules.is_empty());
        assert_eq!(
            plan.notes,
            vec![PlanNote::NoMatch {
                alias: "usb:v9999".into()
            }]
        );
        let plan = i.plan_lenient(&[Request::Name("nope".into()), Request::Name("hw".into())]);
        assert_eq!(names(&plan), vec!["hw"]);
        assert_eq!(
            plan.notes,
            vec![PlanNote::NotFound {
                name: "nope".into()
            }]
        );
    }

    #[test]
    fn config_alias_to_missing_module_is_noted() {
        let i = index(Path::new("/m"), "alias my-thing ghost\n", &[]);
        let plan = i.plan(&[Request::Alias("my-thing".into())]).unwrap();
        assert!(plan.modules.is_empty());
        assert_eq!(
            plan.notes,
            vec![PlanNote::Unknown {
                module: "ghost".into(),
                reason: "alias my-thing".into()
            }]
        );
    }

    #[test]
    fn missing_ko_fails_at_load_time_and_skips_its_users() {
        // The index dir exists but holds no module files: open() fails
        // before any finit_module call, so this is safe on any host.
        let dir = tempfile::tempdir().unwrap();
        let i = index(dir.path(), "", &[]);
        let plan = i
            .plan(&[
                Request::Name("needs-gone".into()),
                Request::Name("hw".into()),
            ])
            .unwrap();
        assert_eq!(names(&plan), vec!["gone", "needs_gone", "hw"]);
        let events = Mutex::new(Vec::new());
        let report = load_plan_with(
            &plan,
            2,
            &KernelInserter {
                kernel_compression: None,
            },
            &|ev: &LoadEvent| {
                let msg = ev
                    .outcome
                    .as_ref()
                    .err()
                    .map(|e: &LoadError| (e.to_string(), e.raw_os_error()));
                events.lock().unwrap().push((ev.entry.name.clone(), msg));
            },
        );
        assert_eq!(report.failed, 2, "gone and hw (no files at all)");
        assert_eq!(report.skipped, 1, "needs_gone");
        let events = events.into_inner().unwrap();
        let gone = events
            .iter()
            .find(|e| e.0 == "gone")
            .unwrap()
            .1
            .clone()
            .unwrap();
        assert_eq!(gone.1, Some(2), "ENOENT");
        assert!(
            gone.0.starts_with("failed to open module gone at "),
            "{}",
            gone.0
        );
        assert!(
            gone.0
                .ends_with("kernel/gone.ko: No such file or directory (os error 2)"),
            "{}",
            gone.0
        );
        let skipped = events
            .iter()
            .find(|e| e.0 == "needs_gone")
            .unwrap()
            .1
            .clone()
            .unwrap();
        assert_eq!(
            skipped.0,
            "skipped module needs_gone: its dependency gone failed to load"
        );
    }
}
