//! Text analysis: Unicode word splitting, lowercasing, stopwords and Snowball stemming.
//!
//! The defaults reproduce bm25s's (and scikit-learn's) `(?u)\b\w\w+\b` token pattern on the
//! lowercased text: a token is a maximal run of at least two word characters, where a word
//! character is `_` or any character of a Unicode letter (`L*`) or number (`N*`) category, as in
//! Python's `re` module. Stopwords are dropped before stemming (matching bm25s).

use std::collections::HashSet;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_general_category::{get_general_category, GeneralCategory as G};

use crate::util::error::{Error, Result};

/// The English stopword list bm25s uses for `"en"` / `"english"` (NLTK's short list).
pub const ENGLISH_STOPWORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to",
    "was", "will", "with",
];

/// Snowball stemmer languages, by the name users pass.
pub const LANGUAGES: [(&str, Algorithm); 18] = [
    ("arabic", Algorithm::Arabic),
    ("danish", Algorithm::Danish),
    ("dutch", Algorithm::Dutch),
    ("english", Algorithm::English),
    ("finnish", Algorithm::Finnish),
    ("french", Algorithm::French),
    ("german", Algorithm::German),
    ("greek", Algorithm::Greek),
    ("hungarian", Algorithm::Hungarian),
    ("italian", Algorithm::Italian),
    ("norwegian", Algorithm::Norwegian),
    ("portuguese", Algorithm::Portuguese),
    ("romanian", Algorithm::Romanian),
    ("russian", Algorithm::Russian),
    ("spanish", Algorithm::Spanish),
    ("swedish", Algorithm::Swedish),
    ("tamil", Algorithm::Tamil),
    ("turkish", Algorithm::Turkish),
];

/// Which stopwords are removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopwords {
    /// Keep every token.
    None,
    /// [`ENGLISH_STOPWORDS`].
    English,
    /// A caller's list (compared with the lowercased tokens, so entries are lowercased).
    Custom(Vec<String>),
}

/// How texts become terms; the same analysis runs on documents and queries.
pub struct Analyzer {
    language: Option<usize>,
    stemmer: Option<Stemmer>,
    stopwords: Stopwords,
    stopset: HashSet<String>,
}

/// True for the characters Python's `re` counts as `\w` (letters, numbers, underscore).
#[inline]
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
            | G::DecimalNumber
            | G::LetterNumber
            | G::OtherNumber
    )
}

/// Maximal runs of at least two word characters of `text` (already lowercased), in order.
pub fn split_words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        let start = rest.find(is_word_char)?;
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_word_char(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        rest = &tail[end..];
        if word.chars().nth(1).is_some() {
            return Some(word);
        }
    })
}

impl Analyzer {
    /// An analyzer stemming with the Snowball stemmer of `language` (`None`: no stemming).
    pub fn new(language: Option<&str>, stopwords: Stopwords) -> Result<Analyzer> {
        let language = match language {
            None => None,
            Some(name) => {
                let lower = name.to_lowercase();
                Some(LANGUAGES.iter().position(|(n, _)| *n == lower).ok_or_else(|| {
                    let known: Vec<&str> = LANGUAGES.iter().map(|(n, _)| *n).collect();
                    Error::InvalidArgument(format!(
                        "unknown stemmer language {name:?}: expected one of {}",
                        known.join(", ")
                    ))
                })?)
            }
        };
        let stopwords = match stopwords {
            Stopwords::Custom(list) => Stopwords::Custom(list.iter().map(|w| w.to_lowercase()).collect()),
            s => s,
        };
        let stopset = match &stopwords {
            Stopwords::None => HashSet::new(),
            Stopwords::English => ENGLISH_STOPWORDS.iter().map(|w| w.to_string()).collect(),
            Stopwords::Custom(list) => list.iter().cloned().collect(),
        };
        let stemmer = language.map(|i| Stemmer::create(LANGUAGES[i].1));
        Ok(Analyzer { language, stemmer, stopwords, stopset })
    }

    /// The stemmer language, or `None` when stemming is off.
    pub fn language(&self) -> Option<&'static str> {
        self.language.map(|i| LANGUAGES[i].0)
    }

    /// The stopword setting.
    pub fn stopwords(&self) -> &Stopwords {
        &self.stopwords
    }

    /// The terms of `text`: lowercase, split, drop stopwords, stem.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        let mut out = Vec::new();
        for word in split_words(&lower) {
            if self.stopset.contains(word) {
                continue;
            }
            out.push(match &self.stemmer {
                Some(s) => s.stem(word).into_owned(),
                None => word.to_string(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_python_pattern() {
        let words: Vec<&str> = split_words("a bc_d, e 42 x1 é café ü1 日本語 ٣٤").collect();
        assert_eq!(words, ["bc_d", "42", "x1", "café", "ü1", "日本語", "٣٤"]);
    }

    #[test]
    fn stems_and_drops_stopwords() {
        let a = Analyzer::new(Some("english"), Stopwords::English).unwrap();
        assert_eq!(a.terms("The Running of the Dogs, is it?"), ["run", "dog"]);
        let plain = Analyzer::new(None, Stopwords::None).unwrap();
        assert_eq!(plain.terms("The Running"), ["the", "running"]);
        assert!(Analyzer::new(Some("klingon"), Stopwords::None).is_err());
    }
}
