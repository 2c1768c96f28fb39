//! The forecasts every model must beat: naive (the last value), seasonal naive (the value one
//! season back), drift (the line from the first value to the last) and mean (of the history).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A baseline forecasting method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// `ŷ[T+h] = y[T]`.
    Naive,
    /// `ŷ[T+h] = y[T + h - m·(⌊(h-1)/m⌋ + 1)]`, the value of the same season in the last full one.
    SeasonalNaive(usize),
    /// `ŷ[T+h] = y[T] + h·(y[T] - y[1]) / (T - 1)`.
    Drift,
    /// `ŷ[T+h] = mean(y[1..=T])`.
    Mean,
}

impl Baseline {
    /// Naive, seasonal naive of `period` (left out when the period is 1), drift, mean.
    pub fn all(period: usize) -> Vec<Baseline> {
        let mut all = vec![Baseline::Naive];
        if period > 1 {
            all.push(Baseline::SeasonalNaive(period));
        }
        all.extend([Baseline::Drift, Baseline::Mean]);
        all
    }

    /// `naive`, `seasonal_naive`, `drift`, `mean`.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Naive => "naive",
            Baseline::SeasonalNaive(_) => "seasonal_naive",
            Baseline::Drift => "drift",
            Baseline::Mean => "mean",
        }
    }

    /// The next `horizon` values after `history` (the values up to the forecast origin).
    pub fn forecast(self, history: &[f64], horizon: usize) -> Result<Vec<f64>> {
        let n = history.len();
        let need = match self {
            Baseline::SeasonalNaive(m) => m.max(1),
            _ => 1,
        };
        if n < need {
            return Err(Error::data(
                "baseline forecast",
                format!("{} needs at least {need} past values, got {n}", self.name()),
                "start the forecasts later in the series",
            ));
        }
        let last = history[n - 1];
        Ok(match self {
            Baseline::Naive => vec![last; horizon],
            Baseline::SeasonalNaive(m) => {
                let m = m.max(1);
                (1..=horizon).map(|h| history[n - m + (h - 1) % m]).collect()
            }
            Baseline::Drift => {
                let slope = if n > 1 { (last - history[0]) / (n - 1) as f64 } else { 0.0 };
                (1..=horizon).map(|h| last + h as f64 * slope).collect()
            }
            Baseline::Mean => {
                let mean = history.iter().sum::<f64>() / n as f64;
                vec![mean; horizon]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// History [1, 2, 3, 4, 10, 6], horizon 4, worked by hand.
    #[test]
    fn baselines_match_hand_derived_forecasts() {
        let y = [1.0, 2.0, 3.0, 4.0, 10.0, 6.0];
        assert_eq!(Baseline::Naive.forecast(&y, 3).unwrap(), vec![6.0; 3]);
        // Period 4: the last season is [3, 4, 10, 6], repeated.
        assert_eq!(Baseline::SeasonalNaive(4).forecast(&y, 5).unwrap(), vec![3.0, 4.0, 10.0, 6.0, 3.0]);
        // Slope (6 - 1) / 5 = 1.
        assert_eq!(Baseline::Drift.forecast(&y, 3).unwrap(), vec![7.0, 8.0, 9.0]);
        // Mean 26 / 6.
        assert_eq!(Baseline::Mean.forecast(&y, 2).unwrap(), vec![26.0 / 6.0; 2]);
        assert_eq!(Baseline::SeasonalNaive(1).forecast(&y, 2).unwrap(), vec![6.0; 2]);
        assert!(Baseline::SeasonalNaive(12).forecast(&y, 2).is_err());
        assert!(Baseline::Naive.forecast(&[], 2).is_err());
        assert_eq!(Baseline::Drift.forecast(&[5.0], 2).unwrap(), vec![5.0; 2]);
        let names: Vec<&str> = Baseline::all(12).iter().map(|b| b.name()).collect();
        assert_eq!(names, ["naive", "seasonal_naive", "drift", "mean"]);
        assert_eq!(Baseline::all(1).len(), 3);
    }
}
