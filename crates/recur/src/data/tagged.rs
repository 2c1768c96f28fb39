//! Tagged sentences for sequence tagging (part of speech, named entities): `word/tag` lines (one
//! sentence a line, split at the last `/`, as the Brown corpus is distributed) and CoNLL columns
//! (one token a line, the word first and the tag last, a blank line between sentences).

use std::collections::{BTreeSet, HashMap};

use crate::{Error, Result};

/// Sentences of words, each word with a tag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tagged {
    /// Each sentence's words.
    pub sentences: Vec<Vec<String>>,
    /// Each word's tag, an index into `tags`.
    pub labels: Vec<Vec<usize>>,
    /// The tag names, sorted.
    pub tags: Vec<String>,
}

fn bad(origin: &str, line: usize, message: impl Into<String>, fix: &str) -> Error {
    Error::data("tagged data", format!("{origin}, line {line}: {}", message.into()), fix)
}

impl Tagged {
    fn from_pairs(sentences: Vec<Vec<(String, String)>>, origin: &str) -> Result<Self> {
        if sentences.is_empty() {
            return Err(Error::data(
                "tagged data",
                format!("{origin} holds no sentence"),
                "pass a file of tagged sentences",
            ));
        }
        let tags: Vec<String> =
            sentences.iter().flatten().map(|(_, t)| t.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let index: HashMap<&str, usize> = tags.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
        let labels = sentences.iter().map(|s| s.iter().map(|(_, t)| index[t.as_str()]).collect()).collect();
        let sentences = sentences.into_iter().map(|s| s.into_iter().map(|(w, _)| w).collect()).collect();
        Ok(Self { sentences, labels, tags })
    }

    /// One sentence a line, tokens separated by spaces, each `word/tag` (split at the last `/`).
    pub fn from_word_slash_tag(content: &str, origin: &str) -> Result<Self> {
        let mut sentences = Vec::new();
        for (i, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut sentence = Vec::new();
            for token in line.split_whitespace() {
                let Some((word, tag)) = token.rsplit_once('/').filter(|(w, t)| !w.is_empty() && !t.is_empty()) else {
                    return Err(bad(
                        origin,
                        i + 1,
                        format!("token {token:?} is not word/tag"),
                        "write each token as word/tag",
                    ));
                };
                sentence.push((word.to_string(), tag.to_string()));
            }
            sentences.push(sentence);
        }
        Self::from_pairs(sentences, origin)
    }

    /// CoNLL columns: one token a line (tab- or space-separated columns, the word first, the tag
    /// last), a blank line between sentences; `-DOCSTART-` lines are skipped.
    pub fn from_conll(content: &str, origin: &str) -> Result<Self> {
        let (mut sentences, mut current) = (Vec::new(), Vec::new());
        let mut columns = None;
        for (i, line) in content.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                if !current.is_empty() {
                    sentences.push(std::mem::take(&mut current));
                }
                continue;
            }
            if fields[0] == "-DOCSTART-" {
                continue;
            }
            if fields.len() < 2 {
                return Err(bad(
                    origin,
                    i + 1,
                    format!("one column ({line:?}); a token needs a word and a tag"),
                    "write `word<TAB>tag` per line",
                ));
            }
            match columns {
                None => columns = Some(fields.len()),
                Some(n) if n != fields.len() => {
                    return Err(bad(
                        origin,
                        i + 1,
                        format!("{} columns, the lines before have {n}", fields.len()),
                        "give every token line the same columns",
                    ))
                }
                _ => {}
            }
            current.push((fields[0].to_string(), fields[fields.len() - 1].to_string()));
        }
        if !current.is_empty() {
            sentences.push(current);
        }
        Self::from_pairs(sentences, origin)
    }

    /// Tokens in all sentences.
    pub fn tokens(&self) -> usize {
        self.sentences.iter().map(Vec::len).sum()
    }

    /// The sentences `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            sentences: self.sentences[range.clone()].to_vec(),
            labels: self.labels[range].to_vec(),
            tags: self.tags.clone(),
        }
    }

    /// Re-expresses the tags in `tags` (a model's); an error names a tag it does not know.
    pub fn with_tags(&self, tags: &[String]) -> Result<Self> {
        let index: HashMap<&str, usize> = tags.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
        let labels = self
            .labels
            .iter()
            .map(|s| {
                s.iter()
                    .map(|&l| {
                        index.get(self.tags[l].as_str()).copied().ok_or_else(|| {
                            Error::data(
                                "tagged data",
                                format!("tag {:?} is not one of the model's {} tags", self.tags[l], tags.len()),
                                "tag with the model's tag set",
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { sentences: self.sentences.clone(), labels, tags: tags.to_vec() })
    }

    /// Checks BIO (or BIOES) tags: an `I-X` (or `E-X`) must follow `B-X` or `I-X`. Returns the
    /// first violation as an error naming sentence and position.
    pub fn check_bio(&self) -> Result<()> {
        for (s, labels) in self.labels.iter().enumerate() {
            let mut previous: Option<&str> = None;
            for (i, &l) in labels.iter().enumerate() {
                let tag = self.tags[l].as_str();
                if let Some(kind) = tag.strip_prefix("I-").or_else(|| tag.strip_prefix("E-")) {
                    let ok = previous.is_some_and(|p| p == format!("B-{kind}") || p == format!("I-{kind}"));
                    if !ok {
                        return Err(Error::data(
                            "tagged data",
                            format!(
                                "sentence {}, token {}: {tag} follows {}",
                                s + 1,
                                i + 1,
                                previous.unwrap_or("the start")
                            ),
                            "start every entity with B- (BIO/BIOES)",
                        ));
                    }
                }
                previous = Some(tag);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_read_the_same_sentences() {
        let a = Tagged::from_word_slash_tag("The/at dog/nn ./.\nA/at 1/2/cd\n", "a").unwrap();
        let b = Tagged::from_conll("-DOCSTART- O\n\nThe\tat\ndog\tnn\n.\t.\n\nA\tat\n1/2\tcd\n", "b").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.sentences[1], ["A", "1/2"], "split at the last slash");
        assert_eq!(a.tokens(), 5);
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(Tagged::from_word_slash_tag("The/at dog\n", "x").unwrap_err().to_string().contains("line 1"));
        assert!(Tagged::from_conll("a\tb\tc\nd\te\n", "x").unwrap_err().to_string().contains("line 2"));
        assert!(Tagged::from_conll("\n\n", "x").is_err());
        let bio = Tagged::from_conll("John\tB-PER\nSmith\tI-PER\nlives\tO\nin\tI-LOC\n", "x").unwrap();
        let err = bio.check_bio().unwrap_err().to_string();
        assert!(err.contains("token 4") && err.contains("I-LOC follows O"), "{err}");
    }
}
