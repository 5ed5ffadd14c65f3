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

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::cmp::Reverse;
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
        if let Some(sd) =
            self.index.softdeps.iter().find(|sd| crate::fnmatch::fnmatch(sd.pattern.as_bytes(), name.as_bytes()))
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
        let deps: Vec<u32> = r
            .id
            .and_then(|id| self.index.modules.get(id as usize))
            .map(|m| m.deps.clone())
            .unwrap_or_default();
        // libkmod prepends while parsing the dep line: the list is walked in
        // reverse, which depmod's sort makes dependencies-first.
        for &d in deps.iter().rev() {
            let Some(m) = self.index.modules.get(d as usize) else {
                continue;
            };
            let dep = Resolved { name: m.name.clone(), id: Some(d), builtin: false, alias: None };
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
        match self.plan_inner(requests, false) {
            Ok(plan) => plan,
            // Unreachable in lenient mode; an empty plan is the safe answer.
            Err(_) => Plan::default(),
        }
    }

    fn plan_inner(&self, requests: &[Request], strict: bool) -> Result<Plan, ModulesError> {
        let mut notes = Vec::new();
        let mut walk =
            Walk { index: self, items: Vec::new(), visited: HashSet::new(), soft_cache: HashMap::new() };
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
                    notes.push(PlanNote::NotFound { name: query.to_owned() });
                } else {
                    notes.push(PlanNote::NoMatch { alias: query.to_owned() });
                }
                continue;
            }
            for r in found {
                if self.config.hard_blacklist.contains(&r.name) {
                    notes.push(PlanNote::KernelBlacklisted { module: r.name.clone(), request: label.clone() });
                    continue;
                }
                // kmod applies the blacklist only to modules found through an
                // alias (KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY).
                if r.alias.is_some() && self.config.blacklist.contains(&r.name) {
                    notes.push(PlanNote::Blacklisted { module: r.name.clone(), request: label.clone() });
                    continue;
                }
                // Each top-level module gets a fresh probe list in kmod.
                walk.visited.clear();
                walk.probe(&r, label.clone(), 0);
            }
        }

        // Keep each module at its first appearance.
        let mut order: Vec<usize> = Vec::new(); // indices into walk.items
        let mut pos: HashMap<String, usize> = HashMap::new(); // name -> kmod position
        let mut noted: HashSet<String> = HashSet::new();
        for (i, item) in walk.items.iter().enumerate() {
            if pos.contains_key(&item.name) || noted.contains(&item.name) {
                continue;
            }
            match (item.id, item.builtin) {
                (Some(_), _) => {
                    pos.insert(item.name.clone(), order.len());
                    order.push(i);
                }
                (None, true) => {
                    noted.insert(item.name.clone());
                    notes.push(PlanNote::Builtin { module: item.name.clone(), reason: item.reason.clone() });
                }
                (None, false) => {
                    noted.insert(item.name.clone());
                    notes.push(PlanNote::Unknown { module: item.name.clone(), reason: item.reason.clone() });
                }
            }
        }

        // Edges: hard deps, softdep pre, and "after the module whose post
        // softdep this is" when it did come after it.
        let n = order.len();
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (k, &i) in order.iter().enumerate() {
            let Some(item) = walk.items.get(i) else { continue };
            let mut edges: Vec<usize> = Vec::new();
            if let Some(m) = item.id.and_then(|id| self.modules.get(id as usize)) {
                for &d in &m.deps {
                    if let Some(&p) = self.modules.get(d as usize).and_then(|dm| pos.get(&dm.name)) {
                        edges.push(p);
                    }
                }
            }
            let item_name = item.name.clone();
            let soft = walk.softdeps(&item_name);
            for r in &soft.pre {
                if let Some(&p) = pos.get(&r.name) {
                    edges.push(p);
                }
            }
            for r in &soft.post {
                if let Some(&q) = pos.get(&r.name) {
                    if q > k {
                        if let Some(d) = deps.get_mut(q) {
                            d.push(k);
                        }
                    }
                }
            }
            edges.retain(|&p| p != k);
            if let Some(d) = deps.get_mut(k) {
                d.extend(edges);
            }
        }
        for d in &mut deps {
            d.sort_unstable();
            d.dedup();
        }

        // Stable topological sort (Kahn, smallest kmod position first).
        let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (k, ds) in deps.iter().enumerate() {
            for &d in ds {
                if let Some(u) = users.get_mut(d) {
                    u.push(k);
                }
            }
        }
        let mut heap: BinaryHeap<Reverse<usize>> =
            remaining.iter().enumerate().filter(|(_, &r)| r == 0).map(|(k, _)| Reverse(k)).collect();
        let mut sorted: Vec<usize> = Vec::with_capacity(n);
        let mut done = vec![false; n];
        loop {
            while let Some(Reverse(k)) = heap.pop() {
                if done.get(k).copied().unwrap_or(true) {
                    continue;
                }
                if let Some(d) = done.get_mut(k) {
                    *d = true;
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
            if sorted.len() == n {
                break;
            }
            // A cycle: name it, then (lenient) drop the edges of its first
            // module in kmod order that point forward, and go on.
            let cycle = find_cycle(&deps, &done).unwrap_or_default();
            let names: Vec<String> = cycle
                .iter()
                .filter_map(|&k| order.get(k).and_then(|&i| walk.items.get(i)).map(|it| it.name.clone()))
                .collect();
            if strict {
                return Err(ModulesError::DependencyCycle { cycle: names });
            }
            notes.push(PlanNote::CycleBroken { cycle: names });
            let Some(start) = (0..n).find(|&k| !done.get(k).copied().unwrap_or(true)) else { break };
            if let Some(ds) = deps.get_mut(start) {
                ds.retain(|&d| done.get(d).copied().unwrap_or(false));
            }
            if let Some(r) = remaining.get_mut(start) {
                *r = 0;
            }
            heap.push(Reverse(start));
        }

        let mut new_index = vec![0usize; n];
        for (new, &k) in sorted.iter().enumerate() {
            if let Some(slot) = new_index.get_mut(k) {
                *slot = new;
            }
        }
        let mut modules = Vec::with_capacity(n);
        for &k in &sorted {
            let Some(item) = order.get(k).and_then(|&i| walk.items.get(i)) else { continue };
            let Some(m) = item.id.and_then(|id| self.modules.get(id as usize)) else { continue };
            let mut d: Vec<usize> = deps
                .get(k)
                .map(|ds| ds.iter().filter_map(|&x| new_index.get(x).copied()).collect())
                .unwrap_or_default();
            d.sort_unstable();
            modules.push(PlanEntry {
                name: item.name.clone(),
                path: self.dir().join(&m.rel),
                deps: d,
                options: self.options_for(&item.name, item.alias.as_deref()),
                reason: item.reason.clone(),
            });
        }
        Ok(Plan { modules, notes })
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
        let next = deps.get(cur)?.iter().copied().find(|&d| !done.get(d).copied().unwrap_or(true))?;
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
