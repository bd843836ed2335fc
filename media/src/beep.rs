//! The beep after an answering machine's greeting: a steady single tone (most machines use
//! 400–2,000 Hz) held for at least [`MIN_BEEP_MS`], found by Goertzel filters on 20 ms frames.
//! A frame is tonal when one filter holds most of its energy; a beep is enough consecutive
//! tonal frames on the same filter (or its neighbour: a tone between two bins). Speech and
//! music glide between frequencies and fail the test; DTMF is two tones and fails it too.

use crate::dtmf::detect::goertzel;

/// The filters: 400 to 2,000 Hz every 25 Hz.
const LOW_HZ: f64 = 400.0;
const STEP_HZ: f64 = 25.0;
const BINS: usize = 65;
/// A tone this long is a beep.
pub const MIN_BEEP_MS: u64 = 160;
/// Share of a frame's energy the strongest filter must hold.
const PURITY: f64 = 0.6;
/// Quieter frames are not looked at (about -45 dBFS).
const MIN_ENERGY: f64 = 1.0e4;

/// A beep heard: its frequency and when it ended (ms since the first frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beep {
    pub hz: f64,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Feed it 20 ms frames of 8 kHz audio; it reports each beep once it ends.
#[derive(Debug, Clone)]
pub struct BeepDetector {
    ms: u64,
    /// The tone being held: its bin, and since when.
    run: Option<(usize, u64)>,
    coeffs: Vec<f64>,
}

impl Default for BeepDetector {
    fn default() -> Self {
        BeepDetector::new()
    }
}

impl BeepDetector {
    pub fn new() -> BeepDetector {
        let coeffs = (0..BINS)
            .map(|k| {
                let hz = LOW_HZ + STEP_HZ * k as f64;
                2.0 * (2.0 * std::f64::consts::PI * hz / 8000.0).cos()
            })
            .collect();
        BeepDetector { ms: 0, run: None, coeffs }
    }

    /// The strongest filter of `frame` if the frame is one tone.
    fn tone(&self, frame: &[i16]) -> Option<usize> {
        let x: Vec<f64> = frame.iter().map(|&s| f64::from(s)).collect();
        let n = x.len().max(1) as f64;
        let energy = x.iter().map(|v| v * v).sum::<f64>();
        if energy / n < MIN_ENERGY {
            return None;
        }
        let (bin, power) = self
            .coeffs
            .iter()
            .map(|&c| goertzel(&x, c))
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        // A pure tone of amplitude A over N samples has |X|² ≈ (A·N/2)² and energy A²·N/2:
        // the share of the energy at that frequency is 2·|X|² / (N · energy).
        (2.0 * power / (n * energy) >= PURITY).then_some(bin)
    }

    /// One frame; `Some` when a beep just ended.
    pub fn push(&mut self, frame: &[i16]) -> Option<Beep> {
        let at = self.ms;
        self.ms += frame.len() as u64 / 8;
        let tone = self.tone(frame);
        match (self.run, tone) {
            (Some((bin, since)), Some(t)) if t.abs_diff(bin) <= 1 => {
                self.run = Some((bin, since));
                None
            }
            (run, tone) => {
                self.run = tone.map(|t| (t, at));
                let (bin, since) = run?;
                (at - since >= MIN_BEEP_MS).then_some(Beep {
                    hz: LOW_HZ + STEP_HZ * bin as f64,
                    start_ms: since,
                    end_ms: at,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(samples: &[i16]) -> impl Iterator<Item = &[i16]> {
        samples.chunks(160)
    }

    fn tone(hz: f64, ms: usize, amp: f64) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * hz / 8000.0).sin() * amp) as i16)
            .collect()
    }

    fn run(samples: &[i16]) -> Vec<Beep> {
        let mut d = BeepDetector::new();
        frames(samples).filter_map(|f| d.push(f)).collect()
    }

    #[test]
    fn a_machines_beep_is_found_with_its_frequency_and_end() {
        for hz in [440.0, 1000.0, 1390.0, 1990.0] {
            let audio = [vec![0i16; 2400], tone(hz, 400, 8000.0), vec![0i16; 1600]].concat();
            let beeps = run(&audio);
            assert_eq!(beeps.len(), 1, "{hz} Hz: {beeps:?}");
            assert!((beeps[0].hz - hz).abs() <= 25.0, "{hz} Hz: {beeps:?}");
            assert_eq!((beeps[0].start_ms, beeps[0].end_ms), (300, 700), "{hz} Hz");
        }
    }

    #[test]
    fn short_tones_glides_two_tone_dtmf_and_silence_are_not_beeps() {
        assert!(run(&[tone(1000.0, 100, 8000.0), vec![0; 800]].concat()).is_empty());
        // A glide, like a voice: 300 → 1,800 Hz over a second.
        let mut phase = 0.0f64;
        let glide: Vec<i16> = (0..8000)
            .map(|i| {
                phase += 2.0 * std::f64::consts::PI * (300.0 + 1500.0 * i as f64 / 8000.0) / 8000.0;
                (phase.sin() * 8000.0) as i16
            })
            .collect();
        assert!(run(&glide).is_empty());
        let dtmf: Vec<i16> = tone(770.0, 400, 5000.0)
            .iter()
            .zip(tone(1336.0, 400, 5000.0))
            .map(|(a, b)| a + b)
            .collect();
        assert!(run(&[dtmf, vec![0; 800]].concat()).is_empty());
        assert!(run(&vec![0i16; 8000]).is_empty());
        assert!(run(&[tone(1000.0, 400, 20.0), vec![0; 800]].concat()).is_empty(), "too quiet");
    }
}
