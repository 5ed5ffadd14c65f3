//! A library whose tests must run on a kernel of their own: they read
//! what only a fresh machine has (PID 1, the booted kernel's release).

/// The kernel's release as /proc reports it.
pub fn kernel_release() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned())
}

/// The command name of PID 1.
pub fn init_name() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/1/comm")?.trim().to_owned())
}
