//! `kestrel bench`: N boots, each phase's median, min, max and spread; and
//! a comparison mode that runs two configurations interleaved (A B A B …)
//! so both see the same machine load, and reports the ratios pair by pair.
//! On a shared machine only such side-by-side ratios mean anything.

use crate::analyze::{analyze, Analysis};
use crate::machine::Profile;
use crate::run::{self, RunOptions};
use crate::signals;
use crate::yardstick::{Loader, Reference, ReferenceBoot};
use anyhow::{anyhow, bail, Context, Result};
use kestrel_initrd::Compression;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Clone, Debug, serde::Serialize)]
pub struct PhaseStats {
    pub name: String,
    pub n: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// max - min.
    pub spread_ms: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub label: String,
    pub boots: usize,
    pub failures: usize,
    pub phases: Vec<PhaseStats>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Pair {
    pub a_total_ms: f64,
    pub b_total_ms: f64,
    /// b / a of the whole boot (qemu start → qemu exit).
    pub ratio: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub a: BenchReport,
    pub b: BenchReport,
    pub pairs: Vec<Pair>,
    pub median_ratio: f64,
}

/// One setting of the B configuration, as `--versus KEY=VALUE` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Override {
    Machine(Profile),
    Append(String),
    Quiet(bool),
    Speedups(bool),
    Pvh(bool),
    Compression(Compression),
    FrozenPlan(bool),
    Cpus(u32),
    Memory(u32),
    Net(bool),
    Rng(bool),
}

/// The keys, for messages.
const OVERRIDE_KEYS: &str =
    "machine, append, quiet, speedups, pvh, compression, frozen_plan, cpus, memory, net, rng";

/// A profile's name as `--machine` takes it.
fn profile_name(p: Profile) -> String {
    clap::ValueEnum::to_possible_value(&p)
        .map_or_else(|| format!("{p:?}"), |v| v.get_name().to_owned())
}

impl std::str::FromStr for Override {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Override> {
        let (key, value) = spec
            .split_once('=')
            .with_context(|| format!("--versus takes KEY=VALUE, got {spec:?}"))?;
        let o = match key {
            "machine" => Override::Machine(
                <Profile as clap::ValueEnum>::from_str(value, true).map_err(|_| {
                    let names: Vec<String> = <Profile as clap::ValueEnum>::value_variants()
                        .iter()
                        .map(|p| profile_name(*p))
                        .collect();
                    anyhow!("machine {value:?}: one of {}", names.join(", "))
                })?,
            ),
            "append" => Override::Append(value.to_owned()),
            "quiet" => Override::Quiet(parse_bool(value)?),
            "speedups" => Override::Speedups(parse_bool(value)?),
            "pvh" => Override::Pvh(parse_bool(value)?),
            "compression" => Override::Compression(
                value
                    .parse()
                    .map_err(|e| anyhow!("compression {value:?}: {e}"))?,
            ),
            "frozen_plan" => Override::FrozenPlan(parse_bool(value)?),
            "cpus" => Override::Cpus(value.parse().with_context(|| format!("cpus {value:?}"))?),
            "memory" => {
                Override::Memory(value.parse().with_context(|| format!("memory {value:?}"))?)
            }
            "net" => Override::Net(parse_bool(value)?),
            "rng" => Override::Rng(parse_bool(value)?),
            _ => bail!("unknown --versus key {key:?} ({OVERRIDE_KEYS})"),
        };
        Ok(o)
    }
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        match self {
            Override::Machine(p) => write!(f, "machine={}", profile_name(*p)),
            Override::Append(a) => write!(f, "append={a}"),
            Override::Quiet(q) => write!(f, "quiet={}", on(*q)),
            Override::Speedups(s) => write!(f, "speedups={}", on(*s)),
            Override::Pvh(p) => write!(f, "pvh={}", on(*p)),
            Override::Compression(c) => write!(f, "compression={c}"),
            Override::FrozenPlan(p) => write!(f, "frozen_plan={}", on(*p)),
            Override::Cpus(n) => write!(f, "cpus={n}"),
            Override::Memory(mb) => write!(f, "memory={mb}"),
            Override::Net(n) => write!(f, "net={}", on(*n)),
            Override::Rng(r) => write!(f, "rng={}", on(*r)),
        }
    }
}

impl Override {
    /// B = A with this setting.
    pub fn apply(&self, opts: &mut RunOptions) {
        match self {
            Override::Machine(p) => opts.machine.profile = *p,
            Override::Append(a) => opts.vm.append = a.into(),
            Override::Quiet(q) => opts.vm.quiet = *q,
            Override::Speedups(s) => opts.vm.speedups = *s,
            Override::Pvh(p) => opts.vm.pvh = *p,
            Override::Compression(c) => opts.build.compression = *c,
            Override::FrozenPlan(f) => opts.build.frozen_plan = *f,
            Override::Cpus(n) => opts.vm.cpus = *n,
            Override::Memory(mb) => opts.vm.memory_mb = *mb,
            Override::Net(on) => opts.machine.net = *on,
            Override::Rng(on) => opts.machine.rng = *on,
        }
    }
}

fn parse_bool(v: &str) -> Result<bool> {
    match v {
        "on" | "1" | "yes" | "true" => Ok(true),
        "off" | "0" | "no" | "false" => Ok(false),
        _ => bail!("expected on/off, got {v:?}"),
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted.get(n / 2).copied().unwrap_or(f64::NAN),
        n => {
            (sorted.get(n / 2 - 1).copied().unwrap_or(f64::NAN)
                + sorted.get(n / 2).copied().unwrap_or(f64::NAN))
                / 2.0
        }
    }
}

/// The whole boot's row of a report.
const TOTAL: &str = "total: qemu start → qemu exit";

/// Per-phase statistics over several analyses, phases in first-seen order,
/// then the whole boot.
fn summarize(label: &str, analyses: &[Analysis], failures: usize) -> BenchReport {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for a in analyses {
        let parts = a.phases.iter().map(|p| (p.name.clone(), p.duration_ms()));
        for (name, ms) in parts.chain([(TOTAL.to_owned(), a.total_ms)]) {
            if !values.contains_key(&name) {
                order.push(name.clone());
            }
            values.entry(name).or_default().push(ms);
        }
    }
    let phases = order
        .into_iter()
        .map(|name| {
            let mut v = values.remove(&name).unwrap_or_default();
            v.sort_by(f64::total_cmp);
            let (min, max) = (
                v.first().copied().unwrap_or(f64::NAN),
                v.last().copied().unwrap_or(f64::NAN),
            );
            PhaseStats {
                n: v.len(),
                median_ms: median(&v),
                min_ms: min,
                max_ms: max,
                spread_ms: max - min,
                name,
            }
        })
        .collect();
    BenchReport {
        label: label.to_owned(),
        boots: analyses.len() + failures,
        failures,
        phases,
    }
}

pub fn render(r: &BenchReport) -> String {
    let mut s = format!("{}: {} boots, {} failed\n", r.label, r.boots, r.failures);
    s.push_str(&stat_rows(&r.phases.iter().collect::<Vec<_>>()));
    s
}

/// A table of `rows` under a header, its name column as wide as the
/// widest name.
fn stat_rows(rows: &[&PhaseStats]) -> String {
    const HEADER: &str = "phase (ms)";
    let width = rows
        .iter()
        .map(|p| p.name.chars().count())
        .fold(HEADER.len(), usize::max);
    let mut s = format!(
        "{HEADER:<width$} {:>9} {:>9} {:>9} {:>9}\n",
        "median", "min", "max", "spread"
    );
    for p in rows {
        s.push_str(&format!(
            "{:<width$} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
            p.name, p.median_ms, p.min_ms, p.max_ms, p.spread_ms
        ));
    }
    s
}

/// One boot's analysis, or None (reported) when it failed.
fn boot_once(argv: &[OsString], opts: &RunOptions) -> Option<Analysis> {
    match run::run(argv, opts) {
        Ok(out) if out.exit_code == 0 => Some(analyze(&out.log)),
        Ok(out) => {
            eprintln!(
                "kestrel bench: boot failed with status {}: {}",
                out.exit_code,
                out.failure.unwrap_or_default()
            );
            None
        }
        Err(e) => {
            eprintln!("kestrel bench: {e:#}");
            None
        }
    }
}

fn progress(done: usize, total: usize) {
    // A bar redrawn with CR is for a terminal; before the first boot ends
    // other lines (the kernel chosen) are still to come.
    if done == 0 || !rustix::termios::isatty(std::io::stderr()) {
        return;
    }
    let width = 30;
    let filled = done * width / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} boots",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if done == total {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}

/// Runs `configs` interleaved (boot i uses config i % len) with `jobs`
/// boots at a time; returns each config's analyses (None = failed) in order.
fn run_interleaved(
    argv: &[OsString],
    configs: &[RunOptions],
    n_each: usize,
    jobs: usize,
) -> Vec<Vec<Option<Analysis>>> {
    let total = n_each * configs.len();
    let results: Mutex<Vec<Vec<Option<Analysis>>>> =
        Mutex::new(configs.iter().map(|_| vec![None; n_each]).collect());
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    progress(0, total);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total || signals::pending().is_some() {
                    return;
                }
                let (config, round) = (i % configs.len(), i / configs.len());
                let analysis = configs.get(config).and_then(|opts| boot_once(argv, opts));
                if let Some(slot) = results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_mut(config)
                    .and_then(|v| v.get_mut(round))
                {
                    *slot = analysis;
                }
                progress(done.fetch_add(1, Ordering::SeqCst) + 1, total);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn report_of(label: &str, runs: &[Option<Analysis>]) -> BenchReport {
    let ok: Vec<Analysis> = runs.iter().flatten().cloned().collect();
    summarize(label, &ok, runs.len() - ok.len())
}

pub fn bench(argv: &[OsString], opts: &RunOptions, n: usize, jobs: usize) -> BenchReport {
    let runs = run_interleaved(argv, std::slice::from_ref(opts), n, jobs);
    report_of("A", runs.first().map(Vec::as_slice).unwrap_or_default())
}

pub fn compare(
    argv: &[OsString],
    a: &RunOptions,
    b: &RunOptions,
    n: usize,
    jobs: usize,
) -> Comparison {
    let runs = run_interleaved(argv, &[a.clone(), b.clone()], n, jobs);
    let (ra, rb) = (
        runs.first().cloned().unwrap_or_default(),
        runs.get(1).cloned().unwrap_or_default(),
    );
    let pairs: Vec<Pair> = ra
        .iter()
        .zip(&rb)
        .filter_map(|(x, y)| {
            let (x, y) = (x.as_ref()?, y.as_ref()?);
            Some(Pair {
                a_total_ms: x.total_ms,
                b_total_ms: y.total_ms,
                ratio: y.total_ms / x.total_ms,
            })
        })
        .collect();
    let mut ratios: Vec<f64> = pairs.iter().map(|p| p.ratio).collect();
    ratios.sort_by(f64::total_cmp);
    Comparison {
        a: report_of("A", &ra),
        b: report_of("B", &rb),
        median_ratio: median(&ratios),
        pairs,
    }
}

pub fn render_comparison(c: &Comparison) -> String {
    let mut s = render(&c.a);
    s.push('\n');
    s.push_str(&render(&c.b));
    s.push_str("\npair  A total ms  B total ms  B/A\n");
    for (i, p) in c.pairs.iter().enumerate() {
        s.push_str(&format!(
            "{:>4}  {:>10.1}  {:>10.1}  {:.3}\n",
            i + 1,
            p.a_total_ms,
            p.b_total_ms,
            p.ratio
        ));
    }
    s.push_str(&format!("median B/A: {:.3}\n", c.median_ratio));
    s
}

/// `kestrel bench --floor`: a run and the floor (the same kernel and
/// machine with a no-op init), interleaved, and Kestrel's cost as a ratio.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FloorReport {
    /// The runs' phases.
    pub run: BenchReport,
    /// The floor's: qemu's parts and the kernel's, to its init's start.
    pub floor: BenchReport,
    /// Host wall time of one whole run (the build or its cache hit, qemu,
    /// everything) and of one floor boot.
    pub run_wall_ms: PhaseStats,
    pub floor_wall_ms: PhaseStats,
    /// Run / floor, host wall time, per round.
    pub ratios: Vec<f64>,
    pub median_ratio: f64,
}

/// `n` rounds of one run and one floor boot.
pub fn floor(argv: &[OsString], opts: &RunOptions, n: usize) -> Result<FloorReport> {
    let (mut runs, mut floors, mut run_wall, mut floor_wall, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0;
    progress(0, 2 * n);
    for round in 0..n {
        if signals::pending().is_some() {
            bail!("interrupted");
        }
        let t0 = std::time::Instant::now();
        let run = boot_once(argv, opts);
        let run_ms = t0.elapsed().as_secs_f64() * 1e3;
        progress(2 * round + 1, 2 * n);
        let t0 = std::time::Instant::now();
        let floor = run::floor(opts)?;
        let floor_ms = t0.elapsed().as_secs_f64() * 1e3;
        progress(2 * round + 2, 2 * n);
        if floor.qemu_exit_ns.is_none() || floor.timed_out {
            bail!("the floor did not power off: {}", floor.qemu_stderr);
        }
        match run {
            Some(a) => {
                runs.push(a);
                floors.push(analyze(&floor));
                run_wall.push(run_ms);
                floor_wall.push(floor_ms);
                ratios.push(run_ms / floor_ms);
            }
            None => failures += 1,
        }
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(FloorReport {
        run: summarize("kestrel run", &runs, failures),
        floor: summarize("floor", &floors, 0),
        run_wall_ms: stats("host wall: kestrel run", &run_wall),
        floor_wall_ms: stats("host wall: floor", &floor_wall),
        median_ratio: median(&sorted),
        ratios,
    })
}

pub fn render_floor(r: &FloorReport) -> String {
    let mut s = render(&r.run);
    s.push_str(&render(&r.floor));
    s.push_str(&stat_rows(&[&r.run_wall_ms, &r.floor_wall_ms]));
    let list: Vec<String> = r.ratios.iter().map(|x| format!("{x:.3}")).collect();
    s.push_str(&format!(
        "run / floor (host wall): median {:.3} ({})\n",
        r.median_ratio,
        list.join(" ")
    ));
    s
}

/// One loader's boots on the reference machine.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoaderStats {
    pub loader: Loader,
    pub boots: usize,
    pub failures: usize,
    /// Ready − /init: the init's start to the root's init started.
    pub ready_ms: PhaseStats,
    pub wall_ms: PhaseStats,
    /// Warnings any boot printed (a healthy boot prints none).
    pub warnings: Vec<String>,
}

/// `kestrel bench --reference`: the three loaders interleaved, and the
/// two ratios the issue sets targets for, pair by pair.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReferenceReport {
    pub loaders: Vec<LoaderStats>,
    /// Discovery / frozen plan, ready − /init, per round.
    pub discovery_vs_frozen: Vec<f64>,
    pub median_discovery_vs_frozen: f64,
    /// Frozen plan / fixed-list loader, per round.
    pub frozen_vs_fixed: Vec<f64>,
    pub median_frozen_vs_fixed: f64,
}

fn stats(name: &str, values: &[f64]) -> PhaseStats {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let (min, max) = (
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    );
    PhaseStats {
        name: name.to_owned(),
        n: v.len(),
        median_ms: median(&v),
        min_ms: min,
        max_ms: max,
        spread_ms: max - min,
    }
}

/// Boots the reference machine `n` times with each loader, interleaved
/// (discovery, frozen, fixed, discovery, ...), one at a time.
pub fn reference(kernel: crate::kernel::Kernel, n: usize) -> Result<ReferenceReport> {
    let reference = Reference::prepare(kernel)?;
    let mut rounds: Vec<Vec<Option<ReferenceBoot>>> = Vec::new();
    progress(0, n * Loader::ALL.len());
    for round in 0..n {
        let mut boots = Vec::new();
        for (i, loader) in Loader::ALL.into_iter().enumerate() {
            if signals::pending().is_some() {
                bail!("interrupted");
            }
            let boot = reference
                .boot(loader)
                .map_err(|e| eprintln!("\nkestrel bench: {e:#}"))
                .ok();
            boots.push(boot);
            progress(round * Loader::ALL.len() + i + 1, n * Loader::ALL.len());
        }
        rounds.push(boots);
    }
    let loaders = Loader::ALL
        .into_iter()
        .enumerate()
        .map(|(i, loader)| {
            let ok: Vec<&ReferenceBoot> =
                rounds.iter().filter_map(|r| r.get(i)?.as_ref()).collect();
            let ready: Vec<f64> = ok.iter().map(|b| b.ready_ms()).collect();
            let wall: Vec<f64> = ok.iter().map(|b| b.wall_ms).collect();
            let mut warnings: Vec<String> = ok.iter().flat_map(|b| b.warnings.clone()).collect();
            warnings.dedup();
            LoaderStats {
                loader,
                boots: n,
                failures: n - ok.len(),
                ready_ms: stats("ready - /init", &ready),
                wall_ms: stats("qemu start -> exit", &wall),
                warnings,
            }
        })
        .collect();
    let ratio = |a: usize, b: usize| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| Some(r.get(a)?.as_ref()?.ready_ms() / r.get(b)?.as_ref()?.ready_ms()))
            .collect()
    };
    let median_of = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        median(&v)
    };
    let discovery_vs_frozen = ratio(0, 1);
    let frozen_vs_fixed = ratio(1, 2);
    Ok(ReferenceReport {
        median_discovery_vs_frozen: median_of(&discovery_vs_frozen),
        median_frozen_vs_fixed: median_of(&frozen_vs_fixed),
        discovery_vs_frozen,
        frozen_vs_fixed,
        loaders,
    })
}

pub fn render_reference(r: &ReferenceReport) -> String {
    let mut s = format!(
        "reference machine (q35, 2 vCPUs, 1 GiB, virtio console/blk/net/rng, ext4 root, no events port)\n{:<24} {:>6} {:>9} {:>9} {:>9} {:>11}\n",
        "loader", "boots", "ready ms", "min", "max", "wall ms"
    );
    for l in &r.loaders {
        s.push_str(&format!(
            "{:<24} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>11.1}\n",
            l.loader.name(),
            l.boots - l.failures,
            l.ready_ms.median_ms,
            l.ready_ms.min_ms,
            l.ready_ms.max_ms,
            l.wall_ms.median_ms
        ));
        for w in &l.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    s.push_str(&format!(
        "discovery / frozen plan: median {:.3} ({})\nfrozen plan / fixed list: median {:.3} ({})\n",
        r.median_discovery_vs_frozen,
        list(&r.discovery_vs_frozen),
        r.median_frozen_vs_fixed,
        list(&r.frozen_vs_fixed)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::Phase;

    fn analysis(total: f64) -> Analysis {
        Analysis {
            phases: vec![Phase {
                name: "total".into(),
                start_ms: 0.0,
                end_ms: total,
                thread: None,
            }],
            total_ms: total,
            ..Analysis::default()
        }
    }

    #[test]
    fn summarizes_median_min_max_spread() {
        let r = summarize(
            "A",
            &[
                analysis(30.0),
                analysis(10.0),
                analysis(20.0),
                analysis(40.0),
            ],
            1,
        );
        let p = &r.phases[0];
        assert_eq!(
            (p.n, p.median_ms, p.min_ms, p.max_ms, p.spread_ms),
            (4, 25.0, 10.0, 40.0, 30.0)
        );
        assert_eq!((r.boots, r.failures), (5, 1));
    }

    #[test]
    fn overrides_are_typed_and_checked() {
        let mut o = RunOptions::default();
        for spec in [
            "machine=q35",
            "quiet=off",
            "compression=zstd",
            "cpus=2",
            "net=on",
        ] {
            spec.parse::<Override>().unwrap().apply(&mut o);
        }
        assert_eq!(o.machine.profile, Profile::Q35);
        assert!(!o.vm.quiet && o.machine.net);
        assert_eq!((o.build.compression, o.vm.cpus), (Compression::Zstd, 2));
        assert_eq!(
            "append=a=b c".parse::<Override>().unwrap(),
            Override::Append("a=b c".into())
        );
        for bad in [
            "colour=blue",
            "machine",
            "machine=vax",
            "cpus=many",
            "pvh=maybe",
        ] {
            assert!(bad.parse::<Override>().is_err(), "{bad}");
        }
    }
}
