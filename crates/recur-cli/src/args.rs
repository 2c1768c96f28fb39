//! Flag values shared by the commands: durations, cell types, optimizer and schedule names.

use std::time::Duration;

use clap::ValueEnum;
use recur::models::CellType;

/// `--cell`: lstm, gru or rnn.
pub fn parse_cell(s: &str) -> Result<CellType, String> {
    s.parse().map_err(|e: recur::Error| e.to_string())
}

/// `90`, `90s`, `3m`, `1h`, `1.5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 3m or 1h"))?;
    let scale = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}; use s, m or h")),
    };
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("the duration must be positive, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// `--optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// Adam.
    Adam,
    /// AdamW, weight decay 0.01.
    Adamw,
    /// SGD, momentum 0.9.
    Sgd,
    /// RMSprop.
    Rmsprop,
    /// Adagrad.
    Adagrad,
}

/// `--lr-schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    /// The same rate throughout.
    Constant,
    /// A short warm-up, then a cosine down to a twentieth of the rate.
    Cosine,
    /// ×0.3 every third of the run.
    Step,
    /// Down to a tenth of the rate by the last step.
    Exponential,
    /// ×0.1 after 10 evaluations without improvement.
    Plateau,
}

/// The name a `ValueEnum` value goes by on the command line (and in the library).
pub fn name<T: ValueEnum>(value: &T) -> String {
    value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("soon").is_err());
    }

    /// Every name the flags accept is one the library builds.
    #[test]
    fn every_flag_name_is_a_library_name() {
        for o in OptimizerName::value_variants() {
            assert!(recur::train::OptimizerConfig::by_name(&name(o), 1e-3).is_ok(), "{o:?}");
        }
        for s in ScheduleName::value_variants() {
            assert!(recur::train::LrSchedule::by_name(&name(s), 100, 1e-3).is_ok(), "{s:?}");
        }
        assert_eq!(recur::train::OptimizerConfig::NAMES.len(), OptimizerName::value_variants().len());
        assert_eq!(recur::train::LrSchedule::NAMES.len(), ScheduleName::value_variants().len());
    }
}
