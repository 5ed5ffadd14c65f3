//! The module index: modules.dep, modules.alias, modules.softdep,
//! modules.builtin and modules.builtin.modinfo, held as the original bytes
//! plus offsets, so loading is one read and one pass per file.
//!
//! Alias lookup reproduces libkmod's wildcard trie search
//! (`index_searchwild`) without building the trie: a pattern's literal head
//! (the bytes before its first `*`, `?` or `[`) must equal the same bytes of
//! the MODALIAS, and the rest is matched with fnmatch. Patterns are found by
//! a sorted table of hashes of their literal heads, probed with the hash of
//! every prefix of the MODALIAS (one pass, no allocation per pattern).
//! Results are ordered by the module's position in modules.dep, which is the
//! priority depmod stores in modules.alias.bin.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigSoftdep, MODULES_SOFTDEP};
use crate::fnmatch::fnmatch;
use crate::names::{
    name_from_path, normalize_name, normalize_name_bytes, normalize_pattern, normalize_query,
};
use crate::ModulesError;

/// Largest index file accepted (named bound; Debian's modules.alias is
/// 1.3 MiB, modules.dep 0.5 MiB).
pub const MAX_INDEX_FILE: u64 = 64 * 1024 * 1024;

/// FxHash (the rustc hasher): much cheaper than SipHash for the thousands
/// of short module names hashed at every boot; the keys are not
/// attacker-controlled (they come from the module tree).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
pub(crate) type FxMap<K, V> = HashMap<K, V, FxBuild>;

/// No alias in the bucket chain (end marker of `alias_table` chains).
const NO_ALIAS: u32 = u32::MAX;

/// A module with a line in modules.dep (or named as a dependency there).
#[derive(Debug, Clone)]
pub(crate) struct Module {
    pub(crate) name: String,
    /// Path as written in modules.dep (relative to the index dir, or
    /// absolute): a range of `dep_text`.
    rel: (u32, u32),
    /// Its dependencies, as module ids in modules.dep order: a range of
    /// `dep_ids`.
    deps: (u32, u32),
    /// The whole line in modules.dep, for subsets; `None` when the module
    /// only appears as someone's dependency.
    line: Option<(u32, u32)>,
    /// Next module in the same bucket of the name table.
    next: u32,
}

/// The parsed modules.dep: modules, their dependency lists, a name table.
struct DepIndex {
    modules: Vec<Module>,
    dep_ids: Vec<u32>,
    /// bucket -> first module id (chained through `Module::next`).
    table: Vec<u32>,
}

/// End marker of name table chains.
const NO_MODULE: u32 = u32::MAX;

fn fx_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = FxHasher::default();
    h.write(bytes);
    h.finish()
}

impl DepIndex {
    fn find(&self, name: &[u8]) -> Option<u32> {
        let mut i = self
            .table
            .get(bucket(fx_hash(name), self.table.len()))
            .copied()
            .unwrap_or(NO_MODULE);
        while let Some(m) = self.modules.get(i as usize) {
            if m.name.as_bytes() == name {
                return Some(i);
            }
            i = m.next;
        }
        None
    }

    fn push(&mut self, mut m: Module) -> Option<u32> {
        let id = u32::try_from(self.modules.len())
            .ok()
            .filter(|&id| id != NO_MODULE)?;
        let b = bucket(fx_hash(m.name.as_bytes()), self.table.len());
        let slot = self.table.get_mut(b)?;
        m.next = *slot;
        *slot = id;
        self.modules.push(m);
        Some(id)
    }
}

/// One `alias PATTERN MODULE` line of modules.alias.
#[derive(Debug, Clone, Copy)]
struct AliasEntry {
    /// Pattern bytes: in `alias_text` or (when normalisation changed it) in
    /// `alias_norm`.
    pat: (u32, u32),
    normalized_copy: bool,
    /// Length of the literal head (before the first `*`, `?`, `[`).
    head: u32,
    /// The module name bytes in `alias_text`.
    name: (u32, u32),
    /// The whole line in `alias_text`.
    line: (u32, u32),
    /// Hash of the literal head, and the next alias in the same bucket.
    hash: u64,
    /// Bytes (as [`byte_set`] bits) the rest of the pattern needs literally:
    /// a MODALIAS without one of them cannot match (skips most of the 707
    /// `acpi*:...` patterns for an `acpi:` MODALIAS).
    needs: u64,
    next: u32,
    /// depmod's priority: the module's position in modules.dep (or after all
    /// of them when it has no line there).
    priority: u32,
}

/// A builtin alias from modules.builtin.modinfo.
#[derive(Debug, Clone)]
struct BuiltinAlias {
    pattern: Vec<u8>,
    module: String,
}

/// The parsed index of one module directory, plus the configuration in use.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    dep_text: Vec<u8>,
    pub(crate) modules: Vec<Module>,
    dep_ids: Vec<u32>,
    name_table: Vec<u32>,
    alias_text: Vec<u8>,
    alias_norm: Vec<u8>,
    aliases: Vec<AliasEntry>,
    /// Hash table of literal heads: bucket -> first alias (chained through
    /// `AliasEntry::next`); the length is a power of two.
    alias_table: Vec<u32>,
    /// The distinct lengths of literal heads, ascending: only prefixes of a
    /// MODALIAS of these lengths are probed (a 900-byte cpu: MODALIAS needs
    /// a few dozen probes, not 900).
    head_lengths: Vec<usize>,
    softdep_text: Option<Vec<u8>>,
    softdep_file: Config,
    builtin_text: Option<Vec<u8>>,
    builtin: HashSet<String>,
    modinfo_text: Option<Vec<u8>>,
    builtin_aliases: Vec<BuiltinAlias>,
    pub(crate) config: Config,
    /// Config softdeps and modules.softdep, in kmod's order (by file name).
    pub(crate) softdeps: Vec<ConfigSoftdep>,
}

/// Where a looked-up module came from (kmod's lookup chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) name: String,
    /// Module id when it has a file in modules.dep.
    pub(crate) id: Option<u32>,
    pub(crate) builtin: bool,
    /// The alias it was found through (kmod's `mod->alias`): blacklists apply
    /// and options for that alias are added.
    pub(crate) alias: Option<String>,
}

fn bucket(hash: u64, buckets: usize) -> usize {
    // buckets is a power of two; fold the high bits in.
    ((hash ^ (hash >> 32)) as usize) & (buckets.wrapping_sub(1))
}

fn slice(text: &[u8], (a, b): (u32, u32)) -> &[u8] {
    text.get(a as usize..b as usize).unwrap_or_default()
}

/// What one pass over an alias pattern tells.
struct PatternScan {
    /// Length of the literal head (before the first `*`, `?`, `[`).
    head: usize,
    /// [`head_hash`] of the head.
    hash: u64,
    /// [`byte_set`] of the bytes after the head that must appear literally.
    needs: u64,
    /// Contains `-`, `[` or `]` (depmod's normalisation may change it).
    needs_normalizing: bool,
}

/// The bit of a byte in a 64-bit set (bytes sharing `b & 63` share a bit:
/// a cheap necessary condition, never a sufficient one).
fn byte_bit(b: u8) -> u64 {
    1u64 << (b & 63)
}

/// The set of bytes in `s`.
fn byte_set(s: &[u8]) -> u64 {
    s.iter().fold(0, |m, &b| m | byte_bit(b))
}

fn scan_pattern(p: &[u8]) -> PatternScan {
    let head = wild_head(p);
    let mut scan = PatternScan {
        head,
        hash: head_hash(p.get(..head).unwrap_or_default()),
        needs: 0,
        needs_normalizing: memchr::memchr3(b'-', b'[', b']', p).is_some(),
    };
    // A bracket head: nothing after it is worth collecting.
    if p.get(head) == Some(&b'[') {
        return scan;
    }
    // After a bracket the requirements are not worth working out (members
    // are alternatives, `]` may be a member): stop collecting, stay safe.
    let mut escaped = false;
    for &b in p.get(head..).unwrap_or_default() {
        if escaped {
            scan.needs |= byte_bit(b);
            escaped = false;
            continue;
        }
        match b {
            b'[' => break,
            b'\\' => escaped = true,
            b'*' | b'?' => {}
            _ => scan.needs |= byte_bit(b),
        }
    }
    scan
}

/// Hash of a literal head, eight bytes at a time (FxHash steps, then the
/// length): computed once per pattern at load, and per distinct head length
/// at lookup.
fn head_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        if let Some(dst) = w.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    (h.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K)
}

/// The literal head of a pattern as libkmod's trie walk sees it.
fn wild_head(pattern: &[u8]) -> usize {
    pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'['))
        .unwrap_or(pattern.len())
}

/// libkmod's `index_searchwild` test for one key: the literal head must be
/// equal byte for byte, the rest is matched with fnmatch.
pub(crate) fn wild_match(pattern: &[u8], head: usize, query: &[u8]) -> bool {
    match (pattern.get(..head), query.get(..head)) {
        (Some(p), Some(q)) if p == q => fnmatch(
            pattern.get(head..).unwrap_or_default(),
            query.get(head..).unwrap_or_default(),
        ),
        _ => false,
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ModulesError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModulesError::Read {
            path: path.to_path_buf(),
            source: e,
        }),
        Ok(meta) if meta.len() > MAX_INDEX_FILE => Err(ModulesError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_INDEX_FILE,
        }),
        Ok(_) => std::fs::read(path)
            .map(Some)
            .map_err(|e| ModulesError::Read {
                path: path.to_path_buf(),
                source: e,
            }),
    }
}

/// Lines of a text file with their byte ranges (without the newline).
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0usize;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let rest = text.get(start..).unwrap_or_default();
        let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let range = (start, start + len);
        start += len + 1;
        Some(range)
    })
}

impl ModuleIndex {
    /// Reads modules.dep, modules.alias, modules.softdep, modules.builtin and
    /// (when present) modules.builtin.modinfo from `dir` (e.g.
    /// /lib/modules/6.1.0-56-amd64). Missing optional files are fine; a
    /// missing modules.dep is an error naming the path.
    pub fn load(dir: &Path) -> Result<Self, ModulesError> {
        // Plan paths must be absolute (as kmod makes them): a relative dir
        // is taken from the current directory, without touching the tree.
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let dir = absolute.as_path();
        let dep_path = dir.join("modules.dep");
        let dep_text = read_bounded_index(&dep_path)?;
        let alias_text = read_optional(&dir.join("modules.alias"))?.unwrap_or_default();
        let softdep_text = read_optional(&dir.join(MODULES_SOFTDEP))?;
        let builtin_text = read_optional(&dir.join("modules.builtin"))?;
        let modinfo_text = read_optional(&dir.join("modules.builtin.modinfo"))?;
        Self::from_bytes(
            dir,
            dep_text,
            alias_text,
            softdep_text,
            builtin_text,
            modinfo_text,
        )
    }

    /// Builds an index from file contents (`dir` is only used to make
    /// absolute paths). Optional files are `None` when absent.
    pub fn from_bytes(
        dir: &Path,
        dep_text: Vec<u8>,
        alias_text: Vec<u8>,
        softdep_text: Option<Vec<u8>>,
        builtin_text: Option<Vec<u8>>,
        modinfo_text: Option<Vec<u8>>,
    ) -> Result<Self, ModulesError> {
        let DepIndex {
            modules,
            dep_ids,
            table,
        } = parse_dep(&dir.join("modules.dep"), &dep_text)?;
        let mut index = ModuleIndex {
            dir: dir.to_path_buf(),
            dep_text,
            modules,
            dep_ids,
            name_table: table,
            alias_text,
            alias_norm: Vec::new(),
            aliases: Vec::new(),
            alias_table: Vec::new(),
            head_lengths: Vec::new(),
            softdep_text: None,
            softdep_file: Config::new(),
            builtin_text: None,
            builtin: HashSet::new(),
            modinfo_text: None,
            builtin_aliases: Vec::new(),
            config: Config::new(),
            softdeps: Vec::new(),
        };
        index.parse_aliases();
        if let Some(text) = softdep_text {
            index.softdep_file = Config::parse(&text, MODULES_SOFTDEP)?;
            index.softdep_text = Some(text);
        }
        if let Some(text) = builtin_text {
            for (a, b) in lines(&text) {
                let line = text.get(a..b).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.is_empty() {
                    index.builtin.insert(name_from_path(line));
                }
            }
            index.builtin_text = Some(text);
        }
        if let Some(text) = modinfo_text {
            index.builtin_aliases = parse_builtin_modinfo(&text);
            index.modinfo_text = Some(text);
        }
        index.merge_softdeps();
        Ok(index)
    }

    /// Uses `config` (modprobe.d files and kernel command line) for alias,
    /// options, blacklist and softdep decisions, replacing any earlier one.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self.merge_softdeps();
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The directory the index was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of modules with a file (lines of modules.dep).
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// Number of alias patterns read from modules.alias.
    pub fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// Names of all modules that have a file, in modules.dep order.
    pub fn module_names(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(|m| m.name.as_str())
    }

    /// The alias patterns of modules.alias with their module, in file order.
    pub fn alias_patterns(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.aliases
            .iter()
            .map(|a| (self.pattern(a), slice(&self.alias_text, a.name)))
    }

    fn merge_softdeps(&mut self) {
        let mut all: Vec<ConfigSoftdep> = self.config.softdeps.clone();
        all.extend(self.softdep_file.softdeps.iter().cloned());
        // kmod reads its config files and modules.softdep sorted by file
        // name, and the first matching softdep wins.
        all.sort_by(|a, b| a.file.cmp(&b.file));
        self.softdeps = all;
    }

    fn parse_aliases(&mut self) {
        let text = std::mem::take(&mut self.alias_text);
        let fallback_priority = u32::try_from(self.modules.len()).unwrap_or(u32::MAX);
        // modules.alias lists each module's aliases together: remember the
        // last name looked up.
        let mut last: (&[u8], u32) = (&[], fallback_priority);
        self.aliases
            .reserve(memchr::memchr_iter(b'\n', &text).count() + 1);
        for (a, b) in lines(&text) {
            let line = text.get(a..b).unwrap_or_default();
            let Some(rest) = line.strip_prefix(b"alias ") else {
                continue;
            };
            let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
            let Some(sp) = memchr::memchr(b' ', rest) else {
                continue;
            };
            let pat_start = a + 6;
            let pat_end = pat_start + sp;
            let name_bytes = rest.get(sp + 1..).unwrap_or_default();
            let name_len = name_bytes
                .iter()
                .position(|&c| c == b' ' || c == b'\t')
                .unwrap_or(name_bytes.len());
            let name_start = pat_end + 1;
            let pattern = rest.get(..sp).unwrap_or_default();
            // depmod normalises patterns for modules.alias.bin and drops
            // those with unmatched brackets.
            // One pass: literal head, its hash, the bytes the rest needs,
            // and whether depmod's normalisation changes anything.
            let mut scan = scan_pattern(pattern);
            let (pat, normalized_copy) = if scan.needs_normalizing {
                // depmod normalises patterns for modules.alias.bin and
                // drops those with unmatched brackets.
                let Some(norm) = normalize_pattern(pattern) else {
                    continue;
                };
                if norm == pattern {
                    ((pat_start, pat_end), false)
                } else {
                    scan = scan_pattern(&norm);
                    let s = self.alias_norm.len();
                    self.alias_norm.extend_from_slice(&norm);
                    ((s, self.alias_norm.len()), true)
                }
            } else {
                ((pat_start, pat_end), false)
            };
            let head = scan.head;
            let name = slice_usize(&text, name_start, name_start + name_len);
            let priority = if name == last.0 {
                last.1
            } else {
                let p = self.priority_of(name).unwrap_or(fallback_priority);
                last = (name, p);
                p
            };
            let (Ok(p0), Ok(p1), Ok(n0), Ok(n1), Ok(l0), Ok(l1), Ok(h)) = (
                u32::try_from(pat.0),
                u32::try_from(pat.1),
                u32::try_from(name_start),
                u32::try_from(name_start + name_len),
                u32::try_from(a),
                u32::try_from(b),
                u32::try_from(head),
            ) else {
                continue;
            };
            self.aliases.push(AliasEntry {
                pat: (p0, p1),
                normalized_copy,
                head: h,
                name: (n0, n1),
                line: (l0, l1),
                hash: scan.hash,
                needs: scan.needs,
                next: NO_ALIAS,
                priority,
            });
        }
        self.alias_text = text;
        // Chain every alias into the bucket of its head's hash.
        let buckets = (self.aliases.len() * 2).next_power_of_two().max(16);
        let mut table = vec![NO_ALIAS; buckets];
        for (i, a) in self.aliases.iter_mut().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            if let Some(slot) = table.get_mut(bucket(a.hash, buckets)) {
                a.next = *slot;
                *slot = i;
            }
        }
        self.alias_table = table;
        let mut lengths: Vec<usize> = self.aliases.iter().map(|a| a.head as usize).collect();
        lengths.sort_unstable();
        lengths.dedup();
        self.head_lengths = lengths;
    }

    /// depmod's priority of a module named in modules.alias: its position
    /// in modules.dep. No allocation for an already normalised name.
    fn priority_of(&self, name: &[u8]) -> Option<u32> {
        match std::str::from_utf8(name) {
            Ok(s) if !s.contains(['-', '.']) => self.id_of(s),
            _ => self.id_of(&normalize_name_bytes(name)),
        }
    }

    fn pattern(&self, a: &AliasEntry) -> &[u8] {
        if a.normalized_copy {
            slice(&self.alias_norm, a.pat)
        } else {
            slice(&self.alias_text, a.pat)
        }
    }

    /// Module names (normalised: '-' -> '_') whose alias patterns match
    /// `modalias`, in kmod's order. Builtin matches are included (the plan
    /// skips them). This is kmod's whole lookup chain (config aliases,
    /// module names, modules.alias, builtin names, builtin aliases; the first
    /// that finds anything wins), without the blacklist.
    pub fn lookup_alias(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.lookup(modalias) {
            if !out.contains(&r.name) {
                out.push(r.name);
            }
        }
        out
    }

    /// kmod_module_new_from_lookup: the lookup chain, duplicates kept.
    pub(crate) fn lookup(&self, given: &str) -> Vec<Resolved> {
        let Some(query) = normalize_query(given) else {
            return Vec::new();
        };
        let q = query.as_bytes();
        // 1. Config aliases (fnmatch, file order).
        let mut out: Vec<Resolved> = self
            .config
            .aliases
            .iter()
            .filter(|a| fnmatch(a.pattern.as_bytes(), q))
            .map(|a| self.resolve(&a.module, Some(a.pattern.clone()), false))
            .collect();
        if !out.is_empty() {
            return out;
        }
        // 2. A module name (names never contain ':').
        if !query.contains(':') {
            if let Some(id) = self.id_of(&query) {
                return vec![Resolved {
                    name: query.clone(),
                    id: Some(id),
                    builtin: false,
                    alias: None,
                }];
            }
        }
        // 3. modules.symbols is not read: only symbol_request() uses it.
        // 4. install/remove commands: rejected by the config parser.
        // 5. modules.alias.
        let mut hits: Vec<(u32, u32)> = Vec::new();
        let buckets = self.alias_table.len();
        let have = byte_set(q);
        for &k in &self.head_lengths {
            let Some(head) = q.get(..k) else { break };
            let h = head_hash(head);
            let mut i = self
                .alias_table
                .get(bucket(h, buckets))
                .copied()
                .unwrap_or(NO_ALIAS);
            while let Some(a) = self.aliases.get(i as usize) {
                if a.hash == h
                    && a.head as usize == k
                    && a.needs & !have == 0
                    && wild_match(self.pattern(a), k, q)
                {
                    hits.push((a.priority, i));
                }
                i = a.next;
            }
        }
        if !hits.is_empty() {
            hits.sort_unstable();
            for (_, i) in hits {
                if let Some(a) = self.aliases.get(i as usize) {
                    let name = normalize_name_bytes(slice(&self.alias_text, a.name));
                    out.push(self.resolve(&name, Some(query.clone()), false));
                }
            }
            return out;
        }
        // 6. A builtin module name.
        if self.builtin.contains(query.as_str()) {
            return vec![Resolved {
                name: query.clone(),
                id: None,
                builtin: true,
                alias: None,
            }];
        }
        // 7. Builtin aliases (modules.builtin.modinfo).
        for b in &self.builtin_aliases {
            if wild_match(&b.pattern, wild_head(&b.pattern), q) {
                out.push(Resolved {
                    name: b.module.clone(),
                    id: None,
                    builtin: true,
                    alias: Some(query.clone()),
                });
            }
        }
        out
    }

    fn resolve(&self, name: &str, alias: Option<String>, force_builtin: bool) -> Resolved {
        let id = self.id_of(name);
        let builtin = force_builtin || (id.is_none() && self.builtin.contains(name));
        Resolved {
            name: name.to_owned(),
            id,
            builtin,
            alias,
        }
    }

    /// Whether `name` is compiled into the kernel (modules.builtin).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(normalize_name(name).as_str())
    }

    /// The absolute path of a module file, from modules.dep.
    pub fn module_path(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        let id = self.id_of(&normalize_name(name))?;
        self.rel_bytes_of(id)
            .map(|rel| self.dir.join(std::ffi::OsStr::from_bytes(rel)))
    }

    /// Path of module relative to the index dir, as written in modules.dep
    /// (e.g. "kernel/fs/ext4/ext4.ko").
    pub fn module_relpath(&self, name: &str) -> Option<&str> {
        let id = self.id_of(&normalize_name(name))?;
        self.rel_of(id)
    }

    /// The module id of a normalised name.
    pub(crate) fn id_of(&self, name: &str) -> Option<u32> {
        let name = name.as_bytes();
        let mut i = self
            .name_table
            .get(bucket(fx_hash(name), self.name_table.len()))
            .copied()
            .unwrap_or(NO_MODULE);
        while let Some(m) = self.modules.get(i as usize) {
            if m.name.as_bytes() == name {
                return Some(i);
            }
            i = m.next;
        }
        None
    }

    /// The dependencies of a module (ids, modules.dep order).
    pub(crate) fn deps_of(&self, id: u32) -> &[u32] {
        match self.modules.get(id as usize) {
            Some(m) => self
                .dep_ids
                .get(m.deps.0 as usize..m.deps.1 as usize)
                .unwrap_or_default(),
            None => &[],
        }
    }

    /// The path of a module as written in modules.dep, as bytes (paths
    /// need not be UTF-8).
    pub(crate) fn rel_bytes_of(&self, id: u32) -> Option<&[u8]> {
        self.modules
            .get(id as usize)
            .map(|m| slice(&self.dep_text, m.rel))
    }

    /// The path of a module as written in modules.dep.
    pub(crate) fn rel_of(&self, id: u32) -> Option<&str> {
        let m = self.modules.get(id as usize)?;
        std::str::from_utf8(slice(&self.dep_text, m.rel)).ok()
    }

    /// For the initrd builder: the text of modules.dep, modules.alias,
    /// modules.softdep, modules.builtin (and modules.builtin.modinfo if
    /// loaded) restricted to `names`, as (file name, bytes). modules.dep
    /// keeps the lines of those modules verbatim (paths stay relative, the
    /// dependency lists whole: pass a closure), modules.alias and
    /// modules.softdep the lines naming them. modules.builtin is kept whole
    /// (every builtin module must stay known in the guest); of
    /// modules.builtin.modinfo only the `NAME.alias=` records are kept (the
    /// only ones this crate reads: 2 KiB of Debian's 45 KiB, parsed at every
    /// boot).
    pub fn subset_files(&self, names: &BTreeSet<String>) -> Vec<(String, Vec<u8>)> {
        let wanted: HashSet<String> = names.iter().map(|n| normalize_name(n)).collect();
        let mut files = Vec::new();

        let mut dep = Vec::new();
        for m in &self.modules {
            if let (true, Some(range)) = (wanted.contains(&m.name), m.line) {
                dep.extend_from_slice(slice(&self.dep_text, range));
                dep.push(b'\n');
            }
        }
        files.push(("modules.dep".to_owned(), dep));

        let mut alias = Vec::new();
        for (a, b) in lines(&self.alias_text) {
            let line = self.alias_text.get(a..b).unwrap_or_default();
            if line.starts_with(b"#") {
                alias.extend_from_slice(line);
                alias.push(b'\n');
            }
        }
        for a in &self.aliases {
            if wanted.contains(&normalize_name_bytes(slice(&self.alias_text, a.name))) {
                alias.extend_from_slice(slice(&self.alias_text, a.line));
                alias.push(b'\n');
            }
        }
        files.push(("modules.alias".to_owned(), alias));

        if let Some(text) = &self.softdep_text {
            let mut out = Vec::new();
            for (a, b) in lines(text) {
                let line = text.get(a..b).unwrap_or_default();
                let keep = if line.starts_with(b"#") {
                    true
                } else {
                    let mut words = line
                        .split(|c| c.is_ascii_whitespace())
                        .filter(|w| !w.is_empty());
                    match (words.next(), words.next()) {
                        (Some(b"softdep"), Some(module)) => {
                            wanted.contains(&normalize_name_bytes(module))
                        }
                        _ => false,
                    }
                };
                if keep {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
            }
            files.push((MODULES_SOFTDEP.to_owned(), out));
        }
        if let Some(text) = &self.builtin_text {
            files.push(("modules.builtin".to_owned(), text.clone()));
        }
        if let Some(text) = &self.modinfo_text {
            let mut out = Vec::new();
            for rec in text.split(|&b| b == 0) {
                let is_alias = memchr::memchr(b'.', rec)
                    .and_then(|dot| rec.get(dot + 1..))
                    .is_some_and(|kv| kv.starts_with(b"alias="));
                if is_alias {
                    out.extend_from_slice(rec);
                    out.push(0);
                }
            }
            files.push(("modules.builtin.modinfo".to_owned(), out));
        }
        files
    }
}

fn slice_usize(text: &[u8], a: usize, b: usize) -> &[u8] {
    text.get(a..b).unwrap_or_default()
}

fn read_bounded_index(path: &Path) -> Result<Vec<u8>, ModulesError> {
    match read_optional(path)? {
        Some(t) => Ok(t),
        None => Err(ModulesError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    }
}

/// Parses modules.dep: `path: dep dep ...` per line. One allocation per
/// module (its name); everything else is ranges of `text`.
fn parse_dep(path: &Path, text: &[u8]) -> Result<DepIndex, ModulesError> {
    let parse_err = |line: usize, message: &str| ModulesError::Parse {
        path: path.to_path_buf(),
        line,
        message: message.to_owned(),
    };
    let to_u32 =
        |x: usize, line: usize| u32::try_from(x).map_err(|_| parse_err(line, "file too large"));
    let line_count = memchr::memchr_iter(b'\n', text).count() + 1;
    let mut index = DepIndex {
        modules: Vec::with_capacity(line_count),
        dep_ids: Vec::new(),
        table: vec![NO_MODULE; (line_count * 2).next_power_of_two().max(16)],
    };
    // Dependencies are written as the same paths as the line heads.
    let mut by_path: FxMap<&[u8], u32> =
        FxMap::with_capacity_and_hasher(line_count, FxBuild::default());
    // (module id, where its dependency list starts and ends, line number)
    let mut dep_lists: Vec<(u32, usize, usize, usize)> = Vec::with_capacity(line_count);
    for (lineno, (a, b)) in lines(text).enumerate() {
        let line = text.get(a..b).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(parse_err(lineno + 1, "expected 'path: deps'"));
        };
        let rel = line.get(..colon).unwrap_or_default();
        let name = name_from_path(rel);
        if index.find(name.as_bytes()).is_some() {
            // depmod never writes two lines for one name; kmod's index keeps
            // the first.
            continue;
        }
        let module = Module {
            name,
            rel: (to_u32(a, lineno + 1)?, to_u32(a + colon, lineno + 1)?),
            deps: (0, 0),
            // The raw line, a CR before its newline included: a subset
            // written from it reads back the same (a name may end in CR).
            line: Some((to_u32(a, lineno + 1)?, to_u32(b, lineno + 1)?)),
            next: NO_MODULE,
        };
        let id = index
            .push(module)
            .ok_or_else(|| parse_err(lineno + 1, "too many modules"))?;
        by_path.insert(rel, id);
        dep_lists.push((id, a + colon + 1, a + line.len(), lineno + 1));
    }
    for (id, start, end, lineno) in dep_lists {
        let first = index.dep_ids.len();
        let list = text.get(start..end).unwrap_or_default();
        let mut offset = start;
        for word in list.split(|&c| c == b' ' || c == b'\t') {
            let word_start = offset;
            offset += word.len() + 1;
            if word.is_empty() {
                continue;
            }
            let dep_id = match by_path.get(word) {
                Some(&d) => d,
                None => {
                    let name = name_from_path(word);
                    match index.find(name.as_bytes()) {
                        Some(d) => d,
                        None => {
                            // Named only as a dependency: known by its path.
                            let module = Module {
                                name,
                                rel: (
                                    to_u32(word_start, lineno)?,
                                    to_u32(word_start + word.len(), lineno)?,
                                ),
                                deps: (0, 0),
                                line: None,
                                next: NO_MODULE,
                            };
                            index
                                .push(module)
                                .ok_or_else(|| parse_err(lineno, "too many modules"))?
                        }
                    }
                }
            };
            index.dep_ids.push(dep_id);
        }
        let range = (to_u32(first, lineno)?, to_u32(index.dep_ids.len(), lineno)?);
        if let Some(m) = index.modules.get_mut(id as usize) {
            m.deps = range;
        }
    }
    Ok(index)
}

/// Aliases of builtin modules: `NAME.alias=PATTERN` records, NUL-separated.
fn parse_builtin_modinfo(text: &[u8]) -> Vec<BuiltinAlias> {
    let mut out = Vec::new();
    for rec in text.split(|&b| b == 0) {
        let Some(dot) = memchr::memchr(b'.', rec) else {
            continue;
        };
        let (module, kv) = (
            rec.get(..dot).unwrap_or_default(),
            rec.get(dot + 1..).unwrap_or_default(),
        );
        let Some(value) = kv.strip_prefix(b"alias=") else {
            continue;
        };
        let Some(pattern) = normalize_pattern(value) else {
            continue;
        };
        out.push(BuiltinAlias {
            pattern,
            module: normalize_name_bytes(module),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ModuleIndex {
        let dep = b"kernel/a.ko: kernel/b-x.ko kernel/c.ko\nkernel/b-x.ko: kernel/c.ko\nkernel/c.ko:\nkernel/d.ko:\n".to_vec();
        let alias = b"# Aliases extracted from modules themselves.\n\
            alias pci:v00001234d*sv*sd*bc*sc*i* d\n\
            alias pci:v00001234d00000001sv*sd*bc*sc*i* a\n\
            alias fs-foo b_x\n\
            alias usb:v1p[0-2]* c\n"
            .to_vec();
        let builtin = b"kernel/fs/ext4/ext4.ko\nkernel/net/unix/unix.ko\n".to_vec();
        let modinfo = b"unix.alias=net-pf-1\0unix.license=GPL\0ext4.alias=fs-ext4\0".to_vec();
        ModuleIndex::from_bytes(
            Path::new("/lib/modules/test"),
            dep,
            alias,
            None,
            Some(builtin),
            Some(modinfo),
        )
        .unwrap()
    }

    #[test]
    fn pattern_scan_needs_only_what_must_appear() {
        let s = scan_pattern(b"acpi*:PNP0C0A:*");
        assert_eq!(s.head, 4);
        assert_eq!(s.needs, byte_set(b":PNP0C0A:"));
        assert!(!s.needs_normalizing);
        // Bracket members are alternatives: collection stops at '['.
        let s = scan_pattern(b"usb:v1p*[]x]y*z");
        assert_eq!(s.needs, 0);
        assert!(s.needs_normalizing);
        // An escaped byte is a literal requirement.
        assert_eq!(scan_pattern(b"a*\\*b").needs, byte_set(b"*b"));
        assert_eq!(scan_pattern(b"plain").head, 5);
        // The filter never rejects a real match (the kmod oracle test checks
        // all of Debian's patterns; here one by hand).
        let i = index();
        assert_eq!(i.lookup_alias("usb:v1p2abc"), vec!["c"]);
    }

    #[test]
    fn alias_order_is_modules_dep_order() {
        let i = index();
        // a is before d in modules.dep, so it comes first although its alias
        // line is later.
        assert_eq!(
            i.lookup_alias("pci:v00001234d00000001sv00000000sd00000000bc00sc00i00"),
            vec!["a", "d"]
        );
        assert_eq!(
            i.lookup_alias("pci:v00001234d00000002sv00000000sd00000000bc00sc00i00"),
            vec!["d"]
        );
        assert!(i
            .lookup_alias("pci:v00004321d00000001sv0sd0bc0sc0i0")
            .is_empty());
    }

    #[test]
    fn names_and_dashes() {
        let i = index();
        assert_eq!(i.lookup_alias("fs-foo"), vec!["b_x"]);
        assert_eq!(i.lookup_alias("fs_foo"), vec!["b_x"]);
        assert_eq!(i.lookup_alias("b-x"), vec!["b_x"]);
        assert_eq!(i.lookup_alias("usb:v1p1zz"), vec!["c"]);
        assert!(i.lookup_alias("usb:v1p3zz").is_empty());
        assert_eq!(i.module_relpath("b-x"), Some("kernel/b-x.ko"));
        assert_eq!(
            i.module_path("a"),
            Some(PathBuf::from("/lib/modules/test/kernel/a.ko"))
        );
        assert_eq!(i.module_path("zzz"), None);
    }

    #[test]
    fn builtin_names_and_aliases() {
        let i = index();
        assert!(i.is_builtin("ext4"));
        assert!(!i.is_builtin("a"));
        assert_eq!(i.lookup_alias("ext4"), vec!["ext4"]);
        assert_eq!(i.lookup_alias("net-pf-1"), vec!["unix"]);
        assert_eq!(i.lookup_alias("fs-ext4"), vec!["ext4"]);
    }

    #[test]
    fn relative_dir_gives_absolute_paths() {
        let dir = tempfile::tempdir_in(".").unwrap();
        std::fs::write(dir.path().join("modules.dep"), "kernel/a.ko:\n").unwrap();
        let rel = dir
            .path()
            .strip_prefix(std::env::current_dir().unwrap())
            .unwrap_or(dir.path())
            .to_path_buf();
        let i = ModuleIndex::load(&rel).unwrap();
        let p = i.module_path("a").unwrap();
        assert!(p.is_absolute(), "{}", p.display());
        assert!(p.ends_with("kernel/a.ko"));
    }

    #[test]
    fn missing_modules_dep_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModuleIndex::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("modules.dep"), "{err}");
        assert!(err.starts_with("failed to read"), "{err}");
    }

    #[test]
    fn malformed_dep_line_is_an_error() {
        let err = ModuleIndex::from_bytes(
            Path::new("/x"),
            b"kernel/a.ko\n".to_vec(),
            Vec::new(),
            None,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    /// A line ending in CR before its newline (a name may end in CR once
    /// the CR of a CRLF is taken off): its subset reads back the same
    /// (found by the modules_dep fuzz target).
    #[test]
    fn a_subset_of_crlf_lines_reads_back_the_same() {
        let dep = b"a.ko: b\r\r\r\nb\r\r:\r\n".to_vec();
        let i =
            ModuleIndex::from_bytes(Path::new("/x"), dep, Vec::new(), None, None, None).unwrap();
        let names: BTreeSet<String> = i.module_names().map(str::to_owned).collect();
        let dep = i
            .subset_files(&names)
            .into_iter()
            .find(|(f, _)| f == "modules.dep")
            .unwrap()
            .1;
        let again =
            ModuleIndex::from_bytes(Path::new("/x"), dep, Vec::new(), None, None, None).unwrap();
        assert!(again.module_names().eq(i.module_names()));
    }

    #[test]
    fn subset_keeps_relative_paths_and_only_named_lines() {
        let i = index();
        let names: BTreeSet<String> = ["b_x".to_owned(), "c".to_owned()].into();
        let files: HashMap<String, Vec<u8>> = i.subset_files(&names).into_iter().collect();
        assert_eq!(
            files["modules.dep"],
            b"kernel/b-x.ko: kernel/c.ko\nkernel/c.ko:\n"
        );
        assert_eq!(
            files["modules.alias"],
            b"# Aliases extracted from modules themselves.\nalias fs-foo b_x\nalias usb:v1p[0-2]* c\n"
        );
        assert_eq!(
            files["modules.builtin"],
            b"kernel/fs/ext4/ext4.ko\nkernel/net/unix/unix.ko\n"
        );
        assert_eq!(
            files["modules.builtin.modinfo"],
            b"unix.alias=net-pf-1\0ext4.alias=fs-ext4\0"
        );
        // The subset loads and resolves the same way.
        let sub = ModuleIndex::from_bytes(
            Path::new("/x"),
            files["modules.dep"].clone(),
            files["modules.alias"].clone(),
            None,
            Some(files["modules.builtin"].clone()),
            Some(files["modules.builtin.modinfo"].clone()),
        )
        .unwrap();
        assert_eq!(sub.lookup_alias("fs-foo"), vec!["b_x"]);
        assert_eq!(sub.lookup_alias("net-pf-1"), vec!["unix"]);
    }
}
