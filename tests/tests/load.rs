//! The harness under load (issue 12): boots in a row, then four at once,
//! each with the payload's output and status right, and nothing left
//! behind after them: no qemu process (ours, or any naming our temporary
//! directory), no temporary directory or events socket (this process has
//! a private TMPDIR, so whatever is in it after the boots is ours), no
//! cache temporary file of ours. The 50-boot run is `make soak`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_tests::{run, test_options};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// This process's own TMPDIR, set before its first boot (the runs make
/// their `kestrel-run-*` directories there).
fn private_tmp() -> &'static Path {
    static TMP: OnceLock<PathBuf> = OnceLock::new();
    TMP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kestrel-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("TMPDIR", &dir);
        dir
    })
}

/// What `pid`'s /proc says: its parent, its state and its command line.
fn proc_info(pid: &str) -> Option<(u32, char, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces, the last ')' ends it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    Some((ppid, state, cmdline))
}

/// Everything the boots may have left behind, described.
fn leftovers(tmp: &Path) -> Vec<String> {
    let me = std::process::id();
    let mut left = Vec::new();
    let tmp_text = tmp.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some((ppid, state, cmdline)) = proc_info(&pid) else {
            continue;
        };
        let ours = ppid == me || cmdline.contains(&tmp_text);
        if ours && (cmdline.contains("qemu-system") || state == 'Z') {
            left.push(format!("process {pid} ({state}): {cmdline}"));
        }
    }
    for entry in std::fs::read_dir(tmp).unwrap().flatten() {
        left.push(format!("in TMPDIR: {}", entry.path().display()));
    }
    // The cache's temporary files name their writer's pid.
    let cache = kestrel::cache::open_cache().unwrap();
    if let Ok(entries) = std::fs::read_dir(cache.dir()) {
        let mark = format!(".{me}.");
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") && name.contains(&mark) {
                left.push(format!("in the cache: {name}"));
            }
        }
    }
    left
}

/// One boot that must succeed: its output names it.
fn boot(n: usize) -> Duration {
    let t0 = Instant::now();
    let word = format!("boot-{n}");
    let out = run(&["/bin/echo", &word], &test_options());
    assert_eq!(out.exit_code, 0, "{word}: {:?}", out.failure);
    assert_eq!(out.stdout, format!("{word}\n").as_bytes());
    t0.elapsed()
}

fn under_load(in_a_row: usize, parallel: usize) {
    let tmp = private_tmp();
    std::fs::create_dir_all(tmp).unwrap();
    assert_eq!(leftovers(tmp), Vec::<String>::new(), "before the boots");
    let t0 = Instant::now();
    let mut times: Vec<Duration> = (0..in_a_row).map(boot).collect();
    let row = t0.elapsed();
    assert_eq!(
        leftovers(tmp),
        Vec::<String>::new(),
        "after {in_a_row} in a row"
    );
    let t1 = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..parallel)
            .map(|i| s.spawn(move || boot(in_a_row + i)))
            .collect();
        times.extend(handles.into_iter().map(|h| h.join().unwrap()));
    });
    let par = t1.elapsed();
    assert_eq!(
        leftovers(tmp),
        Vec::<String>::new(),
        "after {parallel} at once"
    );
    std::fs::remove_dir(tmp).unwrap();
    times.sort();
    eprintln!(
        "under load: {in_a_row} in a row in {:.1} s, {parallel} at once in {:.1} s; per boot min {:.1} median {:.1} max {:.1} s; nothing left behind",
        row.as_secs_f64(),
        par.as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() / 2].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
}

#[test]
fn six_boots_in_a_row_and_four_at_once_leave_nothing_behind() {
    under_load(6, 4);
}

#[test]
#[ignore = "soak: make soak"]
fn soak_fifty_boots_in_a_row_and_four_at_once_leave_nothing_behind() {
    under_load(50, 4);
}
