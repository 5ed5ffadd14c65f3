//! The records, typed: [`GuestRecord`] (guest → host) and [`HostRecord`]
//! (host → guest). Each has one encoder and one decoder here; both name
//! every field of every variant (no `..`), so a field added to a variant
//! does not compile until the encoder writes it and the decoder reads it.
//! The decoder is strict: a missing, unknown or malformed field is an
//! error naming the record and the field, never a silent default.

use crate::wire::{self, Frame, FrameWriter, WireError};
use std::str::FromStr;

/// A record with the sender's CLOCK_BOOTTIME.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed<R> {
    pub t_ns: u64,
    pub rec: R,
}

/// Which of the payload's outputs a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFd {
    Stdout,
    Stderr,
}

impl OutputFd {
    pub fn number(self) -> u8 {
        match self {
            OutputFd::Stdout => 1,
            OutputFd::Stderr => 2,
        }
    }
}

/// What happened to one module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleOutcome {
    /// finit_module inserted it.
    Inserted,
    /// It was already live (EEXIST).
    AlreadyLoaded,
    /// It failed; the error names the cause (the kernel's errno).
    Failed { error: String },
    /// Not tried: a dependency failed.
    Skipped { cause: String },
}

impl ModuleOutcome {
    pub fn is_live(&self) -> bool {
        matches!(self, ModuleOutcome::Inserted | ModuleOutcome::AlreadyLoaded)
    }
}

/// Everything the guest reports, in rough boot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestRecord {
    /// PID 1's first instruction.
    InitStart { version: String },
    /// A filesystem mounted.
    Mount { target: String, fstype: String },
    /// One record of the kernel log (/dev/kmsg), forwarded over the port.
    Kmsg {
        level: u8,
        seq: u64,
        ts_us: u64,
        msg: String,
    },
    /// One walk of /sys done: devices seen, MODALIAS values new to it.
    Coldplug { devices: u64, modaliases: u64 },
    /// One module tried: CLOCK_BOOTTIME start, duration, loader thread.
    Module {
        name: String,
        start_ns: u64,
        dur_us: u64,
        thread: u32,
        outcome: ModuleOutcome,
    },
    /// A device's MODALIAS that no module of the initrd matches (the host
    /// resolves it against the kernel's full module tree).
    Unmatched { modalias: String, devpath: String },
    /// The events port appeared and was opened.
    PortOpen { name: String, dev: String },
    /// Everything the hand-over needs is there.
    Ready,
    /// The root filesystem is mounted.
    Root {
        dev: String,
        fstype: String,
        read_write: bool,
        spec: String,
    },
    /// About to exec the real init in the new root.
    SwitchRoot { init: String },
    /// The payload started.
    PayloadStart { pid: u32, program: String },
    /// A chunk of the payload's output, exact bytes.
    Output { fd: OutputFd, data: Vec<u8> },
    /// The payload ended: exit code, or 128+N for signal N.
    PayloadExit { status: i32, signal: Option<i32> },
    /// Something failed; `fatal` ends the boot.
    Error { msg: String, fatal: bool },
    /// A problem the boot survives.
    Warn { msg: String },
    /// Only with `kestrel.debug`.
    Debug { msg: String },
    /// About to power off: the boot's status, records lost on the way.
    Poweroff { status: i32, dropped: u64 },
    /// A fact a guest-side checker reports (VM tests assert on these).
    Fact { name: String, value: String },
}

/// Everything the host sends down the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRecord {
    /// A chunk of the payload's stdin, exact bytes.
    Input { data: Vec<u8> },
    /// The payload's stdin ends.
    InputEof,
    /// The host has read everything up to `poweroff`.
    Ack,
}

/// Why a frame is not a record.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("unknown record kind {0:?}")]
    UnknownKind(String),
    #[error("{kind} record without its {field} field")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} record with a bad {field} value {value:?}")]
    BadValue {
        kind: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("{kind} record with an unknown field {field:?}")]
    Unexpected { kind: &'static str, field: String },
    #[error("{kind} record without its payload")]
    MissingPayload { kind: &'static str },
    #[error("{kind} record with a payload it cannot have")]
    UnexpectedPayload { kind: &'static str },
}

/// The fields of one frame, taken one by one by the decoders.
struct Fields {
    kind: &'static str,
    fields: Vec<(String, Vec<u8>)>,
    payload: Option<Vec<u8>>,
}

impl Fields {
    fn new(kind: &'static str, frame: Frame) -> Self {
        Fields {
            kind,
            fields: frame.fields,
            payload: frame.payload,
        }
    }

    fn take(&mut self, field: &'static str) -> Option<Vec<u8>> {
        let at = self.fields.iter().position(|(k, _)| k == field)?;
        Some(self.fields.remove(at).1)
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, RecordError> {
        self.take(field).ok_or(RecordError::Missing {
            kind: self.kind,
            field,
        })
    }

    fn text(&mut self, field: &'static str) -> Result<String, RecordError> {
        Ok(String::from_utf8_lossy(&self.bytes(field)?).into_owned())
    }

    fn parse<T: FromStr>(&mut self, field: &'static str, value: &[u8]) -> Result<T, RecordError> {
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| RecordError::BadValue {
                kind: self.kind,
                field,
                value: String::from_utf8_lossy(value).into_owned(),
            })
    }

    fn num<T: FromStr>(&mut self, field: &'static str) -> Result<T, RecordError> {
        let v = self.bytes(field)?;
        self.parse(field, &v)
    }

    fn opt_num<T: FromStr>(&mut self, field: &'static str) -> Result<Option<T>, RecordError> {
        self.take(field).map(|v| self.parse(field, &v)).transpose()
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, RecordError> {
        match self.bytes(field)?.as_slice() {
            b"yes" => Ok(true),
            b"no" => Ok(false),
            other => Err(RecordError::BadValue {
                kind: self.kind,
                field,
                value: String::from_utf8_lossy(other).into_owned(),
            }),
        }
    }

    fn payload(&mut self) -> Result<Vec<u8>, RecordError> {
        self.payload
            .take()
            .ok_or(RecordError::MissingPayload { kind: self.kind })
    }

    /// Every field was used, and the payload if there was one.
    fn done<R>(self, rec: R) -> Result<R, RecordError> {
        if let Some((field, _)) = self.fields.into_iter().next() {
            return Err(RecordError::Unexpected {
                kind: self.kind,
                field,
            });
        }
        if self.payload.is_some() {
            return Err(RecordError::UnexpectedPayload { kind: self.kind });
        }
        Ok(rec)
    }
}

fn yes_no(b: bool) -> &'static [u8] {
    if b {
        b"yes"
    } else {
        b"no"
    }
}

/// The kinds of [`GuestRecord`], by name on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    InitStart,
    Mount,
    Kmsg,
    Coldplug,
    Module,
    Unmatched,
    PortOpen,
    Ready,
    Root,
    SwitchRoot,
    PayloadStart,
    Output,
    PayloadExit,
    Error,
    Warn,
    Debug,
    Poweroff,
    Fact,
}

impl GuestKind {
    pub const ALL: [GuestKind; 18] = [
        GuestKind::InitStart,
        GuestKind::Mount,
        GuestKind::Kmsg,
        GuestKind::Coldplug,
        GuestKind::Module,
        GuestKind::Unmatched,
        GuestKind::PortOpen,
        GuestKind::Ready,
        GuestKind::Root,
        GuestKind::SwitchRoot,
        GuestKind::PayloadStart,
        GuestKind::Output,
        GuestKind::PayloadExit,
        GuestKind::Error,
        GuestKind::Warn,
        GuestKind::Debug,
        GuestKind::Poweroff,
        GuestKind::Fact,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GuestKind::InitStart => "init_start",
            GuestKind::Mount => "mount",
            GuestKind::Kmsg => "kmsg",
            GuestKind::Coldplug => "coldplug",
            GuestKind::Module => "module",
            GuestKind::Unmatched => "unmatched",
            GuestKind::PortOpen => "port_open",
            GuestKind::Ready => "ready",
            GuestKind::Root => "root",
            GuestKind::SwitchRoot => "switch_root",
            GuestKind::PayloadStart => "payload_start",
            GuestKind::Output => "out",
            GuestKind::PayloadExit => "payload_exit",
            GuestKind::Error => "error",
            GuestKind::Warn => "warn",
            GuestKind::Debug => "debug",
            GuestKind::Poweroff => "poweroff",
            GuestKind::Fact => "fact",
        }
    }

    pub fn from_name(name: &str) -> Option<GuestKind> {
        GuestKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Kinds that mark how far the boot got (what a timeout report names).
    pub fn is_phase(self) -> bool {
        !matches!(
            self,
            GuestKind::Kmsg
                | GuestKind::Output
                | GuestKind::Error
                | GuestKind::Warn
                | GuestKind::Debug
                | GuestKind::Unmatched
                | GuestKind::Fact
        )
    }
}

impl GuestRecord {
    pub fn kind(&self) -> GuestKind {
        match self {
            GuestRecord::InitStart { .. } => GuestKind::InitStart,
            GuestRecord::Mount { .. } => GuestKind::Mount,
            GuestRecord::Kmsg { .. } => GuestKind::Kmsg,
            GuestRecord::Coldplug { .. } => GuestKind::Coldplug,
            GuestRecord::Module { .. } => GuestKind::Module,
            GuestRecord::Unmatched { .. } => GuestKind::Unmatched,
            GuestRecord::PortOpen { .. } => GuestKind::PortOpen,
            GuestRecord::Ready => GuestKind::Ready,
            GuestRecord::Root { .. } => GuestKind::Root,
            GuestRecord::SwitchRoot { .. } => GuestKind::SwitchRoot,
            GuestRecord::PayloadStart { .. } => GuestKind::PayloadStart,
            GuestRecord::Output { .. } => GuestKind::Output,
            GuestRecord::PayloadExit { .. } => GuestKind::PayloadExit,
            GuestRecord::Error { .. } => GuestKind::Error,
            GuestRecord::Warn { .. } => GuestKind::Warn,
            GuestRecord::Debug { .. } => GuestKind::Debug,
            GuestRecord::Poweroff { .. } => GuestKind::Poweroff,
            GuestRecord::Fact { .. } => GuestKind::Fact,
        }
    }

    /// Appends the frame of this record, stamped `t_ns`, to `out`.
    pub fn encode(&self, t_ns: u64, out: &mut Vec<u8>) {
        let mut w = FrameWriter::new(out, t_ns, self.kind().name());
        match self {
            GuestRecord::InitStart { version } => w.text("version", version.as_bytes()).end(),
            GuestRecord::Mount { target, fstype } => w
                .text("target", target.as_bytes())
                .text("fstype", fstype.as_bytes())
                .end(),
            GuestRecord::Kmsg {
                level,
                seq,
                ts_us,
                msg,
            } => w
                .num("level", level)
                .num("seq", seq)
                .num("ts_us", ts_us)
                .text("msg", msg.as_bytes())
                .end(),
            GuestRecord::Coldplug {
                devices,
                modaliases,
            } => w
                .num("devices", devices)
                .num("modaliases", modaliases)
                .end(),
            GuestRecord::Module {
                name,
                start_ns,
                dur_us,
                thread,
                outcome,
            } => {
                w.text("name", name.as_bytes())
                    .num("start_ns", start_ns)
                    .num("dur_us", dur_us)
                    .num("thread", thread);
                match outcome {
                    ModuleOutcome::Inserted => w.text("result", b"ok"),
                    ModuleOutcome::AlreadyLoaded => w.text("result", b"exists"),
                    ModuleOutcome::Failed { error } => {
                        w.text("result", b"error").text("error", error.as_bytes())
                    }
                    ModuleOutcome::Skipped { cause } => {
                        w.text("result", b"skipped").text("error", cause.as_bytes())
                    }
                }
                .end()
            }
            GuestRecord::Unmatched { modalias, devpath } => w
                .text("modalias", modalias.as_bytes())
                .text("devpath", devpath.as_bytes())
                .end(),
            GuestRecord::PortOpen { name, dev } => w
                .text("name", name.as_bytes())
                .text("dev", dev.as_bytes())
                .end(),
            GuestRecord::Ready => w.end(),
            GuestRecord::Root {
                dev,
                fstype,
                read_write,
                spec,
            } => w
                .text("dev", dev.as_bytes())
                .text("fstype", fstype.as_bytes())
                .text("rw", yes_no(*read_write))
                .text("spec", spec.as_bytes())
                .end(),
            GuestRecord::SwitchRoot { init } => w.text("init", init.as_bytes()).end(),
            GuestRecord::PayloadStart { pid, program } => {
                w.num("pid", pid).text("program", program.as_bytes()).end()
            }
            GuestRecord::Output { fd, data } => w.num("fd", fd.number()).end_with_payload(data),
            GuestRecord::PayloadExit { status, signal } => {
                w.num("status", status);
                if let Some(signal) = signal {
                    w.num("signal", signal);
                }
                w.end()
            }
            GuestRecord::Error { msg, fatal } => w
                .text("msg", msg.as_bytes())
                .text("fatal", yes_no(*fatal))
                .end(),
            GuestRecord::Warn { msg } | GuestRecord::Debug { msg } => {
                w.text("msg", msg.as_bytes()).end()
            }
            GuestRecord::Poweroff { status, dropped } => {
                w.num("status", status).num("dropped", dropped).end()
            }
            GuestRecord::Fact { name, value } => w
                .text("name", name.as_bytes())
                .text("value", value.as_bytes())
                .end(),
        }
    }

    /// Types a frame.
    pub fn decode(frame: Frame) -> Result<Timed<GuestRecord>, RecordError> {
        let kind = GuestKind::from_name(&frame.kind)
            .ok_or(RecordError::UnknownKind(frame.kind.clone()))?;
        let t_ns = frame.t_ns;
        let mut f = Fields::new(kind.name(), frame);
        let rec = match kind {
            GuestKind::InitStart => GuestRecord::InitStart {
                version: f.text("version")?,
            },
            GuestKind::Mount => GuestRecord::Mount {
                target: f.text("target")?,
                fstype: f.text("fstype")?,
            },
            GuestKind::Kmsg => GuestRecord::Kmsg {
                level: f.num("level")?,
                seq: f.num("seq")?,
                ts_us: f.num("ts_us")?,
                msg: f.text("msg")?,
            },
            GuestKind::Coldplug => GuestRecord::Coldplug {
                devices: f.num("devices")?,
                modaliases: f.num("modaliases")?,
            },
            GuestKind::Module => {
                let name = f.text("name")?;
                let start_ns = f.num("start_ns")?;
                let dur_us = f.num("dur_us")?;
                let thread = f.num("thread")?;
                let outcome = match f.bytes("result")?.as_slice() {
                    b"ok" => ModuleOutcome::Inserted,
                    b"exists" => ModuleOutcome::AlreadyLoaded,
                    b"error" => ModuleOutcome::Failed {
                        error: f.text("error")?,
                    },
                    b"skipped" => ModuleOutcome::Skipped {
                        cause: f.text("error")?,
                    },
                    other => {
                        return Err(RecordError::BadValue {
                            kind: kind.name(),
                            field: "result",
                            value: String::from_utf8_lossy(other).into_owned(),
                        })
                    }
                };
                GuestRecord::Module {
                    name,
                    start_ns,
                    dur_us,
                    thread,
                    outcome,
                }
            }
            GuestKind::Unmatched => GuestRecord::Unmatched {
                modalias: f.text("modalias")?,
                devpath: f.text("devpath")?,
            },
            GuestKind::PortOpen => GuestRecord::PortOpen {
                name: f.text("name")?,
                dev: f.text("dev")?,
            },
            GuestKind::Ready => GuestRecord::Ready,
            GuestKind::Root => GuestRecord::Root {
                dev: f.text("dev")?,
                fstype: f.text("fstype")?,
                read_write: f.flag("rw")?,
                spec: f.text("spec")?,
            },
            GuestKind::SwitchRoot => GuestRecord::SwitchRoot {
                init: f.text("init")?,
            },
            GuestKind::PayloadStart => GuestRecord::PayloadStart {
                pid: f.num("pid")?,
                program: f.text("program")?,
            },
            GuestKind::Output => {
                let fd = match f.num::<u8>("fd")? {
                    1 => OutputFd::Stdout,
                    2 => OutputFd::Stderr,
                    n => {
                        return Err(RecordError::BadValue {
                            kind: kind.name(),
                            field: "fd",
                            value: n.to_string(),
                        })
                    }
                };
                GuestRecord::Output {
                    fd,
                    data: f.payload()?,
                }
            }
            GuestKind::PayloadExit => GuestRecord::PayloadExit {
                status: f.num("status")?,
                signal: f.opt_num("signal")?,
            },
            GuestKind::Error => GuestRecord::Error {
                msg: f.text("msg")?,
                fatal: f.flag("fatal")?,
            },
            GuestKind::Warn => GuestRecord::Warn {
                msg: f.text("msg")?,
            },
            GuestKind::Debug => GuestRecord::Debug {
                msg: f.text("msg")?,
            },
            GuestKind::Poweroff => GuestRecord::Poweroff {
                status: f.num("status")?,
                dropped: f.num("dropped")?,
            },
            GuestKind::Fact => GuestRecord::Fact {
                name: f.text("name")?,
                value: f.text("value")?,
            },
        };
        f.done(Timed { t_ns, rec })
    }

    /// Parses one console or log line holding a record (no payload).
    pub fn parse_line(line: &[u8]) -> Result<Timed<GuestRecord>, RecordError> {
        GuestRecord::decode(wire::parse_line(line)?)
    }

    /// The record as one line of text (payloads shown escaped), for logs.
    pub fn to_line(&self, t_ns: u64) -> String {
        let mut out = Vec::new();
        match self {
            // A saved log is line-based: the payload goes escaped, as a field.
            GuestRecord::Output { fd, data } => {
                let mut w = FrameWriter::new(&mut out, t_ns, self.kind().name());
                w.num("fd", fd.number());
                w.text("data", data.get(..wire::MAX_TEXT).unwrap_or(data))
                    .end();
            }
            _ => self.encode(t_ns, &mut out),
        }
        String::from_utf8_lossy(&out).trim_end().to_owned()
    }
}

/// The kinds of [`HostRecord`], by name on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    Input,
    InputEof,
    Ack,
}

impl HostKind {
    pub const ALL: [HostKind; 3] = [HostKind::Input, HostKind::InputEof, HostKind::Ack];

    pub fn name(self) -> &'static str {
        match self {
            HostKind::Input => "in",
            HostKind::InputEof => "in_eof",
            HostKind::Ack => "ack",
        }
    }
}

impl HostRecord {
    pub fn kind(&self) -> HostKind {
        match self {
            HostRecord::Input { .. } => HostKind::Input,
            HostRecord::InputEof => HostKind::InputEof,
            HostRecord::Ack => HostKind::Ack,
        }
    }

    /// Appends the frame of this record to `out` (the host's records carry
    /// time zero: the guest does not use it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = FrameWriter::new(out, 0, self.kind().name());
        match self {
            HostRecord::Input { data } => w.end_with_payload(data),
            HostRecord::InputEof | HostRecord::Ack => w.end(),
        }
    }

    pub fn decode(frame: Frame) -> Result<HostRecord, RecordError> {
        let kind = HostKind::ALL
            .into_iter()
            .find(|k| k.name() == frame.kind)
            .ok_or(RecordError::UnknownKind(frame.kind.clone()))?;
        let mut f = Fields::new(kind.name(), frame);
        let rec = match kind {
            HostKind::Input => HostRecord::Input { data: f.payload()? },
            HostKind::InputEof => HostRecord::InputEof,
            HostKind::Ack => HostRecord::Ack,
        };
        f.done(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Decoder;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..20).prop_map(|c| c.into_iter().collect())
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..200)
    }

    fn outcome() -> impl Strategy<Value = ModuleOutcome> {
        prop_oneof![
            Just(ModuleOutcome::Inserted),
            Just(ModuleOutcome::AlreadyLoaded),
            text().prop_map(|error| ModuleOutcome::Failed { error }),
            text().prop_map(|cause| ModuleOutcome::Skipped { cause }),
        ]
    }

    /// One strategy per kind, chosen through an exhaustive match, so a new
    /// kind must get its strategy before this compiles.
    fn guest_record(kind: GuestKind) -> BoxedStrategy<GuestRecord> {
        match kind {
            GuestKind::InitStart => text()
                .prop_map(|version| GuestRecord::InitStart { version })
                .boxed(),
            GuestKind::Mount => (text(), text())
                .prop_map(|(target, fstype)| GuestRecord::Mount { target, fstype })
                .boxed(),
            GuestKind::Kmsg => (any::<u8>(), any::<u64>(), any::<u64>(), text())
                .prop_map(|(level, seq, ts_us, msg)| GuestRecord::Kmsg {
                    level,
                    seq,
                    ts_us,
                    msg,
                })
                .boxed(),
            GuestKind::Coldplug => (any::<u64>(), any::<u64>())
                .prop_map(|(devices, modaliases)| GuestRecord::Coldplug {
                    devices,
                    modaliases,
                })
                .boxed(),
            GuestKind::Module => (text(), any::<u64>(), any::<u64>(), any::<u32>(), outcome())
                .prop_map(
                    |(name, start_ns, dur_us, thread, outcome)| GuestRecord::Module {
                        name,
                        start_ns,
                        dur_us,
                        thread,
                        outcome,
                    },
                )
                .boxed(),
            GuestKind::Unmatched => (text(), text())
                .prop_map(|(modalias, devpath)| GuestRecord::Unmatched { modalias, devpath })
                .boxed(),
            GuestKind::PortOpen => (text(), text())
                .prop_map(|(name, dev)| GuestRecord::PortOpen { name, dev })
                .boxed(),
            GuestKind::Ready => Just(GuestRecord::Ready).boxed(),
            GuestKind::Root => (text(), text(), any::<bool>(), text())
                .prop_map(|(dev, fstype, read_write, spec)| GuestRecord::Root {
                    dev,
                    fstype,
                    read_write,
                    spec,
                })
                .boxed(),
            GuestKind::SwitchRoot => text()
                .prop_map(|init| GuestRecord::SwitchRoot { init })
                .boxed(),
            GuestKind::PayloadStart => (any::<u32>(), text())
                .prop_map(|(pid, program)| GuestRecord::PayloadStart { pid, program })
                .boxed(),
            GuestKind::Output => (any::<bool>(), bytes())
                .prop_map(|(err, data)| GuestRecord::Output {
                    fd: if err {
                        OutputFd::Stderr
                    } else {
                        OutputFd::Stdout
                    },
                    data,
                })
                .boxed(),
            GuestKind::PayloadExit => (any::<i32>(), proptest::option::of(any::<i32>()))
                .prop_map(|(status, signal)| GuestRecord::PayloadExit { status, signal })
                .boxed(),
            GuestKind::Error => (text(), any::<bool>())
                .prop_map(|(msg, fatal)| GuestRecord::Error { msg, fatal })
                .boxed(),
            GuestKind::Warn => text().prop_map(|msg| GuestRecord::Warn { msg }).boxed(),
            GuestKind::Debug => text().prop_map(|msg| GuestRecord::Debug { msg }).boxed(),
            GuestKind::Fact => (text(), text())
                .prop_map(|(name, value)| GuestRecord::Fact { name, value })
                .boxed(),
            GuestKind::Poweroff => (any::<i32>(), any::<u64>())
                .prop_map(|(status, dropped)| GuestRecord::Poweroff { status, dropped })
                .boxed(),
        }
    }

    fn any_guest_record() -> impl Strategy<Value = GuestRecord> {
        proptest::sample::select(GuestKind::ALL.to_vec()).prop_flat_map(guest_record)
    }

    fn any_host_record() -> impl Strategy<Value = HostRecord> {
        prop_oneof![
            bytes().prop_map(|data| HostRecord::Input { data }),
            Just(HostRecord::InputEof),
            Just(HostRecord::Ack),
        ]
    }

    #[test]
    fn kinds_have_distinct_names() {
        for k in GuestKind::ALL {
            assert_eq!(GuestKind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn a_module_record_reads_as_before() {
        let rec = GuestRecord::Module {
            name: "virtio_blk".into(),
            start_ns: 1_000,
            dur_us: 812,
            thread: 1,
            outcome: ModuleOutcome::Inserted,
        };
        let mut out = Vec::new();
        rec.encode(1_234_567_890, &mut out);
        assert_eq!(
            out,
            b"@kestrel 1.234567890 module name=virtio_blk start_ns=1000 dur_us=812 thread=1 result=ok\n"
        );
    }

    #[test]
    fn strict_decoding_names_what_is_wrong() {
        let decode = |line: &[u8]| GuestRecord::parse_line(line);
        assert_eq!(
            decode(b"@kestrel 1.000000000 warn"),
            Err(RecordError::Missing {
                kind: "warn",
                field: "msg"
            })
        );
        assert_eq!(
            decode(b"@kestrel 1.000000000 warn msg=a colour=red"),
            Err(RecordError::Unexpected {
                kind: "warn",
                field: "colour".into()
            })
        );
        assert!(matches!(
            decode(b"@kestrel 1.000000000 poweroff status=x dropped=0"),
            Err(RecordError::BadValue {
                field: "status",
                ..
            })
        ));
        assert_eq!(
            decode(b"@kestrel 1.000000000 bogus"),
            Err(RecordError::UnknownKind("bogus".into()))
        );
    }

    proptest! {
        #[test]
        fn guest_records_round_trip_through_the_stream(
            recs in proptest::collection::vec((any::<u64>(), any_guest_record()), 1..10),
            step in 1usize..300,
        ) {
            let mut out = Vec::new();
            for (t, r) in &recs {
                r.encode(*t, &mut out);
            }
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in out.chunks(step) {
                d.feed(piece);
                while let Some(f) = d.next_frame() {
                    got.push(GuestRecord::decode(f.unwrap()).unwrap());
                }
            }
            prop_assert_eq!(got.len(), recs.len());
            for (g, (t, r)) in got.into_iter().zip(recs) {
                prop_assert_eq!(g, Timed { t_ns: t, rec: r });
            }
        }

        #[test]
        fn host_records_round_trip(recs in proptest::collection::vec(any_host_record(), 1..10)) {
            let mut out = Vec::new();
            for r in &recs {
                r.encode(&mut out);
            }
            let mut d = Decoder::new();
            d.feed(&out);
            for r in recs {
                prop_assert_eq!(HostRecord::decode(d.next_frame().unwrap().unwrap()).unwrap(), r);
            }
            prop_assert!(d.next_frame().is_none());
        }

        #[test]
        fn every_record_header_fits(rec in any_guest_record(), t in any::<u64>()) {
            let mut out = Vec::new();
            rec.encode(t, &mut out);
            let header = out.iter().position(|&b| b == b'\n').unwrap();
            prop_assert!(header < crate::wire::MAX_HEADER);
        }
    }
}
