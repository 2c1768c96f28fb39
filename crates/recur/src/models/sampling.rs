//! Drawing the next token from logits: temperature, top-k, nucleus (top-p) or argmax.

use rand::Rng;

use crate::{Error, Result};

/// How [`sample`] picks a token from logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Logits are divided by it before the softmax: below 1 sharper, above 1 flatter (default 1).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (default: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (default: all).
    pub top_p: Option<f64>,
    /// Always take the most likely token (ignores the rest and the generator).
    pub argmax: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: None, top_p: None, argmax: false }
    }
}

impl Sampling {
    /// Checks the settings: temperature positive and finite, `top_k ≥ 1`, `0 < top_p ≤ 1`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::data(
                "sampling",
                format!("temperature must be a positive number, got {}", self.temperature),
                "use a temperature such as 0.8 (or argmax for the most likely character)",
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::data(
                "sampling",
                "top_k must be at least 1, got 0",
                "use top_k >= 1, or leave it unset",
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::data(
                    "sampling",
                    format!("top_p must be in (0, 1], got {p}"),
                    "use top_p such as 0.9, or leave it unset",
                ));
            }
        }
        Ok(())
    }
}

/// The index of the token drawn from `logits` (one per token) under `sampling`. Non-finite
/// logits are an error (a diverged model), not a silent pick.
pub fn sample<R: Rng + ?Sized>(logits: &[f32], sampling: &Sampling, rng: &mut R) -> Result<usize> {
    sampling.validate()?;
    if logits.is_empty() {
        return Err(Error::data("sampling", "no logits to sample from", "pass one logit per token"));
    }
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(Error::data(
            "sampling",
            format!("logit {i} is {}: the model's output is not finite", logits[i]),
            "check the checkpoint: training may have diverged",
        ));
    }
    // Most likely first; ties keep the lower index first (a total, reproducible order).
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if sampling.argmax {
        return Ok(order[0]);
    }
    let top = f64::from(logits[order[0]]);
    let mut probs: Vec<f64> =
        order.iter().map(|&i| ((f64::from(logits[i]) - top) / sampling.temperature).exp()).collect();
    let mut keep = probs.len();
    if let Some(k) = sampling.top_k {
        keep = keep.min(k);
    }
    let total: f64 = probs[..keep].iter().sum();
    if let Some(p) = sampling.top_p {
        let mut cumulative = 0.0;
        for (j, q) in probs[..keep].iter().enumerate() {
            cumulative += q / total;
            if cumulative >= p {
                keep = j + 1;
                break;
            }
        }
    }
    probs.truncate(keep);
    let total: f64 = probs.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (j, q) in probs.iter().enumerate() {
        if u < *q {
            return Ok(order[j]);
        }
        u -= q;
    }
    Ok(order[keep - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn counts(logits: &[f32], s: &Sampling, n: usize) -> Vec<usize> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[sample(logits, s, &mut rng).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn frequencies_follow_the_softmax_at_any_temperature() {
        let logits = [0.0f32, 1.0, 2.0];
        for t in [0.5, 1.0, 2.0] {
            let c = counts(&logits, &Sampling { temperature: t, ..Sampling::default() }, 20_000);
            let z: f64 = logits.iter().map(|&l| (f64::from(l) / t).exp()).sum();
            for (i, &l) in logits.iter().enumerate() {
                let want = (f64::from(l) / t).exp() / z;
                let got = c[i] as f64 / 20_000.0;
                assert!((got - want).abs() < 0.015, "T={t} token {i}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn top_k_top_p_and_argmax_cut_the_tail() {
        let logits = [3.0f32, 2.9, 0.0, -1.0];
        let k = counts(&logits, &Sampling { top_k: Some(2), ..Sampling::default() }, 5_000);
        assert!(k[2] == 0 && k[3] == 0 && k[0] > 0 && k[1] > 0, "{k:?}");
        // p(0) ≈ 0.50, p(1) ≈ 0.45: top_p 0.4 keeps only token 0, 0.9 keeps two.
        let p = counts(&logits, &Sampling { top_p: Some(0.4), ..Sampling::default() }, 1_000);
        assert_eq!(p, [1_000, 0, 0, 0]);
        let p = counts(&logits, &Sampling { top_p: Some(0.9), ..Sampling::default() }, 5_000);
        assert!(p[2] == 0 && p[3] == 0 && p[1] > 0, "{p:?}");
        let a = counts(&[1.0, 5.0, 5.0], &Sampling { argmax: true, ..Sampling::default() }, 10);
        assert_eq!(a, [0, 10, 0], "ties go to the lower index");
    }

    #[test]
    fn bad_settings_and_logits_are_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for bad in [
            Sampling { temperature: 0.0, ..Sampling::default() },
            Sampling { temperature: f64::NAN, ..Sampling::default() },
            Sampling { top_k: Some(0), ..Sampling::default() },
            Sampling { top_p: Some(0.0), ..Sampling::default() },
            Sampling { top_p: Some(1.5), ..Sampling::default() },
        ] {
            assert!(sample(&[0.0, 1.0], &bad, &mut rng).is_err(), "{bad:?}");
        }
        assert!(sample(&[0.0, f32::NAN], &Sampling::default(), &mut rng).unwrap_err().to_string().contains("NaN"));
        assert!(sample(&[], &Sampling::default(), &mut rng).is_err());
    }
}
