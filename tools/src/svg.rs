//! The boot as an SVG timeline, like `systemd-analyze plot` but for the
//! whole VM: one row per phase, then one row per module, coloured by the
//! loader thread that ran it.

use crate::analyze::{Analysis, Phase};
use std::fmt::Write as _;

const ROW: f64 = 18.0;
const LABEL_W: f64 = 380.0;
const PLOT_W: f64 = 900.0;
const THREAD_COLOURS: &[&str] = &[
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
];
const PHASE_COLOUR: &str = "#9c9c9c";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the analysis; every row is a `<g class="row">` holding a
/// `<rect>` (the span) and a `<text>` (its name and duration).
pub fn render_svg(a: &Analysis) -> String {
    let end = a
        .phases
        .iter()
        .chain(&a.modules)
        .map(|p| p.end_ms)
        .filter(|x| x.is_finite())
        .fold(1.0_f64, f64::max);
    let scale = PLOT_W / end;
    let rows: Vec<(&Phase, &str, &str)> = a
        .phases
        .iter()
        .map(|p| (p, PHASE_COLOUR, "phase"))
        .chain(a.modules.iter().map(|m| {
            let t = m.thread.unwrap_or(0) as usize;
            (
                m,
                THREAD_COLOURS
                    .get(t % THREAD_COLOURS.len())
                    .copied()
                    .unwrap_or(PHASE_COLOUR),
                "module",
            )
        }))
        .collect();
    let height = ROW * (rows.len() as f64 + 3.0);
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
    for (i, (p, colour, class)) in rows.iter().enumerate() {
        let y = ROW * (i as f64 + 1.5);
        let x = LABEL_W + p.start_ms.max(0.0) * scale;
        let w = (p.duration_ms().max(0.0) * scale).max(1.0);
        let thread = p.thread.map(|t| format!(" thread {t}")).unwrap_or_default();
        let _ = writeln!(
            s,
            r#"<g class="row {class}"><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}"><title>{name}: {start:.1} → {endt:.1} ms{thread}</title></rect><text x="4" y="{ty:.1}">{name} ({d:.1} ms)</text></g>"#,
            h = ROW - 4.0,
            name = escape(&p.name),
            start = p.start_ms,
            endt = p.end_ms,
            ty = y + ROW - 7.0,
            d = p.duration_ms(),
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::bootlog::BootLog;

    /// The SVG of a captured boot opens in a real XML parser and has one
    /// row per phase and per module, each with a non-negative span.
    #[test]
    fn svg_of_a_captured_boot_has_every_row() {
        let log = BootLog::read_log(include_str!("../tests/fixtures/boot-q35.log")).unwrap();
        let a = analyze(&log);
        let svg = render_svg(&a);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let rows: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("row")))
            .collect();
        assert_eq!(rows.len(), a.phases.len() + a.modules.len());
        let module_rows = rows
            .iter()
            .filter(|n| n.attribute("class") == Some("row module"))
            .count();
        assert_eq!(module_rows, a.modules.len());
        for row in &rows {
            let rect = row.children().find(|c| c.has_tag_name("rect")).unwrap();
            let w: f64 = rect.attribute("width").unwrap().parse().unwrap();
            assert!(w >= 1.0);
            let text = row
                .children()
                .find(|c| c.has_tag_name("text"))
                .unwrap()
                .text()
                .unwrap();
            assert!(text.contains(" ms)"), "{text}");
        }
        assert!(rows.iter().any(|r| r
            .descendants()
            .any(|d| d.text().is_some_and(|t| t.starts_with("virtio_pci (")))));
    }
}
