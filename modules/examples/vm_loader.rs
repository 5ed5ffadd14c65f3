//! A throwaway PID 1 to try the loader against a real kernel in a VM
//! (driven by vm/loader-bench.sh), and the host-side step that prepares
//! its initramfs tree.
//!
//! Host:  `vm_loader prepare MODULE_DIR MODALIAS_FILE OUT_ROOT`
//!        plans the MODALIAS list against MODULE_DIR and writes the module
//!        files, the subset index and the list under OUT_ROOT.
//! Guest: as /init, reads `kestrel.threads=N` from the kernel command line,
//!        plans /modaliases against /lib/modules/$(uname -r), loads the plan
//!        with N threads, prints one `KESTREL-VM` line per module and a
//!        summary, then powers off. Never run it as init on the host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Mutex;

use kestrel_modules::config::Config;
use kestrel_modules::loader::{self, LoadEvent};
use kestrel_modules::{ModuleIndex, Request};

fn read_modaliases(path: &Path) -> Result<Vec<Request>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Request::Alias(l.to_owned()))
        .collect())
}

fn prepare(module_dir: &Path, modaliases: &Path, out: &Path) -> Result<(), String> {
    let index = ModuleIndex::load(module_dir).map_err(|e| e.to_string())?;
    let plan = index
        .plan(&read_modaliases(modaliases)?)
        .map_err(|e| e.to_string())?;
    let release = module_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tree = out.join("lib/modules").join(release);
    let mut names = std::collections::BTreeSet::new();
    for m in &plan.modules {
        let rel = index
            .module_relpath(&m.name)
            .ok_or_else(|| format!("no path for {}", m.name))?;
        let dst = tree.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        std::fs::copy(&m.path, &dst)
            .map_err(|e| format!("failed to copy {}: {e}", m.path.display()))?;
        names.insert(m.name.clone());
        println!("{} {}", m.name, rel);
    }
    for (file, bytes) in index.subset_files(&names) {
        std::fs::write(tree.join(&file), bytes)
            .map_err(|e| format!("failed to write {file}: {e}"))?;
    }
    std::fs::copy(modaliases, out.join("modaliases"))
        .map_err(|e| format!("failed to copy the list: {e}"))?;
    Ok(())
}

fn guest() -> Result<(), String> {
    use rustix::mount::{mount, MountFlags};
    for (fs, dir) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        // Already mounted is fine.
        let _ = mount(fs, dir, fs, MountFlags::empty(), None);
    }
    if let Ok(console) = rustix::fs::open(
        "/dev/console",
        rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdout(&console);
        let _ = rustix::stdio::dup2_stderr(&console);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let tokens: Vec<&str> = cmdline.split_whitespace().collect();
    let threads: usize = tokens
        .iter()
        .find_map(|t| t.strip_prefix("kestrel.threads="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut config = Config::new();
    config.apply_kernel_cmdline(&tokens);
    let t0 = loader::boottime();
    let index = ModuleIndex::load(&Path::new("/lib/modules").join(&release))
        .map_err(|e| e.to_string())?
        .with_config(config);
    let t_index = loader::boottime();
    let requests = read_modaliases(Path::new("/modaliases"))?;
    let plan = index.plan_lenient(&requests);
    let t1 = loader::boottime();
    // Twice more, now that the binary's pages and the heap are warm.
    let t_warm = loader::boottime();
    for _ in 0..2 {
        let i = ModuleIndex::load(&Path::new("/lib/modules").join(&release))
            .map_err(|e| e.to_string())?;
        let _ = i.plan_lenient(&requests);
    }
    let warm = loader::boottime().saturating_sub(t_warm) / 2;
    let first_start = Mutex::new(None);
    let report = loader::load_plan(&plan, threads, &|ev: &LoadEvent| {
        if let Ok(mut f) = first_start.lock() {
            f.get_or_insert(ev.start);
        }
        let outcome = match &ev.outcome {
            Ok(l) => format!("{l:?}"),
            Err(e) => format!("error: {e}"),
        };
        println!(
            "KESTREL-VM module {} thread={} start_ms={:.3} duration_ms={:.3} {outcome}",
            ev.entry.name,
            ev.thread,
            ev.start.as_secs_f64() * 1e3,
            ev.duration.as_secs_f64() * 1e3
        );
    });
    println!(
        "KESTREL-VM result threads={threads} modules={} loaded={} already={} failed={} skipped={} \
         index_and_plan_ms={:.3} (index {:.3}, warm index+plan {:.3}) wall_ms={:.3}",
        plan.modules.len(),
        report.loaded,
        report.already,
        report.failed,
        report.skipped,
        (t1.saturating_sub(t0)).as_secs_f64() * 1e3,
        (t_index.saturating_sub(t0)).as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        report.wall.as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let (Some("prepare"), Some(dir), Some(list), Some(out)) = (
        args.get(1).map(String::as_str),
        args.get(2),
        args.get(3),
        args.get(4),
    ) {
        return match prepare(Path::new(dir), Path::new(list), Path::new(out)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if rustix::process::getpid().as_raw_nonzero().get() != 1 {
        eprintln!("vm_loader: run me as PID 1 in a VM, or with `prepare DIR LIST OUT`");
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = guest() {
        println!("KESTREL-VM error {e}");
    }
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    // PID 1 must not exit: if power-off failed, wait to be killed.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
