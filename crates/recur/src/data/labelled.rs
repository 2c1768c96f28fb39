//! Labelled texts for sequence classification: readers for the formats people keep them in
//! (one file per class, TSV/CSV with named columns, JSON lines), a token vocabulary (characters
//! or words, with a minimum count, a maximum size, `<pad>` and `<unk>`), and seeded stratified
//! splits.

use std::collections::{BTreeMap, HashMap};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Texts, each with a class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labelled {
    /// The examples.
    pub texts: Vec<String>,
    /// Each example's class, an index into `classes`.
    pub labels: Vec<usize>,
    /// The class names, sorted.
    pub classes: Vec<String>,
}

fn bad(origin: &str, line: usize, message: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::data("labelled data", format!("{origin}, line {line}: {}", message.into()), fix)
}

impl Labelled {
    /// Builds from `(text, class name)` pairs (classes sorted by name).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let classes: Vec<String> =
            pairs.iter().map(|(_, c)| c.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let labels = pairs.iter().map(|(_, c)| index[c.as_str()]).collect();
        let texts = pairs.into_iter().map(|(t, _)| t).collect();
        Self { texts, labels, classes }
    }

    /// One text per non-empty line of each `(class, content)` file (e.g. `female.txt`,
    /// `male.txt`); `origin` names a file in errors.
    pub fn from_class_files(files: &[(String, String)]) -> Result<Self> {
        let mut pairs = Vec::new();
        for (class, content) in files {
            let before = pairs.len();
            pairs.extend(
                content.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| (l.to_string(), class.clone())),
            );
            if pairs.len() == before {
                return Err(Error::data(
                    "labelled data",
                    format!("the file of class {class:?} holds no example"),
                    "put one example per line, or remove the file",
                ));
            }
        }
        Self::check_not_empty(Self::from_pairs(pairs), "the class files")
    }

    /// A TSV or CSV file with a header row: the texts from column `text_column`, the classes from
    /// `label_column`.
    pub fn from_delimited(
        content: &str,
        origin: &str,
        delimiter: u8,
        text_column: &str,
        label_column: &str,
    ) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).flexible(false).from_reader(content.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| {
                bad(origin, 1, format!("cannot read the header row ({e})"), "start the file with a header row")
            })?
            .clone();
        let column = |name: &str| {
            headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
                bad(
                    origin,
                    1,
                    format!("no column {name:?}; the columns are {:?}", headers.iter().collect::<Vec<_>>()),
                    "name the text and label columns with --text-column and --label-column",
                )
            })
        };
        let (t, l) = (column(text_column)?, column(label_column)?);
        let mut pairs = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record =
                record.map_err(|e| bad(origin, line, format!("{e}"), "give every row as many fields as the header"))?;
            let (text, label) = (record.get(t).unwrap_or("").trim(), record.get(l).unwrap_or("").trim());
            if label.is_empty() {
                return Err(bad(origin, line, "the label is empty", "label every row, or remove it"));
            }
            if !text.is_empty() {
                pairs.push((text.to_string(), label.to_string()));
            }
        }
        Self::check_not_empty(Self::from_pairs(pairs), origin)
    }

    /// JSON lines: one object a line with a string `text_key` and a string or number `label_key`.
    pub fn from_jsonl(content: &str, origin: &str, text_key: &str, label_key: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for (i, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| bad(origin, i + 1, format!("not JSON ({e})"), "write one JSON object per line"))?;
            let text = value.get(text_key).and_then(|v| v.as_str()).ok_or_else(|| {
                bad(origin, i + 1, format!("no string field {text_key:?}"), "name the text field with --text-column")
            })?;
            let label = match value.get(label_key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
                _ => {
                    return Err(bad(
                        origin,
                        i + 1,
                        format!("no label field {label_key:?}"),
                        "name the label field with --label-column",
                    ))
                }
            };
            if !text.trim().is_empty() {
                pairs.push((text.trim().to_string(), label));
            }
        }
        Self::check_not_empty(Self::from_pairs(pairs), origin)
    }

    fn check_not_empty(data: Self, origin: &str) -> Result<Self> {
        if data.texts.is_empty() {
            return Err(Error::data(
                "labelled data",
                format!("{origin} holds no example"),
                "pass a file with labelled texts",
            ));
        }
        Ok(data)
    }

    /// Errors unless there are examples of two classes or more (what training needs; a file to
    /// evaluate on may hold one class).
    pub fn require_two_classes(&self, origin: &str) -> Result<()> {
        if self.classes.len() < 2 {
            return Err(Error::data(
                "labelled data",
                format!("{origin} has one class only ({:?}): nothing to tell apart", self.classes),
                "give examples of at least two classes",
            ));
        }
        Ok(())
    }

    /// Removes every text that occurs with more than one class (and repeats of a text within one
    /// class); returns how many texts were ambiguous.
    pub fn drop_ambiguous(&mut self) -> usize {
        let mut seen: HashMap<String, Option<usize>> = HashMap::new();
        for (t, &l) in self.texts.iter().zip(&self.labels) {
            seen.entry(t.clone())
                .and_modify(|c| {
                    if *c != Some(l) {
                        *c = None
                    }
                })
                .or_insert(Some(l));
        }
        let ambiguous = seen.values().filter(|c| c.is_none()).count();
        let mut kept = std::collections::HashSet::new();
        let (mut texts, mut labels) = (Vec::new(), Vec::new());
        for (t, &l) in self.texts.iter().zip(&self.labels) {
            if seen[t].is_some() && kept.insert(t.clone()) {
                texts.push(t.clone());
                labels.push(l);
            }
        }
        self.texts = texts;
        self.labels = labels;
        ambiguous
    }

    /// The examples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    /// A seeded stratified split: about `fraction` of each class's examples (at least one when the
    /// class has two or more) go to the second part. Returns the indices of both parts.
    pub fn stratified_split(&self, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
        stratified_indices(&self.labels, fraction, seed)
    }

    /// The examples at `indices`.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            texts: indices.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    /// Re-expresses the labels in `classes` (a model's); an error names a class it does not know.
    pub fn with_classes(&self, classes: &[String]) -> Result<Self> {
        let labels = relabel(&self.labels, &self.classes, classes)?;
        Ok(Self { texts: self.texts.clone(), labels, classes: classes.to_vec() })
    }
}

/// A seeded stratified split of examples labelled `labels`: about `fraction` of each class's
/// examples (at least one when the class has two or more) go to the second part. Returns the
/// indices of both parts, each in increasing order.
pub fn stratified_indices(labels: &[usize], fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&fraction) || fraction == 0.0 {
        return Err(Error::config(
            "split",
            format!("the held-out fraction must be in (0, 1), got {fraction}"),
            "pass e.g. 0.1",
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for (_, mut items) in by_class {
        items.shuffle(&mut rng);
        let n = items.len();
        let held = if n >= 2 { ((n as f64 * fraction).round() as usize).clamp(1, n - 1) } else { 0 };
        second.extend_from_slice(&items[..held]);
        first.extend_from_slice(&items[held..]);
    }
    first.sort_unstable();
    second.sort_unstable();
    Ok((first, second))
}

/// Labels over `own` classes re-expressed over `classes` (a model's); an error names a class it
/// does not know.
pub fn relabel(labels: &[usize], own: &[String], classes: &[String]) -> Result<Vec<usize>> {
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    labels
        .iter()
        .map(|&l| {
            let name = &own[l];
            index.get(name.as_str()).copied().ok_or_else(|| {
                Error::data(
                    "labelled data",
                    format!("class {name:?} is not one of the model's {classes:?}"),
                    "evaluate on data of the model's classes",
                )
            })
        })
        .collect()
}

/// How a text becomes tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenize {
    /// Unicode characters.
    #[default]
    Chars,
    /// Whitespace-separated words, lower-cased.
    Words,
}

impl Tokenize {
    /// The tokens of `text`.
    pub fn tokens(self, text: &str) -> Vec<String> {
        match self {
            Tokenize::Chars => text.chars().map(String::from).collect(),
            Tokenize::Words => text.split_whitespace().map(str::to_lowercase).collect(),
        }
    }
}

/// Token ids: `0` is `<pad>`, `1` is `<unk>` (a token seen fewer than `min_count` times in the
/// training texts, or past `max_size`), then the tokens by decreasing count (ties by token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "VocabRepr", into = "VocabRepr")]
pub struct TokenVocab {
    /// How texts are cut.
    pub tokenize: Tokenize,
    /// The tokens from id 2 on.
    pub tokens: Vec<String>,
    index: HashMap<String, u32>,
}

/// What a checkpoint stores of a [`TokenVocab`] (the index is rebuilt on reading).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabRepr {
    tokenize: Tokenize,
    tokens: Vec<String>,
}

impl From<VocabRepr> for TokenVocab {
    fn from(r: VocabRepr) -> Self {
        TokenVocab::from_tokens(r.tokenize, r.tokens)
    }
}

impl From<TokenVocab> for VocabRepr {
    fn from(v: TokenVocab) -> Self {
        VocabRepr { tokenize: v.tokenize, tokens: v.tokens }
    }
}

/// The id of padding.
pub const PAD: u32 = 0;
/// The id of unknown tokens.
pub const UNK: u32 = 1;

impl TokenVocab {
    /// The vocabulary of `texts`.
    pub fn build(texts: &[String], tokenize: Tokenize, min_count: usize, max_size: Option<usize>) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in texts {
            for tok in tokenize.tokens(t) {
                *counts.entry(tok).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts.into_iter().filter(|(_, c)| *c >= min_count.max(1)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(max) = max_size {
            ranked.truncate(max.saturating_sub(2));
        }
        Self::from_tokens(tokenize, ranked.into_iter().map(|(t, _)| t).collect())
    }

    /// The vocabulary with these tokens from id 2 on (as saved in a checkpoint).
    pub fn from_tokens(tokenize: Tokenize, tokens: Vec<String>) -> Self {
        let index = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32 + 2)).collect();
        Self { tokenize, tokens, index }
    }

    /// Ids including `<pad>` and `<unk>`.
    pub fn len(&self) -> usize {
        self.tokens.len() + 2
    }

    /// Never: `<pad>` and `<unk>` are always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The ids of `text` (unknown tokens as [`UNK`]), and how many were unknown.
    pub fn encode(&self, text: &str) -> (Vec<u32>, usize) {
        let mut unknown = 0;
        let ids = self
            .tokenize
            .tokens(text)
            .into_iter()
            .map(|t| {
                self.index.get(&t).copied().unwrap_or_else(|| {
                    unknown += 1;
                    UNK
                })
            })
            .collect();
        (ids, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_files_csv_and_jsonl_read_the_same_data() {
        let files =
            vec![("f".to_string(), "Anna\nMaria\n\n".to_string()), ("m".to_string(), "Jan\nPeter\n".to_string())];
        let a = Labelled::from_class_files(&files).unwrap();
        let b =
            Labelled::from_delimited("name\tsex\nAnna\tf\nMaria\tf\nJan\tm\nPeter\tm\n", "x.tsv", b'\t', "name", "sex")
                .unwrap();
        let c = Labelled::from_jsonl("{\"t\":\"Anna\",\"l\":\"f\"}\n{\"t\":\"Maria\",\"l\":\"f\"}\n{\"t\":\"Jan\",\"l\":\"m\"}\n{\"t\":\"Peter\",\"l\":\"m\"}\n", "x.jsonl", "t", "l").unwrap();
        let sorted = |d: &Labelled| {
            let mut v: Vec<(String, String)> =
                d.texts.iter().zip(&d.labels).map(|(t, &l)| (t.clone(), d.classes[l].clone())).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&a), sorted(&b));
        assert_eq!(sorted(&a), sorted(&c));
        assert_eq!(a.classes, ["f", "m"]);
    }

    #[test]
    fn bad_files_name_the_line_and_the_fix() {
        let err = Labelled::from_delimited("a,b\n1,2\n", "x.csv", b',', "text", "b").unwrap_err().to_string();
        assert!(err.contains("no column \"text\"") && err.contains("--text-column"), "{err}");
        let err = Labelled::from_delimited("t,l\nx,1\ny\n", "x.csv", b',', "t", "l").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        let err =
            Labelled::from_jsonl("{\"t\":\"a\",\"l\":1}\nnot json\n", "x.jsonl", "t", "l").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("not JSON"), "{err}");
        let one = Labelled::from_delimited("t,l\nx,1\ny,1\n", "x.csv", b',', "t", "l").unwrap();
        assert!(one.require_two_classes("x.csv").unwrap_err().to_string().contains("one class"));
        assert!(Labelled::from_class_files(&[("a".into(), "x".into()), ("b".into(), "\n".into())]).is_err());
    }

    #[test]
    fn ambiguous_texts_are_dropped() {
        let mut d = Labelled::from_pairs(vec![
            ("Kim".into(), "f".into()),
            ("Kim".into(), "m".into()),
            ("Ann".into(), "f".into()),
            ("Ann".into(), "f".into()),
            ("Bob".into(), "m".into()),
        ]);
        assert_eq!(d.drop_ambiguous(), 1);
        assert_eq!(d.texts, ["Ann", "Bob"]);
    }

    #[test]
    fn stratified_splits_keep_the_class_shares_and_are_seeded() {
        let pairs = (0..100).map(|i| (format!("t{i}"), if i < 80 { "a" } else { "b" }.to_string())).collect();
        let d = Labelled::from_pairs(pairs);
        let (train, held) = d.stratified_split(0.1, 7).unwrap();
        assert_eq!((train.len(), held.len()), (90, 10));
        assert_eq!(held.iter().filter(|&&i| d.labels[i] == 1).count(), 2, "b keeps its 20%");
        assert_eq!(d.stratified_split(0.1, 7).unwrap(), (train.clone(), held.clone()));
        assert_ne!(d.stratified_split(0.1, 8).unwrap().1, held);
        let mut all: Vec<usize> = train.into_iter().chain(held).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn vocabularies_rank_tokens_and_map_the_rest_to_unk() {
        let texts = vec!["abca".to_string(), "ab".to_string()];
        let v = TokenVocab::build(&texts, Tokenize::Chars, 2, None);
        assert_eq!(v.tokens, ["a", "b"]); // c is seen once
        assert_eq!(v.encode("abcz"), (vec![2, 3, UNK, UNK], 2));
        let w = TokenVocab::build(&["The cat the".to_string()], Tokenize::Words, 1, Some(3));
        assert_eq!(w.tokens, ["the"]);
        assert_eq!(w.len(), 3);
        let back: TokenVocab = serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
        assert_eq!(back.encode("abcz"), v.encode("abcz"), "the index is rebuilt when read back");
    }
}
