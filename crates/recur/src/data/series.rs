//! Labelled multivariate series for sequence classification: each example is a sequence of
//! frames of `channels` numbers (e.g. 12 cepstrum coefficients per 10 ms of speech), read from
//! the UEA/sktime `.ts` format or from a CSV file of one row per frame; with a per-channel
//! standardisation fitted on the training part.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::labelled::{relabel, stratified_indices};
use crate::{Error, Result};

/// Sequences of frames, each with a class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelledSeries {
    /// Each example's frames, step-major: frame `t`'s channel `c` at `t * channels + c`.
    pub series: Vec<Vec<f32>>,
    /// Numbers per frame.
    pub channels: usize,
    /// Each example's class, an index into `classes`.
    pub labels: Vec<usize>,
    /// The class names (in the order the file declares them, or sorted).
    pub classes: Vec<String>,
}

fn bad(origin: &str, line: usize, message: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::data("labelled series", format!("{origin}, line {line}: {}", message.into()), fix)
}

fn number(origin: &str, line: usize, field: &str, what: &str) -> Result<f32> {
    let field = field.trim();
    if field == "?" || field.eq_ignore_ascii_case("nan") {
        return Err(bad(
            origin,
            line,
            format!("{what} is missing ({field:?})"),
            "fill or drop the missing values before training (e.g. carry the previous frame forward)",
        ));
    }
    let v: f32 = field
        .parse()
        .map_err(|_| bad(origin, line, format!("{what} is {field:?}, not a number"), "write plain decimal numbers"))?;
    if !v.is_finite() {
        return Err(bad(origin, line, format!("{what} is {field:?}, not a finite number"), "write finite numbers"));
    }
    Ok(v)
}

/// Parses a `.ts` file; `need_labels` refuses `@classLabel false`. Returns the cases (labels 0
/// when unlabelled, no classes set) and the declared classes.
fn parse_ts(content: &str, origin: &str, need_labels: bool) -> Result<(LabelledSeries, Option<Vec<String>>)> {
    let mut declared_dims: Option<usize> = None;
    let mut labelled: Option<bool> = None;
    let mut classes: Option<Vec<String>> = None;
    let mut in_data = false;
    let mut out = LabelledSeries::default();
    for (i, raw) in content.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !in_data {
            let Some(header) = line.strip_prefix('@') else {
                return Err(bad(
                    origin,
                    line_no,
                    "a case before the @data line",
                    "write the header (@dimensions, @classLabel, …) and then @data before the cases",
                ));
            };
            let mut words = header.split_whitespace();
            let key = words.next().unwrap_or_default().to_ascii_lowercase();
            let rest: Vec<&str> = words.collect();
            match key.as_str() {
                "data" => in_data = true,
                "dimensions" => {
                    let n = rest.first().and_then(|w| w.parse::<usize>().ok()).filter(|&n| n > 0);
                    declared_dims = Some(n.ok_or_else(|| {
                        bad(
                            origin,
                            line_no,
                            format!("@dimensions {:?} is not a count", rest.join(" ")),
                            "write e.g. @dimensions 12",
                        )
                    })?);
                }
                "timestamps" if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("true")) => {
                    return Err(bad(
                        origin,
                        line_no,
                        "series with time stamps are not supported",
                        "write the values without (time, value) pairs (@timeStamps false)",
                    ));
                }
                "classlabel" => {
                    if !rest.first().is_some_and(|w| w.eq_ignore_ascii_case("true")) {
                        if !need_labels {
                            labelled = Some(false);
                            continue;
                        }
                        return Err(bad(
                            origin,
                            line_no,
                            "the file declares no class labels (@classLabel false)",
                            "classification needs labelled cases: @classLabel true followed by the class names",
                        ));
                    }
                    let names: Vec<String> = rest[1..].iter().map(|s| s.to_string()).collect();
                    if names.is_empty() {
                        return Err(bad(
                            origin,
                            line_no,
                            "@classLabel true names no class",
                            "list the classes after true",
                        ));
                    }
                    classes = Some(names);
                    labelled = Some(true);
                }
                "targetlabel" if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("true")) => {
                    return Err(bad(
                        origin,
                        line_no,
                        "a regression file (@targetLabel true)",
                        "recur classify needs class labels (@classLabel true …)",
                    ));
                }
                _ => {}
            }
            continue;
        }
        let has_label = match labelled {
            Some(l) => l,
            None => {
                return Err(bad(
                    origin,
                    line_no,
                    "the header has no @classLabel line",
                    "declare the classes before @data: @classLabel true A B … (or @classLabel false)",
                ))
            }
        };
        let parts: Vec<&str> = line.split(':').collect();
        let (channel_text, label) = if has_label {
            if parts.len() < 2 {
                return Err(bad(
                    origin,
                    line_no,
                    "no class after the values",
                    "end each case with :CLASS (channels separated by ':')",
                ));
            }
            let classes = classes.as_ref().expect("labelled files declare classes");
            let label_name = parts[parts.len() - 1].trim();
            let label = classes.iter().position(|c| c == label_name).ok_or_else(|| {
                bad(
                    origin,
                    line_no,
                    format!("class {label_name:?} is not one of the declared {classes:?}"),
                    "use a class named in @classLabel, or add it there",
                )
            })?;
            (&parts[..parts.len() - 1], label)
        } else {
            (&parts[..], 0)
        };
        let dims = channel_text.len();
        let expected = declared_dims.or(if out.series.is_empty() { None } else { Some(out.channels) });
        if let Some(expected) = expected {
            if dims != expected {
                return Err(bad(
                    origin,
                    line_no,
                    format!("{dims} channels, but {expected} expected"),
                    "give every case the same number of channels, as @dimensions says",
                ));
            }
        }
        let mut channels: Vec<Vec<f32>> = Vec::with_capacity(dims);
        for (c, text) in channel_text.iter().enumerate() {
            let values = text
                .split(',')
                .map(|f| number(origin, line_no, f, &format!("a value of channel {}", c + 1)))
                .collect::<Result<Vec<f32>>>()?;
            if let Some(first) = channels.first() {
                if first.len() != values.len() {
                    return Err(bad(
                        origin,
                        line_no,
                        format!("channel {} has {} values, channel 1 has {}", c + 1, values.len(), first.len()),
                        "give every channel of a case the same length",
                    ));
                }
            }
            channels.push(values);
        }
        let steps = channels[0].len();
        let mut frames = Vec::with_capacity(steps * dims);
        for t in 0..steps {
            frames.extend(channels.iter().map(|ch| ch[t]));
        }
        out.channels = dims;
        out.series.push(frames);
        out.labels.push(label);
    }
    Ok((out, classes))
}

impl LabelledSeries {
    /// Reads the UEA/sktime `.ts` format: `#` comment lines, `@` header lines (`@dimensions`,
    /// `@classLabel true A B …`, `@data`, …), then one case a line: the channels separated by
    /// `:`, each channel's values by `,`, the class after the last `:`. All channels of a case
    /// must have the same length; lengths may differ between cases. `origin` names the file in
    /// errors.
    pub fn from_ts(content: &str, origin: &str) -> Result<Self> {
        let (out, classes) = parse_ts(content, origin, true)?;
        let Some(classes) = classes else {
            return Err(Error::data(
                "labelled series",
                format!("{origin} has no @classLabel header"),
                "write a .ts file with @classLabel true … and @data",
            ));
        };
        Self::check_not_empty(LabelledSeries { classes, ..out }, origin)
    }

    /// The cases of a `.ts` file, labelled (`@classLabel true …`, the labels ignored) or not
    /// (`@classLabel false`): `(channels, each case's step-major frames)`, for prediction.
    pub fn cases_from_ts(content: &str, origin: &str) -> Result<(usize, Vec<Vec<f32>>)> {
        let (out, _) = parse_ts(content, origin, false)?;
        let out = Self::check_not_empty(out, origin)?;
        Ok((out.channels, out.series))
    }

    /// Reads a CSV file with a header row and one row per frame: the rows of one sequence are
    /// consecutive and share `id_column`'s value and `label_column`'s class; every other column
    /// is a channel and must hold numbers. Classes are sorted by name.
    pub fn from_csv(content: &str, origin: &str, id_column: &str, label_column: &str) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(content.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| {
                bad(origin, 1, format!("cannot read the header row ({e})"), "start the file with a header row")
            })?
            .clone();
        let column = |name: &str, flag: &str| {
            headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
                bad(
                    origin,
                    1,
                    format!("no column {name:?}; the columns are {:?}", headers.iter().collect::<Vec<_>>()),
                    format!("name the column with {flag}"),
                )
            })
        };
        let (id, label) = (column(id_column, "--id-column")?, column(label_column, "--label-column")?);
        let features: Vec<usize> = (0..headers.len()).filter(|&c| c != id && c != label).collect();
        if features.is_empty() {
            return Err(bad(origin, 1, "no column besides the id and the label", "add a column of values per channel"));
        }
        let mut raw: Vec<(String, Vec<f32>)> = Vec::new();
        let mut current: Option<(String, String)> = None;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record =
                record.map_err(|e| bad(origin, line, format!("{e}"), "give every row as many fields as the header"))?;
            let (key, class) = (record.get(id).unwrap_or("").trim(), record.get(label).unwrap_or("").trim());
            if class.is_empty() {
                return Err(bad(origin, line, "the label is empty", "label every row"));
            }
            let values = features
                .iter()
                .map(|&c| number(origin, line, record.get(c).unwrap_or(""), &format!("column {:?}", &headers[c])))
                .collect::<Result<Vec<f32>>>()?;
            match &current {
                Some((k, c)) if k == key => {
                    if c != class {
                        return Err(bad(
                            origin,
                            line,
                            format!("sequence {key:?} changes class from {c:?} to {class:?}"),
                            "give every row of a sequence the same label",
                        ));
                    }
                    raw.last_mut().expect("a current sequence").1.extend(values);
                }
                _ => {
                    if let Some(first) = seen.insert(key.to_string(), line) {
                        return Err(bad(
                            origin,
                            line,
                            format!("sequence {key:?} started at line {first} and resumes here"),
                            "keep the rows of each sequence together (sort by the id column)",
                        ));
                    }
                    current = Some((key.to_string(), class.to_string()));
                    raw.push((class.to_string(), values));
                }
            }
        }
        let mut classes: Vec<String> = raw.iter().map(|(c, _)| c.clone()).collect();
        classes.sort();
        classes.dedup();
        let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let labels = raw.iter().map(|(c, _)| index[c.as_str()]).collect();
        let series = raw.into_iter().map(|(_, v)| v).collect();
        Self::check_not_empty(LabelledSeries { series, channels: features.len(), labels, classes }, origin)
    }

    fn check_not_empty(data: Self, origin: &str) -> Result<Self> {
        if data.series.is_empty() {
            return Err(Error::data(
                "labelled series",
                format!("{origin} holds no case"),
                "pass a file with labelled series",
            ));
        }
        Ok(data)
    }

    /// Examples.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Example `i`'s number of frames.
    pub fn steps(&self, i: usize) -> usize {
        self.series[i].len() / self.channels.max(1)
    }

    /// The examples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    /// A seeded stratified split, as [`Labelled::stratified_split`](crate::data::Labelled::stratified_split).
    pub fn stratified_split(&self, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
        stratified_indices(&self.labels, fraction, seed)
    }

    /// The examples at `indices`.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            series: indices.iter().map(|&i| self.series[i].clone()).collect(),
            channels: self.channels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    /// Re-expresses the labels in `classes` (a model's); an error names a class it does not know.
    pub fn with_classes(&self, classes: &[String]) -> Result<Self> {
        Ok(Self { labels: relabel(&self.labels, &self.classes, classes)?, classes: classes.to_vec(), ..self.clone() })
    }
}

/// A per-channel standardisation `(x - mean) / std`, fitted on training frames and kept in the
/// checkpoint so that evaluation and prediction scale the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesScaling {
    /// Each channel's mean over all training frames.
    pub mean: Vec<f64>,
    /// Each channel's standard deviation (population), or 1 where it is 0.
    pub std: Vec<f64>,
}

impl SeriesScaling {
    /// Fits on every frame of `data`.
    pub fn fit(data: &LabelledSeries) -> Self {
        let c = data.channels;
        let (mut sum, mut n) = (vec![0.0f64; c], 0usize);
        for s in &data.series {
            for frame in s.chunks_exact(c) {
                for (a, &v) in sum.iter_mut().zip(frame) {
                    *a += v as f64;
                }
                n += 1;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
        let mut sq = vec![0.0f64; c];
        for s in &data.series {
            for frame in s.chunks_exact(c) {
                for ((a, &v), m) in sq.iter_mut().zip(frame).zip(&mean) {
                    *a += (v as f64 - m).powi(2);
                }
            }
        }
        let std = sq.iter().map(|s| (s / n.max(1) as f64).sqrt()).map(|s| if s > 1e-12 { s } else { 1.0 }).collect();
        Self { mean, std }
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// `frames` (step-major) standardised.
    pub fn apply(&self, frames: &[f32]) -> Vec<f32> {
        let c = self.channels().max(1);
        frames.iter().enumerate().map(|(i, &v)| ((v as f64 - self.mean[i % c]) / self.std[i % c]) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "# comment\n@problemName toy\n@univariate false\n@dimensions 2\n@classLabel true a b\n@data\n\
                      1,2,3:4,5,6:b\n7,8:9,10:a\n";

    #[test]
    fn ts_cases_become_step_major_frames() {
        let d = LabelledSeries::from_ts(TS, "toy.ts").unwrap();
        assert_eq!(d.channels, 2);
        assert_eq!(d.classes, ["a", "b"]);
        assert_eq!(d.labels, [1, 0]);
        assert_eq!(d.series[0], [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(d.series[1], [7.0, 9.0, 8.0, 10.0]);
        assert_eq!((d.steps(0), d.steps(1)), (3, 2));
    }

    #[test]
    fn ts_errors_name_the_line_and_the_fix() {
        let cases = [
            ("@dimensions 2\n@classLabel true a b\n@data\n1,2:3,4:a\n1,2:b\n", "line 5", "channels"),
            ("@classLabel true a b\n@data\n1,2:3:a\n", "line 3", "same length"),
            ("@classLabel true a b\n@data\n1,?:3,4:a\n", "line 3", "missing"),
            ("@classLabel true a b\n@data\n1,x:3,4:a\n", "line 3", "not a number"),
            ("@classLabel true a b\n@data\n1,2:3,4:c\n", "line 3", "not one of"),
            ("@classLabel false\n@data\n1,2:3,4\n", "line 1", "no class labels"),
            ("@data\n1,2:3,4:a\n", "line 2", "no @classLabel"),
            ("1,2:a\n", "line 1", "before the @data"),
            ("@classLabel true a b\n@data\n", "holds no case", ""),
        ];
        for (text, at, what) in cases {
            let e = LabelledSeries::from_ts(text, "f.ts").unwrap_err().to_string();
            assert!(e.contains(at) && e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn unlabelled_cases_read_for_prediction() {
        let (c, cases) = LabelledSeries::cases_from_ts("@classLabel false\n@data\n1,2:3,4\n5:6\n", "p.ts").unwrap();
        assert_eq!((c, cases), (2, vec![vec![1.0, 3.0, 2.0, 4.0], vec![5.0, 6.0]]));
        let (c, cases) = LabelledSeries::cases_from_ts(TS, "toy.ts").unwrap();
        assert_eq!((c, cases.len()), (2, 2));
    }

    #[test]
    fn csv_rows_group_by_id() {
        let csv = "id,x,y,label\n1,0.5,1,up\n1,0.25,2,up\n2,3,4,down\n";
        let d = LabelledSeries::from_csv(csv, "f.csv", "id", "label").unwrap();
        assert_eq!(d.channels, 2);
        assert_eq!(d.classes, ["down", "up"]);
        assert_eq!(d.labels, [1, 0]);
        assert_eq!(d.series, [vec![0.5, 1.0, 0.25, 2.0], vec![3.0, 4.0]]);
        for (text, what) in [
            ("id,x,label\n1,1,a\n2,1,b\n1,2,a\n", "resumes"),
            ("id,x,label\n1,1,a\n1,2,b\n", "changes class"),
            ("id,x,label\n1,,a\n", "not a number"),
            ("id,x\n1,1\n", "no column \"label\""),
        ] {
            let e = LabelledSeries::from_csv(text, "f.csv", "id", "label").unwrap_err().to_string();
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn scaling_standardises_each_channel() {
        let d = LabelledSeries::from_ts(TS, "toy.ts").unwrap();
        let s = SeriesScaling::fit(&d);
        // channel 0: 1, 2, 3, 7, 8 → mean 4.2; channel 1: 4, 5, 6, 9, 10 → mean 6.8
        assert!((s.mean[0] - 4.2).abs() < 1e-12 && (s.mean[1] - 6.8).abs() < 1e-12);
        let all: Vec<f32> = d.series.iter().flat_map(|x| s.apply(x)).collect();
        for c in 0..2 {
            let col: Vec<f64> = all.iter().skip(c).step_by(2).map(|&v| v as f64).collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "channel {c}: {mean} {var}");
        }
    }
}
