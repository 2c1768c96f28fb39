//! Line charts as standalone SVG: loss curves, gradient norms over time steps. No dependency, no
//! fonts to install; the result opens in any browser.

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

/// A chart of one or more series sharing axes.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePlot {
    /// The title above the chart.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// Logarithmic y axis (for quantities spanning decades, like vanishing gradients).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

impl LinePlot {
    /// An empty chart with a title and axis labels.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), log_y: false, series: Vec::new() }
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let ty = |y: f64| if self.log_y { y.log10() } else { y };
        let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0);
        let points: Vec<(f64, f64)> =
            self.series.iter().flat_map(|s| s.points.iter().copied()).filter(usable).map(|(x, y)| (x, ty(y))).collect();
        let (mut x0, mut x1, mut y0, mut y1) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| {
                (a.min(x), b.max(x), c.min(y), d.max(y))
            });
        if points.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            (x0, x1) = (x0 - 0.5, x1 + 0.5);
        }
        if y1 - y0 < 1e-12 {
            (y0, y1) = (y0 - 0.5, y1 + 0.5);
        }
        let pad = (y1 - y0) * 0.05;
        let (y0, y1) = (y0 - pad, y1 + pad);
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * ph;

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
        // Grid and tick labels.
        for i in 0..=5 {
            let f = f64::from(i) / 5.0;
            let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
            let label = if self.log_y { format_number(10f64.powf(y)) } else { format_number(y) };
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
                WIDTH - RIGHT,
                sy(y),
                sy(y),
                LEFT - 6.0,
                sy(y) + 4.0
            );
            let _ = writeln!(
                svg,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
                sx(x),
                sx(x),
                HEIGHT - BOTTOM,
                sx(x),
                HEIGHT - BOTTOM + 16.0,
                format_number(x)
            );
        }
        let _ = writeln!(svg, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 14.0,
            escape(&self.x_label)
        );
        let y_label = if self.log_y { format!("{} (log scale)", self.y_label) } else { self.y_label.clone() };
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&y_label)
        );
        // Lines, broken at unusable points, and the legend.
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
            let ly = TOP + 14.0 + 16.0 * k as f64;
            let lx = WIDTH - RIGHT - 150.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// A compact label: 3 significant digits, scientific notation outside [1e-3, 1e5).
fn format_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `s` with XML's special characters escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(svg.contains("1.00e-6") || svg.contains("e-6") || svg.contains("e-7"), "{svg}");
        // An empty plot still renders.
        assert!(LinePlot::new("", "", "").to_svg().contains("</svg>"));
        assert_eq!(format_number(0.012345), "0.0123");
        assert_eq!(format_number(1234.6), "1235");
    }
}
