//! The kernel command line, tokenised as the kernel does (`next_arg` in
//! lib/cmdline.c): parameters split on spaces, double quotes group spaces
//! into one parameter and are removed, `--` ends the kernel's part.
//! Kestrel's own options all start with `kestrel.`; an unknown one is an
//! error, not silently ignored.

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

/// Splits a command line into parameters. Quotes may wrap the whole
/// parameter or only its value (`a="b c"`), as the kernel accepts.
/// Parameters after a lone `--` are not the kernel's and are left out.
pub fn tokenize(cmdline: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = cmdline.trim_end_matches(['\n', '\0']).chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut token = String::new();
        let mut in_quote = false;
        while let Some(c) = chars.next_if(|c| in_quote || !c.is_whitespace()) {
            if c == '"' {
                in_quote = !in_quote;
            } else {
                token.push(c);
            }
        }
        if token == "--" {
            break;
        }
        params.push(match token.split_once('=') {
            Some((k, v)) => Param {
                key: k.to_owned(),
                value: Some(v.to_owned()),
            },
            None => Param {
                key: token,
                value: None,
            },
        });
    }
    params
}

/// Every `kestrel.` option, so the error for an unknown one can list them.
pub const KESTREL_OPTIONS: &[&str] = &[
    "kestrel.timeout",
    "kestrel.shell",
    "kestrel.debug",
    "kestrel.threads",
    "kestrel.hang",
    "kestrel.modules",
    "kestrel.plan",
];

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
    /// How long to wait for needed devices (`kestrel.timeout=SECONDS`).
    pub timeout: Duration,
    /// Start /bin/sh on failure, when present (`kestrel.shell`).
    pub shell_on_failure: bool,
    /// Log every uevent and module decision (`kestrel.debug`).
    pub debug: bool,
    /// Module loader threads (`kestrel.threads=N`, 0 = one per CPU).
    pub threads: usize,
    /// Test hook: stop before this phase and wait forever
    /// (`kestrel.hang=modules|payload`), so the host's timeout
    /// handling can be tested against a real hung guest.
    pub hang: Option<String>,
    /// Extra modules to load (`kestrel.modules=a,b`).
    pub modules: Vec<String>,
    /// A frozen plan: load exactly these modules in this order and skip
    /// discovery (`kestrel.plan=a,b,c`, or the builder's /kestrel/plan).
    pub plan: Option<Vec<String>>,
    pub root: RootOptions,
    /// All parameters, for modules (`NAME.param=value`, `modprobe.blacklist=`).
    pub params: Vec<Param>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            timeout: Duration::from_secs(20),
            shell_on_failure: false,
            debug: false,
            threads: 0,
            hang: None,
            modules: Vec::new(),
            plan: None,
            root: RootOptions::default(),
            params: Vec::new(),
        }
    }
}

/// A command-line option Kestrel cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("unknown option {0} (known: {known})", known = KESTREL_OPTIONS.join(", "))]
    Unknown(String),
    #[error("option {key} needs {what}, got {value:?}")]
    BadValue {
        key: String,
        what: &'static str,
        value: String,
    },
}

fn flag(value: &Option<String>, key: &str) -> Result<bool, CmdlineError> {
    match value.as_deref() {
        None | Some("1") | Some("yes") | Some("on") => Ok(true),
        Some("0") | Some("no") | Some("off") => Ok(false),
        Some(v) => Err(CmdlineError::BadValue {
            key: key.to_owned(),
            what: "a boolean (1/0, yes/no, on/off)",
            value: v.to_owned(),
        }),
    }
}

fn number<T: std::str::FromStr>(value: &Option<String>, key: &str) -> Result<T, CmdlineError> {
    let v = value.as_deref().unwrap_or_default();
    v.parse().map_err(|_| CmdlineError::BadValue {
        key: key.to_owned(),
        what: "a number",
        value: v.to_owned(),
    })
}

/// A non-negative, finite number of seconds (Duration::from_secs_f64
/// would panic on `-1`, `nan` or `1e30`, which f64 parsing accepts).
fn seconds(value: &Option<String>, key: &str) -> Result<Duration, CmdlineError> {
    Duration::try_from_secs_f64(number(value, key)?).map_err(|_| CmdlineError::BadValue {
        key: key.to_owned(),
        what: "a number of seconds",
        value: value.clone().unwrap_or_default(),
    })
}

/// Reads Kestrel's options out of a command line.
pub fn parse_boot_options(cmdline: &str) -> Result<BootOptions, CmdlineError> {
    let mut opts = BootOptions {
        params: tokenize(cmdline),
        ..BootOptions::default()
    };
    let list = |v: &Option<String>| -> Vec<String> {
        v.as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for Param { key, value } in opts.params.clone() {
        match key.as_str() {
            "root" => {
                opts.root.device = Some(RootSpec::parse(value.as_deref().unwrap_or_default())?)
            }
            "rootfstype" => opts.root.fstype = value.clone(),
            "rootflags" => opts.root.flags = value.clone(),
            "ro" => opts.root.read_write = false,
            "rw" => opts.root.read_write = true,
            "rootwait" => opts.root.wait_forever = true,
            "rootdelay" => opts.root.delay = Some(seconds(&value, &key)?),
            "init" => opts.root.init = value.clone(),
            _ => {}
        }
        if !key.starts_with("kestrel.") {
            continue;
        }
        match key.as_str() {
            "kestrel.modules" => opts.modules = list(&value),
            "kestrel.plan" => opts.plan = Some(list(&value)),
            "kestrel.timeout" => opts.timeout = seconds(&value, &key)?,
            "kestrel.shell" => opts.shell_on_failure = flag(&value, &key)?,
            "kestrel.debug" => opts.debug = flag(&value, &key)?,
            "kestrel.threads" => opts.threads = number(&value, &key)?,
            "kestrel.hang" => opts.hang = value,
            _ => return Err(CmdlineError::Unknown(key)),
        }
    }
    Ok(opts)
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
            tokenize("console=ttyS0  quiet a=\"b c\" \"d=e f\" -- init args\n"),
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
        let o = parse_boot_options("root=/dev/quiet kestrel.debugx=1").unwrap_err();
        assert_eq!(o, CmdlineError::Unknown("kestrel.debugx".into()));
    }

    #[test]
    fn reads_kestrel_options() {
        let o = parse_boot_options("quiet kestrel.timeout=2.5 kestrel.shell kestrel.threads=3")
            .unwrap();
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert!(o.shell_on_failure);
        assert!(!o.debug);
        assert_eq!(o.threads, 3);
    }

    #[test]
    fn reads_root_options() {
        let o = parse_boot_options("root=UUID=ABCD-12 rootfstype=ext4 rootflags=noatime rw rootdelay=1 init=/bin/sh kestrel.modules=a,b kestrel.plan=x,y").unwrap();
        assert_eq!(o.root.device, Some(RootSpec::Uuid("abcd-12".into())));
        assert_eq!(o.root.fstype.as_deref(), Some("ext4"));
        assert!(o.root.read_write);
        assert_eq!(o.root.delay, Some(Duration::from_secs(1)));
        assert_eq!(o.root.init.as_deref(), Some("/bin/sh"));
        assert_eq!(o.modules, vec!["a", "b"]);
        assert_eq!(o.plan, Some(vec!["x".to_owned(), "y".to_owned()]));
        assert_eq!(
            parse_boot_options("\"root=LABEL=my root\"")
                .unwrap()
                .root
                .device,
            Some(RootSpec::Label("my root".into()))
        );
        assert!(parse_boot_options("root=/dev/../etc/passwd").is_err());
        assert!(parse_boot_options("root=UUID=").is_err());
        assert!(parse_boot_options("root=sda1").is_err());
        assert!(!parse_boot_options("root=/dev/vda").unwrap().root.read_write);
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = parse_boot_options("kestrel.timeout=soon").unwrap_err();
        assert!(e.to_string().contains("kestrel.timeout"), "{e}");
        assert!(parse_boot_options("kestrel.shell=maybe").is_err());
        for bad in ["-1", "nan", "inf", "1e30"] {
            assert!(
                parse_boot_options(&format!("kestrel.timeout={bad}")).is_err(),
                "{bad}"
            );
            assert!(
                parse_boot_options(&format!("rootdelay={bad}")).is_err(),
                "{bad}"
            );
        }
    }
}
