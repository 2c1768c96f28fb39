//! Time series from CSV: one or more target columns, an optional date column (parsed with
//! `chrono`), an optional series-id column (several series in one file), numeric covariates, cyclic
//! calendar features, and scalers fitted on the training part only.
//!
//! Every problem is one [`Error::Data`] that names the file, the line and the column: a missing
//! value (unless a [`Fill`] policy says how to fill it), an unparsable number or date, dates out of
//! order or repeated, a gap in a regular series (unless filled), a series too short for its window.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What to do with a missing value (an empty cell, `NA`, `nan`) or a missing date in a regular
/// series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// Refuse: one error naming the file, line and column (the default).
    #[default]
    Error,
    /// The previous value (the next one for values before the first known one).
    Previous,
    /// Linear interpolation between the known neighbours (the nearest one at either end).
    Linear,
}

impl Fill {
    /// `error`, `previous` or `linear`.
    pub fn name(self) -> &'static str {
        match self {
            Fill::Error => "error",
            Fill::Previous => "previous",
            Fill::Linear => "linear",
        }
    }
}

/// The spacing of a regular series' dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    /// Every this many days (1: daily, 7: weekly).
    Days(i64),
    /// Every this many calendar months (1: monthly, 3: quarterly, 12: yearly).
    Months(u32),
}

impl Frequency {
    /// The date one step after `date`.
    pub fn next(self, date: NaiveDate) -> Option<NaiveDate> {
        match self {
            Frequency::Days(d) => date.checked_add_signed(chrono::TimeDelta::days(d)),
            Frequency::Months(m) => date.checked_add_months(Months::new(m)),
        }
    }

    /// `daily`, `weekly`, `monthly`, `yearly`, or `every N days/months`.
    pub fn describe(self) -> String {
        match self {
            Frequency::Days(1) => "daily".into(),
            Frequency::Days(7) => "weekly".into(),
            Frequency::Months(1) => "monthly".into(),
            Frequency::Months(3) => "quarterly".into(),
            Frequency::Months(12) => "yearly".into(),
            Frequency::Days(d) => format!("every {d} days"),
            Frequency::Months(m) => format!("every {m} months"),
        }
    }

    /// The number of calendar features [`calendar_features`] gives at this frequency.
    pub fn calendar_size(self) -> usize {
        match self {
            Frequency::Days(1) => 4,
            Frequency::Days(_) => 2,
            Frequency::Months(m) if m < 12 => 2,
            Frequency::Months(_) => 0,
        }
    }

    /// The season length the frequency suggests (12 monthly, 52 weekly, 7 daily, 4 quarterly, 1).
    pub fn natural_period(self) -> usize {
        match self {
            Frequency::Days(1) => 7,
            Frequency::Days(7) => 52,
            Frequency::Months(1) => 12,
            Frequency::Months(3) => 4,
            _ => 1,
        }
    }
}

/// Cyclic calendar features of `date`: month of year (monthly, quarterly), day of year (daily,
/// weekly) and day of week (daily), each as `(sin, cos)`; none for yearly data.
pub fn calendar_features(date: NaiveDate, frequency: Frequency) -> Vec<f64> {
    let cyc = |v: f64, n: f64| [(2.0 * PI * v / n).sin(), (2.0 * PI * v / n).cos()];
    let mut out = Vec::with_capacity(4);
    match frequency {
        Frequency::Months(m) if m < 12 => out.extend(cyc(date.month0() as f64, 12.0)),
        Frequency::Months(_) => {}
        Frequency::Days(d) => {
            out.extend(cyc(date.ordinal0() as f64, 365.25));
            if d == 1 {
                out.extend(cyc(date.weekday().num_days_from_monday() as f64, 7.0));
            }
        }
    }
    out
}

/// Which columns of a CSV file make the series.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The columns to forecast (at least one).
    pub targets: Vec<String>,
    /// The date column, if any: `YYYY-MM-DD`, `YYYYMMDD`, `YYYY-MM`, `YYYY/MM/DD`, or a year.
    pub date: Option<String>,
    /// The column naming the series a row belongs to, for several series in one file.
    pub id: Option<String>,
    /// Other numeric columns, used as inputs over the lookback window.
    pub covariates: Vec<String>,
    /// What to do with missing values and gaps.
    pub fill: Fill,
}

/// The id of the one series of a file without an id column.
pub const SINGLE: &str = "series";

/// One series: its dates (if the file has a date column), its target and covariate values.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The series id ([`SINGLE`] when there is no id column).
    pub id: String,
    /// One date per step, when the file has a date column.
    pub dates: Option<Vec<NaiveDate>>,
    /// `[target][t]`.
    pub targets: Vec<Vec<f64>>,
    /// `[covariate][t]`.
    pub covariates: Vec<Vec<f64>>,
    /// Values filled by the [`Fill`] policy (those of rows inserted for missing dates included).
    pub filled: usize,
    /// The file line of each step (0 for a row inserted for a missing date).
    pub lines: Vec<u64>,
}

impl Series {
    /// Steps.
    pub fn len(&self) -> usize {
        self.targets.first().map_or(0, Vec::len)
    }

    /// Whether the series has no step.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The series of one CSV file.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSeriesFile {
    /// Where it was read from (for messages).
    pub origin: String,
    /// The columns used.
    pub spec: ColumnSpec,
    /// The dates' spacing, when there is a date column.
    pub frequency: Option<Frequency>,
    /// The series, in the order their ids first appear.
    pub series: Vec<Series>,
}

fn bad(message: String, fix: impl Into<String>) -> Error {
    Error::data("time series", message, fix)
}

/// Whether a cell means "no value".
fn is_missing(cell: &str) -> bool {
    matches!(cell.trim().to_ascii_lowercase().as_str(), "" | "na" | "nan" | "null" | "n/a" | "?")
}

/// Parses a date cell: `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD`, `YYYY-MM` (the first of the month), or
/// a year of 1 to 4 digits (1 January).
pub fn parse_date(cell: &str) -> Option<NaiveDate> {
    let s = cell.trim();
    for format in ["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, format) {
            return Some(d);
        }
    }
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDate::parse_from_str(s, "%Y%m%d").ok();
    }
    if s.len() == 7 {
        return NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok();
    }
    if !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDate::from_ymd_opt(s.parse().ok()?, 1, 1);
    }
    None
}

/// The spacing the first two dates of each series show, which every later step must follow.
fn infer_frequency(a: NaiveDate, b: NaiveDate) -> Option<Frequency> {
    let months = (b.year() - a.year()) * 12 + b.month() as i32 - a.month() as i32;
    if a.day() == b.day() && months > 0 && (a.day() <= 28) {
        return Some(Frequency::Months(months as u32));
    }
    let days = (b - a).num_days();
    (days > 0).then_some(Frequency::Days(days))
}

/// Reads series from CSV text with a header row. `origin` names the file in messages.
pub fn read_csv(text: &str, origin: &str, spec: &ColumnSpec) -> Result<TimeSeriesFile> {
    if spec.targets.is_empty() {
        return Err(bad(format!("{origin}: no target column given"), "name the column(s) to forecast (--target COL)"));
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| bad(format!("{origin}: cannot read the header row ({e})"), "give a CSV file with a header row"))?
        .clone();
    let names: Vec<String> = headers.iter().map(|h| h.trim().to_string()).collect();
    let find = |col: &str| -> Result<usize> {
        names.iter().position(|h| h == col).ok_or_else(|| {
            bad(
                format!("{origin}: there is no column {col:?}; the header has {names:?}"),
                "name a column of the header",
            )
        })
    };
    let targets: Vec<usize> = spec.targets.iter().map(|c| find(c)).collect::<Result<_>>()?;
    let covariates: Vec<usize> = spec.covariates.iter().map(|c| find(c)).collect::<Result<_>>()?;
    let date = spec.date.as_deref().map(find).transpose()?;
    let id = spec.id.as_deref().map(find).transpose()?;
    let numeric: Vec<(usize, &String)> = targets
        .iter()
        .zip(&spec.targets)
        .chain(covariates.iter().zip(&spec.covariates))
        .map(|(&i, n)| (i, n))
        .collect();

    struct Raw {
        dates: Vec<NaiveDate>,
        values: Vec<Vec<f64>>,
        lines: Vec<u64>,
    }
    let mut order: Vec<String> = Vec::new();
    let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            bad(format!("{origin} line {line}: {e}"), "give every row as many cells as the header")
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let key = match id {
            Some(i) => record.get(i).unwrap_or_default().trim().to_string(),
            None => SINGLE.to_string(),
        };
        if !raw.contains_key(&key) {
            order.push(key.clone());
            raw.insert(
                key.clone(),
                Raw { dates: Vec::new(), values: vec![Vec::new(); numeric.len()], lines: Vec::new() },
            );
        }
        let entry = raw.get_mut(&key).ok_or_else(|| bad(format!("{origin}: lost series {key:?}"), "report this"))?;
        if let Some(di) = date {
            let cell = record.get(di).unwrap_or_default();
            let name = &names[di];
            let d = parse_date(cell).ok_or_else(|| {
                bad(
                    format!("{origin} line {line} column {name:?}: cannot read {cell:?} as a date"),
                    "write dates as YYYY-MM-DD, YYYYMMDD, YYYY-MM or a year",
                )
            })?;
            if let Some(&prev) = entry.dates.last() {
                if d <= prev {
                    return Err(bad(
                        format!(
                            "{origin} line {line} column {name:?}: date {d} is not after the previous row's {prev}"
                        ),
                        "sort the rows by date and remove repeated dates",
                    ));
                }
            }
            entry.dates.push(d);
        }
        for (k, &(ci, name)) in numeric.iter().enumerate() {
            let cell = record.get(ci).unwrap_or_default();
            let v = if is_missing(cell) {
                if spec.fill == Fill::Error {
                    return Err(bad(
                        format!("{origin} line {line} column {name:?}: the value is missing"),
                        "fill the cell, or pass --fill previous or --fill linear",
                    ));
                }
                f64::NAN
            } else {
                match cell.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => v,
                    _ => {
                        return Err(bad(
                            format!("{origin} line {line} column {name:?}: cannot read {cell:?} as a number"),
                            "write plain decimal numbers (an empty cell is a missing value)",
                        ))
                    }
                }
            };
            entry.values[k].push(v);
        }
        entry.lines.push(line);
    }
    if order.is_empty() {
        return Err(bad(format!("{origin}: the file has a header but no row"), "give at least one row of data"));
    }

    let mut frequency: Option<Frequency> = None;
    let mut series = Vec::with_capacity(order.len());
    for key in order {
        let Some(mut r) = raw.remove(&key) else { continue };
        let mut dates_out = None;
        if date.is_some() && r.dates.len() >= 2 {
            let dname = spec.date.as_deref().unwrap_or_default();
            let f = match frequency {
                Some(f) => f,
                None => {
                    let f = infer_frequency(r.dates[0], r.dates[1]).ok_or_else(|| {
                        bad(format!("{origin}: cannot tell the dates' spacing"), "give dates in increasing order")
                    })?;
                    frequency = Some(f);
                    f
                }
            };
            // Walk the dates; insert rows for missing dates when filling, refuse otherwise.
            let mut dates = vec![r.dates[0]];
            let mut values: Vec<Vec<f64>> = r.values.iter().map(|v| vec![v[0]]).collect();
            let mut lines = vec![r.lines[0]];
            for t in 1..r.dates.len() {
                let mut expected = f.next(*dates.last().unwrap_or(&r.dates[0]));
                while expected.is_some_and(|e| e < r.dates[t]) {
                    if spec.fill == Fill::Error {
                        return Err(bad(
                            format!(
                                "{origin} line {} column {dname:?}: date {} follows {} but the series is {} (expected {})",
                                r.lines[t],
                                r.dates[t],
                                dates.last().copied().unwrap_or(r.dates[0]),
                                f.describe(),
                                expected.map(|e| e.to_string()).unwrap_or_default()
                            ),
                            "add the missing rows, or pass --fill previous or --fill linear to fill the gap",
                        ));
                    }
                    let e = expected.unwrap_or(r.dates[t]);
                    dates.push(e);
                    for v in &mut values {
                        v.push(f64::NAN);
                    }
                    lines.push(0);
                    expected = f.next(e);
                }
                if expected != Some(r.dates[t]) {
                    return Err(bad(
                        format!(
                            "{origin} line {} column {dname:?}: date {} does not fall on the series' {} steps (expected {})",
                            r.lines[t],
                            r.dates[t],
                            f.describe(),
                            expected.map(|e| e.to_string()).unwrap_or_default()
                        ),
                        "give one row per step of a regular series",
                    ));
                }
                dates.push(r.dates[t]);
                for (v, src) in values.iter_mut().zip(&r.values) {
                    v.push(src[t]);
                }
                lines.push(r.lines[t]);
            }
            r.values = values;
            r.lines = lines;
            dates_out = Some(dates);
        } else if date.is_some() {
            dates_out = Some(r.dates.clone());
        }
        let mut filled = 0;
        for (k, v) in r.values.iter_mut().enumerate() {
            let missing = v.iter().filter(|x| x.is_nan()).count();
            if missing == v.len() {
                return Err(bad(
                    format!("{origin}: column {:?} of series {key:?} has no value at all", numeric[k].1),
                    "give at least one value",
                ));
            }
            filled += missing;
            fill_in(v, spec.fill);
        }
        let n_targets = targets.len();
        let covs = r.values.split_off(n_targets);
        series.push(Series { id: key, dates: dates_out, targets: r.values, covariates: covs, filled, lines: r.lines });
    }
    Ok(TimeSeriesFile { origin: origin.to_string(), spec: spec.clone(), frequency, series })
}

/// Fills the NaNs of `v` by `fill` (which must not be [`Fill::Error`]; `v` has a known value).
fn fill_in(v: &mut [f64], fill: Fill) {
    let known: Vec<usize> = (0..v.len()).filter(|&i| !v[i].is_nan()).collect();
    let Some(&first) = known.first() else { return };
    for i in 0..first {
        v[i] = v[first];
    }
    for w in known.windows(2) {
        let (a, b) = (w[0], w[1]);
        for i in a + 1..b {
            v[i] = match fill {
                Fill::Linear => v[a] + (v[b] - v[a]) * (i - a) as f64 / (b - a) as f64,
                _ => v[a],
            };
        }
    }
    let last = known[known.len() - 1];
    for i in last + 1..v.len() {
        v[i] = v[last];
    }
}

/// How values are scaled before the model sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleKind {
    /// `(x - mean) / std` (the default).
    #[default]
    Standard,
    /// `(x - min) / (max - min)`.
    MinMax,
    /// Unchanged.
    None,
}

/// A fitted affine scaler, after an optional natural log: `y = (ln? x - shift) / scale`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    /// Take the natural log first.
    pub log: bool,
    /// Subtracted (after the log).
    pub shift: f64,
    /// Divided by.
    pub scale: f64,
}

impl Scaler {
    /// Fits on `values` (the training part only); `what` names them in errors. A log scaler needs
    /// positive values; a constant series gets scale 1.
    pub fn fit(values: &[f64], kind: ScaleKind, log: bool, what: &str) -> Result<Self> {
        if values.is_empty() {
            return Err(bad(format!("{what}: no value to fit a scaler on"), "give a longer training part"));
        }
        if log {
            if let Some(v) = values.iter().find(|&&v| v <= 0.0) {
                return Err(bad(
                    format!("{what}: log scaling needs positive values, found {v}"),
                    "drop --log, or shift the series to be positive",
                ));
            }
        }
        let xs: Vec<f64> = values.iter().map(|&v| if log { v.ln() } else { v }).collect();
        let n = xs.len() as f64;
        let (shift, scale) = match kind {
            ScaleKind::None => (0.0, 1.0),
            ScaleKind::Standard => {
                let mean = xs.iter().sum::<f64>() / n;
                let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                (mean, var.sqrt())
            }
            ScaleKind::MinMax => {
                let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (min, max - min)
            }
        };
        let scale = if scale > 1e-12 && scale.is_finite() { scale } else { 1.0 };
        Ok(Self { log, shift, scale })
    }

    /// Scales one value (a non-positive value under a log scaler gives a very negative one, not NaN).
    pub fn transform(&self, x: f64) -> f64 {
        let x = if self.log { x.max(1e-12).ln() } else { x };
        (x - self.shift) / self.scale
    }

    /// Undoes [`Scaler::transform`].
    pub fn inverse(&self, y: f64) -> f64 {
        let x = y * self.scale + self.shift;
        if self.log {
            x.exp()
        } else {
            x
        }
    }
}

/// The season length of `values` by autocorrelation of their first differences: the lag in
/// `2..=max_lag` of the first local peak of the autocorrelation above 0.3 that is at least 0.8 of
/// the highest such peak (a multiple of the period peaks too); 1 when there is none.
pub fn detect_period(values: &[f64], max_lag: usize) -> usize {
    let d: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
    let n = d.len();
    if n < 8 {
        return 1;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let var: f64 = d.iter().map(|x| (x - mean).powi(2)).sum();
    if var <= 0.0 {
        return 1;
    }
    let acf = |lag: usize| -> f64 { (lag..n).map(|t| (d[t] - mean) * (d[t - lag] - mean)).sum::<f64>() / var };
    let max_lag = max_lag.min(n / 2);
    let values: Vec<f64> = (0..=max_lag + 1).map(|l| if l < 2 { 1.0 } else { acf(l) }).collect();
    let peaks: Vec<(usize, f64)> = (2..=max_lag)
        .filter(|&lag| {
            let v = values[lag];
            v > 0.3 && v >= values[lag - 1] && (lag + 1 >= values.len() || v >= values[lag + 1])
        })
        .map(|lag| (lag, values[lag]))
        .collect();
    // The shortest season among the strong peaks: a multiple of the period peaks too.
    let top = peaks.iter().map(|p| p.1).fold(0.0, f64::max);
    peaks.iter().find(|p| p.1 >= 0.8 * top).map_or(1, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(targets: &[&str], date: Option<&str>, fill: Fill) -> ColumnSpec {
        ColumnSpec {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            date: date.map(str::to_string),
            fill,
            ..ColumnSpec::default()
        }
    }

    #[test]
    fn reads_dates_values_and_frequency() {
        let text = "Date,y,x\n1949-01,112,1\n1949-02,118,2\n1949-03,132,3\n";
        let mut s = spec(&["y"], Some("Date"), Fill::Error);
        s.covariates = vec!["x".into()];
        let f = read_csv(text, "a.csv", &s).unwrap();
        assert_eq!(f.frequency, Some(Frequency::Months(1)));
        assert_eq!(f.series[0].targets, vec![vec![112.0, 118.0, 132.0]]);
        assert_eq!(f.series[0].covariates, vec![vec![1.0, 2.0, 3.0]]);
        assert_eq!(f.series[0].dates.as_ref().unwrap()[2], NaiveDate::from_ymd_opt(1949, 3, 1).unwrap());
        let weekly = read_csv("d,y\n19580329,1\n19580405,2\n", "w.csv", &spec(&["y"], Some("d"), Fill::Error)).unwrap();
        assert_eq!(weekly.frequency, Some(Frequency::Days(7)));
        let yearly = read_csv("year,y\n1871,1\n1872,2\n", "n.csv", &spec(&["y"], Some("year"), Fill::Error)).unwrap();
        assert_eq!(yearly.frequency, Some(Frequency::Months(12)));
        assert_eq!(Frequency::Months(12).calendar_size(), 0);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let s = spec(&["y"], Some("d"), Fill::Error);
        let e = read_csv("d,y\n2000-01,1\n2000-02,\n", "f.csv", &s).unwrap_err().to_string();
        assert!(e.contains("f.csv line 3 column \"y\"") && e.contains("missing"), "{e}");
        let e = read_csv("d,y\n2000-01,1\n2000-02,abc\n", "f.csv", &s).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("\"abc\""), "{e}");
        let e = read_csv("d,y\n2000-01,1\n2000-0x,2\n", "f.csv", &s).unwrap_err().to_string();
        assert!(e.contains("line 3 column \"d\"") && e.contains("date"), "{e}");
        let e = read_csv("d,y\n2000-01,1\n2000-02,2\n2000-04,3\n", "f.csv", &s).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("monthly") && e.contains("--fill"), "{e}");
        let e = read_csv("d,y\n2000-02,1\n2000-01,2\n", "f.csv", &s).unwrap_err().to_string();
        assert!(e.contains("not after"), "{e}");
        let e = read_csv("d,y\n2000-01,1\n", "f.csv", &spec(&["z"], None, Fill::Error)).unwrap_err().to_string();
        assert!(e.contains("no column \"z\""), "{e}");
    }

    #[test]
    fn fill_policies_fill_values_and_gaps() {
        let text = "d,y\n2000-01,1\n2000-02,\n2000-03,5\n2000-05,9\n";
        let lin = read_csv(text, "f", &spec(&["y"], Some("d"), Fill::Linear)).unwrap();
        assert_eq!(lin.series[0].targets[0], vec![1.0, 3.0, 5.0, 7.0, 9.0]);
        assert_eq!(lin.series[0].filled, 2);
        let prev = read_csv(text, "f", &spec(&["y"], Some("d"), Fill::Previous)).unwrap();
        assert_eq!(prev.series[0].targets[0], vec![1.0, 1.0, 5.0, 5.0, 9.0]);
    }

    #[test]
    fn series_ids_split_the_rows() {
        let mut s = spec(&["y"], None, Fill::Error);
        s.id = Some("id".into());
        let f = read_csv("id,y\nb,1\na,2\nb,3\n", "f", &s).unwrap();
        assert_eq!(f.series.len(), 2);
        assert_eq!((f.series[0].id.as_str(), &f.series[0].targets[0]), ("b", &vec![1.0, 3.0]));
        assert_eq!(f.series[1].targets[0], vec![2.0]);
    }

    #[test]
    fn scalers_round_trip_and_fit_on_what_they_are_given() {
        let s = Scaler::fit(&[1.0, 3.0], ScaleKind::Standard, false, "t").unwrap();
        assert_eq!((s.shift, s.scale), (2.0, 1.0));
        assert_eq!(s.transform(5.0), 3.0);
        let m = Scaler::fit(&[2.0, 6.0, 4.0], ScaleKind::MinMax, false, "t").unwrap();
        assert_eq!((m.transform(2.0), m.transform(6.0)), (0.0, 1.0));
        let l = Scaler::fit(&[1.0, std::f64::consts::E.powi(2)], ScaleKind::Standard, true, "t").unwrap();
        assert!((l.shift - 1.0).abs() < 1e-12 && (l.scale - 1.0).abs() < 1e-12);
        assert!((l.inverse(l.transform(7.5)) - 7.5).abs() < 1e-9);
        assert!(Scaler::fit(&[1.0, 0.0], ScaleKind::Standard, true, "t").is_err());
        assert_eq!(Scaler::fit(&[4.0, 4.0], ScaleKind::Standard, false, "t").unwrap().scale, 1.0);
    }

    #[test]
    fn calendar_features_are_cyclic() {
        let jan = calendar_features(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(), Frequency::Months(1));
        assert!((jan[0] - 0.0).abs() < 1e-12 && (jan[1] - 1.0).abs() < 1e-12);
        let apr = calendar_features(NaiveDate::from_ymd_opt(2000, 4, 1).unwrap(), Frequency::Months(1));
        assert!((apr[0] - 1.0).abs() < 1e-12 && apr[1].abs() < 1e-12);
        assert_eq!(calendar_features(NaiveDate::from_ymd_opt(2000, 4, 1).unwrap(), Frequency::Days(1)).len(), 4);
    }

    #[test]
    fn detects_a_seasonal_period() {
        let v: Vec<f64> = (0..120).map(|t| t as f64 * 0.1 + (2.0 * PI * t as f64 / 12.0).sin()).collect();
        assert_eq!(detect_period(&v, 40), 12);
        let line: Vec<f64> = (0..50).map(|t| 2.0 * t as f64).collect();
        assert_eq!(detect_period(&line, 20), 1);
        assert_eq!(detect_period(&[1.0, 2.0], 20), 1);
    }
}
