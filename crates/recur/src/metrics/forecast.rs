//! Forecast accuracy: MAE, RMSE, MASE (errors scaled by the in-sample seasonal naive forecast's
//! mean absolute error), sMAPE (in percent, 0–200) and the coverage of prediction intervals,
//! pooled over every origin, horizon step and series they are given.

use serde::{Deserialize, Serialize};

/// The MASE scale of a training part: the mean absolute error of the one-step seasonal naive
/// forecast `y[t - period]` over it (`period` 1: the naive forecast). `None` when the part is
/// not longer than the period or the series never changes.
pub fn mase_scale(train: &[f64], period: usize) -> Option<f64> {
    let m = period.max(1);
    if train.len() <= m {
        return None;
    }
    let scale = (m..train.len()).map(|t| (train[t] - train[t - m]).abs()).sum::<f64>() / (train.len() - m) as f64;
    (scale > 0.0 && scale.is_finite()).then_some(scale)
}

/// Running sums of forecast errors; [`ForecastScores::summary`] gives the metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForecastScores {
    count: usize,
    abs: f64,
    sq: f64,
    scaled: f64,
    smape: f64,
    intervals: usize,
    covered: usize,
}

/// The metrics of a [`ForecastScores`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastSummary {
    /// Forecast values scored.
    pub count: usize,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error over the in-sample seasonal naive one's.
    pub mase: f64,
    /// Symmetric mean absolute percentage error, `200 |y - f| / (|y| + |f|)` (0 where both are 0).
    pub smape: f64,
    /// The share of actual values inside their prediction interval (`None` without intervals).
    pub coverage: Option<f64>,
}

impl ForecastScores {
    /// Adds one forecast of `actual`, its MASE `scale` and its interval, if any.
    pub fn add(&mut self, actual: f64, forecast: f64, scale: f64, interval: Option<(f64, f64)>) {
        let e = (actual - forecast).abs();
        self.count += 1;
        self.abs += e;
        self.sq += e * e;
        self.scaled += e / scale;
        let denom = actual.abs() + forecast.abs();
        self.smape += if denom > 0.0 { 200.0 * e / denom } else { 0.0 };
        if let Some((lo, hi)) = interval {
            self.intervals += 1;
            if lo <= actual && actual <= hi {
                self.covered += 1;
            }
        }
    }

    /// Values added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The metrics (`None` before any value).
    pub fn summary(&self) -> Option<ForecastSummary> {
        (self.count > 0).then(|| {
            let n = self.count as f64;
            ForecastSummary {
                count: self.count,
                mae: self.abs / n,
                rmse: (self.sq / n).sqrt(),
                mase: self.scaled / n,
                smape: self.smape / n,
                coverage: (self.intervals > 0).then(|| self.covered as f64 / self.intervals as f64),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked by hand: actual [10, 20], forecast [12, 14], scale 2, intervals [9, 11] and
    /// [21, 25]. Errors 2 and 6: MAE 4, RMSE sqrt((4 + 36) / 2) = sqrt(20), MASE (1 + 3) / 2 = 2,
    /// sMAPE (200·2/22 + 200·6/34) / 2; coverage 1/2 (10 lies in [9, 11], 20 not in [21, 25]).
    #[test]
    fn metrics_match_hand_derived_values() {
        let mut s = ForecastScores::default();
        s.add(10.0, 12.0, 2.0, Some((9.0, 11.0)));
        s.add(20.0, 14.0, 2.0, Some((21.0, 25.0)));
        let m = s.summary().unwrap();
        assert_eq!(m.count, 2);
        assert!((m.mae - 4.0).abs() < 1e-12);
        assert!((m.rmse - 20f64.sqrt()).abs() < 1e-12);
        assert!((m.mase - 2.0).abs() < 1e-12);
        assert!((m.smape - (200.0 * 2.0 / 22.0 + 200.0 * 6.0 / 34.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.coverage, Some(0.5));
        assert!(ForecastScores::default().summary().is_none());
        let mut z = ForecastScores::default();
        z.add(0.0, 0.0, 1.0, None);
        assert_eq!((z.summary().unwrap().smape, z.summary().unwrap().coverage), (0.0, None));
    }

    /// [1, 3, 2, 4, 6]: seasonal naive with period 2 errors |2-1|, |4-3|, |6-2| → 6/3 = 2; naive
    /// |2|, |1|, |2|, |2| → 7/4.
    #[test]
    fn mase_scale_is_the_in_sample_seasonal_naive_error() {
        let y = [1.0, 3.0, 2.0, 4.0, 6.0];
        assert_eq!(mase_scale(&y, 2), Some(2.0));
        assert_eq!(mase_scale(&y, 1), Some(1.75));
        assert_eq!(mase_scale(&y, 0), Some(1.75));
        assert_eq!(mase_scale(&y[..2], 2), None);
        assert_eq!(mase_scale(&[5.0; 4], 1), None);
    }
}
