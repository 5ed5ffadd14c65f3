//! The real kernel as the oracle for the archive format: it must unpack every
//! compression, and a compressed base followed by an uncompressed per-run
//! archive. The init is a tiny static C program (built with gcc) that reports
//! which paths exist, then powers off. VM tests are slow under TCG (~5-10 s a
//! boot), so they are ignored by default:
//!
//!   cargo test -p kestrel-initrd --test boot -- --ignored
//!
//! Each VM runs in its own process group, is killed on drop and after a hard
//! timeout, and its console is printed when the test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_initrd::{concat_archives, Archive, Compression};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

const KVER: &str = "6.1.0-56-amd64";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

const INIT_C: &str = r#"
#include <stdio.h>
#include <sys/stat.h>
#include <sys/reboot.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct stat st;
    printf("KESTREL_INIT_START\n");
    for (int i = 1; i < argc; i++)
        printf("%s %s\n", stat(argv[i], &st) == 0 ? "EXISTS" : "MISSING", argv[i]);
    printf("KESTREL_INIT_END\n");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
"#;

/// Kills the VM's whole process group when dropped, unless it was already
/// reaped (its pid, and so its group id, may then belong to someone else).
struct Vm {
    child: Child,
    reaped: bool,
}

impl Vm {
    fn exited(&mut self) -> bool {
        if !self.reaped {
            self.reaped = matches!(self.child.try_wait(), Ok(Some(_)));
        }
        self.reaped
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.exited() {
            // The group was made with process_group(0): its id is the child's pid, never 0 or 1.
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

fn kernel() -> Option<PathBuf> {
    let k = PathBuf::from(format!("/boot/vmlinuz-{KVER}"));
    (k.exists()
        && Command::new("qemu-system-x86_64")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok())
    .then_some(k)
}

fn build_init(dir: &Path) -> PathBuf {
    let src = dir.join("init.c");
    std::fs::write(&src, INIT_C).unwrap();
    let bin = dir.join("init");
    let st = Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc -static failed");
    bin
}

/// Boot `initrd`, asking the init about `paths`; returns the console text.
fn boot(kernel: &Path, initrd: &Path, paths: &[&str]) -> String {
    let append = format!("console=ttyS0 panic=-1 quiet -- {}", paths.join(" "));
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut vm = Vm {
        child,
        reaped: false,
    };
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    while !vm.exited() && start.elapsed() < BOOT_TIMEOUT {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(vm);
    reader.join().unwrap()
}

fn expect(console: &str, what: &str, exists: &[&str], missing: &[&str]) {
    assert!(
        console.contains("KESTREL_INIT_END"),
        "{what}: the init did not finish; console:\n{console}"
    );
    for p in exists {
        assert!(
            console.contains(&format!("EXISTS {p}")),
            "{what}: {p} missing; console:\n{console}"
        );
    }
    for p in missing {
        assert!(
            console.contains(&format!("MISSING {p}")),
            "{what}: {p} present; console:\n{console}"
        );
    }
}

fn base(init: &Path) -> Archive {
    let mut a = Archive::new();
    a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
    a.add_file_from("init", init).unwrap();
    a.add_file("lib/modules/x/base.ko", 0o644, vec![1; 100_000])
        .unwrap();
    a.add_symlink("lib64", "lib").unwrap();
    a.add_file("etc/hostname", 0o644, b"base\n".to_vec())
        .unwrap();
    a
}

#[test]
#[ignore = "boots a VM (slow under TCG); run with --ignored"]
fn kernel_unpacks_every_compression() {
    let Some(kernel) = kernel() else {
        eprintln!("no kernel or qemu; skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let init = build_init(dir.path());
    let a = base(&init);
    for c in Compression::ALL {
        let path = dir.path().join(format!("initrd{}", c.extension()));
        std::fs::write(&path, a.to_compressed(0, c).unwrap()).unwrap();
        let console = boot(
            &kernel,
            &path,
            &[
                "/lib/modules/x/base.ko",
                "/lib64/modules/x/base.ko",
                "/nonexistent",
            ],
        );
        expect(
            &console,
            c.name(),
            &["/lib/modules/x/base.ko", "/lib64/modules/x/base.ko"],
            &["/nonexistent"],
        );
    }
}

#[test]
#[ignore = "boots a VM (slow under TCG); run with --ignored"]
fn kernel_unpacks_a_compressed_base_and_an_appended_overlay() {
    let Some(kernel) = kernel() else {
        eprintln!("no kernel or qemu; skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let init = build_init(dir.path());
    let b = base(&init);
    let mut run = Archive::overlay(&b);
    run.add_file("run/payload", 0o755, b"payload".to_vec())
        .unwrap();
    run.add_file("lib64/extra/lib.so", 0o644, b"lib".to_vec())
        .unwrap(); // through the base's symlink
    run.add_file("etc/hostname", 0o644, b"overridden\n".to_vec())
        .unwrap();
    for c in [Compression::Zstd, Compression::Gzip] {
        let mut out = Vec::new();
        concat_archives(
            &mut out,
            &[&b.to_compressed(0, c).unwrap(), &run.to_newc(0).unwrap()],
        )
        .unwrap();
        let path = dir.path().join(format!("concat{}", c.extension()));
        std::fs::write(&path, &out).unwrap();
        let console = boot(
            &kernel,
            &path,
            &[
                "/run/payload",
                "/lib/extra/lib.so",
                "/lib/modules/x/base.ko",
                "/init",
            ],
        );
        expect(
            &console,
            &format!("{c} + none"),
            &[
                "/run/payload",
                "/lib/extra/lib.so",
                "/lib/modules/x/base.ko",
                "/init",
            ],
            &[],
        );
    }
}
