//! What the host bakes into the initrd for the init: the payload (argv,
//! the program to exec, environment, working directory, its user, how its
//! stdio is wired), the folders shared with the host, the network, and the
//! module plan. It travels as text, one `key=value` per line; a value is
//! one or more parts separated by single spaces, each escaped as on the
//! wire (see [`crate::wire`]), so any argument (spaces, newlines,
//! non-UTF-8) arrives exactly as given.
//!
//! The cached base archive carries [`BASE_CONFIG`] (what depends only on
//! the kernel and the machine: the plan), the per-run archive
//! [`RUN_CONFIG`] (the rest). The init reads both into one [`Config`].

use crate::wire::{escape_into, unescape};

/// The base archive's part: the module plan.
pub const BASE_CONFIG: &str = "/kestrel/base";
/// The run archive's part: the payload, shares, network.
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
    /// The console is the payload's terminal (`kestrel boot`, `run -t`).
    pub console: bool,
    /// The host streams stdin over the events port; else stdin is /dev/null.
    pub stdin: bool,
    /// Run as this user instead of root (the host user's ids, so files it
    /// writes in a share are the host user's).
    pub user: Option<User>,
}

/// A user to run as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// How a host folder reaches the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareFs {
    /// virtio-fs (needs virtiofsd on the host): fast, full POSIX.
    Virtiofs,
    /// virtio-9p (built into qemu, no daemon).
    P9,
}

impl ShareFs {
    pub fn name(self) -> &'static str {
        match self {
            ShareFs::Virtiofs => "virtiofs",
            ShareFs::P9 => "9p",
        }
    }
}

/// A host folder shared with the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub fs: ShareFs,
    /// The device's mount tag (`mount_tag=` of 9p, `tag=` of virtiofs).
    pub tag: String,
    /// Where it appears in the payload's root.
    pub path: Vec<u8>,
    pub writable: bool,
}

/// The guest's address on qemu's user network, set by the init itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub addr: [u8; 4],
    pub prefix: u8,
    pub gateway: [u8; 4],
    pub dns: [u8; 4],
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
    /// The host made this machine and knows its devices: these are their
    /// modules (maybe none), loaded at once instead of walking /sys to
    /// find them; devices that appear later are discovered as usual.
    pub known_devices: Option<Vec<String>>,
    pub payload: Option<Payload>,
    /// Host folders to mount, in order (a share inside another comes after it).
    pub shares: Vec<Share>,
    /// The tag of the share that is the payload's root: the host's root,
    /// read-only, under a tmpfs overlay that takes the writes.
    pub host_root: Option<String>,
    pub net: Option<Net>,
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

/// One line: the key, then each part escaped, single spaces between.
fn line(out: &mut Vec<u8>, key: &str, parts: &[&[u8]]) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        escape_into(out, part);
    }
    out.push(b'\n');
}

fn ipv4(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

fn parse_ipv4(s: &[u8]) -> Option<[u8; 4]> {
    let s = std::str::from_utf8(s).ok()?;
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for byte in &mut out {
        *byte = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Config {
    /// The text of the base file: the plan.
    pub fn encode_base(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(plan) = &self.plan {
            line(&mut out, "frozen", &[b"1"]);
            for m in plan {
                line(&mut out, "plan", &[m.as_bytes()]);
            }
        }
        for m in &self.early {
            line(&mut out, "early", &[m.as_bytes()]);
        }
        if let Some(devices) = &self.known_devices {
            line(&mut out, "known", &[b"1"]);
            for m in devices {
                line(&mut out, "device", &[m.as_bytes()]);
            }
        }
        out
    }

    /// The text of the run file: the payload, shares, network. A NUL in
    /// an argument or an environment entry is refused (execve could not
    /// pass it).
    pub fn encode_run(&self) -> Result<Vec<u8>, ConfigError> {
        let mut out = Vec::new();
        if let Some(Payload {
            argv,
            exe,
            env,
            cwd,
            console,
            stdin,
            user,
        }) = &self.payload
        {
            if argv.iter().chain(env).chain(exe).any(|a| a.contains(&0)) {
                return Err(ConfigError::Nul);
            }
            for a in argv {
                line(&mut out, "arg", &[a]);
            }
            if let Some(exe) = exe {
                line(&mut out, "exe", &[exe]);
            }
            for e in env {
                line(&mut out, "env", &[e]);
            }
            if let Some(cwd) = cwd {
                line(&mut out, "cwd", &[cwd]);
            }
            if *console {
                line(&mut out, "console", &[b"1"]);
            }
            if *stdin {
                line(&mut out, "stdin", &[b"1"]);
            }
            if let Some(User { uid, gid, groups }) = user {
                let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
                let groups = groups.join(",");
                line(
                    &mut out,
                    "user",
                    &[
                        uid.to_string().as_bytes(),
                        gid.to_string().as_bytes(),
                        groups.as_bytes(),
                    ],
                );
            }
        }
        for Share {
            fs,
            tag,
            path,
            writable,
        } in &self.shares
        {
            let mode: &[u8] = if *writable { b"rw" } else { b"ro" };
            line(
                &mut out,
                "share",
                &[fs.name().as_bytes(), mode, tag.as_bytes(), path],
            );
        }
        if let Some(tag) = &self.host_root {
            line(&mut out, "host_root", &[tag.as_bytes()]);
        }
        if let Some(Net {
            addr,
            prefix,
            gateway,
            dns,
        }) = &self.net
        {
            let addr = format!("{}/{prefix}", ipv4(*addr));
            line(
                &mut out,
                "net",
                &[
                    addr.as_bytes(),
                    ipv4(*gateway).as_bytes(),
                    ipv4(*dns).as_bytes(),
                ],
            );
        }
        Ok(out)
    }

    /// Reads one config file into `self` (the base and the run file merge).
    pub fn merge(&mut self, text: &[u8]) -> Result<(), ConfigError> {
        let mut payload = self.payload.take().unwrap_or_default();
        let mut frozen = self.plan.is_some();
        let mut plan = self.plan.take().unwrap_or_default();
        let mut known = self.known_devices.is_some();
        let mut devices = self.known_devices.take().unwrap_or_default();
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
            let parts: Vec<Vec<u8>> = value
                .get(1..)
                .unwrap_or_default()
                .split(|&b| b == b' ')
                .map(|p| {
                    unescape(p).ok_or_else(|| ConfigError::BadEscape {
                        line,
                        key: key.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
            let bad = |what| ConfigError::BadValue {
                line,
                key: key.clone(),
                what,
            };
            let one = |parts: Vec<Vec<u8>>| -> Result<Vec<u8>, ConfigError> {
                let [p]: [Vec<u8>; 1] = parts.try_into().map_err(|_| bad("one value"))?;
                Ok(p)
            };
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
            let flag = |parts: Vec<Vec<u8>>| match one(parts)?.as_slice() {
                b"1" => Ok(true),
                _ => Err(bad("1")),
            };
            let text = |v: Vec<u8>| String::from_utf8(v).map_err(|_| bad("UTF-8 text"));
            match key.as_str() {
                "arg" => payload.argv.push(one(parts)?),
                "exe" => once(&mut payload.exe, one(parts)?)?,
                "env" => payload.env.push(one(parts)?),
                "cwd" => once(&mut payload.cwd, one(parts)?)?,
                "console" => payload.console = flag(parts)?,
                "stdin" => payload.stdin = flag(parts)?,
                "user" => {
                    payload.user =
                        Some(parse_user(parts).ok_or_else(|| bad("UID GID GROUP,GROUP..."))?)
                }
                "frozen" => frozen = flag(parts)?,
                "plan" => plan.push(text(one(parts)?)?),
                "early" => self.early.push(text(one(parts)?)?),
                "known" => known = flag(parts)?,
                "device" => devices.push(text(one(parts)?)?),
                "share" => self
                    .shares
                    .push(parse_share(parts).ok_or_else(|| bad("virtiofs|9p ro|rw TAG PATH"))?),
                "host_root" => self.host_root = Some(text(one(parts)?)?),
                "net" => {
                    self.net = Some(parse_net(parts).ok_or_else(|| bad("ADDR/PREFIX GATEWAY DNS"))?)
                }
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
        if known {
            self.known_devices = Some(devices);
        } else if !devices.is_empty() {
            return Err(ConfigError::BadValue {
                line: 0,
                key: "device".into(),
                what: "known=1 before it",
            });
        }
        if payload.argv.is_empty() {
            if payload.exe.is_some()
                || payload.cwd.is_some()
                || !payload.env.is_empty()
                || payload.user.is_some()
            {
                return Err(ConfigError::NoArgv("exe, cwd, env or user"));
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

fn number<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn parse_user(parts: Vec<Vec<u8>>) -> Option<User> {
    let [uid, gid, groups]: [Vec<u8>; 3] = parts.try_into().ok()?;
    let groups = if groups.is_empty() {
        Vec::new()
    } else {
        groups
            .split(|&b| b == b',')
            .map(number)
            .collect::<Option<_>>()?
    };
    Some(User {
        uid: number(&uid)?,
        gid: number(&gid)?,
        groups,
    })
}

fn parse_share(parts: Vec<Vec<u8>>) -> Option<Share> {
    let [fs, mode, tag, path]: [Vec<u8>; 4] = parts.try_into().ok()?;
    let fs = match fs.as_slice() {
        b"virtiofs" => ShareFs::Virtiofs,
        b"9p" => ShareFs::P9,
        _ => return None,
    };
    let writable = match mode.as_slice() {
        b"rw" => true,
        b"ro" => false,
        _ => return None,
    };
    let tag = String::from_utf8(tag).ok().filter(|t| !t.is_empty())?;
    (path.first() == Some(&b'/')).then_some(Share {
        fs,
        tag,
        path,
        writable,
    })
}

fn parse_net(parts: Vec<Vec<u8>>) -> Option<Net> {
    let [addr, gateway, dns]: [Vec<u8>; 3] = parts.try_into().ok()?;
    let slash = addr.iter().position(|&b| b == b'/')?;
    let (a, prefix) = addr.split_at(slash);
    let prefix: u8 = number(prefix.get(1..)?)?;
    (prefix <= 32).then_some(())?;
    Some(Net {
        addr: parse_ipv4(a)?,
        prefix,
        gateway: parse_ipv4(&gateway)?,
        dns: parse_ipv4(&dns)?,
    })
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
            known_devices: Some(vec!["virtio_mmio".into()]),
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
                user: Some(User {
                    uid: 1000,
                    gid: 1000,
                    groups: vec![4, 27],
                }),
            }),
            shares: vec![
                Share {
                    fs: ShareFs::P9,
                    tag: "root".into(),
                    path: b"/".to_vec(),
                    writable: false,
                },
                Share {
                    fs: ShareFs::Virtiofs,
                    tag: "s1".into(),
                    path: b"/home/me/a dir".to_vec(),
                    writable: true,
                },
            ],
            host_root: Some("root".into()),
            net: Some(Net {
                addr: [10, 0, 2, 15],
                prefix: 24,
                gateway: [10, 0, 2, 2],
                dns: [10, 0, 2, 3],
            }),
        };
        let mut text = c.encode_base();
        text.extend(c.encode_run().unwrap());
        assert_eq!(Config::decode(&text).unwrap(), c);
        // The two files merge in either order.
        let mut merged = Config::decode(&c.encode_run().unwrap()).unwrap();
        merged.merge(&c.encode_base()).unwrap();
        assert_eq!(merged, c);
        assert!(
            String::from_utf8_lossy(&text).contains("share=virtiofs rw s1 /home/me/a\\x20dir\n")
        );
    }

    #[test]
    fn an_empty_frozen_plan_is_a_plan() {
        let c = Config {
            plan: Some(vec![]),
            ..Config::default()
        };
        assert_eq!(Config::decode(&c.encode_base()).unwrap().plan, Some(vec![]));
        assert_eq!(Config::decode(b"").unwrap(), Config::default());
        let known = Config {
            known_devices: Some(vec![]),
            ..Config::default()
        };
        assert_eq!(Config::decode(&known.encode_base()).unwrap(), known);
        assert!(Config::decode(b"device=virtio_mmio\n").is_err());
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
        for bad in [
            &b"arg=a b\n"[..],
            b"share=nfs rw t /x\n",
            b"share=9p rw t relative\n",
            b"share=9p maybe t /x\n",
            b"net=10.0.2.15/33 10.0.2.2 10.0.2.3\n",
            b"net=10.0.2/24 10.0.2.2 10.0.2.3\n",
            b"arg=x\nuser=a 1 \n",
        ] {
            assert!(
                matches!(Config::decode(bad), Err(ConfigError::BadValue { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(
            argv in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 1..8),
            env in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..4),
            cwd in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            stdin in any::<bool>(),
            path in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut share_path = b"/".to_vec();
            share_path.extend(path);
            let c = Config {
                payload: Some(Payload { argv, exe: None, env, cwd, console: false, stdin, user: None }),
                shares: vec![Share { fs: ShareFs::P9, tag: "t".into(), path: share_path, writable: true }],
                ..Config::default()
            };
            prop_assert_eq!(Config::decode(&c.encode_run().unwrap()).unwrap(), c);
        }

        #[test]
        fn decoding_never_panics(text in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Config::decode(&text);
        }
    }
}
