//! Test VMs (issue 13) through the `kestrel` binary, as a user runs it:
//! piped stdin, --env and --env-pass, the working directory and a project
//! file; the invoking user's ids, unprivileged; an installed kestrel run
//! from another directory; a terminal for the payload.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kestrel() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kestrel"));
    cmd.env_remove("KESTREL_INIT");
    cmd
}

/// The Debian 6.1 kernel the VM tests use (see kestrel-tests' kernel_61).
fn kernel_61() -> PathBuf {
    kestrel::kernel::installed_kernels(Path::new(kestrel::kernel::BOOT_DIR))
        .unwrap()
        .into_iter()
        .rfind(|k| {
            k.release.starts_with("6.1.")
                && k.release.ends_with("-amd64")
                && !k.release.contains("cloud")
        })
        .expect("no /boot/vmlinuz-6.1.*-amd64 (make setup)")
        .path
}

/// Runs `cmd` with `stdin` piped in.
fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn our_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// From a folder with a `kestrel.toml` (the kernel, 300 MiB, a share),
/// on the host's root: piped stdin reaches the payload without -i, --env
/// and --env-pass set its environment over the host's PATH and HOME, the
/// working directory is kept (shared on its own: it is under the guest's
/// own /tmp), the project's share is mounted, its memory used and a flag
/// wins over it; the payload is us.
#[test]
fn stdin_env_cwd_user_and_the_project_file_on_the_host_root() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir(dir_path.join("data")).unwrap();
    std::fs::write(dir_path.join("data/f"), "project share\n").unwrap();
    std::fs::write(
        dir_path.join("kestrel.toml"),
        format!(
            "kernel = \"{}\"\nmemory = 300\ncpus = 1\nshares = [\"data:/srv/data\"]\n",
            kernel_61().display()
        ),
    )
    .unwrap();
    let script = "cat; echo \"$A|$KT_PASS|$HOME\"; pwd; id -u; cat /srv/data/f; \
                  awk '/MemTotal/ {print int($2 / 1024) \" MiB\"}' /proc/meminfo";
    let run = |memory: Option<&str>| {
        let mut cmd = kestrel();
        cmd.current_dir(&dir_path)
            .env("KT_PASS", "passed")
            .arg("run");
        if let Some(m) = memory {
            cmd.args(["--memory", m]);
        }
        cmd.args([
            "--root",
            "host",
            "--env",
            "A=given",
            "--env-pass",
            "KT_PASS",
            "--env-pass",
            "KT_UNSET",
            "--",
            "sh",
            "-c",
            script,
        ]);
        run_with_stdin(cmd, b"piped in\n")
    };
    let out = run(None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("kestrel: defaults from"), "{stderr}");
    assert!(stderr.contains("kestrel: sharing folders with"), "{stderr}");
    assert!(stderr.contains("given with --kernel"), "{stderr}");
    let home = std::env::var("HOME").unwrap_or_default();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "piped in",
            &format!("given|passed|{home}"),
            &dir_path.display().to_string(),
            &our_uid().to_string(),
            "project share",
        ],
        "{stdout}"
    );
    let mib = |line: &str| -> u32 { line.trim_end_matches(" MiB").parse().unwrap() };
    let small = mib(lines[5]);
    assert!((200..300).contains(&small), "{stdout}");
    // A flag wins over the file.
    let out = run(Some("400"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let big = mib(text(&out.stdout).lines().last().unwrap());
    assert!((300..400).contains(&big), "{big}");
}

/// Kestrel works without root: run as nobody (setpriv), with its own
/// cache and temporary folders, kestrel shares a folder read-write (9p:
/// qemu's virtiofsd needs root, and that is said) and runs the payload as
/// nobody, whose file is nobody's on the host.
#[test]
fn an_unprivileged_user_shares_folders_as_itself() {
    if our_uid() != 0 || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIP: needs root and setpriv to become another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["", "cache", "tmp", "work"] {
        let p = dir.path().join(sub);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let work = dir.path().join("work");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_kestrel"))
        .args(["run", "--kernel"])
        .arg(kernel_61())
        .args([
            "--root",
            "host",
            "--share",
            ".,rw",
            "--",
            "sh",
            "-c",
            "id -u; id -g; id -G; echo mine > made",
        ])
        .current_dir(&work)
        .env_remove("KESTREL_INIT")
        .env("HOME", "/nonexistent")
        .env("KESTREL_CACHE", dir.path().join("cache"))
        .env("TMPDIR", dir.path().join("tmp"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout, "65534\n65534\n65534\n", "{stderr}");
    assert!(stderr.contains("kestrel: sharing folders with"), "{stderr}");
    let made = std::fs::metadata(work.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (65534, 65534));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The repository's root (the Makefile's folder).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `make install PREFIX=…` then the installed kestrel, run from / with
/// no KESTREL_INIT, finds its init under PREFIX/lib/kestrel and runs
/// `cat` with our piped stdin (`echo hi | kestrel run -- cat`); a lone
/// copy elsewhere says exactly what to do.
#[test]
fn an_installed_kestrel_runs_from_another_directory() {
    let init = repo().join("target").join(kestrel::build::INIT_IN_TARGET);
    if !init.is_file() {
        eprintln!("SKIP: no {} (make init)", init.display());
        return;
    }
    let prefix = tempfile::tempdir().unwrap();
    // The binary under test is installed; init and tools are not rebuilt.
    let make = Command::new("make")
        .current_dir(repo())
        .args(["-s", "-o", "init", "-o", "tools", "install"])
        .arg(format!("PREFIX={}", prefix.path().display()))
        .arg(format!("KESTREL={}", env!("CARGO_BIN_EXE_kestrel")))
        .output()
        .unwrap();
    assert!(make.status.success(), "{}", text(&make.stderr));
    let installed = prefix.path().join("bin/kestrel");
    assert!(prefix.path().join("lib/kestrel/kestrel-init").is_file());
    let mut cmd = Command::new(&installed);
    cmd.current_dir("/")
        .env_remove("KESTREL_INIT")
        .args(["run", "--kernel"])
        .arg(kernel_61())
        .args(["--", "cat"]);
    let out = run_with_stdin(cmd, b"hi\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");

    let lone = tempfile::tempdir().unwrap();
    let copy = lone.path().join("kestrel");
    std::fs::copy(&installed, &copy).unwrap();
    let out = Command::new(&copy)
        .current_dir("/")
        .env_remove("KESTREL_INIT")
        .args(["run", "--kernel"])
        .arg(kernel_61())
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    for hint in [
        "no static kestrel-init",
        "make install PREFIX=",
        "KESTREL_INIT=",
    ] {
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }
}

/// `-t` on a terminal gives the payload one (the serial console wired to
/// ours); without -t a terminal stdin is /dev/null, not forwarded.
#[test]
fn a_terminal_is_given_with_t_only() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP: no script(1) to make a terminal");
        return;
    }
    for (flag, want, code) in [("-t", "tty", 3), ("-i", "pipe", 3), ("", "none", 3)] {
        let line = format!(
            "{} run {flag} --kernel {} -- /bin/sh -c 'if [ -t 0 ]; then echo tty; elif read -r x; then echo pipe; else echo none; fi; exit 3'",
            env!("CARGO_BIN_EXE_kestrel"),
            kernel_61().display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("KESTREL_INIT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // What we type reaches the payload only when it is forwarded (-i).
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"typed\n");
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{flag}: {stdout}");
        let answer = stdout
            .lines()
            .map(str::trim)
            .find(|l| ["tty", "pipe", "none"].contains(l));
        assert_eq!(answer, Some(want), "{flag}: {stdout}");
    }
}

/// Processes whose command line mentions `needle` and `what`.
fn processes_using(what: &str, needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(what) && cmdline.contains(&needle)).then_some(cmdline)
        })
        .collect()
}

/// SIGTERM during a run that shares a folder over virtio-fs: kestrel
/// ends with 143 and neither qemu nor the virtiofsd it started is left,
/// nor its private folder (the daemon's socket and log).
#[test]
fn a_signal_leaves_no_virtiofsd_behind() {
    let root = our_uid() == 0;
    match kestrel::virtiofsd::find() {
        Some(d) if d.unusable_reason(root).is_none() => {}
        _ => {
            eprintln!("SKIP: no virtiofsd that can serve us");
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let share = tempfile::tempdir().unwrap();
    let mut child = kestrel()
        .env("TMPDIR", tmp.path())
        .args(["run", "--kernel"])
        .arg(kernel_61())
        .args(["--share-fs", "virtiofs", "--share"])
        .arg(share.path())
        .args(["--", "/bin/sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while processes_using("qemu", tmp.path()).is_empty() {
        assert!(t0.elapsed().as_secs() < 60, "no qemu started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Its socket (and, for a read-only share, the view it serves) is in
    // the run's private folder, under our TMPDIR.
    assert!(!processes_using("virtiofsd", tmp.path()).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(
        processes_using("virtiofsd", tmp.path()),
        Vec::<String>::new()
    );
    assert_eq!(processes_using("qemu", tmp.path()), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
