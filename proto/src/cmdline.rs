//! The kernel command line, tokenised as the kernel does (`next_arg` in
//! lib/cmdline.c): parameters split on spaces, double quotes group spaces
//! into one parameter and are removed, `--` ends the kernel's part.
//! Kestrel's own options all start with `kestrel.`; an unknown one is an
//! error, not silently ignored. The host writes them (see [`opt`]); the
//! init reads them with [`parse_boot_options`].
//!
//! /proc/cmdline is bytes: a parameter that is not UTF-8 is read lossily
//! (another driver's business), but a `kestrel.*` value that is not UTF-8
//! is an error naming the option. Every value is validated: durations are
//! finite, non-negative and at most [`MAX_WAIT`], counts have their bound.

use std::time::Duration;

/// One `key[=value]` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

impl std::fmt::Display for Param {
    /// `key=value` or `key`, as modprobe's config wants them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// One raw parameter, before its value is checked to be text.
struct RawParam {
    key: String,
    value: Option<Vec<u8>>,
}

/// Splits a command line into parameters. Quotes may wrap the whole
/// parameter or only its value (`a="b c"`), as the kernel accepts.
/// Parameters after a lone `--` are not the kernel's and are left out.
fn tokenize_raw(cmdline: &[u8]) -> Vec<RawParam> {
    let mut params = Vec::new();
    let cmdline = cmdline.strip_suffix(b"\0").unwrap_or(cmdline);
    let mut bytes = cmdline.iter().copied().peekable();
    loop {
        while bytes.next_if(u8::is_ascii_whitespace).is_some() {}
        if bytes.peek().is_none() {
            break;
        }
        let mut token = Vec::new();
        let mut in_quote = false;
        while let Some(b) = bytes.next_if(|b| in_quote || !b.is_ascii_whitespace()) {
            if b == b'"' {
                in_quote = !in_quote;
            } else {
                token.push(b);
            }
        }
        if token == b"--" {
            break;
        }
        let (key, value) = match token.iter().position(|&b| b == b'=') {
            Some(eq) => (
                token.get(..eq).unwrap_or_default(),
                token.get(eq + 1..).map(<[u8]>::to_vec),
            ),
            None => (token.as_slice(), None),
        };
        params.push(RawParam {
            key: String::from_utf8_lossy(key).into_owned(),
            value,
        });
    }
    params
}

/// The parameters as text (values that are not UTF-8 read lossily).
pub fn tokenize(cmdline: &[u8]) -> Vec<Param> {
    tokenize_raw(cmdline)
        .into_iter()
        .map(|RawParam { key, value }| Param {
            key,
            value: value.map(|v| String::from_utf8_lossy(&v).into_owned()),
        })
        .collect()
}

/// The names of Kestrel's options, for the host that writes them.
pub mod opt {
    /// The host attached the events port: wait for it (without this the
    /// init never waits for a port and writes to the console).
    pub const EVENTS: &str = "kestrel.events";
    /// Seconds to wait for needed devices.
    pub const TIMEOUT: &str = "kestrel.timeout";
    /// Start /bin/sh on failure, when present.
    pub const SHELL: &str = "kestrel.shell";
    /// Debug records for every uevent and module decision.
    pub const DEBUG: &str = "kestrel.debug";
    /// Boot records on the console when there is no events port.
    pub const TRACE: &str = "kestrel.trace";
    /// Module loader threads (0: one per CPU).
    pub const THREADS: &str = "kestrel.threads";
    /// Test hook: stop before a phase and wait forever.
    pub const HANG: &str = "kestrel.hang";
    /// Extra modules to load, by name.
    pub const MODULES: &str = "kestrel.modules";
    /// A frozen plan given on the command line.
    pub const PLAN: &str = "kestrel.plan";
    /// Test hook: the uevent socket's receive buffer in bytes, small to
    /// make a device storm overflow it.
    pub const UEVENT_BUFFER: &str = "kestrel.uevent_buffer";
    /// Every option, so the error for an unknown one can list them.
    pub const ALL: &[&str] = &[
        EVENTS,
        TIMEOUT,
        SHELL,
        DEBUG,
        TRACE,
        THREADS,
        HANG,
        MODULES,
        PLAN,
        UEVENT_BUFFER,
    ];
}

/// Longest wait a duration option may ask for (a day); `rootwait` is the
/// way to wait forever.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Most loader threads `kestrel.threads` may ask for.
pub const MAX_THREADS: usize = 64;
/// Largest uevent receive buffer `kestrel.uevent_buffer` may ask for: the
/// socket's own default (the option only exists to shrink it).
pub const MAX_UEVENT_BUFFER: usize = 128 << 20;
/// Phases `kestrel.hang` can stop before.
pub const HANG_PHASES: &[&str] = &["modules", "payload"];

/// How `root=` names the root device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSpec {
    /// `root=/dev/vda1`
    Path(String),
    /// `root=UUID=...` (compared case-insensitively, as blkid prints lowercase)
    Uuid(String),
    /// `root=LABEL=...`
    Label(String),
    /// `root=PARTUUID=...`
    PartUuid(String),
    /// `root=PARTLABEL=...`
    PartLabel(String),
}

impl RootSpec {
    pub fn parse(value: &str) -> Result<RootSpec, CmdlineError> {
        let bad = || CmdlineError::BadValue {
            key: "root".into(),
            what: "/dev/PATH, UUID=, LABEL=, PARTUUID= or PARTLABEL=",
            value: value.to_owned(),
        };
        let spec = if let Some(v) = value.strip_prefix("UUID=") {
            RootSpec::Uuid(v.to_ascii_lowercase())
        } else if let Some(v) = value.strip_prefix("LABEL=") {
            RootSpec::Label(v.to_owned())
        } else if let Some(v) = value.strip_prefix("PARTUUID=") {
            RootSpec::PartUuid(v.to_ascii_lowercase())
        } else if let Some(v) = value.strip_prefix("PARTLABEL=") {
            RootSpec::PartLabel(v.to_owned())
        } else if value.starts_with("/dev/") && !value.split('/').any(|c| c == "..") {
            RootSpec::Path(value.to_owned())
        } else {
            return Err(bad());
        };
        match &spec {
            RootSpec::Path(_) => Ok(spec),
            RootSpec::Uuid(v)
            | RootSpec::Label(v)
            | RootSpec::PartUuid(v)
            | RootSpec::PartLabel(v)
                if !v.is_empty() =>
            {
                Ok(spec)
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for RootSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSpec::Path(p) => write!(f, "{p}"),
            RootSpec::Uuid(v) => write!(f, "UUID={v}"),
            RootSpec::Label(v) => write!(f, "LABEL={v}"),
            RootSpec::PartUuid(v) => write!(f, "PARTUUID={v}"),
            RootSpec::PartLabel(v) => write!(f, "PARTLABEL={v}"),
        }
    }
}

/// The standard root options of the kernel command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootOptions {
    pub device: Option<RootSpec>,
    pub fstype: Option<String>,
    pub flags: Option<String>,
    /// `rw` given (the kernel's default, and ours, is read-only).
    pub read_write: bool,
    /// `rootwait`: wait without the deadline.
    pub wait_forever: bool,
    /// `rootdelay=SECONDS`: a fixed pause before looking.
    pub delay: Option<Duration>,
    /// `init=`: the real init (default /sbin/init).
    pub init: Option<String>,
}

/// What the init takes from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// The host attached the events port (`kestrel.events`).
    pub events: bool,
    /// How long to wait for needed devices (`kestrel.timeout=SECONDS`).
    pub timeout: Duration,
    /// Start /bin/sh on failure, when present (`kestrel.shell`).
    pub shell_on_failure: bool,
    /// Log every uevent and module decision (`kestrel.debug`).
    pub debug: bool,
    /// Boot records on the console when there is no port (`kestrel.trace`).
    pub trace: bool,
    /// Module loader threads (`kestrel.threads=N`, 0 = one per CPU).
    pub threads: usize,
    /// Test hook: stop before this phase and wait forever
    /// (`kestrel.hang=modules|payload`), so the host's timeout
    /// handling can be tested against a real hung guest.
    pub hang: Option<String>,
    /// Extra modules to load (`kestrel.modules=a,b`).
    pub modules: Vec<String>,
    /// A frozen plan: load exactly these modules and skip discovery
    /// (`kestrel.plan=a,b,c`, or the builder's baked plan).
    pub plan: Option<Vec<String>>,
    /// Test hook: the uevent socket's receive buffer in bytes
    /// (`kestrel.uevent_buffer=N`; the kernel doubles it and keeps a
    /// minimum), so tests can overflow it with a device storm.
    pub uevent_buffer: Option<usize>,
    pub root: RootOptions,
    /// All parameters, for modules (`NAME.param=value`, `modprobe.blacklist=`).
    pub params: Vec<Param>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            events: false,
            timeout: Duration::from_secs(20),
            shell_on_failure: false,
            debug: false,
            trace: false,
            threads: 0,
            hang: None,
            modules: Vec::new(),
            plan: None,
            uevent_buffer: None,
            root: RootOptions::default(),
            params: Vec::new(),
        }
    }
}

/// A command-line option Kestrel cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("unknown option {0} (known: {known})", known = opt::ALL.join(", "))]
    Unknown(String),
    #[error("option {key} needs {what}, got {value:?}")]
    BadValue {
        key: String,
        what: &'static str,
        value: String,
    },
}

fn bad(key: &str, what: &'static str, value: &str) -> CmdlineError {
    CmdlineError::BadValue {
        key: key.to_owned(),
        what,
        value: value.to_owned(),
    }
}

fn flag(value: Option<&str>, key: &str) -> Result<bool, CmdlineError> {
    match value {
        None | Some("1") | Some("yes") | Some("on") => Ok(true),
        Some("0") | Some("no") | Some("off") => Ok(false),
        Some(v) => Err(bad(key, "a boolean (1/0, yes/no, on/off)", v)),
    }
}

fn count(value: Option<&str>, key: &str, max: usize) -> Result<usize, CmdlineError> {
    let v = value.unwrap_or_default();
    match v.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad(key, "a whole number within its bound", v)),
    }
}

/// A number of seconds up to [`MAX_WAIT`], `N` or `N.FRACTION` (at most
/// nine decimals). Parsed as decimal text, not as a float: no `-1`, `nan`,
/// `1e30` (which Duration::from_secs_f64 would panic on) and no overflow
/// of `Instant + Duration`; and the init carries no float parser.
fn seconds(value: Option<&str>, key: &str) -> Result<Duration, CmdlineError> {
    let v = value.unwrap_or_default();
    let err = || {
        bad(
            key,
            "a number of seconds (0 to 86400, at most 9 decimals)",
            v,
        )
    };
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 6 || frac.len() > 9 || !digits(whole) || !digits(frac) {
        return Err(err());
    }
    let secs: u64 = whole.parse().map_err(|_| err())?;
    let nanos: u32 = format!("{frac:0<9}").parse().map_err(|_| err())?;
    Some(Duration::new(secs, nanos))
        .filter(|d| *d <= MAX_WAIT)
        .ok_or_else(err)
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads Kestrel's options out of a command line (/proc/cmdline's bytes).
pub fn parse_boot_options(cmdline: &[u8]) -> Result<BootOptions, CmdlineError> {
    let raw = tokenize_raw(cmdline);
    let mut opts = BootOptions {
        params: tokenize(cmdline),
        ..BootOptions::default()
    };
    for RawParam { key, value } in raw {
        if key.starts_with("kestrel.") {
            let value = match value.as_deref().map(std::str::from_utf8) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(_)) => {
                    let lossy = String::from_utf8_lossy(value.as_deref().unwrap_or_default());
                    return Err(bad(&key, "UTF-8 text", &lossy));
                }
            };
            apply_kestrel_option(&mut opts, &key, value)?;
        } else {
            let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
            apply_root_option(&mut opts.root, &key, value.as_deref())?;
        }
    }
    Ok(opts)
}

fn apply_root_option(
    root: &mut RootOptions,
    key: &str,
    value: Option<&str>,
) -> Result<(), CmdlineError> {
    match key {
        "root" => root.device = Some(RootSpec::parse(value.unwrap_or_default())?),
        "rootfstype" => root.fstype = value.map(str::to_owned),
        "rootflags" => root.flags = value.map(str::to_owned),
        "ro" => root.read_write = false,
        "rw" => root.read_write = true,
        "rootwait" => root.wait_forever = true,
        "rootdelay" => root.delay = Some(seconds(value, key)?),
        "init" => root.init = value.map(str::to_owned),
        _ => {}
    }
    Ok(())
}

fn apply_kestrel_option(
    opts: &mut BootOptions,
    key: &str,
    value: Option<&str>,
) -> Result<(), CmdlineError> {
    match key {
        opt::EVENTS => opts.events = flag(value, key)?,
        opt::MODULES => opts.modules = list(value),
        opt::PLAN => opts.plan = Some(list(value)),
        opt::TIMEOUT => opts.timeout = seconds(value, key)?,
        opt::SHELL => opts.shell_on_failure = flag(value, key)?,
        opt::DEBUG => opts.debug = flag(value, key)?,
        opt::TRACE => opts.trace = flag(value, key)?,
        opt::THREADS => opts.threads = count(value, key, MAX_THREADS)?,
        opt::UEVENT_BUFFER => {
            opts.uevent_buffer = Some(count(value, key, MAX_UEVENT_BUFFER)?);
        }
        opt::HANG => match value {
            Some(phase) if HANG_PHASES.contains(&phase) => opts.hang = Some(phase.to_owned()),
            other => return Err(bad(key, "modules or payload", other.unwrap_or_default())),
        },
        _ => return Err(CmdlineError::Unknown(key.to_owned())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: Option<&str>) -> Param {
        Param {
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn tokenises_quotes_and_stops_at_double_dash() {
        assert_eq!(
            tokenize(b"console=ttyS0  quiet a=\"b c\" \"d=e f\" -- init args\n"),
            vec![
                p("console", Some("ttyS0")),
                p("quiet", None),
                p("a", Some("b c")),
                p("d", Some("e f")),
            ]
        );
    }

    #[test]
    fn a_substring_is_not_a_flag() {
        let o = parse_boot_options(b"root=/dev/quiet kestrel.debugx=1").unwrap_err();
        assert_eq!(o, CmdlineError::Unknown("kestrel.debugx".into()));
    }

    #[test]
    fn reads_kestrel_options() {
        let o = parse_boot_options(b"quiet kestrel.timeout=2.5 kestrel.shell kestrel.threads=3")
            .unwrap();
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert!(o.shell_on_failure);
        assert!(!o.debug);
        assert_eq!(o.threads, 3);
    }

    #[test]
    fn reads_root_options() {
        let o = parse_boot_options(b"root=UUID=ABCD-12 rootfstype=ext4 rootflags=noatime rw rootdelay=1 init=/bin/sh kestrel.modules=a,b kestrel.plan=x,y").unwrap();
        assert_eq!(o.root.device, Some(RootSpec::Uuid("abcd-12".into())));
        assert_eq!(o.root.fstype.as_deref(), Some("ext4"));
        assert!(o.root.read_write);
        assert_eq!(o.root.delay, Some(Duration::from_secs(1)));
        assert_eq!(o.root.init.as_deref(), Some("/bin/sh"));
        assert_eq!(o.modules, vec!["a", "b"]);
        assert_eq!(o.plan, Some(vec!["x".to_owned(), "y".to_owned()]));
        assert_eq!(
            parse_boot_options(b"\"root=LABEL=my root\"")
                .unwrap()
                .root
                .device,
            Some(RootSpec::Label("my root".into()))
        );
        assert!(parse_boot_options(b"root=/dev/../etc/passwd").is_err());
        assert!(parse_boot_options(b"root=UUID=").is_err());
        assert!(parse_boot_options(b"root=sda1").is_err());
        assert!(
            !parse_boot_options(b"root=/dev/vda")
                .unwrap()
                .root
                .read_write
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = parse_boot_options(b"kestrel.timeout=soon").unwrap_err();
        assert!(e.to_string().contains("kestrel.timeout"), "{e}");
        assert!(parse_boot_options(b"kestrel.shell=maybe").is_err());
        for bad in [
            "-1",
            "nan",
            "inf",
            "1e30",
            "1e19",
            "86401",
            "",
            ".5",
            "1.0000000001",
            "0x10",
            "+1",
        ] {
            assert!(
                parse_boot_options(format!("kestrel.timeout={bad}").as_bytes()).is_err(),
                "{bad}"
            );
            assert!(
                parse_boot_options(format!("rootdelay={bad}").as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn counts_phases_and_text_are_checked() {
        assert!(parse_boot_options(b"kestrel.threads=65").is_err());
        assert_eq!(
            parse_boot_options(b"kestrel.threads=64").unwrap().threads,
            64
        );
        assert!(parse_boot_options(b"kestrel.hang=forever").is_err());
        let o = parse_boot_options(b"kestrel.uevent_buffer=4096").unwrap();
        assert_eq!(o.uevent_buffer, Some(4096));
        assert!(parse_boot_options(b"kestrel.uevent_buffer=134217729").is_err());
        assert!(parse_boot_options(b"kestrel.uevent_buffer=-1").is_err());
        let e = parse_boot_options(b"kestrel.modules=\xff").unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        // Not ours: read lossily, and the boot goes on.
        let o = parse_boot_options(b"quiet foo=\xff\xfe kestrel.events").unwrap();
        assert!(o.events);
        assert_eq!(o.params[1].value.as_deref(), Some("\u{fffd}\u{fffd}"));
    }
}
