//! Pretrained word vectors in the text formats people download them in: GloVe's (`word v1 v2
//! …` per line) and word2vec's text format (the same after a `count dim` header line), to start
//! an embedding from.

use std::collections::HashMap;

use crate::data::labelled::TokenVocab;
use crate::{Error, Result};

/// Word vectors of one dimension.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WordVectors {
    /// Numbers per vector.
    pub dim: usize,
    /// Each word's vector (the first occurrence wins when a file repeats a word).
    pub vectors: HashMap<String, Vec<f32>>,
}

fn bad(origin: &str, line: usize, message: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::data("word vectors", format!("{origin}, line {line}: {}", message.into()), fix)
}

impl WordVectors {
    /// Reads GloVe or word2vec text; `origin` names the file in errors. Every vector must have
    /// the dimension of the first (or of the word2vec header) and hold finite numbers.
    pub fn from_text(content: &str, origin: &str) -> Result<Self> {
        let mut out = WordVectors::default();
        let mut declared: Option<(usize, usize)> = None;
        for (i, line) in content.lines().enumerate() {
            let line_no = i + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            if i == 0 && fields.len() == 2 {
                if let (Ok(count), Ok(dim)) = (fields[0].parse::<usize>(), fields[1].parse::<usize>()) {
                    declared = Some((count, dim));
                    out.dim = dim;
                    continue;
                }
            }
            if fields.len() < 2 {
                return Err(bad(origin, line_no, "a word without a vector", "write a word and its numbers per line"));
            }
            let values = fields[1..]
                .iter()
                .map(|f| f.parse::<f32>().ok().filter(|v| v.is_finite()))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| {
                    bad(origin, line_no, "a value that is not a finite number", "write plain decimal numbers")
                })?;
            if out.dim == 0 {
                out.dim = values.len();
            }
            if values.len() != out.dim {
                return Err(bad(
                    origin,
                    line_no,
                    format!("{} numbers, but the vectors have {}", values.len(), out.dim),
                    "give every word a vector of one dimension (a word with a space in it breaks a line into more fields)",
                ));
            }
            out.vectors.entry(fields[0].to_string()).or_insert(values);
        }
        if out.vectors.is_empty() {
            return Err(Error::data(
                "word vectors",
                format!("{origin} holds no vector"),
                "pass a GloVe or word2vec text file",
            ));
        }
        if let Some((count, _)) = declared {
            if count < out.vectors.len() {
                return Err(Error::data(
                    "word vectors",
                    format!("{origin} declares {count} vectors but holds {}", out.vectors.len()),
                    "fix the word2vec header line (count dim)",
                ));
            }
        }
        Ok(out)
    }

    /// The rows of an embedding table for `vocab`: `(id, vector)` for each of its tokens with a
    /// vector here (`<pad>` and `<unk>` have none).
    pub fn rows_for(&self, vocab: &TokenVocab) -> Vec<(usize, &[f32])> {
        vocab
            .tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| self.vectors.get(t).map(|v| (i + 2, v.as_slice())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Tokenize;

    #[test]
    fn glove_and_word2vec_text_read_the_same() {
        let glove = WordVectors::from_text("the 0.5 -1\ncat 2 3e-1\n", "g.txt").unwrap();
        let w2v = WordVectors::from_text("2 2\nthe 0.5 -1\ncat 2 3e-1\n", "w.txt").unwrap();
        assert_eq!(glove, w2v);
        assert_eq!(glove.dim, 2);
        assert_eq!(glove.vectors["cat"], [2.0, 0.3]);
        let vocab = TokenVocab::from_tokens(Tokenize::Words, vec!["cat".into(), "dog".into(), "the".into()]);
        let rows = glove.rows_for(&vocab);
        assert_eq!(rows, [(2, &[2.0f32, 0.3][..]), (4, &[0.5f32, -1.0][..])]);
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, want) in [
            ("the 1 2\ncat 1\n", "line 2: 1 numbers, but the vectors have 2"),
            ("the 1 x\n", "line 1: a value that is not"),
            ("the 1 nan\n", "not a finite number"),
            ("the\n", "without a vector"),
            ("\n\n", "holds no vector"),
            ("1 2\nthe 1 2\ncat 3 4\n", "declares 1 vectors but holds 2"),
        ] {
            let e = WordVectors::from_text(text, "v.txt").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
