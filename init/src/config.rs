//! What the host bakes into the initrd for the init: the payload's argv,
//! environment and working directory. Each is a file of NUL-terminated
//! byte strings, so any argument (spaces, quotes, newlines, non-UTF-8)
//! arrives exactly as given. The host writes them with [`encode_list`] and
//! the init reads them with [`decode_list`]: one definition of the format.

/// Directory in the initrd holding the baked configuration.
pub const CONFIG_DIR: &str = "/kestrel";
/// NUL-terminated argv of the payload; present means run mode.
pub const ARGV_FILE: &str = "/kestrel/argv";
/// The program to exec, as resolved on the host (its path in the initrd);
/// argv[0] stays what the user typed. Absent: argv[0] is looked up.
pub const EXE_FILE: &str = "/kestrel/exe";
/// NUL-terminated `KEY=VALUE` environment of the payload.
pub const ENV_FILE: &str = "/kestrel/env";
/// The payload's working directory (bytes, no terminator).
pub const CWD_FILE: &str = "/kestrel/cwd";
/// Present: the payload is interactive and gets the console as its
/// stdin/stdout/stderr and controlling terminal (`kestrel boot`).
pub const CONSOLE_FILE: &str = "/kestrel/console";
/// A frozen module plan: names, one per line, loaded in that order
/// instead of discovering devices (`kestrel build --frozen-plan`).
pub const PLAN_FILE: &str = "/kestrel/plan";
/// Present: the host streams the payload's stdin over the events port
/// (`in` records, then `in_eof`); absent: stdin is /dev/null.
pub const STDIN_FILE: &str = "/kestrel/stdin";
/// Largest config file the init reads (the kernel's own argv limit is smaller).
pub const MAX_CONFIG: usize = 1 << 20;

/// Encodes strings as NUL-terminated records. A string with a NUL in it
/// cannot be an argument of execve, so it is refused.
pub fn encode_list<I, S>(items: I) -> Result<Vec<u8>, NulInArgument>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for item in items {
        let item = item.as_ref();
        if item.contains(&0) {
            return Err(NulInArgument(String::from_utf8_lossy(item).into_owned()));
        }
        out.extend_from_slice(item);
        out.push(0);
    }
    Ok(out)
}

/// Decodes NUL-terminated records; a missing final terminator is tolerated.
pub fn decode_list(data: &[u8]) -> Vec<Vec<u8>> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// An argument holds a NUL byte, which execve cannot pass.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("argument {0:?} contains a NUL byte")]
pub struct NulInArgument(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_awkward_arguments() {
        let args: Vec<&[u8]> = vec![b"/bin/echo", b"a b", "'ü'".as_bytes(), b"", b"\n\xff"];
        let enc = encode_list(&args).unwrap();
        assert_eq!(decode_list(&enc), args);
    }

    #[test]
    fn refuses_nul() {
        assert!(encode_list([b"a\0b"]).is_err());
        assert_eq!(decode_list(b""), Vec::<Vec<u8>>::new());
    }
}
