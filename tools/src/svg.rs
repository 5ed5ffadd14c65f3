//! The boot as an SVG timeline, like `systemd-analyze plot` but for the
//! whole VM, top to bottom:
//! - the parts of the boot, qemu start to qemu exit, side by side in one
//!   lane (the pre-kernel parts from qemu's trace, then the kernel, /init,
//!   the payload, the power off);
//! - the spans inside them (/init to the first module, the modules);
//! - the slowest initcalls, where the kernel log places them;
//! - the module loads, one lane per loader worker.

use crate::analyze::{Analysis, Phase};
use std::fmt::Write as _;

const ROW: f64 = 18.0;
const LABEL_W: f64 = 300.0;
const PLOT_W: f64 = 1000.0;
const PART_COLOURS: &[&str] = &[
    "#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f", "#8cd17d",
];
const WORKER_COLOURS: &[&str] = &[
    "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
];
const DETAIL_COLOUR: &str = "#9c9c9c";
const INITCALL_COLOUR: &str = "#bab0ac";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(palette: &[&'static str], i: usize) -> &'static str {
    palette
        .get(i % palette.len().max(1))
        .copied()
        .unwrap_or(DETAIL_COLOUR)
}

/// One bar of a lane: span, colour, its label inside the tooltip.
struct Bar<'a> {
    phase: &'a Phase,
    colour: &'static str,
}

/// One lane: a label on the left, bars on the timeline.
struct Lane<'a> {
    class: &'static str,
    label: String,
    bars: Vec<Bar<'a>>,
}

fn lanes(a: &Analysis) -> Vec<Lane<'_>> {
    let mut lanes = vec![Lane {
        class: "parts",
        label: format!(
            "boot ({:.0} ms, {:.1} ms unexplained)",
            a.total_ms, a.unexplained_ms
        ),
        bars: a
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| Bar {
                phase: p,
                colour: colour(PART_COLOURS, i),
            })
            .collect(),
    }];
    lanes.extend(a.details.iter().map(|p| Lane {
        class: "detail",
        label: format!("{} ({:.1} ms)", p.name, p.duration_ms()),
        bars: vec![Bar {
            phase: p,
            colour: DETAIL_COLOUR,
        }],
    }));
    let mut workers: Vec<u64> = a.modules.iter().filter_map(|m| m.thread).collect();
    workers.sort_unstable();
    workers.dedup();
    lanes.extend(workers.iter().map(|&w| {
        Lane {
            class: "worker",
            label: format!("loader worker {w}"),
            bars: a
                .modules
                .iter()
                .filter(|m| m.thread == Some(w))
                .map(|m| Bar {
                    phase: m,
                    colour: colour(WORKER_COLOURS, w as usize),
                })
                .collect(),
        }
    }));
    lanes
}

/// Renders the analysis. Each lane is a `<g class="lane …">` with a
/// `<text>` label and one `<rect>` per bar, whose `<title>` names it.
pub fn render_svg(a: &Analysis) -> String {
    let initcalls: Vec<Phase> = a
        .initcalls
        .iter()
        .filter_map(|c| {
            let end = c.end_ms?;
            Some(Phase {
                name: format!("initcall {}", c.name),
                start_ms: end - c.duration_ms,
                end_ms: end,
                thread: None,
            })
        })
        .collect();
    let mut lanes = lanes(a);
    let split = lanes
        .iter()
        .position(|l| l.class == "worker")
        .unwrap_or(lanes.len());
    lanes.splice(
        split..split,
        initcalls.iter().map(|p| Lane {
            class: "initcall",
            label: format!("{} ({:.1} ms)", p.name, p.duration_ms()),
            bars: vec![Bar {
                phase: p,
                colour: INITCALL_COLOUR,
            }],
        }),
    );
    let end = a.total_ms.max(1.0);
    let scale = PLOT_W / end;
    let height = ROW * (lanes.len() as f64 + 3.0);
    let width = LABEL_W + PLOT_W + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<title>Kestrel boot timeline ({end:.0} ms)</title>"#);
    // Grid: a line every 500 ms (every 100 ms for short boots).
    let step = if end > 3000.0 { 500.0 } else { 100.0 };
    let mut t = 0.0;
    while t <= end {
        let x = LABEL_W + t * scale;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{ROW}" x2="{x:.1}" y2="{height}" stroke="#e0e0e0"/><text x="{x:.1}" y="12" fill="#666">{t:.0}</text>"##
        );
        t += step;
    }
    for (i, lane) in lanes.iter().enumerate() {
        let y = ROW * (i as f64 + 1.5);
        let _ = write!(
            s,
            r#"<g class="lane {}"><text x="4" y="{:.1}">{}</text>"#,
            lane.class,
            y + ROW - 7.0,
            escape(&lane.label)
        );
        for bar in &lane.bars {
            let p = bar.phase;
            let x = LABEL_W + p.start_ms.max(0.0) * scale;
            let w = (p.duration_ms().max(0.0) * scale).max(1.0);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}: {:.1} → {:.1} ms ({:.1} ms)</title></rect>"#,
                ROW - 4.0,
                bar.colour,
                escape(&p.name),
                p.start_ms,
                p.end_ms,
                p.duration_ms()
            );
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::bootlog::BootLog;

    /// The SVG of a captured boot opens in a real XML parser: one lane of
    /// the boot's parts (one bar per part, adding up to the whole), the
    /// spans inside, the slowest initcalls placed on the timeline, and one
    /// lane per loader worker holding each of its modules.
    #[test]
    fn svg_of_a_captured_boot_has_every_lane() {
        let log = BootLog::read_log(include_str!("../tests/fixtures/boot-q35.log")).unwrap();
        let a = analyze(&log);
        let svg = render_svg(&a);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let lanes: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("lane")))
            .collect();
        let of = |class: &str| {
            lanes
                .iter()
                .filter(|n| n.attribute("class") == Some(class))
                .collect::<Vec<_>>()
        };
        let parts = of("lane parts");
        assert_eq!(parts.len(), 1);
        let bars = parts[0]
            .children()
            .filter(|c| c.has_tag_name("rect"))
            .count();
        assert_eq!(bars, a.phases.len());
        assert!(
            !of("lane initcall").is_empty(),
            "the fixture has initcall_debug"
        );
        let workers = of("lane worker");
        let module_bars: usize = workers
            .iter()
            .map(|w| w.children().filter(|c| c.has_tag_name("rect")).count())
            .sum();
        assert_eq!(module_bars, a.modules.len());
        for rect in doc.descendants().filter(|n| n.has_tag_name("rect")) {
            let w: f64 = rect.attribute("width").unwrap().parse().unwrap();
            assert!(w >= 1.0);
        }
    }
}
