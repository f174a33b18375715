//! Pictures where people would rather look, as server-rendered SVG (no
//! script, no external resource; colours as SVG attributes, which the CSP
//! allows, not inline styles). Pure functions of their figures.

use maud::{Markup, html};

/// A bar chart of one value per day, `values` oldest first, with the
/// largest value written at the top and the first and last day under it.
pub fn bars(title: &str, values: &[f64], first_day: &str, last_day: &str, colour: &str) -> Markup {
    let (w, h, pad) = (600.0_f64, 120.0_f64, 18.0_f64);
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let n = values.len().max(1) as f64;
    let bw = (w - 2.0 * pad) / n;
    html! {
        svg class="chart" width=(w) height=(h + 2.0 * pad) viewBox={ "0 0 " (w) " " (h + 2.0 * pad) }
            role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            text x=(pad) y="12" font-size="11" fill="#333" { (title) " (max " (fmt(max)) ")" }
            line x1=(pad) y1=(pad + h) x2=(w - pad) y2=(pad + h) stroke="#999" stroke-width="1" {}
            @for (i, v) in values.iter().enumerate() {
                @let bh = if max > 0.0 { v / max * (h - 4.0) } else { 0.0 };
                rect x=(pad + i as f64 * bw + 1.0) y=(pad + h - bh) width=((bw - 2.0).max(1.0)) height=(bh) fill=(colour) {
                    title { (fmt(*v)) }
                }
            }
            text x=(pad) y=(h + 2.0 * pad - 2.0) font-size="10" fill="#666" { (first_day) }
            text x=(w - pad) y=(h + 2.0 * pad - 2.0) font-size="10" fill="#666" text-anchor="end" { (last_day) }
        }
    }
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One bay of the chassis drawing.
pub struct Bay {
    pub label: String,
    pub serial: String,
    pub condition: String,
}

/// The colour of a disk's condition: green ok, amber failing or rebuilding,
/// red faulty/offline/ready to remove, grey spare or empty.
pub fn condition_colour(condition: &str) -> &'static str {
    match condition {
        "ok" | "in_sync" => "#4c9a2a",
        "failing" | "rebuilding" => "#e0a000",
        "faulty" | "offline" | "ready to remove" => "#c62828",
        _ => "#9e9e9e",
    }
}

/// The chassis seen from the front: one bay per disk slot, the failed bay
/// drawn red with a cross, each bay labelled with its slot and serial.
pub fn chassis(bays: &[Bay]) -> Markup {
    let (bw, bh, gap) = (140.0_f64, 70.0_f64, 10.0_f64);
    let w = gap + bays.len().max(1) as f64 * (bw + gap);
    let h = bh + 2.0 * gap + 20.0;
    html! {
        svg #chassis width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img"
            aria-label="The disk bays" xmlns="http://www.w3.org/2000/svg" {
            title { "The disk bays" }
            rect x="0" y="0" width=(w) height=(h) rx="6" fill="#37474f" {}
            @for (i, b) in bays.iter().enumerate() {
                @let x = gap + i as f64 * (bw + gap);
                @let colour = condition_colour(&b.condition);
                @let bad = colour == "#c62828";
                g class={ "bay " (if bad { "failed" } else { "" }) } {
                    rect x=(x) y=(gap) width=(bw) height=(bh) rx="4" fill="#eceff1" stroke=(colour) stroke-width=(if bad { 5 } else { 2 }) {}
                    circle cx=(x + bw - 12.0) cy=(gap + 12.0) r="6" fill=(colour) {}
                    @if bad {
                        line x1=(x + 8.0) y1=(gap + 8.0) x2=(x + bw - 8.0) y2=(gap + bh - 8.0) stroke="#c62828" stroke-width="3" {}
                        line x1=(x + bw - 8.0) y1=(gap + 8.0) x2=(x + 8.0) y2=(gap + bh - 8.0) stroke="#c62828" stroke-width="3" {}
                    }
                    text x=(x + 8.0) y=(gap + 22.0) font-size="12" fill="#222" { (b.label) }
                    text x=(x + 8.0) y=(gap + 42.0) font-size="11" fill="#222" { (b.serial) }
                    text x=(x + 8.0) y=(gap + 60.0) font-size="11" fill=(colour) { (b.condition) }
                }
            }
            text x=(gap) y=(h - 6.0) font-size="11" fill="#eceff1" { "front view" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_bay_is_drawn_red_and_crossed() {
        let svg = chassis(&[
            Bay {
                label: "slot 0".into(),
                serial: "SN-A".into(),
                condition: "ok".into(),
            },
            Bay {
                label: "slot 1".into(),
                serial: "SN-B".into(),
                condition: "faulty".into(),
            },
        ])
        .into_string();
        assert_eq!(svg.matches("class=\"bay failed\"").count(), 1, "{svg}");
        assert!(svg.contains("SN-B") && svg.contains("#c62828"));
        let chart = bars(
            "Discards",
            &[0.0, 2.0, 4.0],
            "2026-12-01",
            "2026-12-03",
            "#555",
        )
        .into_string();
        assert_eq!(chart.matches("<rect").count(), 3);
        assert!(chart.contains("max 4"));
    }
}
