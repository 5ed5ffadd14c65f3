//! What the host bakes into the initrd for the init: the payload (argv,
//! the program to exec, environment, working directory, how its stdio is
//! wired) and the module plan. It travels as text, one `key=value` per
//! line with values escaped as on the wire (see [`crate::wire`]), so any
//! argument (spaces, newlines, non-UTF-8) arrives exactly as given.
//!
//! The cached base archive carries [`BASE_CONFIG`] (what depends only on
//! the kernel and the machine: the plan), the per-run archive
//! [`RUN_CONFIG`] (the payload). The init reads both into one [`Config`].

use crate::wire::{escape_into, unescape};

/// The base archive's part: the module plan.
pub const BASE_CONFIG: &str = "/kestrel/base";
/// The run archive's part: the payload.
pub const RUN_CONFIG: &str = "/kestrel/run";
/// Largest config file the init reads (the kernel's own argv limit is smaller).
pub const MAX_CONFIG: usize = 1 << 20;

/// The payload, as the host resolved it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    /// argv as the user typed it; argv[0] is what the program sees.
    pub argv: Vec<Vec<u8>>,
    /// What to exec: the program as resolved on the host (its path in the
    /// guest). None: argv[0] is looked up on the guest's PATH.
    pub exe: Option<Vec<u8>>,
    /// `KEY=VALUE` entries; empty means the init's default environment.
    pub env: Vec<Vec<u8>>,
    pub cwd: Option<Vec<u8>>,
    /// The console is the payload's terminal (`kestrel boot`).
    pub console: bool,
    /// The host streams stdin over the events port; else stdin is /dev/null.
    pub stdin: bool,
}

/// Everything baked, merged from both files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// A frozen plan: exactly these modules (with their dependencies), no
    /// discovery. Some(empty) is a plan with nothing to load.
    pub plan: Option<Vec<String>>,
    /// Modules to start at t=0 in root mode, beside discovery (the root
    /// filesystem's, as the builder put them in).
    pub early: Vec<String>,
    pub payload: Option<Payload>,
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("line {line}: not key=value")]
    BadLine { line: usize },
    #[error("line {line}: bad escape in the value of {key}")]
    BadEscape { line: usize, key: String },
    #[error("line {line}: unknown key {key:?}")]
    UnknownKey { line: usize, key: String },
    #[error("line {line}: {key} given twice")]
    Repeated { line: usize, key: String },
    #[error("line {line}: {key} needs {what}")]
    BadValue {
        line: usize,
        key: String,
        what: &'static str,
    },
    #[error("{0} given without a payload (no arg=)")]
    NoArgv(&'static str),
    #[error("an argument or environment entry holds a NUL byte, which execve cannot pass")]
    Nul,
}

fn line(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    escape_into(out, value);
    out.push(b'\n');
}

impl Config {
    /// The text of the base file: the plan.
    pub fn encode_base(&self) -> Vec<u8> {
        let Config {
            plan,
            early,
            payload: _,
        } = self;
        let mut out = Vec::new();
        if let Some(plan) = plan {
            line(&mut out, "frozen", b"1");
            for m in plan {
                line(&mut out, "plan", m.as_bytes());
            }
        }
        for m in early {
            line(&mut out, "early", m.as_bytes());
        }
        out
    }

    /// The text of the run file: the payload. A NUL in an argument or an
    /// environment entry is refused (execve could not pass it).
    pub fn encode_run(&self) -> Result<Vec<u8>, ConfigError> {
        let mut out = Vec::new();
        let Some(Payload {
            argv,
            exe,
            env,
            cwd,
            console,
            stdin,
        }) = &self.payload
        else {
            return Ok(out);
        };
        if argv.iter().chain(env).chain(exe).any(|a| a.contains(&0)) {
            return Err(ConfigError::Nul);
        }
        for a in argv {
            line(&mut out, "arg", a);
        }
        if let Some(exe) = exe {
            line(&mut out, "exe", exe);
        }
        for e in env {
            line(&mut out, "env", e);
        }
        if let Some(cwd) = cwd {
            line(&mut out, "cwd", cwd);
        }
        if *console {
            line(&mut out, "console", b"1");
        }
        if *stdin {
            line(&mut out, "stdin", b"1");
        }
        Ok(out)
    }

    /// Reads one config file into `self` (the base and the run file merge).
    pub fn merge(&mut self, text: &[u8]) -> Result<(), ConfigError> {
        let mut payload = self.payload.take().unwrap_or_default();
        let mut frozen = self.plan.is_some();
        let mut plan = self.plan.take().unwrap_or_default();
        for (n, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = n + 1;
            if raw.is_empty() {
                continue;
            }
            let eq = raw
                .iter()
                .position(|&b| b == b'=')
                .ok_or(ConfigError::BadLine { line })?;
            let (key, value) = raw.split_at(eq);
            let key = String::from_utf8_lossy(key).into_owned();
            let value = unescape(value.get(1..).unwrap_or_default()).ok_or_else(|| {
                ConfigError::BadEscape {
                    line,
                    key: key.clone(),
                }
            })?;
            let once = |slot: &mut Option<Vec<u8>>, value: Vec<u8>| match slot {
                Some(_) => Err(ConfigError::Repeated {
                    line,
                    key: key.clone(),
                }),
                None => {
                    *slot = Some(value);
                    Ok(())
                }
            };
            let flag = |value: &[u8]| match value {
                b"1" => Ok(true),
                _ => Err(ConfigError::BadValue {
                    line,
                    key: key.clone(),
                    what: "1",
                }),
            };
            let name = |value: Vec<u8>| {
                String::from_utf8(value).map_err(|_| ConfigError::BadValue {
                    line,
                    key: key.clone(),
                    what: "a module name (UTF-8)",
                })
            };
            match key.as_str() {
                "arg" => payload.argv.push(value),
                "exe" => once(&mut payload.exe, value)?,
                "env" => payload.env.push(value),
                "cwd" => once(&mut payload.cwd, value)?,
                "console" => payload.console = flag(&value)?,
                "stdin" => payload.stdin = flag(&value)?,
                "frozen" => frozen = flag(&value)?,
                "plan" => plan.push(name(value)?),
                "early" => self.early.push(name(value)?),
                _ => return Err(ConfigError::UnknownKey { line, key }),
            }
        }
        if frozen {
            self.plan = Some(plan);
        } else if !plan.is_empty() {
            return Err(ConfigError::BadValue {
                line: 0,
                key: "plan".into(),
                what: "frozen=1 before it",
            });
        }
        if payload.argv.is_empty() {
            if payload.exe.is_some() || payload.cwd.is_some() || !payload.env.is_empty() {
                return Err(ConfigError::NoArgv("exe, cwd or env"));
            }
        } else {
            self.payload = Some(payload);
        }
        Ok(())
    }

    /// Parses config text.
    pub fn decode(text: &[u8]) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.merge(text)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_awkward_arguments() {
        let c = Config {
            plan: Some(vec!["virtio_mmio".into(), "ext4".into()]),
            early: vec!["ext4".into()],
            payload: Some(Payload {
                argv: vec![
                    b"/bin/echo".to_vec(),
                    b"a b".to_vec(),
                    "'ü'".as_bytes().to_vec(),
                    vec![],
                    b"\n\xff=".to_vec(),
                ],
                exe: Some(b"/usr/bin/echo".to_vec()),
                env: vec![b"A=b c".to_vec()],
                cwd: Some(b"/tmp".to_vec()),
                console: false,
                stdin: true,
            }),
        };
        let mut text = c.encode_base();
        text.extend(c.encode_run().unwrap());
        assert_eq!(Config::decode(&text).unwrap(), c);
        // The two files merge in either order.
        let mut merged = Config::decode(&c.encode_run().unwrap()).unwrap();
        merged.merge(&c.encode_base()).unwrap();
        assert_eq!(merged, c);
    }

    #[test]
    fn an_empty_frozen_plan_is_a_plan() {
        let c = Config {
            plan: Some(vec![]),
            ..Config::default()
        };
        assert_eq!(Config::decode(&c.encode_base()).unwrap().plan, Some(vec![]));
        assert_eq!(Config::decode(b"").unwrap(), Config::default());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let payload = Payload {
            argv: vec![b"a\0b".to_vec()],
            ..Payload::default()
        };
        assert_eq!(
            Config {
                payload: Some(payload),
                ..Config::default()
            }
            .encode_run(),
            Err(ConfigError::Nul)
        );
        assert!(matches!(
            Config::decode(b"arg=a\nbogus=1\n"),
            Err(ConfigError::UnknownKey { line: 2, .. })
        ));
        assert!(matches!(
            Config::decode(b"arg=a\ncwd=/\ncwd=/tmp\n"),
            Err(ConfigError::Repeated { .. })
        ));
        assert!(matches!(
            Config::decode(b"arg=a\\x4\n"),
            Err(ConfigError::BadEscape { .. })
        ));
        assert!(matches!(
            Config::decode(b"cwd=/tmp\n"),
            Err(ConfigError::NoArgv(_))
        ));
        assert!(matches!(
            Config::decode(b"plan=x\n"),
            Err(ConfigError::BadValue { .. })
        ));
        assert!(matches!(
            Config::decode(b"noequals\n"),
            Err(ConfigError::BadLine { line: 1 })
        ));
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(
            argv in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 1..8),
            env in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..4),
            cwd in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            stdin in any::<bool>(),
        ) {
            let c = Config { payload: Some(Payload { argv, exe: None, env, cwd, console: false, stdin }), ..Config::default() };
            prop_assert_eq!(Config::decode(&c.encode_run().unwrap()).unwrap(), c);
        }

        #[test]
        fn decoding_never_panics(text in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Config::decode(&text);
        }
    }
}
