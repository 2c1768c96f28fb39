//! Text for character-level models: UTF-8 decoding that says where it fails, and a vocabulary of
//! Unicode characters (not bytes), so Chinese or any other script works like ASCII.

use std::collections::HashMap;

use crate::{Error, Result};

/// `bytes` as UTF-8 text, or an error giving the byte offset (and line) of the first invalid
/// sequence. Empty text is an error too: there is nothing to learn from it.
pub fn decode_utf8(bytes: &[u8]) -> Result<&str> {
    if bytes.is_empty() {
        return Err(Error::data("text", "the text is empty", "pass a file with some text in it"));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::data(
            "text",
            format!("invalid UTF-8 at byte offset {at} (line {line}): byte 0x{:02x}", bytes[at]),
            "convert the file to UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`)",
        )
    })
}

/// The characters a model knows, each with an id: sorted by code point, so the same text always
/// gives the same ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl Vocab {
    /// The distinct characters of `text`.
    pub fn from_text(text: &str) -> Result<Self> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_chars(chars)
    }

    /// A vocabulary of exactly `chars`, in that order (as stored in a checkpoint): not empty,
    /// no character twice.
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::data("vocabulary", "the vocabulary is empty", "build it from a non-empty text"));
        }
        if chars.len() > u32::MAX as usize {
            return Err(Error::data("vocabulary", "more than 2^32 characters", "use a smaller vocabulary"));
        }
        let mut ids = HashMap::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            if ids.insert(c, i as u32).is_some() {
                return Err(Error::data(
                    "vocabulary",
                    format!("the character {c:?} appears twice"),
                    "list every character once",
                ));
            }
        }
        Ok(Self { chars, ids })
    }

    /// Number of characters `V`.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Always false: a vocabulary holds at least one character.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The characters as one string (id order), e.g. to store in a checkpoint.
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// The id of `c`, if known.
    pub fn id(&self, c: char) -> Option<u32> {
        self.ids.get(&c).copied()
    }

    /// The character of `id`, if in range.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// The ids of `text`; an error names every character the vocabulary does not know (`what`
    /// says which text, e.g. `prime text`).
    pub fn encode(&self, what: &'static str, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len());
        let mut unknown: Vec<char> = Vec::new();
        for c in text.chars() {
            match self.ids.get(&c) {
                Some(&id) => ids.push(id),
                None if !unknown.contains(&c) => unknown.push(c),
                None => {}
            }
        }
        if !unknown.is_empty() {
            let shown: Vec<String> = unknown.iter().take(10).map(|c| format!("{c:?}")).collect();
            let more = if unknown.len() > 10 { format!(" and {} more", unknown.len() - 10) } else { String::new() };
            return Err(Error::data(
                what,
                format!("{} character(s) the model never saw in training: {}{more}", unknown.len(), shown.join(", ")),
                "use only characters of the training text",
            ));
        }
        Ok(ids)
    }

    /// The text of `ids`; ids out of range become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&id| self.char(id).unwrap_or('\u{fffd}')).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_errors_give_the_byte_offset_and_line() {
        let bytes = b"ab\ncd\xffe";
        let err = decode_utf8(bytes).unwrap_err().to_string();
        assert!(err.contains("byte offset 5") && err.contains("line 2") && err.contains("0xff"), "{err}");
        assert!(decode_utf8(b"").unwrap_err().to_string().contains("empty"));
        assert_eq!(decode_utf8("春眠不觉晓".as_bytes()).unwrap(), "春眠不觉晓");
    }

    #[test]
    fn vocab_round_trips_unicode_and_names_unknown_characters() {
        let vocab = Vocab::from_text("床前明月光，疑是地上霜。ab").unwrap();
        assert_eq!(vocab.len(), 14);
        assert!(vocab.chars().windows(2).all(|w| w[0] < w[1]), "sorted by code point");
        let ids = vocab.encode("text", "明月ab").unwrap();
        assert_eq!(vocab.decode(&ids), "明月ab");
        let err = vocab.encode("prime text", "明z月y").unwrap_err().to_string();
        assert!(err.starts_with("prime text:") && err.contains("'z'") && err.contains("'y'"), "{err}");
        let again = Vocab::from_chars(vocab.as_string().chars().collect()).unwrap();
        assert_eq!(again, vocab);
        assert!(Vocab::from_chars(vec!['a', 'a']).is_err());
        assert!(Vocab::from_chars(vec![]).is_err());
        assert_eq!(vocab.decode(&[999]), "\u{fffd}");
    }
}
