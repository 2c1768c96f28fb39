//! [`CoreConfig`]: everything that describes a layer stack, its validation (R1–R5) and
//! PyTorch's `extra_repr`; the size checks and Python-style formatting the layers share.

use std::fmt;

use crate::ops::recurrent::CellKind;
use crate::{Error, Result};

/// Everything that describes a layer stack, whatever its cell type.
#[derive(Clone, Debug)]
pub(crate) struct CoreConfig {
    pub(crate) name: &'static str,
    pub(crate) kind: CellKind,
    pub(crate) input_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) num_layers: usize,
    pub(crate) bias: bool,
    pub(crate) batch_first: bool,
    pub(crate) dropout: f64,
    pub(crate) bidirectional: bool,
    pub(crate) proj_size: usize,
    pub(crate) seed: u64,
}

impl CoreConfig {
    pub(super) fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// `H_out`: the size of `h` (the projection size when projecting).
    pub(crate) fn output_hidden(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Checks R1–R5 and returns the warnings PyTorch would print.
    pub(super) fn validate(&self) -> Result<Vec<String>> {
        let name = self.name;
        for (field, value) in
            [("input_size", self.input_size), ("hidden_size", self.hidden_size), ("num_layers", self.num_layers)]
        {
            if value == 0 {
                return Err(Error::config(
                    name,
                    format!("{field} must be greater than zero"),
                    format!("set {field} to a positive number"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::config(
                name,
                format!(
                    "dropout should be a number in range [0, 1] representing the probability of an element being \
                     zeroed, got {}",
                    self.dropout
                ),
                "pass a dropout probability between 0.0 and 1.0",
            ));
        }
        if self.proj_size > 0 && self.proj_size >= self.hidden_size {
            return Err(Error::config(
                name,
                format!(
                    "proj_size has to be smaller than hidden_size, got proj_size={} and hidden_size={}",
                    self.proj_size, self.hidden_size
                ),
                "pick proj_size below hidden_size, or 0 for no projection",
            ));
        }
        // R5: every size product the layer will compute must fit in usize.
        let gh = checked(name, &[self.kind.gates(), self.hidden_size])?;
        let widest_input = self.input_size.max(self.directions() * self.output_hidden());
        checked(name, &[gh, widest_input + self.output_hidden() + 2])?;
        checked(name, &[gh, widest_input, self.num_layers, self.directions()])?;
        checked(name, &[self.output_hidden(), self.hidden_size])?;
        // The largest parameter, in bytes of the widest supported dtype, must be allocatable.
        checked_bytes(name, &[gh, widest_input.max(self.output_hidden())])?;
        let mut warnings = Vec::new();
        if self.dropout > 0.0 && self.num_layers == 1 {
            warnings.push(format!(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects \
                 num_layers greater than 1, but got dropout={} and num_layers={}",
                py_float(self.dropout),
                self.num_layers
            ));
        }
        Ok(warnings)
    }
}

/// The product of `factors`, or an error if it overflows `usize`.
pub(crate) fn checked(layer: &'static str, factors: &[usize]) -> Result<usize> {
    factors.iter().try_fold(1usize, |acc, &f| acc.checked_mul(f)).ok_or_else(|| {
        Error::config(
            layer,
            format!("the sizes {factors:?} multiply to more than usize::MAX"),
            "use sizes whose products fit in memory",
        )
    })
}

/// Like [`checked`], and the product times 8 bytes (an f64) must not exceed `isize::MAX`, the
/// most any allocation can hold.
pub(crate) fn checked_bytes(layer: &'static str, factors: &[usize]) -> Result<usize> {
    let elements = checked(layer, factors)?;
    match elements.checked_mul(8) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(elements),
        _ => Err(Error::config(
            layer,
            format!("the sizes {factors:?} make a tensor of {elements} elements, more than memory can address"),
            "use sizes whose products fit in memory",
        )),
    }
}

/// Formats a float like Python's `repr` does for the values a config holds (`1.0`, `0.25`).
pub(crate) fn py_float(v: f64) -> String {
    if v.fract() == 0.0 && v.is_finite() {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// PyTorch's `True`/`False`.
pub(crate) fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

impl fmt::Display for CoreConfig {
    /// PyTorch's `extra_repr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}, {}", self.name, self.input_size, self.hidden_size)?;
        if self.proj_size != 0 {
            write!(f, ", proj_size={}", self.proj_size)?;
        }
        if self.num_layers != 1 {
            write!(f, ", num_layers={}", self.num_layers)?;
        }
        if !self.bias {
            write!(f, ", bias={}", py_bool(self.bias))?;
        }
        if self.batch_first {
            write!(f, ", batch_first={}", py_bool(self.batch_first))?;
        }
        if self.dropout != 0.0 {
            write!(f, ", dropout={}", py_float(self.dropout))?;
        }
        if self.bidirectional {
            write!(f, ", bidirectional={}", py_bool(self.bidirectional))?;
        }
        f.write_str(")")
    }
}
