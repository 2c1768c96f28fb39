//! Classification metrics from a confusion matrix: accuracy, per-class precision, recall and F1,
//! their macro and micro averages, and the matrix as a table and as an SVG heatmap.

use std::fmt::Write;

/// Precision, recall and F1 of one class, with its support (true examples).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassScores {
    /// Of the examples predicted as the class, the share that are (0 when none is predicted).
    pub precision: f64,
    /// Of the examples of the class, the share predicted as it (0 when it has none).
    pub recall: f64,
    /// The harmonic mean of the two (0 when both are 0).
    pub f1: f64,
    /// The number of examples of the class.
    pub support: usize,
}

/// Counts of (true class, predicted class) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    /// The class names.
    pub classes: Vec<String>,
    /// `counts[truth][prediction]`.
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    /// An empty matrix over `classes`.
    pub fn new(classes: Vec<String>) -> Self {
        let n = classes.len();
        Self { classes, counts: vec![vec![0; n]; n] }
    }

    /// Counts one example.
    pub fn add(&mut self, truth: usize, prediction: usize) {
        self.counts[truth][prediction] += 1;
    }

    /// Examples counted.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// The share predicted right (0 for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        let right: usize = (0..self.classes.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / self.total().max(1) as f64
    }

    /// Each class's scores (scikit-learn's definitions, 0 where a ratio is 0/0).
    pub fn per_class(&self) -> Vec<ClassScores> {
        let n = self.classes.len();
        (0..n)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let predicted: usize = (0..n).map(|t| self.counts[t][c]).sum();
                let support: usize = self.counts[c].iter().sum();
                let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
                let recall = if support > 0 { tp / support as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassScores { precision, recall, f1, support }
            })
            .collect()
    }

    /// The unweighted mean of the classes' F1.
    pub fn macro_f1(&self) -> f64 {
        let scores = self.per_class();
        scores.iter().map(|s| s.f1).sum::<f64>() / scores.len().max(1) as f64
    }

    /// F1 over all decisions pooled: for single-label classification, the accuracy.
    pub fn micro_f1(&self) -> f64 {
        self.accuracy()
    }

    /// A report: per-class precision, recall, F1 and support, the averages, and the matrix.
    pub fn report(&self) -> String {
        let width = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(5).max(9);
        let mut out = format!("{:>width$}  precision  recall     f1  support\n", "");
        for (name, s) in self.classes.iter().zip(self.per_class()) {
            let _ = writeln!(
                out,
                "{name:>width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
                s.precision, s.recall, s.f1, s.support
            );
        }
        let _ = writeln!(out, "{:>width$}  {:>25.4}  {:>7}", "accuracy", self.accuracy(), self.total());
        let _ = writeln!(out, "{:>width$}  {:>25.4}", "macro F1", self.macro_f1());
        let _ = writeln!(out, "\nconfusion (rows: true class, columns: predicted)");
        let names = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(4).min(10);
        let cell = self.counts.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(names).max(4);
        let _ = write!(out, "{:>width$}", "");
        for c in 0..self.classes.len() {
            let _ = write!(out, " {:>cell$}", abbreviate(&self.classes[c], cell));
        }
        out.push('\n');
        for (name, row) in self.classes.iter().zip(&self.counts) {
            let _ = write!(out, "{name:>width$}");
            for v in row {
                let _ = write!(out, " {v:>cell$}");
            }
            out.push('\n');
        }
        out
    }

    /// The matrix as an SVG heatmap, each cell shaded by its share of the row (recall) and
    /// labelled with its count.
    pub fn to_svg(&self, title: &str) -> String {
        let n = self.classes.len().max(1);
        let size = (360.0 / n as f64).clamp(18.0, 60.0);
        let (left, top) = (130.0, 70.0);
        let (w, h) = (left + size * n as f64 + 30.0, top + size * n as f64 + 40.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">predicted</text>\n\
             <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">true class</text>\n",
            w / 2.0,
            escape(title),
            left + size * n as f64 / 2.0,
            h - 8.0,
            top + size * n as f64 / 2.0,
            top + size * n as f64 / 2.0
        );
        for (t, row) in self.counts.iter().enumerate() {
            let support: usize = row.iter().sum();
            for (p, &v) in row.iter().enumerate() {
                let share = v as f64 / support.max(1) as f64;
                let shade = (255.0 * (1.0 - 0.85 * share)).round() as u8;
                let (x, y) = (left + p as f64 * size, top + t as f64 * size);
                let ink = if share > 0.5 { "white" } else { "black" };
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{size}\" height=\"{size}\" fill=\"rgb({shade},{shade},255)\" \
                     stroke=\"#ccc\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{v}</text>",
                    x + size / 2.0,
                    y + size / 2.0 + 4.0
                );
            }
        }
        for (i, name) in self.classes.iter().enumerate() {
            let c = i as f64 * size + size / 2.0;
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                left - 6.0,
                top + c + 4.0,
                escape(name)
            );
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                left + c,
                top - 8.0,
                escape(&abbreviate(name, 8))
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn abbreviate(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        name.chars().take(max.saturating_sub(1)).chain(std::iter::once('…')).collect()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against scikit-learn's `classification_report` on y_true = [0,0,0,1,1,2], y_pred =
    /// [0,1,0,1,1,1]: precision (1, 0.5, 0), recall (0.667, 1, 0), macro F1 0.4889, accuracy 0.6667.
    #[test]
    fn scores_match_scikit_learns_definitions() {
        let mut c = Confusion::new(vec!["a".into(), "b".into(), "c".into()]);
        for (t, p) in [(0, 0), (0, 1), (0, 0), (1, 1), (1, 1), (2, 1)] {
            c.add(t, p);
        }
        let s = c.per_class();
        assert!((s[0].precision - 1.0).abs() < 1e-12 && (s[0].recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[1].precision - 0.5).abs() < 1e-12 && (s[1].recall - 1.0).abs() < 1e-12);
        assert_eq!((s[2].precision, s[2].recall, s[2].f1), (0.0, 0.0, 0.0));
        assert_eq!(s.iter().map(|s| s.support).collect::<Vec<_>>(), [3, 2, 1]);
        assert!((c.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        let f1a = 2.0 * (2.0 / 3.0) / (1.0 + 2.0 / 3.0);
        let f1b = 2.0 * 0.5 / 1.5;
        assert!((c.macro_f1() - (f1a + f1b) / 3.0).abs() < 1e-12, "{}", c.macro_f1());
        let report = c.report();
        assert!(report.contains("accuracy") && report.contains("macro F1"), "{report}");
        let svg = c.to_svg("test");
        assert_eq!(svg.matches("<rect x=").count(), 9);
    }
}
