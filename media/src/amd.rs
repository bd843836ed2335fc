//! Answering-machine detection from the callee's first speech/silence pattern, frame by frame.
//!
//! A person answering says a short greeting ("Hello?") and waits; a machine plays a long one
//! ("Hi, you've reached… leave a message after the tone"). Each 20 ms frame is voiced or
//! silent by its mean amplitude; voiced runs of at least `min_word` after a gap of at least
//! `between_words` count as words. The verdict, the first rule that holds:
//!
//! - a word was heard, then `after_greeting_silence` without one (sounds shorter than a word,
//!   clicks or breaths, do not count), with fewer than
//!   `greeting` of voice and at most `max_words` words: **human** (the greeting ended when
//!   the last word did: [`Detection::greeting_end_ms`]);
//! - `greeting` of voice, or more than `max_words` words: **machine**;
//! - `initial_silence` before any word: **silent** (nobody spoke; the caller is treated as a
//!   person, the compliance clock running from the answer);
//! - `total` elapsed: **not sure** (treated as a person too).
//!
//! Pure: the media task feeds it the decoded frames, the tests feed it synthetic ones.

use std::time::Duration;

use crate::beep::BeepDetector;

/// Thresholds. The defaults follow common dialler settings, with a shorter initial silence
/// so a silent answer still leaves time to connect an agent within the 2 s the law allows.
#[derive(Debug, Clone, PartialEq)]
pub struct AmdSpec {
    pub initial_silence: Duration,
    pub greeting: Duration,
    pub after_greeting_silence: Duration,
    pub total: Duration,
    pub min_word: Duration,
    pub between_words: Duration,
    pub max_words: u32,
    /// Mean absolute amplitude (16-bit linear) at or above which a frame is voiced.
    pub level: u32,
    /// A machine's beep ends the analysis (verdict `Human`, reason `beep`): for waiting out
    /// a greeting before leaving a message.
    pub beep: bool,
}

impl Default for AmdSpec {
    fn default() -> Self {
        AmdSpec {
            initial_silence: Duration::from_millis(1000),
            greeting: Duration::from_millis(1500),
            after_greeting_silence: Duration::from_millis(800),
            total: Duration::from_millis(5000),
            min_word: Duration::from_millis(100),
            between_words: Duration::from_millis(50),
            max_words: 3,
            level: 330,
            beep: false,
        }
    }
}

impl AmdSpec {
    /// Waiting for a machine's greeting to end (to leave a message after it): its beep, or
    /// silence after speech, or no speech at all, ends it, within `total`.
    pub fn end_of_greeting(silence: Duration, total: Duration) -> AmdSpec {
        AmdSpec {
            initial_silence: silence,
            greeting: total,
            after_greeting_silence: silence,
            total,
            max_words: u32::MAX,
            beep: true,
            ..AmdSpec::default()
        }
    }
}

/// What the detector concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Human,
    Machine,
    /// Nobody spoke within the initial silence.
    Silent,
    /// The analysis time ran out.
    NotSure,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Human => "human",
            Verdict::Machine => "machine",
            Verdict::Silent => "silent",
            Verdict::NotSure => "not-sure",
        }
    }
}

/// A verdict and what it rests on; times from the first frame analysed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub verdict: Verdict,
    /// The rule that decided (`after-greeting-silence`, `long-greeting`, `max-words`,
    /// `initial-silence`, `total-time`, `call-ended`).
    pub reason: &'static str,
    pub decided_ms: u64,
    /// When the last word ended (no word: `None`).
    pub greeting_end_ms: Option<u64>,
    pub words: u32,
    pub voiced_ms: u64,
}

/// The detector's state between frames.
#[derive(Debug, Clone)]
pub struct Detector {
    spec: AmdSpec,
    elapsed_ms: u64,
    voiced_ms: u64,
    words: u32,
    /// The current voiced run, and whether it already counts as a word.
    run_ms: u64,
    in_word: bool,
    /// Silence since the last voiced frame.
    silence_ms: u64,
    greeting_end_ms: Option<u64>,
    beep: Option<BeepDetector>,
}

impl Detector {
    pub fn new(spec: AmdSpec) -> Detector {
        Detector {
            elapsed_ms: 0,
            voiced_ms: 0,
            words: 0,
            run_ms: 0,
            in_word: false,
            silence_ms: 0,
            greeting_end_ms: None,
            beep: spec.beep.then(BeepDetector::new),
            spec,
        }
    }

    /// Feeds one frame of 8 kHz samples; `Some` once decided.
    pub fn push(&mut self, frame: &[i16]) -> Option<Detection> {
        let ms = frame.len() as u64 / 8;
        self.elapsed_ms += ms;
        if let Some(beep) = self.beep.as_mut().and_then(|b| b.push(frame)) {
            self.greeting_end_ms = Some(beep.end_ms);
            return Some(self.decide(Verdict::Human, "beep"));
        }
        let level = frame.iter().map(|s| u64::from(s.unsigned_abs())).sum::<u64>()
            / frame.len().max(1) as u64;
        let ms_of = |d: Duration| d.as_millis() as u64;
        if level >= u64::from(self.spec.level) {
            // A gap shorter than `between_words` does not split a word.
            if self.silence_ms >= ms_of(self.spec.between_words) {
                self.run_ms = 0;
                self.in_word = false;
            }
            self.silence_ms = 0;
            self.run_ms += ms;
            self.voiced_ms += ms;
            if !self.in_word && self.run_ms >= ms_of(self.spec.min_word) {
                self.in_word = true;
                self.words += 1;
            }
            if self.in_word {
                self.greeting_end_ms = Some(self.elapsed_ms);
            }
            if self.voiced_ms >= ms_of(self.spec.greeting) {
                return Some(self.decide(Verdict::Machine, "long-greeting"));
            }
            if self.words > self.spec.max_words {
                return Some(self.decide(Verdict::Machine, "max-words"));
            }
        } else {
            self.silence_ms += ms;
            if self.words == 0 && self.elapsed_ms >= ms_of(self.spec.initial_silence) {
                return Some(self.decide(Verdict::Silent, "initial-silence"));
            }
        }
        // Quiet since the last word — clicks and breaths shorter than a word do not count as
        // speech — after a short greeting: a person.
        if let Some(end) = self.greeting_end_ms
            && self.elapsed_ms - end >= ms_of(self.spec.after_greeting_silence)
        {
            return Some(self.decide(Verdict::Human, "after-greeting-silence"));
        }
        (self.elapsed_ms >= ms_of(self.spec.total))
            .then(|| self.decide(Verdict::NotSure, "total-time"))
    }

    /// The verdict when the audio stops before a rule decided (the call ended).
    pub fn cut_short(&self) -> Detection {
        self.decide(Verdict::NotSure, "call-ended")
    }

    fn decide(&self, verdict: Verdict, reason: &'static str) -> Detection {
        Detection {
            verdict,
            reason,
            decided_ms: self.elapsed_ms,
            greeting_end_ms: self.greeting_end_ms,
            words: self.words,
            voiced_ms: self.voiced_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pattern`: (voiced?, ms) runs, as 20 ms frames of a 400 Hz tone or silence.
    fn run(spec: AmdSpec, pattern: &[(bool, u64)]) -> Option<Detection> {
        let mut d = Detector::new(spec);
        let mut t = 0usize;
        for &(voiced, ms) in pattern {
            for _ in 0..ms / 20 {
                let frame: Vec<i16> = (0..160)
                    .map(|i| {
                        let x = (t + i) as f64 * 2.0 * std::f64::consts::PI * 400.0 / 8000.0;
                        if voiced { (x.sin() * 8000.0) as i16 } else { (x.sin() * 40.0) as i16 }
                    })
                    .collect();
                t += 160;
                if let Some(v) = d.push(&frame) {
                    return Some(v);
                }
            }
        }
        None
    }

    #[test]
    fn a_short_hello_then_silence_is_a_person_whose_greeting_ended_with_the_word() {
        let d = run(AmdSpec::default(), &[(false, 300), (true, 500), (false, 2000)]).unwrap();
        assert_eq!((d.verdict, d.reason, d.words), (Verdict::Human, "after-greeting-silence", 1));
        assert_eq!(d.greeting_end_ms, Some(800));
        assert_eq!(d.decided_ms, 1600);
    }

    #[test]
    fn a_long_greeting_or_many_words_is_a_machine() {
        let long = run(AmdSpec::default(), &[(false, 200), (true, 3000)]).unwrap();
        assert_eq!((long.verdict, long.reason), (Verdict::Machine, "long-greeting"));
        assert_eq!(long.decided_ms, 1700);
        let words: Vec<(bool, u64)> = (0..6).flat_map(|_| [(true, 200), (false, 200)]).collect();
        let many = run(AmdSpec::default(), &words).unwrap();
        assert_eq!((many.verdict, many.reason, many.words), (Verdict::Machine, "max-words", 4));
    }

    #[test]
    fn silence_and_a_gap_inside_a_word_and_clicks_are_not_words() {
        let silent = run(AmdSpec::default(), &[(false, 3000)]).unwrap();
        assert_eq!((silent.verdict, silent.greeting_end_ms), (Verdict::Silent, None));
        assert_eq!(silent.decided_ms, 1000);
        // 20 ms clicks are shorter than a word: still silent.
        let clicks: Vec<(bool, u64)> = (0..20).flat_map(|_| [(true, 20), (false, 80)]).collect();
        assert_eq!(run(AmdSpec::default(), &clicks).unwrap().verdict, Verdict::Silent);
        // A 40 ms dip inside a word (under between-words) does not start a second word.
        let spec = AmdSpec { between_words: Duration::from_millis(60), ..AmdSpec::default() };
        let d = run(spec, &[(true, 300), (false, 40), (true, 300), (false, 1000)]).unwrap();
        assert_eq!((d.verdict, d.words), (Verdict::Human, 1));
    }

    #[test]
    fn clicks_after_a_hello_do_not_keep_a_person_waiting() {
        let clicks: Vec<(bool, u64)> = (0..10).flat_map(|_| [(false, 180), (true, 20)]).collect();
        let d = run(AmdSpec::default(), &[&[(true, 500)][..], &clicks].concat()).unwrap();
        assert_eq!((d.verdict, d.greeting_end_ms, d.decided_ms), (Verdict::Human, Some(500), 1300));
    }

    #[test]
    fn a_beep_ends_the_wait_for_a_greeting_at_once() {
        let spec = AmdSpec::end_of_greeting(Duration::from_millis(1000), Duration::from_secs(20));
        let mut d = Detector::new(spec);
        // Two seconds of "greeting" (a glide, as a voice moves), then a 1 kHz beep of 400 ms.
        let mut phase = 0.0f64;
        let mut audio: Vec<i16> = (0..16_000)
            .map(|i| {
                phase +=
                    2.0 * std::f64::consts::PI * (300.0 + 200.0 * ((i / 800) % 3) as f64) / 8000.0;
                (phase.sin() * 6000.0) as i16
            })
            .collect();
        audio.extend((0..3200).map(|i| {
            ((i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 8000.0).sin() * 8000.0) as i16
        }));
        audio.extend(vec![0i16; 3200]);
        let verdict = audio.chunks(160).find_map(|f| d.push(f)).unwrap();
        assert_eq!((verdict.verdict, verdict.reason), (Verdict::Human, "beep"), "{verdict:?}");
        // Decided when the beep ended (2.4 s), not a second of silence later.
        assert_eq!((verdict.greeting_end_ms, verdict.decided_ms), (Some(2400), 2420));
    }

    #[test]
    fn waiting_for_the_end_of_a_machines_greeting() {
        // The test's "voice" is a steady tone, which the beep detector would take for a beep.
        let spec = AmdSpec {
            beep: false,
            ..AmdSpec::end_of_greeting(Duration::from_millis(1000), Duration::from_secs(20))
        };
        let d = run(spec.clone(), &[(true, 6000), (false, 400), (true, 2000), (false, 2000)]);
        let d = d.unwrap();
        assert_eq!(
            (d.verdict, d.greeting_end_ms, d.decided_ms),
            (Verdict::Human, Some(8400), 9400)
        );
        let never = run(spec, &[(true, 21_000)]).unwrap();
        assert_eq!((never.verdict, never.reason), (Verdict::Machine, "long-greeting"));
    }
}
