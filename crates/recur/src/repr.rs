//! PyTorch-style printing of composite models: what `print(model)` shows for an `nn.Module`.
//!
//! Recur's layers and cells already print like PyTorch (`LSTM(10, 20, num_layers=2)`); a model
//! built from them describes its tree once with [`ModuleRepr`] and gets PyTorch's layout:
//!
//! ```
//! use recur::repr::ModuleRepr;
//! let tree = ModuleRepr::new("SimpleRNN")
//!     .child("rnn", "RNN(10, 20, batch_first=True)")
//!     .child("fc", recur::repr::linear(20, 1, true));
//! assert_eq!(
//!     tree.to_string(),
//!     "SimpleRNN(\n  (rnn): RNN(10, 20, batch_first=True)\n  (fc): Linear(in_features=20, out_features=1, bias=True)\n)"
//! );
//! ```

use std::fmt;

/// A module as PyTorch prints it: a one-line leaf such as `GRU(8, 16)`, or a named node with
/// `(name): child` lines indented by two spaces and a closing parenthesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleRepr {
    /// A module printed on one line, e.g. `Linear(in_features=20, out_features=1, bias=True)`.
    Leaf(String),
    /// A module with children, e.g. `SimpleRNN(` … `)`.
    Node {
        /// The class name, e.g. `SimpleRNN`.
        name: String,
        /// `(key): child` in registration order.
        children: Vec<(String, ModuleRepr)>,
    },
}

impl ModuleRepr {
    /// A node named `name` with no children yet (PyTorch prints `Name()` for it).
    pub fn new(name: impl Into<String>) -> Self {
        ModuleRepr::Node { name: name.into(), children: Vec::new() }
    }

    /// A one-line module; anything that implements `Display` (Recur's layers and cells do).
    pub fn leaf(text: impl fmt::Display) -> Self {
        ModuleRepr::Leaf(text.to_string())
    }

    /// Adds `(key): child` below this node; a leaf becomes a node named after its text.
    pub fn child(self, key: impl Into<String>, child: impl Into<ModuleRepr>) -> Self {
        let (name, mut children) = match self {
            ModuleRepr::Leaf(text) => (text, Vec::new()),
            ModuleRepr::Node { name, children } => (name, children),
        };
        children.push((key.into(), child.into()));
        ModuleRepr::Node { name, children }
    }

    /// PyTorch's `nn.ModuleList`: children keyed `0`, `1`, … (printed one per line, as older
    /// PyTorch versions do, without folding repeats into `(1-2): 2 x …`).
    pub fn list<I, M>(items: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<ModuleRepr>,
    {
        items.into_iter().enumerate().fold(ModuleRepr::new("ModuleList"), |node, (i, m)| node.child(i.to_string(), m))
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        match self {
            ModuleRepr::Leaf(text) => f.write_str(text),
            ModuleRepr::Node { name, children } if children.is_empty() => write!(f, "{name}()"),
            ModuleRepr::Node { name, children } => {
                writeln!(f, "{name}(")?;
                for (key, child) in children {
                    write!(f, "{:width$}({key}): ", "", width = indent + 2)?;
                    child.write(f, indent + 2)?;
                    writeln!(f)?;
                }
                write!(f, "{:width$})", "", width = indent)
            }
        }
    }
}

impl fmt::Display for ModuleRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

impl From<&str> for ModuleRepr {
    fn from(text: &str) -> Self {
        ModuleRepr::Leaf(text.to_string())
    }
}

impl From<String> for ModuleRepr {
    fn from(text: String) -> Self {
        ModuleRepr::Leaf(text)
    }
}

macro_rules! leaf_from_display {
    ($($ty:ty),*) => {
        $(impl From<&$ty> for ModuleRepr {
            fn from(module: &$ty) -> Self {
                ModuleRepr::leaf(module)
            }
        })*
    };
}

leaf_from_display!(
    crate::Rnn,
    crate::Lstm,
    crate::Gru,
    crate::RnnCell,
    crate::LstmCell,
    crate::GruCell,
    dyn crate::Recurrent
);

impl From<&candle_nn::Linear> for ModuleRepr {
    /// `Linear(in_features=…, out_features=…, bias=…)` from the weight's shape.
    fn from(layer: &candle_nn::Linear) -> Self {
        let (out_features, in_features) = layer.weight().dims2().unwrap_or((0, 0));
        linear(in_features, out_features, layer.bias().is_some())
    }
}

impl From<&candle_nn::Embedding> for ModuleRepr {
    /// `Embedding(num_embeddings, embedding_dim)` from the table's shape.
    fn from(layer: &candle_nn::Embedding) -> Self {
        let (num, dim) = layer.embeddings().dims2().unwrap_or((0, 0));
        ModuleRepr::Leaf(format!("Embedding({num}, {dim})"))
    }
}

/// `Linear(in_features=…, out_features=…, bias=True)`, PyTorch's `nn.Linear` repr.
pub fn linear(in_features: usize, out_features: usize, bias: bool) -> ModuleRepr {
    let bias = if bias { "True" } else { "False" };
    ModuleRepr::Leaf(format!("Linear(in_features={in_features}, out_features={out_features}, bias={bias})"))
}

/// `Dropout(p=0.5, inplace=False)`, PyTorch's `nn.Dropout` repr.
pub fn dropout(p: f64) -> ModuleRepr {
    ModuleRepr::Leaf(format!("Dropout(p={p:?}, inplace=False)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_lists_print_like_pytorch() {
        let tree = ModuleRepr::new("MultiLayerRNNCell")
            .child("cells", ModuleRepr::list(["RNNCell(10, 20)", "RNNCell(20, 20)"]))
            .child("fc", linear(20, 1, true));
        assert_eq!(
            tree.to_string(),
            "MultiLayerRNNCell(\n  (cells): ModuleList(\n    (0): RNNCell(10, 20)\n    (1): RNNCell(20, 20)\n  )\n  \
             (fc): Linear(in_features=20, out_features=1, bias=True)\n)"
        );
        assert_eq!(ModuleRepr::new("Empty").to_string(), "Empty()");
        assert_eq!(dropout(0.5).to_string(), "Dropout(p=0.5, inplace=False)");
    }
}
