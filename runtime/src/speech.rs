//! Speech recognition for calls: a pool of loaded recognizers ([`SpeechEngine`]), the
//! blocking worker that decodes one utterance while the call streams its audio in
//! ([`Decoding`]), and what a caller heard of a prompt cut short ([`heard_text`]).
//!
//! Loading a recognizer reads the model (tens of MB), so recognizers are kept and reused; a
//! listening call takes one for the length of its utterance, on a blocking thread of its own,
//! and gives it back. Audio reaches the worker over a bounded channel sized for the longest
//! utterance allowed, so the call's task never waits on the decoder.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use voxide_speech::{Grammar, Hypothesis, Model, Recognizer, SpeechError};

/// Idle recognizers kept loaded beyond this are dropped (each holds its model in memory).
const KEEP_IDLE: usize = 8;

/// The loaded recognizers of one node.
#[derive(Debug)]
pub struct SpeechEngine {
    model: Model,
    idle: Mutex<Vec<Recognizer>>,
}

impl SpeechEngine {
    /// An engine on `model`, or why there can be none (the model or the library missing).
    /// Loads one recognizer in the background so the first caller does not wait for it.
    pub fn new(model: Model) -> Result<Arc<SpeechEngine>, SpeechError> {
        if !model.installed() {
            return Err(SpeechError::ModelMissing(model.acoustic.clone()));
        }
        let engine = Arc::new(SpeechEngine { model, idle: Mutex::default() });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let warm = engine.clone();
            runtime.spawn_blocking(move || match warm.take() {
                Ok(recognizer) => warm.give(recognizer),
                Err(e) => tracing::warn!("speech recognizer failed to load: {e}"),
            });
        }
        Ok(engine)
    }

    /// Debian's `pocketsphinx-en-us` model.
    pub fn debian_en_us() -> Result<Arc<SpeechEngine>, SpeechError> {
        SpeechEngine::new(Model::debian_en_us())
    }

    fn take(&self) -> Result<Recognizer, SpeechError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(recognizer) => Ok(recognizer),
            None => Recognizer::new(&self.model),
        }
    }

    fn give(&self, recognizer: Recognizer) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < KEEP_IDLE {
            idle.push(recognizer);
        }
    }

    /// Starts decoding one utterance constrained to `grammar` (None: open vocabulary) on a
    /// blocking thread: room for `frames` frames of audio. [`Decoding::ready`] says whether
    /// the recognizer accepted the grammar (a hint word missing from its dictionary is
    /// [`SpeechError::Grammar`]).
    pub(crate) fn decode(self: &Arc<Self>, grammar: Option<Grammar>, frames: usize) -> Decoding {
        let (audio, mut rx) = mpsc::channel::<Vec<i16>>(frames.max(1));
        let (ready_tx, ready) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut recognizer = match engine.take() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = recognizer.start(grammar.as_ref()) {
                let _ = ready_tx.send(Err(e));
                engine.give(recognizer);
                return;
            }
            let _ = ready_tx.send(Ok(()));
            let mut result = Ok(());
            while let Some(frame) = rx.blocking_recv() {
                if result.is_ok() {
                    result = recognizer.feed(&frame);
                }
            }
            let hypothesis = result.and_then(|()| recognizer.finish());
            let failed = hypothesis.is_err();
            let _ = done_tx.send(hypothesis);
            // A decoder that failed mid-utterance is not trusted again.
            if !failed {
                engine.give(recognizer);
            }
        });
        Decoding { audio: Some(audio), ready: Some(ready), done }
    }
}

/// One utterance being decoded; dropping it abandons the utterance (the recognizer is given
/// back once the worker has drained it).
#[derive(Debug)]
pub(crate) struct Decoding {
    audio: Option<mpsc::Sender<Vec<i16>>>,
    ready: Option<oneshot::Receiver<Result<(), SpeechError>>>,
    done: oneshot::Receiver<Result<Hypothesis, SpeechError>>,
}

impl Decoding {
    /// Whether the recognizer is loaded and took the grammar (waits for the load).
    pub(crate) async fn ready(&mut self) -> Result<(), SpeechError> {
        match self.ready.take() {
            Some(ready) => ready.await.unwrap_or_else(|_| Err(worker_lost())),
            None => Ok(()),
        }
    }

    /// Audio of the utterance. The channel holds the longest utterance allowed, so a frame
    /// is only lost if the decoder died; the result then reports it.
    pub(crate) fn feed(&self, frame: Vec<i16>) {
        if let Some(audio) = &self.audio {
            let _ = audio.try_send(frame);
        }
    }

    /// Ends the utterance and waits for what was recognised.
    pub(crate) async fn finish(mut self) -> Result<Hypothesis, SpeechError> {
        self.audio = None;
        (&mut self.done).await.unwrap_or_else(|_| Err(worker_lost()))
    }
}

fn worker_lost() -> SpeechError {
    SpeechError::Engine("the recognizer's worker stopped".into())
}

/// The words of `text` whose audio is within the first `sent` samples of `pcm`, the prompt
/// rendered from it: word boundaries are spread over the voiced part of the audio in
/// proportion to each word's length (the TTS engine gives no word timings). A word counts as
/// heard once its audio has been sent whole.
pub fn heard_text(text: &str, pcm: &[i16], sent: usize) -> String {
    if sent >= pcm.len() {
        return text.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    const LOUD: u16 = 300;
    let first = pcm.iter().position(|s| s.unsigned_abs() > LOUD);
    let last = pcm.iter().rposition(|s| s.unsigned_abs() > LOUD);
    let (Some(first), Some(last)) = (first, last) else { return String::new() };
    heard_words(text, first, last, sent)
}

/// The words of `text` heard by `sent`, when its speech runs from `first` to `last` (any
/// unit: samples, ms): word ends spread in proportion to the words' lengths.
pub fn heard_words(text: &str, first: usize, last: usize, sent: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    // Each word weighs its letters plus one for the gap after it.
    let weight = |w: &str| w.chars().filter(|c| c.is_alphanumeric()).count() + 1;
    let total: usize = words.iter().map(|w| weight(w)).sum();
    let span = last.saturating_sub(first).max(1);
    let mut done = 0;
    let mut heard = Vec::new();
    for word in words {
        done += weight(word);
        // The word's audio ends before its trailing gap.
        let end = first + span * (done - 1) / total.max(1);
        if end > sent {
            break;
        }
        heard.push(word);
    }
    heard.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_text_is_the_words_whose_audio_was_sent() {
        // 100 samples of silence, 900 of "speech", 100 of silence.
        let mut pcm = vec![0i16; 100];
        pcm.extend(std::iter::repeat_n(5000i16, 900));
        pcm.extend(std::iter::repeat_n(0i16, 100));
        let text = "one two three";
        // Weights 4, 4, 6 of 14 over samples 100..999: the words end at 292, 549 and 934.
        assert_eq!(heard_text(text, &pcm, 0), "");
        assert_eq!(heard_text(text, &pcm, 291), "");
        assert_eq!(heard_text(text, &pcm, 300), "one");
        assert_eq!(heard_text(text, &pcm, 600), "one two");
        assert_eq!(heard_text(text, &pcm, 950), "one two three");
        assert_eq!(heard_text(text, &pcm, 1100), "one two three");
        assert_eq!(heard_text("  spaced   out ", &pcm, 5000), "spaced out");
        assert_eq!(heard_text(text, &[0; 50], 10), "");
    }
}
