//! `kestrel bench`: N boots, each phase's median, min, max and spread; and
//! a comparison mode that runs two configurations interleaved (A B A B …)
//! so both see the same machine load, and reports the ratios pair by pair.
//! On a shared machine only such side-by-side ratios mean anything.

use crate::analyze::{analyze, Analysis};
use crate::qemu::Profile;
use crate::run::{self, RunOptions};
use anyhow::{bail, Context, Result};
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

/// Applies one `KEY=VALUE` override of the B configuration.
pub fn apply_override(opts: &mut RunOptions, spec: &str) -> Result<()> {
    let (key, value) = spec
        .split_once('=')
        .with_context(|| format!("--versus takes KEY=VALUE, got {spec:?}"))?;
    match key {
        "machine" => opts.profile = <Profile as clap::ValueEnum>::from_str(value, true).map_err(|e| anyhow::anyhow!("machine {value:?}: {e}"))?,
        "append" => opts.append = value.to_owned(),
        "quiet" => opts.quiet = parse_bool(value)?,
        "pvh" => opts.pvh = parse_bool(value)?,
        "compression" => opts.compression = value.parse().map_err(|e| anyhow::anyhow!("compression {value:?}: {e}"))?,
        "frozen_plan" => opts.frozen_plan = parse_bool(value)?,
        "cpus" => opts.cpus = value.parse()?,
        "memory" => opts.memory_mb = value.parse()?,
        _ => bail!("unknown --versus key {key:?} (machine, append, quiet, pvh, compression, frozen_plan, cpus, memory)"),
    }
    Ok(())
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

/// Per-phase statistics over several analyses, phases in first-seen order.
pub fn summarize(label: &str, analyses: &[Analysis], failures: usize) -> BenchReport {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for a in analyses {
        for p in &a.phases {
            if !values.contains_key(&p.name) {
                order.push(p.name.clone());
            }
            values
                .entry(p.name.clone())
                .or_default()
                .push(p.duration_ms());
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
    s.push_str(&format!(
        "{:<52} {:>9} {:>9} {:>9} {:>9}\n",
        "phase (ms)", "median", "min", "max", "spread"
    ));
    for p in &r.phases {
        s.push_str(&format!(
            "{:<52} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
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
                if i >= total {
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
    fn overrides_are_checked() {
        let mut o = RunOptions::default();
        apply_override(&mut o, "machine=microvm").unwrap();
        assert_eq!(o.profile, Profile::Microvm);
        apply_override(&mut o, "quiet=off").unwrap();
        assert!(!o.quiet);
        assert!(apply_override(&mut o, "colour=blue").is_err());
        assert!(apply_override(&mut o, "machine").is_err());
    }
}
