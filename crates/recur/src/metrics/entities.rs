//! Entity-level (chunk) precision, recall and F1 of a tagging, with conlleval's rules (the CoNLL
//! shared tasks' `conlleval.pl`): a chunk starts and ends where conlleval's `startOfChunk` and
//! `endOfChunk` say, as seqeval implements them (B-, I-, E- prefixes, a change of type, and S-
//! for BIOES singles), and a predicted chunk is correct when a gold chunk has the same type,
//! start and end. An `I-X` after `O` starts a chunk, as in conlleval.

use std::collections::{BTreeMap, BTreeSet};

/// A chunk: type, first and last token (inclusive).
pub type Chunk = (String, usize, usize);

fn split(tag: &str) -> (&str, &str) {
    match tag.split_once('-') {
        Some((prefix, kind)) if matches!(prefix, "B" | "I" | "E" | "S") => (prefix, kind),
        _ if tag == "O" => ("O", ""),
        // not a chunk tag: a type of its own, continued while it repeats
        _ => ("I", tag),
    }
}

/// seqeval's `end_of_chunk` (conlleval's, with S- singles): whether the chunk open at the
/// previous token ends before this one.
fn ends(prev: &str, tag: &str, prev_type: &str, kind: &str) -> bool {
    matches!(prev, "E" | "S")
        || matches!((prev, tag), ("B" | "I", "B" | "S" | "O"))
        || (prev != "O" && prev_type != kind)
}

/// seqeval's `start_of_chunk`: whether a chunk starts at this token.
fn starts(prev: &str, tag: &str, prev_type: &str, kind: &str) -> bool {
    matches!(tag, "B" | "S") || matches!((prev, tag), ("E" | "S" | "O", "E" | "I")) || (tag != "O" && prev_type != kind)
}

/// The chunks of one sentence's tags (seqeval's `get_entities`, which follows conlleval).
pub fn chunks<S: AsRef<str>>(tags: &[S]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let (mut prev, mut prev_type, mut begin) = ("O", "", 0);
    for (i, tag) in tags.iter().map(AsRef::as_ref).chain(std::iter::once("O")).enumerate() {
        let (t, kind) = split(tag);
        if ends(prev, t, prev_type, kind) {
            out.push((prev_type.to_string(), begin, i - 1));
        }
        if starts(prev, t, prev_type, kind) {
            begin = i;
        }
        prev = t;
        prev_type = kind;
    }
    out
}

/// Counts of chunks per type: correct, predicted, gold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntityScores {
    /// Per chunk type: `(correct, predicted, gold)`.
    pub by_type: BTreeMap<String, (usize, usize, usize)>,
}

fn prf(correct: usize, predicted: usize, gold: usize) -> (f64, f64, f64) {
    let p = if predicted > 0 { correct as f64 / predicted as f64 } else { 0.0 };
    let r = if gold > 0 { correct as f64 / gold as f64 } else { 0.0 };
    let f = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
    (p, r, f)
}

impl EntityScores {
    /// Whether a tag set looks like chunk tags (BIO/BIOES): `O` and prefixed tags only, with at
    /// least one `B-` or `S-`. Part-of-speech tags are not.
    pub fn applies_to<S: AsRef<str>>(tags: &[S]) -> bool {
        let mut chunked = false;
        for t in tags.iter().map(AsRef::as_ref) {
            match t.split_once('-') {
                Some(("B" | "S", _)) => chunked = true,
                Some(("I" | "E", _)) => {}
                _ if t == "O" => {}
                _ => return false,
            }
        }
        chunked
    }

    /// Adds one sentence: its gold and predicted tags (same length).
    pub fn add<S: AsRef<str>, T: AsRef<str>>(&mut self, gold: &[S], predicted: &[T]) {
        let (g, p) = (chunks(gold), chunks(predicted));
        let gold_set: BTreeSet<&Chunk> = g.iter().collect();
        for c in &p {
            let e = self.by_type.entry(c.0.clone()).or_default();
            e.1 += 1;
            if gold_set.contains(c) {
                e.0 += 1;
            }
        }
        for c in &g {
            self.by_type.entry(c.0.clone()).or_default().2 += 1;
        }
    }

    /// Overall `(precision, recall, F1)` over all chunk types (micro-averaged, as conlleval).
    pub fn overall(&self) -> (f64, f64, f64) {
        let (c, p, g) = self.by_type.values().fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
        prf(c, p, g)
    }

    /// `(precision, recall, F1)` of one type.
    pub fn of(&self, kind: &str) -> (f64, f64, f64) {
        self.by_type.get(kind).map_or((0.0, 0.0, 0.0), |&(c, p, g)| prf(c, p, g))
    }

    /// A table in conlleval's spirit: overall, then each type.
    pub fn report(&self) -> String {
        let (p, r, f) = self.overall();
        let (_, predicted, gold) = self.by_type.values().fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
        let mut out = format!(
            "entities: {gold} gold, {predicted} predicted; precision {:.2}%, recall {:.2}%, F1 {:.2}\n",
            100.0 * p,
            100.0 * r,
            100.0 * f
        );
        for (kind, &(c, pr, g)) in &self.by_type {
            let (p, r, f) = prf(c, pr, g);
            out.push_str(&format!(
                "{kind:>17}: precision {:6.2}%, recall {:6.2}%, F1 {:6.2}  ({pr} predicted, {g} gold)\n",
                100.0 * p,
                100.0 * r,
                100.0 * f
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(kind: &str, s: usize, e: usize) -> Chunk {
        (kind.to_string(), s, e)
    }

    #[test]
    fn chunks_follow_conllevals_rules() {
        assert_eq!(chunks(&["B-PER", "I-PER", "O", "B-LOC"]), [c("PER", 0, 1), c("LOC", 3, 3)]);
        // B after B starts a new chunk; I of another type starts one too
        assert_eq!(chunks(&["B-PER", "B-PER", "I-LOC"]), [c("PER", 0, 0), c("PER", 1, 1), c("LOC", 2, 2)]);
        // I after O starts a chunk (conlleval)
        assert_eq!(chunks(&["O", "I-ORG", "I-ORG", "O"]), [c("ORG", 1, 2)]);
        // BIOES
        assert_eq!(
            chunks(&["S-PER", "B-LOC", "E-LOC", "S-LOC", "O"]),
            [c("PER", 0, 0), c("LOC", 1, 2), c("LOC", 3, 3)]
        );
        assert_eq!(chunks(&["B-MISC", "I-MISC", "I-MISC"]), [c("MISC", 0, 2)]);
        assert!(chunks::<&str>(&[]).is_empty());
    }

    /// The worked counts of conlleval on a small case: 3 gold chunks, 3 predicted, 1 exact
    /// (a boundary error and a type error count as both a miss and a false alarm).
    #[test]
    fn scores_count_exact_chunks_only() {
        let mut s = EntityScores::default();
        s.add(&["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], &["B-PER", "O", "O", "B-LOC", "O", "B-LOC"]);
        assert_eq!(s.by_type["PER"], (0, 1, 1));
        assert_eq!(s.by_type["LOC"], (1, 2, 1));
        assert_eq!(s.by_type["ORG"], (0, 0, 1));
        let (p, r, f) = s.overall();
        assert!((p - 1.0 / 3.0).abs() < 1e-12 && (r - 1.0 / 3.0).abs() < 1e-12 && (f - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.of("LOC"), (0.5, 1.0, 2.0 / 3.0));
        assert!(s.report().contains("3 gold, 3 predicted"), "{}", s.report());
    }

    #[test]
    fn only_chunk_tag_sets_qualify() {
        assert!(EntityScores::applies_to(&["O", "B-PER", "I-PER"]));
        assert!(EntityScores::applies_to(&["O", "S-PER", "E-PER"]));
        assert!(!EntityScores::applies_to(&["NN", "VB", "DT"]));
        assert!(!EntityScores::applies_to(&["O", "I-PER"]), "no chunk start at all");
    }
}
