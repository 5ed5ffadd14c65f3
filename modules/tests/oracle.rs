//! Oracle test: kestrel-modules must plan exactly what the real kmod does.
//!
//! Against the installed Debian module tree with plain `.ko` files (the
//! generic 6.1 flavour: installed by the project's setup script and by CI;
//! see tests/common for the choice), for a deterministic sample of alias
//! patterns across the whole modules.alias (each turned into a concrete
//! MODALIAS that matches it), for every module name and every builtin name,
//! the modules (and their options) of `plan` must equal, in order, the
//! `insmod` lines of `modprobe -S VERSION --show-depends`, and the
//! builtin modules it notes must equal the `builtin` lines. modprobe runs
//! batched (`-a`, a builtin sentinel between requests) on all cores.
//!
//! The test skips, loudly, only when no such module tree is installed.

// Test code: a failed expectation must stop the run loudly (clippy.toml
// allows this in unit tests; integration tests and benches need it spelled out).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

mod common;
use common::{Layout, Tree};

use kestrel_modules::config::{Config, DEFAULT_CONFIG_DIRS};
use kestrel_modules::names::name_from_path;
use kestrel_modules::{ModuleIndex, PlanNote, Request};

/// How many alias patterns to sample at most; all of them fit in the time
/// budget (a few seconds), so the "sample" is the whole file.
const ALIAS_SAMPLE: usize = usize::MAX;
/// Requests per modprobe process.
const BATCH: usize = 150;

/// The tree the oracle runs on: the installed one with plain `.ko` files
/// (any layout would do for kmod; this one is the tree the fixtures were
/// captured with).
fn kernel_tree() -> Option<Tree> {
    let tree = common::tree_or_skip(Layout::Plain, "kmod oracle test");
    if tree.is_none() {
        eprintln!("!!! Install linux-image-amd64 (scripts/setup does) to run it.");
    }
    tree
}

/// The answer to one request: (path, options) to insmod, builtin names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Answer {
    insmod: Vec<(String, String)>,
    builtin: Vec<String>,
}

/// Parses one request's `--show-depends` output, keeping each module at its
/// first appearance (kmod prints a module again when a second path of the
/// probe list reaches it; loading it again would be EEXIST).
fn parse_show_depends(lines: &[&str]) -> Answer {
    let mut a = Answer::default();
    for line in lines {
        if let Some(rest) = line.strip_prefix("insmod ") {
            let (path, opts) = rest.split_once(' ').unwrap_or((rest, ""));
            // kmod's module_options_concat always appends one space after
            // the configured options (room for command line extras); it is
            // not part of the options.
            let opts = opts.strip_suffix(' ').unwrap_or(opts);
            if !a.insmod.iter().any(|(p, _)| p == path) {
                a.insmod.push((path.to_owned(), opts.to_owned()));
            }
        } else if let Some(name) = line.strip_prefix("builtin ") {
            if !a.builtin.iter().any(|b| b == name) {
                a.builtin.push(name.to_owned());
            }
        } else if !line.is_empty() {
            panic!("unexpected modprobe output line: {line:?}");
        }
    }
    a
}

/// Runs modprobe on all requests, batched and in parallel, with a builtin
/// module as separator. `config_arg` is passed as `-C` when set.
fn kmod_answers(
    tree: &Tree,
    requests: &[String],
    sentinel: &str,
    config_arg: Option<&Path>,
) -> Vec<Answer> {
    let batches: Vec<&[String]> = requests.chunks(BATCH).collect();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<(usize, Vec<Answer>)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(batch) = batches.get(b) else { return };
                let mut cmd = Command::new("modprobe");
                if let Some(c) = config_arg {
                    cmd.arg("-C").arg(c);
                }
                cmd.args(["-S", &tree.version, "-a", "--show-depends"]);
                for r in batch.iter() {
                    cmd.arg(r).arg(sentinel);
                }
                let out = cmd
                    .output()
                    .expect("failed to run modprobe (is kmod installed?)");
                let stdout = String::from_utf8(out.stdout).expect("modprobe output is UTF-8");
                let sep = format!("builtin {sentinel}");
                let mut answers = Vec::new();
                let mut current: Vec<&str> = Vec::new();
                for line in stdout.lines() {
                    if line == sep {
                        answers.push(parse_show_depends(&current));
                        current.clear();
                    } else {
                        current.push(line);
                    }
                }
                assert!(
                    current.is_empty(),
                    "modprobe output after the last separator: {current:?}"
                );
                assert_eq!(
                    answers.len(),
                    batch.len(),
                    "separator count mismatch in batch {b}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                results.lock().unwrap().push((b, answers));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(b, _)| *b);
    results.into_iter().flat_map(|(_, a)| a).collect()
}

fn our_answer(index: &ModuleIndex, request: Request) -> Answer {
    let plan = index.plan_lenient(&[request]);
    let insmod = plan
        .modules
        .iter()
        .map(|m| (m.path.display().to_string(), m.options.clone()))
        .collect();
    let builtin = plan
        .notes
        .iter()
        .filter_map(|n| match n {
            PlanNote::Builtin { module, .. } => Some(module.clone()),
            _ => None,
        })
        .collect();
    Answer { insmod, builtin }
}

/// A concrete string matching an fnmatch pattern: `*` becomes one of a few
/// fixed fillers (cycled, so the sample varies), `?` a fixed byte, `[..]`
/// its first member (or a byte outside it when negated).
fn concretize(pattern: &str, salt: usize) -> String {
    const FILLERS: [&str; 4] = ["", "0", "1A", "00000000"];
    let p = pattern.as_bytes();
    let mut out = String::new();
    let mut stars = salt;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => {
                out.push_str(FILLERS[stars % FILLERS.len()]);
                stars += 1;
                i += 1;
            }
            b'?' => {
                out.push('0');
                i += 1;
            }
            b'\\' if i + 1 < p.len() => {
                out.push(char::from(p[i + 1]));
                i += 2;
            }
            b'[' => {
                let close = p[i + 1..]
                    .iter()
                    .skip(1)
                    .position(|&c| c == b']')
                    .map(|x| i + 2 + x);
                let Some(close) = close else {
                    out.push('[');
                    i += 1;
                    continue;
                };
                let body = &p[i + 1..close];
                let (neg, body) = match body.first() {
                    Some(b'!') | Some(b'^') => (true, &body[1..]),
                    _ => (false, body),
                };
                if neg {
                    let c = b"0aA_Zz9"
                        .iter()
                        .find(|c| !body.contains(c))
                        .copied()
                        .unwrap_or(b'~');
                    out.push(char::from(c));
                } else {
                    out.push(char::from(body[0]));
                }
                i = close + 1;
            }
            c => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    out
}

fn read_cmdline() -> Vec<String> {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn builtin_names(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| name_from_path(l.as_bytes()))
        .collect()
}

/// A builtin module nobody refers to, to separate requests in one modprobe run.
fn pick_sentinel(dir: &Path, extra_text: &str) -> String {
    let softdep = std::fs::read_to_string(dir.join("modules.softdep")).unwrap_or_default();
    let modinfo = String::from_utf8_lossy(
        &std::fs::read(dir.join("modules.builtin.modinfo")).unwrap_or_default(),
    )
    .into_owned();
    builtin_names(dir)
        .into_iter()
        .find(|n| {
            n.len() > 4
                && !softdep.contains(n.as_str())
                && !extra_text.contains(n.as_str())
                && !modinfo.contains(&format!("{n}.alias="))
        })
        .expect("a builtin module to use as separator")
}

fn compare(index: &ModuleIndex, requests: &[(Request, String)], kmod: &[Answer]) -> Vec<String> {
    let mut diffs = Vec::new();
    for ((req, text), theirs) in requests.iter().zip(kmod) {
        let ours = our_answer(index, req.clone());
        if &ours != theirs {
            diffs.push(format!(
                "request {text:?} ({req:?}):\n  modprobe: insmod {:?}\n            builtin {:?}\n  kestrel:  insmod {:?}\n            builtin {:?}",
                theirs.insmod, theirs.builtin, ours.insmod, ours.builtin
            ));
        }
    }
    diffs
}

fn report(diffs: &[String], total: usize) {
    if !diffs.is_empty() {
        for d in diffs.iter().take(25) {
            eprintln!("{d}");
        }
        panic!(
            "{} of {total} requests differ from modprobe --show-depends (first 25 printed above)",
            diffs.len()
        );
    }
}

#[test]
fn plans_equal_modprobe_show_depends() {
    let Some(tree) = kernel_tree() else { return };
    let dir = tree.dir.clone();
    let started = std::time::Instant::now();
    let mut config =
        Config::load_paths(&DEFAULT_CONFIG_DIRS).expect("host modprobe.d config parses");
    config.apply_kernel_cmdline(&read_cmdline());
    let config_text: String = DEFAULT_CONFIG_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    let index = ModuleIndex::load(&dir)
        .expect("index loads")
        .with_config(config);

    let sentinel = pick_sentinel(&dir, &config_text);
    let mut requests: Vec<(Request, String)> = Vec::new();

    // A deterministic sample across the whole modules.alias, plus every
    // pattern with a bracket or '?' (the rare syntax).
    let patterns: Vec<(String, String)> = index
        .alias_patterns()
        .map(|(p, m)| {
            (
                String::from_utf8_lossy(p).into_owned(),
                String::from_utf8_lossy(m).into_owned(),
            )
        })
        .collect();
    let step = (patterns.len() / ALIAS_SAMPLE).max(1);
    let mut seen = BTreeSet::new();
    for (i, (pattern, module)) in patterns.iter().enumerate() {
        if i % step != 0 && !pattern.contains(['[', '?']) {
            continue;
        }
        let concrete = concretize(pattern, i);
        // Sanity: the string does match its pattern.
        assert!(
            kestrel_modules::fnmatch::fnmatch(pattern.as_bytes(), concrete.as_bytes()),
            "{concrete:?} made from {pattern:?} (module {module}) does not match it"
        );
        if seen.insert(concrete.clone()) {
            requests.push((Request::Alias(concrete.clone()), concrete));
        }
    }
    let alias_requests = requests.len();
    assert!(
        alias_requests >= 2000,
        "only {alias_requests} alias samples"
    );

    // Every module name, every builtin name, and some aliases by name.
    for name in index.module_names() {
        requests.push((Request::Name(name.to_owned()), name.to_owned()));
    }
    for name in builtin_names(&dir) {
        if name != sentinel {
            requests.push((Request::Name(name.clone()), name));
        }
    }
    for extra in [
        "crypto-crc32c",
        "fs-ext4",
        "net-pf-1",
        "snd-pcsp",
        "uhci-hcd",
        "btrfs",
        "ksmbd",
        "cifs",
        "ext4",
    ] {
        requests.push((Request::Name(extra.to_owned()), extra.to_owned()));
    }

    let texts: Vec<String> = requests.iter().map(|(_, t)| t.clone()).collect();
    let kmod = kmod_answers(&tree, &texts, &sentinel, None);
    assert_eq!(kmod.len(), requests.len());
    let diffs = compare(&index, &requests, &kmod);
    let nonempty_alias = kmod
        .iter()
        .take(alias_requests)
        .filter(|a| !a.insmod.is_empty())
        .count();
    let insmods: usize = kmod.iter().map(|a| a.insmod.len()).sum();
    let builtins: usize = kmod.iter().map(|a| a.builtin.len()).sum();
    eprintln!(
        "oracle: {} requests ({alias_requests} aliases sampled from {} patterns, {nonempty_alias} of them load \
         something), {insmods} insmod and {builtins} builtin answers compared, {} differences, {:.1?}",
        requests.len(),
        patterns.len(),
        diffs.len(),
        started.elapsed()
    );
    // The comparison must not be vacuous: nearly every sampled alias loads
    // something (the few that do not are blacklisted).
    assert!(
        nonempty_alias * 10 >= alias_requests * 9,
        "only {nonempty_alias} of {alias_requests} aliases load anything"
    );
    report(&diffs, requests.len());
}

/// The same comparison with a crafted modprobe.d (`-C`), exercising config
/// aliases, options by name and by alias, blacklist, softdep pre/post,
/// glob softdeps and the place of modules.softdep among config files.
#[test]
fn config_semantics_equal_modprobe() {
    let Some(tree) = kernel_tree() else { return };
    let dir = tree.dir.clone();
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("a.conf"),
        "# earlier than modules.softdep: wins for ext4\n\
         softdep ext4 pre: virtio-blk post: loop\n\
         alias my-disk virtio_blk\n\
         alias my-glob* dm-mod\n\
         options virtio_blk queue_depth=8\n\
         options my_disk from_alias=1\n\
         options  loop   max_loop=4\tmax_part=2\n\
         blacklist e1000\n\
         softdep snd-hda-* pre: snd-hwdep\n",
    )
    .unwrap();
    std::fs::write(
        conf.path().join("z.conf"),
        "# later than modules.softdep: loses for btrfs\n\
         softdep btrfs pre: loop\n\
         softdep xfs post: dm-mod dm_crypt\n\
         options e1000 copybreak=0\n",
    )
    .unwrap();
    let mut config = Config::load_paths(&[conf.path()]).unwrap();
    config.apply_kernel_cmdline(&read_cmdline());
    let index = ModuleIndex::load(&dir).unwrap().with_config(config);
    let sentinel = pick_sentinel(&dir, "");
    let e1000_alias = index
        .alias_patterns()
        .find(|(_, m)| *m == b"e1000")
        .map(|(p, _)| concretize(&String::from_utf8_lossy(p), 0))
        .unwrap();
    let names = [
        "ext4",
        "btrfs",
        "xfs",
        "my-disk",
        "my_disk",
        "my-glob-xyz",
        "virtio_blk",
        "loop",
        "e1000",
        "snd-hda-intel",
        "snd_hda_codec_realtek",
        "jbd2",
    ];
    let mut requests: Vec<(Request, String)> = names
        .iter()
        .map(|n| (Request::Name((*n).to_owned()), (*n).to_owned()))
        .collect();
    requests.push((Request::Alias(e1000_alias.clone()), e1000_alias.clone()));
    requests.push((Request::Alias("my-disk".to_owned()), "my-disk".to_owned()));
    let texts: Vec<String> = requests.iter().map(|(_, t)| t.clone()).collect();
    let kmod = kmod_answers(&tree, &texts, &sentinel, Some(conf.path()));
    // The blacklisted alias must produce nothing on both sides.
    let e1000_idx = requests.len() - 2;
    assert!(
        kmod[e1000_idx].insmod.is_empty(),
        "modprobe loaded blacklisted e1000 via alias"
    );
    let diffs = compare(&index, &requests, &kmod);
    report(&diffs, requests.len());
}

/// The MODALIAS lists captured from real guests (tests/fixtures/capture.sh).
fn guest_fixtures() -> Vec<(String, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for profile in ["q35", "pc", "microvm"] {
        let text =
            std::fs::read_to_string(dir.join(format!("guest-modaliases-{profile}.txt"))).unwrap();
        let aliases: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert!(!aliases.is_empty(), "empty fixture for {profile}");
        out.push((profile.to_owned(), aliases));
    }
    out
}

/// Every MODALIAS of the captured guests, one by one, and all of a guest's
/// MODALIAS at once (what the init asks for): the plan equals modprobe's
/// answer to `modprobe -a` of the same list, each module at its first
/// appearance.
#[test]
fn guest_fixture_modaliases_equal_modprobe() {
    let Some(tree) = kernel_tree() else { return };
    let dir = tree.dir.clone();
    let mut config =
        Config::load_paths(&DEFAULT_CONFIG_DIRS).expect("host modprobe.d config parses");
    config.apply_kernel_cmdline(&read_cmdline());
    let index = ModuleIndex::load(&dir)
        .expect("index loads")
        .with_config(config);
    let sentinel = pick_sentinel(&dir, "");
    for (profile, aliases) in guest_fixtures() {
        let requests: Vec<(Request, String)> = aliases
            .iter()
            .map(|a| (Request::Alias(a.clone()), a.clone()))
            .collect();
        let kmod = kmod_answers(&tree, &aliases, &sentinel, None);
        let diffs = compare(&index, &requests, &kmod);
        report(&diffs, requests.len());

        // All at once.
        let all: Vec<Request> = aliases.iter().map(|a| Request::Alias(a.clone())).collect();
        let plan = index.plan(&all).expect("guest plan");
        let ours: Vec<(String, String)> = plan
            .modules
            .iter()
            .map(|m| (m.path.display().to_string(), m.options.clone()))
            .collect();
        let out = Command::new("modprobe")
            .args(["-S", &tree.version, "-a", "--show-depends"])
            .args(&aliases)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        let theirs = parse_show_depends(&lines).insmod;
        assert_eq!(
            ours, theirs,
            "{profile}: whole-guest plan differs from modprobe -a"
        );
        assert!(!ours.is_empty(), "{profile}: the guest needs some module");
        for (k, m) in plan.modules.iter().enumerate() {
            assert!(
                m.deps.iter().all(|&d| d < k),
                "{profile}: {} is before a dependency",
                m.name
            );
        }
        // The subset the initrd builder writes for these modules plans the
        // same modules from the same relative paths.
        let names: BTreeSet<String> = plan.modules.iter().map(|m| m.name.clone()).collect();
        let sub_dir = tempfile::tempdir().unwrap();
        for (file, bytes) in index.subset_files(&names) {
            std::fs::write(sub_dir.path().join(file), bytes).unwrap();
        }
        let sub = ModuleIndex::load(sub_dir.path())
            .unwrap()
            .with_config(index.config().clone());
        let sub_plan = sub.plan(&all).expect("subset plan");
        let rel = |i: &ModuleIndex,
                   p: &kestrel_modules::Plan|
         -> Vec<(String, Option<String>, String, Vec<usize>)> {
            p.modules
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        i.module_relpath(&m.name).map(str::to_owned),
                        m.options.clone(),
                        m.deps.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(
            rel(&sub, &sub_plan),
            rel(&index, &plan),
            "{profile}: the subset index plans differently"
        );
        eprintln!(
            "guest {profile}: {} MODALIAS, {} modules planned: {}",
            aliases.len(),
            plan.modules.len(),
            plan.modules
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

#[test]
fn concretize_makes_matching_strings() {
    for (p, want) in [
        (
            "pci:v00008086d*sv*sd*bc*sc*i*",
            "pci:v00008086dsv0sd1Abc00000000sci0",
        ),
        ("usb:v13FDp3940d0[0-2]*dc*", "usb:v13FDp3940d00dc0"),
        ("a?b[!0a]c", "a0bAc"),
    ] {
        let c = concretize(p, 0);
        assert_eq!(c, want);
        assert!(kestrel_modules::fnmatch::fnmatch(
            p.as_bytes(),
            c.as_bytes()
        ));
    }
}
