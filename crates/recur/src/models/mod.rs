//! Task models built from the layers: the character language model, and the pieces they share
//! (choosing a cell type at run time, sampling from logits).

mod char_lm;
mod char_lm_task;
mod classifier;
mod classifier_task;
mod forecast_baselines;
mod forecaster;
mod forecaster_task;
mod sampling;
mod tagger;
mod tagger_task;

pub use char_lm::{CharLm, CharLmConfig};
pub use char_lm_task::{
    load, load_char_lm, CharLmData, CharLmTraining, CharWindows, LoadedCharLm, LoadedModel, TextSource, CHAR_LM_TASK,
};
pub use classifier::{ClassifierConfig, Pooling, SequenceClassifier};
pub use classifier_task::{
    argmax, evaluate_classifier, load_classifier, predict, ClassBatch, ClassBatches, ClassifierData,
    ClassifierTraining, Encoded, Inputs, LoadedClassifier, CLASSIFY_TASK,
};
pub use forecast_baselines::Baseline;
pub use forecaster::{ForecastLoss, Forecaster, ForecasterConfig, Grid, ScaledForecast, QUANTILES, Z80};
pub use forecaster_task::{
    backtest, forecast, load_forecaster, BacktestReport, Forecast, ForecastBatch, ForecastData, ForecastOptions,
    ForecastWindows, ForecasterTraining, LoadedForecaster, MethodScore, Prepared, SeriesInfo, FORECAST_TASK,
};
pub use sampling::{sample, Sampling};
pub use tagger::{TagInput, Tagger, TaggerConfig};
pub use tagger_task::{
    evaluate_tagger, load_tagger, EncodedSentences, LoadedTagger, TagBatch, TagBatches, TaggerData, TaggerTraining,
    TAG_TASK,
};

use std::fmt;
use std::str::FromStr;

use candle_nn::VarBuilder;

use crate::nn::{Gru, GruConfig, Lstm, LstmConfig, Recurrent, Rnn, RnnConfig};
use crate::{Error, Result};

/// The recurrent cell of a task model, chosen at run time (`"lstm"`, `"gru"`, `"rnn"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellType {
    /// `nn.LSTM`.
    #[default]
    Lstm,
    /// `nn.GRU`.
    Gru,
    /// `nn.RNN` with tanh.
    Rnn,
}

impl CellType {
    /// All three, in this order: LSTM, GRU, RNN.
    pub const ALL: [CellType; 3] = [CellType::Lstm, CellType::Gru, CellType::Rnn];

    /// `"lstm"`, `"gru"` or `"rnn"`.
    pub fn name(self) -> &'static str {
        match self {
            CellType::Lstm => "lstm",
            CellType::Gru => "gru",
            CellType::Rnn => "rnn",
        }
    }

    /// Gates per hidden unit `G` (4, 3, 1).
    pub fn gates(self) -> usize {
        match self {
            CellType::Lstm => 4,
            CellType::Gru => 3,
            CellType::Rnn => 1,
        }
    }

    /// Parameters of a (unidirectional, biased) stack of this cell: `Σ_l G·H·(I_l + H + 2)`.
    pub fn parameter_count(self, input_size: usize, hidden_size: usize, num_layers: usize) -> usize {
        (0..num_layers)
            .map(|l| {
                let input = if l == 0 { input_size } else { hidden_size };
                self.gates() * hidden_size * (input + hidden_size + 2)
            })
            .sum()
    }

    /// A stack of this cell, batch-first, parameters under `vb` with PyTorch's names.
    pub fn build(
        self,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        dropout: f64,
        vb: VarBuilder,
    ) -> Result<Box<dyn Recurrent>> {
        Ok(match self {
            CellType::Lstm => Box::new(Lstm::new(
                LstmConfig { num_layers, dropout, batch_first: true, ..LstmConfig::new(input_size, hidden_size) },
                vb,
            )?),
            CellType::Gru => Box::new(Gru::new(
                GruConfig { num_layers, dropout, batch_first: true, ..GruConfig::new(input_size, hidden_size) },
                vb,
            )?),
            CellType::Rnn => Box::new(Rnn::new(
                RnnConfig { num_layers, dropout, batch_first: true, ..RnnConfig::new(input_size, hidden_size) },
                vb,
            )?),
        })
    }
}

impl fmt::Display for CellType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CellType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "lstm" => Ok(CellType::Lstm),
            "gru" => Ok(CellType::Gru),
            "rnn" => Ok(CellType::Rnn),
            other => Err(Error::config("cell", format!("unknown cell type {other:?}"), "use lstm, gru or rnn")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn parameter_count_matches_the_built_layer() {
        for cell in CellType::ALL {
            let varmap = candle_nn::VarMap::new();
            let vb = crate::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
            let layer = cell.build(5, 7, 2, 0.0, vb).expect("build");
            let count: usize = layer.weights().iter().map(|(_, t)| t.elem_count()).sum();
            assert_eq!(count, cell.parameter_count(5, 7, 2), "{cell}");
            assert_eq!(cell.name().parse::<CellType>().expect("parse"), cell);
        }
        assert!("LSTM".parse::<CellType>().is_ok());
        assert!("transformer".parse::<CellType>().is_err());
    }
}
