//! Line charts as standalone SVG: loss curves, gradient norms over time steps. No dependency, no
//! fonts to install; the result opens in any browser.
//!
//! Layout: the title on top, an optional [`note`](LinePlot::note) under it, the plotting area
//! below, and the legend in a column to the right of the plotting area, so it never covers a
//! curve. Axis ticks are "nice" numbers: multiples of 1, 2, 2.5 or 5 times a power of ten on a
//! linear axis, powers of ten (with 2 and 5 in between when the range spans under two decades) on
//! a log axis.
//!
//! ```
//! use recur::plot::{LinePlot, Series};
//! let mut plot = LinePlot::new("character model", "step", "loss (nats/char)");
//! plot.x_integer = true; // steps are whole numbers: no tick at 12.5
//! plot.note = Some("train: mean over the steps since the previous point".into());
//! plot.series.push(Series::new("train", vec![(0.0, 4.2), (50.0, 2.9), (100.0, 2.4)]));
//! let svg = plot.to_svg();
//! assert!(svg.contains(">100</text>") && svg.contains("since the previous point"));
//! ```

use std::fmt::Write;

/// One named line: `(x, y)` points in order. Points with a non-finite coordinate (or `y ≤ 0` on a
/// log axis) are left out, and the line breaks there.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend's label.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points }
    }
}

/// A shaded band between a lower and an upper line (a prediction interval): `(x, low, high)`
/// points in order. Points with a non-finite coordinate are left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    /// What it shows (kept in the SVG as a `<title>`).
    pub name: String,
    /// The index of the series whose colour it takes.
    pub series: usize,
    /// The points.
    pub points: Vec<(f64, f64, f64)>,
}

/// A chart of one or more series sharing axes. [`LinePlot::new`] sets the texts; the other fields
/// start at their documented defaults and are set directly.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePlot {
    /// The title above the chart.
    pub title: String,
    /// A line of small text under the title, for what the reader needs to read the chart right
    /// (e.g. "train: mean over the steps since the previous point"). Default: `None`, no line.
    pub note: Option<String>,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label. On a log axis the chart appends " (log scale)" to it, unless it already
    /// contains those words: give the quantity ("gradient norm"), not the scale.
    pub y_label: String,
    /// Logarithmic y axis (for quantities spanning decades, like vanishing gradients). Default:
    /// `false`.
    pub log_y: bool,
    /// The x values are whole quantities (steps, time steps, epochs): x ticks fall on integers,
    /// a whole step apart. Default: `false`.
    pub x_integer: bool,
    /// The lines.
    pub series: Vec<Series>,
    /// Shaded bands drawn under the lines, each in the colour of its series. Default: none.
    pub bands: Vec<Band>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 40.0;
/// Extra room above the plotting area for the note line.
const NOTE_HEIGHT: f64 = 14.0;
const BOTTOM: f64 = 56.0;
/// Gap between the plotting area and the legend column.
const LEGEND_GAP: f64 = 12.0;
/// Height of one legend entry.
const LEGEND_ROW: f64 = 16.0;
/// The legend column takes at most this share of the width; longer names are cut with "…".
const LEGEND_MAX_SHARE: f64 = 0.4;
/// A generous average width of a 12px sans-serif character, to size the legend column.
const CHAR_WIDTH: f64 = 7.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// An axis-aligned rectangle in SVG coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
}

/// Where the plotting area and the legend go, and the legend's (possibly cut) labels.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    plot: Rect,
    /// `None` when there is no series to name.
    legend: Option<Rect>,
    labels: Vec<String>,
}

impl LinePlot {
    /// An empty chart with a title and axis labels; no note, linear axes, no series.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            note: None,
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_y: false,
            x_integer: false,
            series: Vec::new(),
            bands: Vec::new(),
        }
    }

    /// The plotting area and the legend column beside it, sized to the longest series name.
    fn layout(&self) -> Layout {
        let top = TOP + if self.note.is_some() { NOTE_HEIGHT } else { 0.0 };
        let max_legend = WIDTH * LEGEND_MAX_SHARE;
        // Swatch (24px), the text, and 8px padding either side.
        let max_chars = ((max_legend - LEGEND_GAP - 40.0) / CHAR_WIDTH).floor() as usize;
        let labels: Vec<String> = self.series.iter().map(|s| cut(&s.name, max_chars)).collect();
        let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let legend_width = 40.0 + chars as f64 * CHAR_WIDTH;
        let plot_right = if labels.is_empty() { WIDTH - RIGHT } else { WIDTH - RIGHT - LEGEND_GAP - legend_width };
        let plot = Rect { x: LEFT, y: top, width: plot_right - LEFT, height: HEIGHT - top - BOTTOM };
        let legend = (!labels.is_empty()).then_some(Rect {
            x: plot_right + LEGEND_GAP,
            y: top,
            width: legend_width,
            height: 8.0 + LEGEND_ROW * labels.len() as f64,
        });
        Layout { plot, legend, labels }
    }

    /// The y label as drawn: " (log scale)" appended on a log axis unless it already says so.
    fn y_label_text(&self) -> String {
        if self.log_y && !self.y_label.to_lowercase().contains("log scale") {
            format!("{} (log scale)", self.y_label)
        } else {
            self.y_label.clone()
        }
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let ty = |y: f64| if self.log_y { y.log10() } else { y };
        let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0);
        let band_points = self.bands.iter().flat_map(|b| b.points.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]));
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .chain(band_points)
            .filter(usable)
            .map(|(x, y)| (x, ty(y)))
            .collect();
        let (mut x0, mut x1, mut y0, mut y1) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| {
                (a.min(x), b.max(x), c.min(y), d.max(y))
            });
        if points.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        // A flat range widens by 0.5 either side, or more where 0.5 is below f64's resolution.
        let half = |v: f64| 0.5f64.max(v.abs() * 1e-6);
        if x1 - x0 < 1e-12 {
            (x0, x1) = (x0 - half(x0), x1 + half(x1));
        }
        if y1 - y0 < 1e-12 {
            (y0, y1) = (y0 - half(y0), y1 + half(y1));
        }
        let pad = (y1 - y0) * 0.05;
        let (y0, y1) = (y0 - pad, y1 + pad);
        let Layout { plot: area, legend, labels } = self.layout();
        let (left, top, pw, ph) = (area.x, area.y, area.width, area.height);
        let (right, bottom) = (left + pw, top + ph);
        let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
        let x_ticks = linear_ticks(x0, x1, tick_target(pw, 90.0), self.x_integer);
        let y_ticks = if self.log_y {
            log_ticks(y0, y1, tick_target(ph, 50.0))
        } else {
            linear_ticks(y0, y1, tick_target(ph, 50.0), false)
        };

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        if let Some(note) = &self.note {
            let _ = writeln!(
                svg,
                r##"<text class="note" x="{}" y="{}" text-anchor="middle" font-size="11" fill="#555">{}</text>"##,
                WIDTH / 2.0,
                22.0 + NOTE_HEIGHT + 2.0,
                escape(note)
            );
        }
        // Grid and tick labels.
        for tick in &y_ticks {
            let y = sy(tick.at);
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" x2="{right}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text class="y-tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left - 6.0,
                y + 4.0,
                tick.label
            );
        }
        for tick in &x_ticks {
            let x = sx(tick.at);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{bottom}" stroke="#eee"/><text class="x-tick" x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                tick.label
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            HEIGHT - 14.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            top + ph / 2.0,
            escape(&self.y_label_text())
        );
        // Bands under the lines.
        for b in &self.bands {
            let color = COLORS[b.series % COLORS.len()];
            let kept: Vec<(f64, f64, f64)> =
                b.points.iter().copied().filter(|&(x, lo, hi)| usable(&(x, lo)) && usable(&(x, hi))).collect();
            if kept.is_empty() {
                continue;
            }
            let mut path = String::new();
            for (i, &(x, _, hi)) in kept.iter().enumerate() {
                let _ = write!(path, "{}{:.1},{:.1} ", if i == 0 { "M" } else { "L" }, sx(x), sy(ty(hi)));
            }
            for &(x, lo, _) in kept.iter().rev() {
                let _ = write!(path, "L{:.1},{:.1} ", sx(x), sy(ty(lo)));
            }
            let _ = writeln!(
                svg,
                r#"<path class="band" d="{}Z" fill="{color}" fill-opacity="0.2" stroke="none"><title>{}</title></path>"#,
                path,
                escape(&b.name)
            );
        }
        // Lines, broken at unusable points.
        for (k, s) in self.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let mut path = String::new();
            let mut pen_down = false;
            for p in &s.points {
                if usable(p) {
                    let _ = write!(path, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, sx(p.0), sy(ty(p.1)));
                    pen_down = true;
                } else {
                    pen_down = false;
                }
            }
            let _ = writeln!(svg, r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.6"/>"#, path.trim_end());
        }
        // The legend, in its own column right of the plotting area.
        if let Some(bx) = legend {
            let _ = writeln!(svg, r#"<g class="legend">"#);
            let _ = writeln!(
                svg,
                r##"<rect class="legend-box" x="{}" y="{}" width="{}" height="{}" fill="white" stroke="#ccc"/>"##,
                bx.x, bx.y, bx.width, bx.height
            );
            for (k, label) in labels.iter().enumerate() {
                let color = COLORS[k % COLORS.len()];
                let ly = bx.y + 4.0 + LEGEND_ROW * (k as f64 + 0.5);
                let lx = bx.x + 8.0;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                    lx + 18.0,
                    lx + 24.0,
                    ly + 4.0,
                    escape(label)
                );
            }
            let _ = writeln!(svg, "</g>");
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// One tick: where it sits on the axis (log10 of the value on a log axis) and its label.
#[derive(Clone, Debug, PartialEq)]
struct Tick {
    at: f64,
    label: String,
}

/// About how many ticks fit along `length` pixels at one per `spacing`.
fn tick_target(length: f64, spacing: f64) -> usize {
    ((length / spacing).round() as usize).clamp(2, 10)
}

/// A tick step `mantissa · 10^exponent`, `mantissa` one of 1, 2, 2.5, 5.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    mantissa: f64,
    exponent: i32,
}

impl Step {
    /// The nice step closest (in ratio) to `raw`; with `integer`, a whole number ≥ 1.
    fn near(raw: f64, integer: bool) -> Self {
        if !(raw.is_finite() && raw > 0.0) {
            return Self { mantissa: 1.0, exponent: 0 };
        }
        let exponent = raw.log10().floor() as i32;
        if integer && exponent < 0 {
            return Self { mantissa: 1.0, exponent: 0 };
        }
        let f = raw / 10f64.powi(exponent);
        let mantissa = [1.0, 2.0, 2.5, 5.0, 10.0]
            .into_iter()
            .filter(|&m| !(integer && exponent == 0 && m == 2.5))
            .min_by(|a, b| (a / f).ln().abs().total_cmp(&(b / f).ln().abs()))
            .unwrap_or(1.0);
        if mantissa == 10.0 {
            Self { mantissa: 1.0, exponent: exponent + 1 }
        } else {
            Self { mantissa, exponent }
        }
    }

    fn value(self) -> f64 {
        self.mantissa * 10f64.powi(self.exponent)
    }

    /// Digits after the point the step needs (2.5 needs one more than 2).
    fn decimals(self) -> usize {
        let extra = i32::from(self.mantissa == 2.5 && self.exponent <= 0);
        (extra - self.exponent).max(0) as usize
    }
}

/// Ticks at the multiples of a nice step inside `[lo, hi]`, about `target` of them; whole numbers a
/// whole step apart with `integer`. Labels share one format: fixed with the step's decimals, or
/// scientific when every value is below 10⁻³ or one reaches 10⁶.
fn linear_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> Vec<Tick> {
    let step = Step::near((hi - lo) / target.max(1) as f64, integer);
    let size = step.value();
    let first = (lo / size - 1e-9).ceil() as i64;
    let last = (hi / size + 1e-9).floor() as i64;
    // Beyond f64's integer precision (an offset range like 1e20 + [0, 1e5]) the multiples can
    // land outside the axis; they are dropped, and the count is bounded whatever the input.
    let values: Vec<f64> = (first..=last.min(first.saturating_add(100)))
        .map(|k| k as f64 * size)
        .filter(|v| (lo - size * 1e-6..=hi + size * 1e-6).contains(v))
        .collect();
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scientific = largest >= 1e6 || (largest > 0.0 && largest < 1e-3);
    values
        .into_iter()
        .map(|v| {
            let label = if v == 0.0 {
                "0".to_string()
            } else if scientific {
                let magnitude = (v.abs() * (1.0 + 1e-9)).log10().floor() as i32;
                let extra = i32::from(step.mantissa == 2.5);
                let digits = (magnitude - step.exponent + extra).clamp(0, 15) as usize;
                trim_mantissa(&format!("{v:.digits$e}"))
            } else {
                let decimals = step.decimals();
                format!("{v:.decimals$}")
            };
            Tick { at: v, label }
        })
        .collect()
}

/// Ticks for a log axis over `[lo, hi]` (log10 of the values): powers of ten, every few decades
/// when there are many; 1, 2 and 5 times powers of ten when it spans under two decades; nice linear
/// values when even those give fewer than three ticks.
fn log_ticks(lo: f64, hi: f64, target: usize) -> Vec<Tick> {
    let mut marks: Vec<(f64, i32)> = Vec::new(); // (mantissa, exponent)
    if hi - lo >= 2.0 {
        let every = Step::near((hi - lo) / target.max(1) as f64, true).value() as i32;
        let first = (lo / f64::from(every) - 1e-9).ceil() as i32;
        let last = (hi / f64::from(every) + 1e-9).floor() as i32;
        marks.extend((first..=last).map(|k| (1.0, k * every)));
    } else {
        for k in lo.floor() as i32..=hi.ceil() as i32 {
            for m in [1.0, 2.0, 5.0] {
                let at = f64::log10(m) + f64::from(k);
                if (lo - 1e-9..=hi + 1e-9).contains(&at) {
                    marks.push((m, k));
                }
            }
        }
        if marks.len() < 3 {
            let linear = linear_ticks(10f64.powf(lo), 10f64.powf(hi), target, false);
            return linear.into_iter().filter(|t| t.at > 0.0).map(|t| Tick { at: t.at.log10(), ..t }).collect();
        }
    }
    let fixed = marks.iter().all(|&(_, k)| (-3..=4).contains(&k));
    marks
        .into_iter()
        .map(|(m, k)| {
            let label = if fixed {
                let decimals = (-k).max(0) as usize;
                format!("{:.decimals$}", m * 10f64.powi(k))
            } else {
                format!("{m}e{k}")
            };
            Tick { at: f64::log10(m) + f64::from(k), label }
        })
        .collect()
}

/// `1.500e-4` as `1.5e-4`: trailing zeros (and a bare point) of the mantissa dropped.
fn trim_mantissa(s: &str) -> String {
    match s.split_once('e') {
        Some((mantissa, exponent)) if mantissa.contains('.') => {
            format!("{}e{exponent}", mantissa.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => s.to_string(),
    }
}

/// `s` cut to `max` characters, the last one an ellipsis when anything was cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max.saturating_sub(1)).chain(std::iter::once('…')).collect()
    }
}

/// `s` with XML's special characters escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number in `attr="…"` of the first element of `tag` that carries `class="{class}"`.
    fn attr(element: &str, name: &str) -> f64 {
        let start =
            element.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("no {name} in {element}")) + name.len() + 3;
        let len = element[start..].find('"').unwrap();
        element[start..start + len].parse().unwrap()
    }

    /// The element that starts with `<{tag} class="{class}"`, up to its `>`.
    fn element<'a>(svg: &'a str, tag: &str, class: &str) -> &'a str {
        let start = svg.find(&format!("<{tag} class=\"{class}\"")).unwrap_or_else(|| panic!("no {class} in {svg}"));
        let len = svg[start..].find('>').unwrap();
        &svg[start..start + len]
    }

    fn rect(svg: &str, class: &str) -> Rect {
        let e = element(svg, "rect", class);
        Rect { x: attr(e, "x"), y: attr(e, "y"), width: attr(e, "width"), height: attr(e, "height") }
    }

    /// The tick labels of class `class` (`x-tick`, `y-tick`): `(screen position along the axis, label)`.
    fn ticks(svg: &str, class: &str) -> Vec<(f64, String)> {
        let needle = format!("<text class=\"{class}\"");
        svg.match_indices(&needle)
            .map(|(i, _)| {
                let open = svg[i..].find('>').unwrap() + i;
                let close = svg[open..].find("</text>").unwrap() + open;
                let pos = attr(&svg[i..open], if class == "x-tick" { "x" } else { "y" });
                (pos, svg[open + 1..close].to_string())
            })
            .collect()
    }

    #[test]
    fn a_band_widens_the_range_and_is_drawn_closed() {
        let mut plot = plot_of(vec![(0.0, 1.0), (1.0, 2.0)]);
        plot.bands.push(Band {
            name: "80% interval".into(),
            series: 0,
            points: vec![(0.0, 0.0, 5.0), (1.0, f64::NAN, 3.0), (1.0, 1.0, 3.0)],
        });
        let svg = plot.to_svg();
        assert_eq!(svg.matches(r#"class="band""#).count(), 1);
        assert!(svg.contains("Z\" fill=") && svg.contains("<title>80% interval</title>"), "{svg}");
        let labels: Vec<String> = ticks(&svg, "y-tick").into_iter().map(|t| t.1).collect();
        assert!(
            labels.iter().any(|l| l == "5" || l == "5.0") && labels.iter().any(|l| l == "0" || l == "0.0"),
            "{labels:?}"
        );
    }

    fn plot_of(points: Vec<(f64, f64)>) -> LinePlot {
        let mut plot = LinePlot::new("t", "x", "y");
        plot.series.push(Series::new("s", points));
        plot
    }

    /// Asserts the labels are at least three evenly spaced multiples of a 1/2/2.5/5 step, drawn
    /// evenly spaced, all with the step's decimals (or in one scientific form); returns the values.
    fn assert_nice(ticks: &[(f64, String)], context: &str) -> Vec<f64> {
        assert!(ticks.len() >= 3, "{context}: too few ticks {ticks:?}");
        let values: Vec<f64> =
            ticks.iter().map(|(_, l)| l.parse().unwrap_or_else(|_| panic!("{context}: {l}"))).collect();
        let step = values[1] - values[0];
        let exponent = step.abs().log10().floor();
        let mantissa = step.abs() / 10f64.powf(exponent);
        assert!(
            [1.0, 2.0, 2.5, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
            "{context}: step {step} is not 1, 2, 2.5 or 5 times a power of ten: {ticks:?}"
        );
        for (i, v) in values.iter().enumerate() {
            assert!((v - values[0] - i as f64 * step).abs() < 1e-9 * step.abs(), "{context}: uneven values {ticks:?}");
            assert!(((v / step).round() - v / step).abs() < 1e-6, "{context}: {v} is not a multiple of {step}");
        }
        let gap = ticks[1].0 - ticks[0].0;
        for w in ticks.windows(2) {
            assert!((w[1].0 - w[0].0 - gap).abs() < 0.25, "{context}: uneven on screen {ticks:?}");
        }
        let scientific = ticks.iter().any(|(_, l)| l.contains('e'));
        if !scientific {
            let decimals = |l: &str| l.split_once('.').map_or(0, |(_, d)| d.len());
            let exact = |d: i32| {
                let scaled = step.abs() * 10f64.powi(d);
                (scaled - scaled.round()).abs() < 1e-6 * scaled
            };
            let want = (0..15).find(|&d| exact(d)).unwrap() as usize;
            for (_, l) in ticks {
                assert!(l == "0" || decimals(l) == want, "{context}: {l} should have {want} decimals: {ticks:?}");
            }
        }
        for (_, l) in ticks {
            assert!(l.len() <= 8 && !l.contains("00001") && !l.contains("9999"), "{context}: unreadable {l}");
        }
        values
    }

    #[test]
    fn linear_ticks_are_evenly_spaced_nice_numbers() {
        for (lo, hi) in [
            (2.34, 2.67),
            (0.0, 1.0),
            (-3.0, 17.0),
            (0.1, 0.35),
            (1.5e-4, 3.5e-4),
            (1234.0, 98765.0),
            (0.0, 3e7),
            (5.0, 5.0),
        ] {
            let svg = plot_of(vec![(lo, lo), (hi, hi)]).to_svg();
            for class in ["x-tick", "y-tick"] {
                let values = assert_nice(&ticks(&svg, class), &format!("{class} over [{lo}, {hi}]"));
                let margin = if hi > lo { 0.1 * (hi - lo) } else { 0.55 }; // a flat range widens by 0.5
                assert!(
                    values.iter().all(|v| (lo - margin..=hi + margin).contains(v)),
                    "{class} {values:?} [{lo}, {hi}]"
                );
            }
        }
    }

    #[test]
    fn extreme_ranges_render_with_ticks_inside_the_frame() {
        for (lo, hi) in
            [(1e20, 1e20 + 1e5), (-1e300, 1e300), (1e-300, 2e-300), (f64::MIN_POSITIVE, 1.0), (1e300, 1e300)]
        {
            for log_y in [false, true] {
                let mut plot = plot_of(vec![(lo, lo), (hi, hi)]);
                (plot.log_y, plot.x_integer) = (log_y, true);
                let svg = plot.to_svg();
                assert!(!svg.contains("NaN") && !svg.contains("inf"), "[{lo}, {hi}] {svg}");
                let frame = rect(&svg, "frame");
                assert!(!ticks(&svg, "x-tick").is_empty() && !ticks(&svg, "y-tick").is_empty(), "[{lo}, {hi}] {svg}");
                for (x, l) in ticks(&svg, "x-tick") {
                    assert!((frame.x - 0.1..=frame.x + frame.width + 0.1).contains(&x), "[{lo}, {hi}] {l} at {x}");
                }
                for (y, l) in ticks(&svg, "y-tick") {
                    let y = y - 4.0; // the label's baseline sits 4px under its tick
                    assert!((frame.y - 0.1..=frame.y + frame.height + 0.1).contains(&y), "[{lo}, {hi}] {l} at {y}");
                }
            }
        }
    }

    #[test]
    fn integer_axis_ticks_whole_numbers_a_whole_step_apart() {
        for hi in [1.0, 3.0, 7.0, 11.0, 49.0, 1000.0] {
            let mut plot = plot_of((0..=hi as usize).map(|t| (t as f64, 1.0 / (t + 1) as f64)).collect());
            plot.x_integer = true;
            let ticks = ticks(&plot.to_svg(), "x-tick");
            let values: Vec<f64> = ticks.iter().map(|(_, l)| l.parse().unwrap()).collect();
            assert!(ticks.iter().all(|(_, l)| !l.contains('.')), "[0, {hi}]: {ticks:?}");
            if hi >= 3.0 {
                assert_nice(&ticks, &format!("integer [0, {hi}]"));
            } else {
                assert_eq!(values, [0.0, 1.0]);
            }
            assert!(values.windows(2).all(|w| w[1] - w[0] >= 1.0 && (w[1] - w[0]).fract() == 0.0));
        }
        // The same range without the flag gets fractional ticks, so the flag is what changed it.
        let ticks = ticks(&plot_of(vec![(0.0, 0.0), (3.0, 1.0)]).to_svg(), "x-tick");
        assert!(ticks.iter().any(|(_, l)| l.contains('.')), "{ticks:?}");
    }

    #[test]
    fn log_ticks_are_powers_of_ten_or_1_2_5_subdivisions() {
        let log_plot = |lo: f64, hi: f64| {
            let mut plot = plot_of(vec![(0.0, lo), (1.0, hi)]);
            plot.log_y = true;
            ticks(&plot.to_svg(), "y-tick")
        };
        for (lo, hi) in [(1e-7, 3e-2), (1e-30, 1.0), (0.5, 2e4), (1e-3, 1e3)] {
            let ticks = log_plot(lo, hi);
            assert!(ticks.len() >= 3 && ticks.len() <= 11, "[{lo}, {hi}]: {ticks:?}");
            let exponents: Vec<f64> = ticks.iter().map(|(_, l)| l.parse::<f64>().unwrap().log10()).collect();
            assert!(exponents.iter().all(|e| (e - e.round()).abs() < 1e-9), "[{lo}, {hi}] powers of ten: {ticks:?}");
            let every = exponents[1] - exponents[0];
            assert!(exponents.windows(2).all(|w| (w[1] - w[0] - every).abs() < 1e-9), "[{lo}, {hi}]: {ticks:?}");
            let gap = ticks[1].0 - ticks[0].0;
            assert!(ticks.windows(2).all(|w| (w[1].0 - w[0].0 - gap).abs() < 0.25), "[{lo}, {hi}]: {ticks:?}");
            for (_, l) in &ticks {
                assert!(!(l.contains('e') && l.contains('.')) && l.len() <= 6, "[{lo}, {hi}]: unreadable {l}");
            }
        }
        let labels = |t: Vec<(f64, String)>| t.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
        assert_eq!(labels(log_plot(1e-7, 3e-2)), ["1e-7", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2"]);
        assert_eq!(labels(log_plot(1e-3, 1e3)), ["0.001", "0.01", "0.1", "1", "10", "100", "1000"]);
        // Under two decades: 1, 2 and 5 times powers of ten, in a plain form.
        assert_eq!(labels(log_plot(0.3, 8.0)), ["0.5", "1", "2", "5"]);
        // Too narrow even for those: nice linear values.
        let narrow = log_plot(2.3, 2.7);
        assert!(narrow.len() >= 3, "{narrow:?}");
        let values: Vec<f64> = narrow.iter().map(|(_, l)| l.parse().unwrap()).collect();
        assert!(values.windows(2).all(|w| ((w[0] - w[1]) - (values[0] - values[1])).abs() < 1e-9), "{narrow:?}");
    }

    #[test]
    fn legend_sits_beside_the_plotting_area_not_on_it() {
        let mut plot = LinePlot::new("t", "x", "y");
        for (k, name) in ["rnn (ρ = 0.612/step)", "lstm", "a name far too long to fit in the legend column at all"]
            .into_iter()
            .enumerate()
        {
            // Lines that reach the top right corner, where the old legend sat.
            plot.series.push(Series::new(name, (0..50).map(|t| (t as f64, (t * (k + 1)) as f64)).collect()));
        }
        let svg = plot.to_svg();
        let (frame, legend) = (rect(&svg, "frame"), rect(&svg, "legend-box"));
        let overlap = |a: Rect, b: Rect| {
            a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
        };
        assert!(!overlap(frame, legend), "{frame:?} {legend:?}");
        assert!(legend.x + legend.width <= WIDTH && legend.y + legend.height <= HEIGHT, "{legend:?}");
        assert!(legend.height >= 3.0 * LEGEND_ROW);
        // Every drawn point is inside the frame; every legend entry starts right of it.
        for path in svg.lines().filter(|l| l.starts_with("<path")) {
            let d = &path[path.find("d=\"").unwrap() + 3..];
            for xy in d[..d.find('"').unwrap()].split(' ') {
                let (x, y) = xy[1..].split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(x >= frame.x - 0.1 && x <= frame.x + frame.width + 0.1, "{x} outside {frame:?}");
                assert!(y >= frame.y - 0.1 && y <= frame.y + frame.height + 0.1, "{y} outside {frame:?}");
            }
        }
        let g = &svg[svg.find("<g class=\"legend\">").unwrap()..];
        assert_eq!(g.matches("<text x=").count(), 3);
        for e in g.match_indices("<text x=\"").map(|(i, _)| &g[i..]) {
            assert!(attr(e, "x") > frame.x + frame.width);
        }
        assert!(svg.contains("lstm</text>") && svg.contains("…</text>"), "the long name is cut");
        // No series, no legend: the plotting area takes the width.
        let empty = LinePlot::new("", "", "").to_svg();
        assert!(!empty.contains("legend-box"));
        assert_eq!(rect(&empty, "frame").width, WIDTH - LEFT - RIGHT);
    }

    #[test]
    fn log_scale_is_said_once() {
        for (label, log_y, times) in [
            ("gradient norm", true, 1),
            ("gradient norm (log scale)", true, 1),
            ("norm (Log Scale)", true, 0),
            ("norm", false, 0),
        ] {
            let mut plot = plot_of(vec![(0.0, 1e-3), (1.0, 1.0)]);
            (plot.y_label, plot.log_y) = (label.into(), log_y);
            let svg = plot.to_svg();
            assert_eq!(svg.matches("(log scale)").count(), times, "{label} {log_y}");
            assert_eq!(svg.to_lowercase().matches("log scale").count(), usize::from(log_y), "{label} {log_y}");
        }
    }

    #[test]
    fn note_is_a_small_line_between_title_and_chart() {
        let mut plot = plot_of(vec![(0.0, 1.0), (1.0, 2.0)]);
        assert!(!plot.to_svg().contains("class=\"note\""));
        plot.note = Some("train: mean over the steps since the previous point <&>".into());
        let svg = plot.to_svg();
        let note = element(&svg, "text", "note");
        assert!(svg.contains(">train: mean over the steps since the previous point &lt;&amp;&gt;</text>"));
        assert!(attr(note, "y") > 22.0 && attr(note, "y") + 4.0 < rect(&svg, "frame").y, "{note}");
        assert!(attr(note, "font-size") < 12.0);
    }

    #[test]
    fn svg_has_one_path_per_series_breaks_at_gaps_and_escapes_text() {
        let mut plot = LinePlot::new("loss <train & val>", "step", "loss");
        plot.series.push(Series::new("train", vec![(0.0, 3.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)]));
        plot.series.push(Series::new("val", vec![(0.0, 3.2), (3.0, 1.4)]));
        let svg = plot.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        let train = svg.lines().find(|l| l.contains("<path")).unwrap();
        assert_eq!(train.matches('M').count(), 2, "a NaN breaks the line: {train}");
        assert!(svg.contains("loss &lt;train &amp; val&gt;"));
    }

    #[test]
    fn log_axis_drops_non_positive_points_and_labels_decades() {
        let mut plot = LinePlot::new("grad", "t", "norm");
        plot.log_y = true;
        plot.series.push(Series::new("rnn", vec![(0.0, 1e-6), (1.0, 0.0), (2.0, 1.0)]));
        let svg = plot.to_svg();
        assert!(svg.contains("(log scale)"));
        assert!(svg.contains(">1e-6</text>"), "{svg}");
        assert_eq!(svg.lines().find(|l| l.contains("<path")).unwrap().matches('M').count(), 2);
        // An empty plot still renders.
        assert!(LinePlot::new("", "", "").to_svg().contains("</svg>"));
        assert_eq!(trim_mantissa("1.500e-4"), "1.5e-4");
        assert_eq!(trim_mantissa("2e7"), "2e7");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
