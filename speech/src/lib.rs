//! Offline speech recognition for calls: one utterance at a time, from the call's 8 kHz audio.
//!
//! The engine is CMU PocketSphinx through the system library (feature `pocketsphinx`; Debian
//! `libpocketsphinx-dev` and the `pocketsphinx-en-us` model). Its US English model is trained
//! on 16 kHz speech, so the 8 kHz telephone audio is upsampled by interpolation first.
//!
//! Open vocabulary on narrowband audio is weak (most words wrong on synthesised speech, which
//! the same engine gets nearly all right at 16 kHz); phrase *hints* make it a choice among the phrases a flow expects, which is how IVR
//! speech input is built and what this engine is good at: see [`Grammar`].
//!
//! [`Recognizer`] is blocking: the host runs one per listening call on a thread of its own.

mod grammar;
#[cfg(feature = "pocketsphinx")]
mod pocketsphinx;
#[cfg(not(feature = "pocketsphinx"))]
use missing as engine;
#[cfg(feature = "pocketsphinx")]
use pocketsphinx as engine;

use std::path::PathBuf;

pub use grammar::{Grammar, GrammarError};

/// The audio rate recognizers take.
pub const RATE: u32 = 8000;

/// Where the acoustic model, language model and pronunciation dictionary are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The acoustic model directory (`-hmm`).
    pub acoustic: PathBuf,
    /// The n-gram language model for open vocabulary (`-lm`).
    pub language: PathBuf,
    /// The pronunciation dictionary (`-dict`); hint words must be in it.
    pub dictionary: PathBuf,
}

impl Model {
    /// Debian's `pocketsphinx-en-us` package.
    pub fn debian_en_us() -> Model {
        let dir = PathBuf::from("/usr/share/pocketsphinx/model/en-us");
        Model {
            acoustic: dir.join("en-us"),
            language: dir.join("en-us.lm.bin"),
            dictionary: dir.join("cmudict-en-us.dict"),
        }
    }

    /// Whether the model's files are all there.
    pub fn installed(&self) -> bool {
        self.acoustic.is_dir() && self.language.is_file() && self.dictionary.is_file()
    }
}

/// What a recognizer heard in one utterance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hypothesis {
    /// The words, lower case, separated by single spaces; empty if nothing was recognised.
    pub text: String,
    /// 0.0–1.0; the engine's posterior for the whole utterance (0.0 when the engine has no hypothesis).
    pub confidence: f32,
    /// Each word with its start and end in ms from the start of the audio fed.
    pub words: Vec<Word>,
}

/// One recognised word.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    pub start_ms: u32,
    pub end_ms: u32,
}

/// Why a recognizer could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error(
        "no offline speech recognizer in this build (build with the `pocketsphinx` feature and \
         Debian's libpocketsphinx-dev)"
    )]
    NotBuilt,
    #[error("speech model not found at {0} (install Debian's pocketsphinx-en-us)")]
    ModelMissing(PathBuf),
    #[error("the speech engine failed: {0}")]
    Engine(String),
    #[error(transparent)]
    Grammar(#[from] GrammarError),
}

/// One decoder with its model loaded (loading takes a while): keep and reuse it.
#[derive(Debug)]
pub struct Recognizer {
    inner: engine::Decoder,
    /// The grammar the decoder has loaded, to skip reloading the same one.
    loaded: Option<String>,
    /// The last 8 kHz sample fed, for interpolating across chunk boundaries.
    last: i16,
}

impl Recognizer {
    /// Loads `model`. Fails with [`SpeechError::ModelMissing`] if its files are not there,
    /// [`SpeechError::NotBuilt`] without the `pocketsphinx` feature.
    pub fn new(model: &Model) -> Result<Recognizer, SpeechError> {
        if !model.installed() {
            return Err(SpeechError::ModelMissing(model.acoustic.clone()));
        }
        Ok(Recognizer { inner: engine::Decoder::new(model)?, loaded: None, last: 0 })
    }

    /// Whether `word` (lower case) is in the dictionary, so a hint may use it.
    pub fn knows(&self, word: &str) -> bool {
        self.inner.knows(word)
    }

    /// Starts an utterance, constrained to `grammar` or (None) open vocabulary.
    pub fn start(&mut self, grammar: Option<&Grammar>) -> Result<(), SpeechError> {
        self.last = 0;
        match grammar {
            Some(g) => {
                let unknown: Vec<&str> = g.words().filter(|w| !self.inner.knows(w)).collect();
                if !unknown.is_empty() {
                    return Err(GrammarError::UnknownWords(unknown.join(", ")).into());
                }
                let jsgf = g.jsgf();
                if self.loaded.as_deref() == Some(jsgf.as_str()) {
                    self.inner.use_grammar()?;
                } else {
                    self.inner.set_grammar(&jsgf)?;
                    self.loaded = Some(jsgf);
                }
            }
            None => self.inner.use_language_model()?,
        }
        self.inner.start()
    }

    /// Feeds 8 kHz audio of the current utterance.
    pub fn feed(&mut self, pcm: &[i16]) -> Result<(), SpeechError> {
        self.inner.feed(&upsample(pcm, &mut self.last))
    }

    /// Ends the utterance and says what was heard.
    pub fn finish(&mut self) -> Result<Hypothesis, SpeechError> {
        self.inner.finish()
    }

    /// Recognises a whole 8 kHz utterance.
    pub fn recognize(
        &mut self,
        pcm: &[i16],
        grammar: Option<&Grammar>,
    ) -> Result<Hypothesis, SpeechError> {
        self.start(grammar)?;
        self.feed(pcm)?;
        self.finish()
    }
}

/// A build without the engine: no decoder can be made, so none of its methods can be called.
#[cfg(not(feature = "pocketsphinx"))]
mod missing {
    use crate::{Hypothesis, Model, SpeechError};

    #[derive(Debug)]
    pub(crate) enum Decoder {}

    impl Decoder {
        pub(crate) fn new(_: &Model) -> Result<Decoder, SpeechError> {
            Err(SpeechError::NotBuilt)
        }
        pub(crate) fn knows(&self, _: &str) -> bool {
            match *self {}
        }
        pub(crate) fn set_grammar(&mut self, _: &str) -> Result<(), SpeechError> {
            match *self {}
        }
        pub(crate) fn use_grammar(&mut self) -> Result<(), SpeechError> {
            match *self {}
        }
        pub(crate) fn use_language_model(&mut self) -> Result<(), SpeechError> {
            match *self {}
        }
        pub(crate) fn start(&mut self) -> Result<(), SpeechError> {
            match *self {}
        }
        pub(crate) fn feed(&mut self, _: &[i16]) -> Result<(), SpeechError> {
            match *self {}
        }
        pub(crate) fn finish(&mut self) -> Result<Hypothesis, SpeechError> {
            match *self {}
        }
    }
}

/// Word errors of `hypothesis` against `reference` (word-level Levenshtein distance:
/// substitutions, insertions, deletions); divided by the reference's word count, the word
/// error rate.
pub fn word_errors(reference: &str, hypothesis: &str) -> usize {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hypothesis.split_whitespace().collect();
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(rw != hw)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[h.len()]
}

/// 8 kHz → 16 kHz by linear interpolation. (Measured: a windowed-sinc low-pass instead
/// recognises worse with this model, which was trained on full-band audio: the interpolation's
/// images above 4 kHz resemble the energy it expects there.)
fn upsample(pcm: &[i16], last: &mut i16) -> Vec<i16> {
    let mut out = Vec::with_capacity(pcm.len() * 2);
    for &s in pcm {
        out.push(((i32::from(*last) + i32::from(s)) / 2) as i16);
        out.push(s);
        *last = s;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_errors_count_substitutions_insertions_and_deletions() {
        assert_eq!(word_errors("seven three five", "seven three five"), 0);
        assert_eq!(word_errors("seven three five", "two eight three five"), 2);
        assert_eq!(word_errors("yes please", "yes"), 1);
        assert_eq!(word_errors("", "oh"), 1);
    }

    #[test]
    fn upsampling_interpolates_across_chunks() {
        let mut last = 0;
        assert_eq!(upsample(&[100, 200], &mut last), vec![50, 100, 150, 200]);
        assert_eq!(upsample(&[0], &mut last), vec![100, 0]);
    }
}
