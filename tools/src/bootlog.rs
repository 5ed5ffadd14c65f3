//! What one boot produced, for the judge and the analysis: the guest's
//! records (not the payload's output, which is streamed or captured
//! elsewhere, never kept here), the serial console's lines, each stamped
//! with host time on arrival, and how qemu ended. Every list has a named
//! bound, so a guest that floods cannot grow host memory without limit;
//! what went over a bound is counted.

use crate::qemu_trace::Marker;
use anyhow::{Context, Result};
use kestrel_proto::{GuestKind, GuestRecord, Timed};
use std::io::Write;

/// Records kept; a flood beyond this is counted, not kept (a boot of the
/// Debian kernel sends about 1,500, most of them the kernel's log).
const MAX_EVENTS: usize = 100_000;
/// Records kept beyond [`MAX_EVENTS`] for the judge: the exit and power off.
const MAX_FINAL_EVENTS: usize = 64;
/// Console lines kept: the first [`CONSOLE_HEAD`] and the latest after them.
const MAX_CONSOLE_LINES: usize = 10_000;
const CONSOLE_HEAD: usize = 1_000;
/// Damaged frames whose description is kept (all are counted).
const MAX_BAD_LINES: usize = 100;

/// Something that arrived from the guest, with host time since qemu start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped<T> {
    pub host_ns: u64,
    pub item: T,
}

/// Everything a boot produced, but the payload's output.
#[derive(Debug, Default)]
pub struct BootLog {
    /// The guest's records, but `Output`.
    pub events: Vec<Stamped<Timed<GuestRecord>>>,
    pub console: Vec<Stamped<String>>,
    /// Damaged frames on the events port (the first [`MAX_BAD_LINES`]).
    pub bad_lines: Vec<String>,
    /// All damaged frames.
    pub bad_frames: u64,
    /// Records and console lines over their bounds, and console lines cut
    /// at their length bound.
    pub events_omitted: u64,
    pub console_omitted: u64,
    pub console_truncated: u64,
    /// Bytes of payload output that passed (stdout, stderr).
    pub output_bytes: [u64; 2],
    /// What qemu said on stderr, but its trace lines.
    pub qemu_stderr: String,
    /// The instants before the kernel, from qemu's trace lines (ns since
    /// qemu was started).
    pub qemu_markers: Vec<(Marker, u64)>,
    pub qemu_exit_ns: Option<u64>,
    pub qemu_status: Option<std::process::ExitStatus>,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// At the deadline the payload's output was still waiting for our
    /// stdout (a paused terminal): what did not fit was not shown.
    pub output_stalled: bool,
    /// Ended by this signal (SIGINT, SIGTERM, SIGHUP) to the host tool.
    pub interrupted: Option<i32>,
}

impl BootLog {
    /// Keeps a record (bounded; see [`MAX_EVENTS`]).
    pub fn push_event(&mut self, e: Stamped<Timed<GuestRecord>>) {
        let final_kind = matches!(
            e.item.rec.kind(),
            GuestKind::PayloadExit | GuestKind::Poweroff
        );
        if self.events.len() < MAX_EVENTS
            || (final_kind && self.events.len() < MAX_EVENTS + MAX_FINAL_EVENTS)
        {
            self.events.push(e);
        } else {
            self.events_omitted += 1;
        }
    }

    /// Keeps a console line: the first [`CONSOLE_HEAD`] lines stay, the
    /// oldest after them go when the log is full.
    pub fn push_console(&mut self, line: Stamped<String>) {
        if self.console.len() >= MAX_CONSOLE_LINES {
            self.console.remove(CONSOLE_HEAD);
            self.console_omitted += 1;
        }
        self.console.push(line);
    }

    /// Notes a damaged frame.
    pub fn push_bad(&mut self, why: String) {
        self.bad_frames += 1;
        if self.bad_lines.len() < MAX_BAD_LINES {
            self.bad_lines.push(why);
        }
    }

    /// The records, without the host's arrival times.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &Timed<GuestRecord>> {
        self.events.iter().map(|s| &s.item)
    }

    /// The first record of a kind.
    pub fn first(&self, kind: GuestKind) -> Option<&Timed<GuestRecord>> {
        self.records().find(|e| e.rec.kind() == kind)
    }

    /// The last record of a kind.
    pub fn last(&self, kind: GuestKind) -> Option<&Timed<GuestRecord>> {
        self.records().rev().find(|e| e.rec.kind() == kind)
    }

    /// The last boot phase the guest reported reaching.
    pub fn last_phase(&self) -> Option<&Timed<GuestRecord>> {
        self.records().rev().find(|e| e.rec.kind().is_phase())
    }

    /// Writes the log in the text form `kestrel analyze` reads: one line per
    /// arrival, `E <host_ns> <record>` or `C <host_ns> <console line>`.
    pub fn write_log(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut lines: Vec<(u64, String)> = self
            .events
            .iter()
            .map(|s| {
                (
                    s.host_ns,
                    format!("E {} {}", s.host_ns, s.item.rec.to_line(s.item.t_ns)),
                )
            })
            .chain(
                self.console
                    .iter()
                    .map(|s| (s.host_ns, format!("C {} {}", s.host_ns, s.item))),
            )
            .collect();
        for (m, t) in &self.qemu_markers {
            lines.push((*t, format!("M {t} {}", m.name())));
        }
        if let Some(t) = self.qemu_exit_ns {
            lines.push((t, format!("Q {t} qemu_exit")));
        }
        lines.sort_by_key(|(t, _)| *t);
        for (_, l) in lines {
            writeln!(out, "{l}")?;
        }
        Ok(())
    }

    /// Reads a log written by [`BootLog::write_log`]. Output records (logs
    /// of older versions have them) are skipped.
    pub fn read_log(text: &str) -> Result<BootLog> {
        let mut log = BootLog::default();
        for (n, line) in text.lines().enumerate() {
            let mut parts = line.splitn(3, ' ');
            let (tag, t, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let host_ns: u64 = t
                .parse()
                .with_context(|| format!("line {}: bad host time {t:?}", n + 1))?;
            match tag {
                "E" => {
                    let item = GuestRecord::parse_line(rest.as_bytes())
                        .with_context(|| format!("line {}: {rest:?}", n + 1))?;
                    if item.rec.kind() != GuestKind::Output {
                        log.push_event(Stamped { host_ns, item });
                    }
                }
                "C" => log.push_console(Stamped {
                    host_ns,
                    item: rest.to_owned(),
                }),
                "Q" => log.qemu_exit_ns = Some(host_ns),
                "M" => {
                    let m = Marker::from_name(rest)
                        .with_context(|| format!("line {}: unknown marker {rest:?}", n + 1))?;
                    log.qemu_markers.push((m, host_ns));
                }
                _ => anyhow::bail!("line {}: unknown tag {tag:?}", n + 1),
            }
        }
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rec: GuestRecord) -> Stamped<Timed<GuestRecord>> {
        Stamped {
            host_ns: 1,
            item: Timed { t_ns: 1, rec },
        }
    }

    /// A guest that floods records or console lines fills the log up to
    /// its bounds and no further; the exit and the power off still count.
    #[test]
    fn a_flood_is_bounded_and_counted() {
        let mut log = BootLog::default();
        for _ in 0..MAX_EVENTS + 10 {
            log.push_event(rec(GuestRecord::Warn { msg: "x".into() }));
        }
        log.push_event(rec(GuestRecord::Poweroff {
            status: 0,
            dropped: 0,
        }));
        assert_eq!(log.events.len(), MAX_EVENTS + 1);
        assert_eq!(log.events_omitted, 10);
        assert!(log.last(GuestKind::Poweroff).is_some());
        for i in 0..MAX_CONSOLE_LINES + 5 {
            log.push_console(Stamped {
                host_ns: 0,
                item: i.to_string(),
            });
        }
        assert_eq!(log.console.len(), MAX_CONSOLE_LINES);
        assert_eq!(log.console_omitted, 5);
        assert_eq!(log.console[0].item, "0");
        assert_eq!(
            log.console.last().unwrap().item,
            (MAX_CONSOLE_LINES + 4).to_string()
        );
        for _ in 0..MAX_BAD_LINES + 3 {
            log.push_bad("bad".into());
        }
        assert_eq!(
            (log.bad_lines.len(), log.bad_frames),
            (MAX_BAD_LINES, MAX_BAD_LINES as u64 + 3)
        );
    }
}
