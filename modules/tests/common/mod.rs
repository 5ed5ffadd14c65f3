//! Shared by the integration tests and the benchmark: which installed
//! Debian module tree is the oracle.

/// The Debian kernel whose module tree is the oracle: 6.1.0-56-amd64 when
/// installed (the fixtures were captured with it), else the newest tree
/// with a modules.dep (a fresh machine may get a newer ABI).
pub fn kernel() -> String {
    const CAPTURED: &str = "6.1.0-56-amd64";
    if std::path::Path::new("/lib/modules")
        .join(CAPTURED)
        .join("modules.dep")
        .exists()
    {
        return CAPTURED.to_owned();
    }
    let mut found: Vec<String> = std::fs::read_dir("/lib/modules")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("modules.dep").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort_by_key(|v| {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    found.pop().unwrap_or_else(|| CAPTURED.to_owned())
}
