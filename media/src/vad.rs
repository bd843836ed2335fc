//! Voice activity and endpointing: when a caller starts speaking and when their utterance is
//! over, from 20 ms frames of 8 kHz audio.
//!
//! [`Vad`] labels each frame speech or not by its energy against a noise floor — the
//! quietest frame of the last 3 s, so steady line noise or a hum is learned at once and does
//! not count as speech, while speech (which pauses) is not mistaken for noise — with a few
//! frames of onset and hangover so a click does not start an utterance and a pause between
//! words does not end one.
//!
//! [`Endpointer`] turns those labels into an utterance's life: `Started` once speech lasted
//! [`EndpointOptions::min_speech`] (what counts as a barge-in), `Ended` after
//! [`EndpointOptions::end_silence`] of silence following it (or at
//! [`EndpointOptions::max_utterance`]), `NoInput` if nobody spoke within
//! [`EndpointOptions::no_input`]. Pure: time is the frame count.

use std::time::Duration;

/// Frame length the detectors expect (20 ms at 8 kHz).
pub const FRAME: usize = 160;

/// Frame-level speech detection.
#[derive(Debug, Clone)]
pub struct Vad {
    /// The last frames' energies (mean square): the noise floor is their minimum.
    history: std::collections::VecDeque<f64>,
    /// Speech needs this many times the floor's energy (and at least `min_energy`).
    ratio: f64,
    min_energy: f64,
    /// Consecutive loud frames before speech, quiet ones before silence.
    onset: u32,
    hangover: u32,
    loud_run: u32,
    quiet_run: u32,
    speaking: bool,
}

/// Frames the noise floor looks back over (3 s): longer than a word, shorter than a pause
/// between sentences is rare.
const FLOOR_FRAMES: usize = 150;
/// The floor before anything was heard (about -45 dBFS).
const PRIOR_FLOOR: f64 = 1.0e4;

impl Default for Vad {
    fn default() -> Self {
        Vad {
            history: std::collections::VecDeque::with_capacity(FLOOR_FRAMES),
            // About 10 dB over the noise.
            ratio: 10.0,
            // About -45 dBFS: quieter than this is never speech.
            min_energy: 1.0e4,
            onset: 2,
            hangover: 8,
            loud_run: 0,
            quiet_run: 0,
            speaking: false,
        }
    }
}

impl Vad {
    /// The noise floor: the quietest of the last frames (a steady hum is learned within a
    /// frame or two; speech, with its pauses, is not).
    fn floor(&self) -> f64 {
        self.history.iter().copied().fold(f64::INFINITY, f64::min).max(100.0)
    }

    /// Whether the caller is speaking as of this frame.
    pub fn push(&mut self, frame: &[i16]) -> bool {
        let energy = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>()
            / frame.len().max(1) as f64;
        let floor = if self.history.is_empty() { PRIOR_FLOOR } else { self.floor() };
        let loud = energy >= self.min_energy && energy >= floor * self.ratio;
        if self.history.len() == FLOOR_FRAMES {
            self.history.pop_front();
        }
        self.history.push_back(energy);
        if loud {
            (self.loud_run, self.quiet_run) = (self.loud_run + 1, 0);
            if self.loud_run >= self.onset {
                self.speaking = true;
            }
        } else {
            (self.loud_run, self.quiet_run) = (0, self.quiet_run + 1);
            if self.quiet_run >= self.hangover {
                self.speaking = false;
            }
        }
        self.speaking
    }
}

/// When an utterance counts as begun and as over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointOptions {
    /// Nobody spoke within this: no input.
    pub no_input: Duration,
    /// Speech this long starts an utterance (shorter sounds — a cough, "mm" — do not
    /// interrupt).
    pub min_speech: Duration,
    /// Silence this long after speech ends the utterance.
    pub end_silence: Duration,
    /// An utterance is cut here, still speaking.
    pub max_utterance: Duration,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            no_input: Duration::from_secs(5),
            min_speech: Duration::from_millis(200),
            end_silence: Duration::from_millis(700),
            max_utterance: Duration::from_secs(15),
        }
    }
}

/// What an utterance did at a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Speech lasted `min_speech`: it began at `at_ms` (a barge-in, if we were talking).
    Started { at_ms: u64 },
    /// The utterance is over: from `start_ms` to `end_ms` (its last speech).
    Ended { start_ms: u64, end_ms: u64, cut: bool },
    /// Nobody spoke in time.
    NoInput,
}

/// An utterance's detector; feed it every frame from when listening starts.
#[derive(Debug, Clone)]
pub struct Endpointer {
    opts: EndpointOptions,
    vad: Vad,
    ms: u64,
    /// Where the current run of speech began, and whether it counted as an utterance yet.
    speech_since: Option<u64>,
    started: Option<u64>,
    last_speech_ms: u64,
    done: bool,
}

impl Endpointer {
    pub fn new(opts: EndpointOptions) -> Endpointer {
        Endpointer {
            opts,
            vad: Vad::default(),
            ms: 0,
            speech_since: None,
            started: None,
            last_speech_ms: 0,
            done: false,
        }
    }

    /// One frame; `Some` when something happened (nothing after `Ended` or `NoInput`).
    pub fn push(&mut self, frame: &[i16]) -> Option<Endpoint> {
        if self.done {
            return None;
        }
        let at = self.ms;
        self.ms += (frame.len() as u64 * 1000 / 8000).max(1);
        let ms = |d: Duration| d.as_millis() as u64;
        let speaking = self.vad.push(frame);
        if speaking {
            self.last_speech_ms = self.ms;
            let since = *self.speech_since.get_or_insert(at);
            if self.started.is_none() && self.ms - since >= ms(self.opts.min_speech) {
                self.started = Some(since);
                return Some(Endpoint::Started { at_ms: since });
            }
        } else if self.started.is_none() {
            self.speech_since = None;
        }
        match self.started {
            Some(start) if self.ms - start >= ms(self.opts.max_utterance) => {
                self.done = true;
                Some(Endpoint::Ended { start_ms: start, end_ms: self.ms, cut: true })
            }
            Some(start)
                if !speaking && self.ms - self.last_speech_ms >= ms(self.opts.end_silence) =>
            {
                self.done = true;
                Some(Endpoint::Ended { start_ms: start, end_ms: self.last_speech_ms, cut: false })
            }
            None if self.speech_since.is_none() && self.ms >= ms(self.opts.no_input) => {
                self.done = true;
                Some(Endpoint::NoInput)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of `ms` of a 300 Hz tone at `amp` plus a little hiss (deterministic).
    fn audio(ms: u64, amp: f64, t0: &mut usize) -> Vec<Vec<i16>> {
        (0..ms / 20)
            .map(|_| {
                let frame = (0..FRAME)
                    .map(|i| {
                        let n = *t0 + i;
                        let tone =
                            (n as f64 * 2.0 * std::f64::consts::PI * 300.0 / 8000.0).sin() * amp;
                        let hiss = ((n * 7919 % 200) as f64 - 100.0) * 0.6;
                        (tone + hiss) as i16
                    })
                    .collect();
                *t0 += FRAME;
                frame
            })
            .collect()
    }

    fn run(opts: EndpointOptions, script: &[(u64, f64)]) -> Vec<Endpoint> {
        let (mut e, mut t, mut out) = (Endpointer::new(opts), 0, Vec::new());
        for &(ms, amp) in script {
            for frame in audio(ms, amp, &mut t) {
                out.extend(e.push(&frame));
            }
        }
        out
    }

    #[test]
    fn an_utterance_starts_after_min_speech_and_ends_after_the_silence_that_follows() {
        let events = run(EndpointOptions::default(), &[(500, 0.0), (1200, 6000.0), (1500, 0.0)]);
        let Endpoint::Started { at_ms } = events[0] else { panic!("{events:?}") };
        assert!((500..=560).contains(&at_ms), "{events:?}");
        let Endpoint::Ended { start_ms, end_ms, cut } = events[1] else { panic!("{events:?}") };
        assert_eq!((start_ms, cut), (at_ms, false));
        // Speech ended at 1700 ms; the hangover keeps a few frames.
        assert!((1700..=1900).contains(&end_ms), "{events:?}");
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn a_cough_is_not_an_utterance_and_a_pause_between_words_does_not_end_one() {
        let opts =
            EndpointOptions { no_input: Duration::from_secs(2), ..EndpointOptions::default() };
        // A 60 ms cough, then nothing: no input.
        assert_eq!(run(opts, &[(300, 0.0), (60, 8000.0), (2500, 0.0)]), vec![Endpoint::NoInput]);
        // Two words 300 ms apart are one utterance.
        let events = run(
            EndpointOptions::default(),
            &[(400, 4000.0), (300, 0.0), (400, 4000.0), (1200, 0.0)],
        );
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            matches!(events[1], Endpoint::Ended { end_ms, .. } if end_ms >= 1100),
            "{events:?}"
        );
    }

    #[test]
    fn steady_noise_is_learned_and_speech_over_it_still_counts() {
        // A loud hum for two seconds (the floor learns it), then speech well above it.
        let events =
            run(EndpointOptions::default(), &[(2000, 1500.0), (800, 9000.0), (1000, 1500.0)]);
        assert!(matches!(events[0], Endpoint::Started { at_ms } if at_ms >= 2000), "{events:?}");
        assert!(matches!(events[1], Endpoint::Ended { cut: false, .. }), "{events:?}");
    }

    #[test]
    fn a_monologue_is_cut_at_the_maximum() {
        let opts =
            EndpointOptions { max_utterance: Duration::from_secs(2), ..EndpointOptions::default() };
        let events = run(opts, &[(300, 0.0), (3000, 5000.0)]);
        assert!(
            matches!(events[1], Endpoint::Ended { cut: true, end_ms, .. } if end_ms == 2320),
            "{events:?}"
        );
    }
}
