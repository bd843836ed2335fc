//! In-band DTMF detection on 8 kHz linear PCM with Goertzel filters.
//!
//! Some peers (PSTN gateways, old PBXs) send key presses as tones in the audio rather than as
//! RFC 4733 events, so an IVR must hear them. A detector must find every real digit in noise
//! and — just as important — stay silent during speech and music ("talk-off"), or callers get
//! menus jumping under them.
//!
//! How: the eight DTMF frequencies are measured with Goertzel filters over a 102-sample window
//! (12.75 ms) that slides by 17 samples. A window "hits" a digit when, in the spirit of
//! ITU-T Q.24:
//! - the strongest row tone and the strongest column tone each stand at least 6 dB above the
//!   other tones of their group;
//! - a joint least-squares fit of those two sinusoids (each at its nominal frequency or
//!   ±1.5 %, the Q.24 tolerance, whichever the Goertzel filters find strongest) gives both
//!   tones ≈ −35 dBm0 or more;
//! - the twist is within limits: the column tone at most 8 dB weaker (normal twist) or 4 dB
//!   stronger (reverse twist) than the row tone;
//! - the two fitted tones explain at least 90 % of the window's energy — the check that
//!   rejects speech and music, whose energy is spread over many harmonics. (Clean digits score
//!   ≈ 0.99 even in 20 dB noise; a vowel whose formants sit on a row and a column frequency
//!   scores ≤ 0.76 in our tests.) The joint fit matters: separate Goertzel powers of two
//!   simultaneous tones interfere through their sidelobes, which made that score wander by
//!   ±10 % from window to window.
//!
//! A digit is reported once its window hits for about 33 ms of signal (so tones of 40 ms, the
//! Q.24 minimum, are heard and blips of 30 ms or less are not), and the next report needs a gap
//! of about 26 ms without it (so a brief drop-out inside one press does not produce a second
//! digit, while the standard 40 ms inter-digit pause separates two presses). A different digit
//! can follow without a gap. The window length of 102 samples puts the filters' spectral nulls
//! near the neighbouring DTMF frequencies, so adjacent rows/columns do not leak into each
//! other. There is no second-harmonic check: the energy share already rejects voiced speech,
//! and a row tone's 2nd harmonic falls between column tones, where a 102-sample window cannot
//! tell them apart. (Conversely, two unrelated tones gliding through a row and a column
//! frequency at the same moment look like a digit to any detector of this kind.)

use super::{HIGH_FREQS, LOW_FREQS, keypad};

/// The sample rate the detector expects.
pub const SAMPLE_RATE: u32 = 8000;
/// Analysis window (samples).
const WINDOW: usize = 102;
/// Slide between windows (samples).
const HOP: usize = 17;
/// Consecutive hitting windows before a digit is reported. A window hits when the tone covers
/// ≳ 92 of its 102 samples (the energy-share check), so 11 windows need ≈ 10 × 17 + 92 = 262
/// samples (33 ms) of tone: 40 ms tones pass with a margin, 30 ms ones do not.
const MIN_HITS: u32 = 11;
/// Consecutive windows without the reported digit that end it: a gap of G samples spoils
/// ≈ (G + 82) / 17 windows, so 17 windows is a gap of ≈ 26 ms — a 20 ms drop-out is bridged,
/// a 40 ms pause is not.
const RELEASE_MISSES: u32 = 17;
/// Smallest peak amplitude of each tone (≈ −35 dBm0 on the 16-bit scale, where a 0 dBm0 sine
/// has a peak of ≈ 22 700).
const MIN_TONE_AMPLITUDE: f64 = 400.0;
/// Largest power ratio of the row tone over the column tone (8 dB).
const NORMAL_TWIST: f64 = 6.31;
/// Largest power ratio of the column tone over the row tone (4 dB).
const REVERSE_TWIST: f64 = 2.51;
/// The winning tone of a group must exceed the others of its group by this power ratio (6 dB).
const GROUP_DOMINANCE: f64 = 4.0;
/// Share of the window's energy the two tones must carry.
const MIN_TONE_SHARE: f64 = 0.9;
/// Frequency deviation a tone may have and still be measured at full strength (Q.24: 1.5 %).
const FREQ_TOLERANCE: f64 = 0.015;

/// Detects DTMF digits in a stream of 8 kHz 16-bit samples.
#[derive(Debug, Clone)]
pub struct ToneDetector {
    /// Angular frequency (radians per sample) of each DTMF tone, rows then columns.
    omegas: [f64; 8],
    /// Goertzel coefficients `2·cos ω` of each tone: nominal, and at ±the tolerance.
    coeffs: [f64; 8],
    coeffs_low: [f64; 8],
    coeffs_high: [f64; 8],
    /// Samples; the next window starts at `start` (consumed samples are dropped in batches,
    /// not on every hop).
    pending: Vec<f64>,
    start: usize,
    /// The digit the last windows agreed on, and for how many windows.
    candidate: Option<char>,
    hits: u32,
    /// The digit last reported, held until it has been absent for `RELEASE_MISSES` windows.
    held: Option<char>,
    misses: u32,
}

impl Default for ToneDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneDetector {
    pub fn new() -> Self {
        let mut omegas = [0.0; 8];
        for (w, f) in omegas.iter_mut().zip(LOW_FREQS.iter().chain(&HIGH_FREQS)) {
            *w = 2.0 * std::f64::consts::PI * f / f64::from(SAMPLE_RATE);
        }
        let coeff = |scale: f64| omegas.map(|w| 2.0 * (w * scale).cos());
        ToneDetector {
            omegas,
            coeffs: coeff(1.0),
            coeffs_low: coeff(1.0 - FREQ_TOLERANCE),
            coeffs_high: coeff(1.0 + FREQ_TOLERANCE),
            pending: Vec::with_capacity(4 * WINDOW),
            start: 0,
            candidate: None,
            hits: 0,
            held: None,
            misses: 0,
        }
    }

    /// Forgets all state (e.g. when the stream restarts).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Feeds samples (any chunk size) and returns the digits that were recognised in them.
    pub fn push(&mut self, samples: &[i16]) -> Vec<char> {
        let mut digits = Vec::new();
        for &s in samples {
            self.pending.push(f64::from(s));
            if let Some(window) = self.pending.get(self.start..self.start + WINDOW) {
                let hit = self.analyse(window);
                if let Some(d) = self.track(hit) {
                    digits.push(d);
                }
                self.start += HOP;
                if self.start >= 2 * WINDOW {
                    self.pending.drain(..self.start);
                    self.start = 0;
                }
            }
        }
        digits
    }

    /// Debounces per-window results into digit reports.
    fn track(&mut self, hit: Option<char>) -> Option<char> {
        if hit.is_some() && hit == self.candidate {
            self.hits = self.hits.saturating_add(1);
        } else {
            self.candidate = hit;
            self.hits = u32::from(hit.is_some());
        }
        if hit.is_some() && hit == self.held {
            self.misses = 0;
        } else {
            self.misses = self.misses.saturating_add(1);
            if self.misses >= RELEASE_MISSES {
                self.held = None;
            }
        }
        if self.hits >= MIN_HITS && hit != self.held {
            self.held = hit;
            self.misses = 0;
            return hit;
        }
        None
    }

    /// The digit this window shows, if it passes every check.
    fn analyse(&self, window: &[f64]) -> Option<char> {
        let energy: f64 = window.iter().map(|x| x * x).sum();
        let n = window.len() as f64;
        // Each tone of amplitude A contributes ≥ N·A²/2 to the energy: skip quiet windows
        // before running the filters.
        if energy < n * MIN_TONE_AMPLITUDE * MIN_TONE_AMPLITUDE {
            return None;
        }
        let power = goertzel8(window, &self.coeffs);
        let (low, high) = power.split_at(4);
        let (row, low_p) = strongest(low)?;
        let (column, high_p) = strongest(high)?;
        let dominant = |group: &[f64], best: usize, p: f64| {
            group.iter().enumerate().all(|(i, &q)| i == best || q * GROUP_DOMINANCE <= p)
        };
        if !dominant(low, row, low_p) || !dominant(high, column, high_p) {
            return None;
        }
        // Each winner's frequency: nominal or at a tolerance edge, whichever is strongest.
        let tune = |index: usize, nominal_power: f64| {
            let nominal = self.omegas.get(index).copied().unwrap_or(0.0);
            let edge =
                |coeffs: &[f64; 8]| goertzel(window, coeffs.get(index).copied().unwrap_or(0.0));
            [
                (nominal * (1.0 - FREQ_TOLERANCE), edge(&self.coeffs_low)),
                (nominal * (1.0 + FREQ_TOLERANCE), edge(&self.coeffs_high)),
            ]
            .into_iter()
            .fold((nominal, nominal_power), |best, c| if c.1 > best.1 { c } else { best })
            .0
        };
        let fit = fit_two_tones(window, tune(row, low_p), tune(4 + column, high_p))?;
        let (low_a2, high_a2) = (fit.amplitude_sq[0], fit.amplitude_sq[1]);
        let min_a2 = MIN_TONE_AMPLITUDE * MIN_TONE_AMPLITUDE;
        let passes = low_a2 >= min_a2
            && high_a2 >= min_a2
            && low_a2 <= high_a2 * NORMAL_TWIST
            && high_a2 <= low_a2 * REVERSE_TWIST
            && fit.energy >= MIN_TONE_SHARE * energy;
        if passes { keypad(row, column) } else { None }
    }
}

/// [`goertzel`] for eight frequencies in one pass over `x` (the same arithmetic per filter, so
/// the same results; the independent filters interleave and vectorize).
fn goertzel8(x: &[f64], coeffs: &[f64; 8]) -> [f64; 8] {
    let (mut s1, mut s2) = ([0.0f64; 8], [0.0f64; 8]);
    for &v in x {
        for k in 0..8 {
            let s = v + coeffs[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s;
        }
    }
    std::array::from_fn(|k| s1[k] * s1[k] + s2[k] * s2[k] - coeffs[k] * s1[k] * s2[k])
}

/// Squared magnitude of the DFT of `x` at the frequency whose `2·cos(ω)` is `coeff`.
pub(crate) fn goertzel(x: &[f64], coeff: f64) -> f64 {
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The least-squares fit of two sinusoids to a window.
struct TwoToneFit {
    /// Squared amplitude of each tone.
    amplitude_sq: [f64; 2],
    /// Energy of the fitted signal (the part of the window's energy the two tones explain).
    energy: f64,
}

/// Fits `a·cos ω₁n + b·sin ω₁n + c·cos ω₂n + d·sin ω₂n` to `x` by least squares.
///
/// Goertzel powers of two simultaneous tones interfere (each filter also sees the other tone
/// through its sidelobes, adding or cancelling by up to ±20 % on a 102-sample window depending
/// on phase), which makes "share of energy in the tones" noisy. The joint fit separates them
/// exactly, so the share is 1 for a clean digit and stays the fraction of energy in two lines
/// for speech. `None` if the basis is degenerate (cannot happen for distinct DTMF tones).
fn fit_two_tones(x: &[f64], w1: f64, w2: f64) -> Option<TwoToneFit> {
    // Normal equations G·a = b with the basis generated by rotation (no trig per sample).
    let mut gram = [[0.0f64; 4]; 4];
    let mut rhs = [0.0f64; 4];
    let (step1, step2) = ((w1.cos(), w1.sin()), (w2.cos(), w2.sin()));
    let (mut p1, mut p2) = ((1.0f64, 0.0f64), (1.0f64, 0.0f64));
    for &v in x {
        let basis = [p1.0, p1.1, p2.0, p2.1];
        for (row, (g, r)) in gram.iter_mut().zip(rhs.iter_mut()).enumerate() {
            let bi = basis.get(row).copied().unwrap_or(0.0);
            *r += v * bi;
            for (gij, bj) in g.iter_mut().zip(basis) {
                *gij += bi * bj;
            }
        }
        p1 = (p1.0 * step1.0 - p1.1 * step1.1, p1.1 * step1.0 + p1.0 * step1.1);
        p2 = (p2.0 * step2.0 - p2.1 * step2.1, p2.1 * step2.0 + p2.0 * step2.1);
    }
    let coef = solve4(gram, rhs)?;
    let [a, b, c, d] = coef;
    let energy = coef.iter().zip(&rhs).map(|(k, r)| k * r).sum();
    Some(TwoToneFit { amplitude_sq: [a * a + b * b, c * c + d * d], energy })
}

/// Solves a 4×4 linear system by Gaussian elimination with partial pivoting.
fn solve4(mut m: [[f64; 4]; 4], mut v: [f64; 4]) -> Option<[f64; 4]> {
    const N: usize = 4;
    for col in 0..N {
        let pivot = (col..N).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-9 {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        for r in col + 1..N {
            let pivot_row = m[col];
            let f = m[r][col] / pivot_row[col];
            for (x, p) in m[r].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            v[r] -= f * v[col];
        }
    }
    let mut out = [0.0; N];
    for r in (0..N).rev() {
        let tail: f64 = (r + 1..N).map(|k| m[r][k] * out[k]).sum();
        out[r] = (v[r] - tail) / m[r][r];
    }
    Some(out)
}

/// Index and value of the largest element.
fn strongest(p: &[f64]) -> Option<(usize, f64)> {
    p.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::{DIGITS, frequencies};
    use crate::testutil::{XorShift, clamp_i16};
    use std::f64::consts::PI;

    /// Per-tone peak amplitude of about −10 dBm0.
    const LEVEL: f64 = 7000.0;

    #[test]
    fn the_eight_filter_pass_matches_single_filters_exactly() {
        let detector = ToneDetector::new();
        let mut rng = XorShift::new(9);
        let window: Vec<f64> = (0..WINDOW).map(|_| rng.unit() * 20_000.0).collect();
        let all = goertzel8(&window, &detector.coeffs);
        for (k, &c) in detector.coeffs.iter().enumerate() {
            assert_eq!(all[k].to_bits(), goertzel(&window, c).to_bits(), "filter {k}");
        }
    }

    /// A signal built from parts, with white noise at `snr_db` below the tone power.
    struct Signal {
        samples: Vec<f64>,
        rng: XorShift,
    }

    impl Signal {
        fn new(seed: u64) -> Self {
            Signal { samples: Vec::new(), rng: XorShift::new(seed) }
        }

        fn tones(&mut self, freqs: &[(f64, f64)], ms: u32) -> &mut Self {
            let len = (ms * 8) as usize;
            let phases: Vec<f64> = freqs.iter().map(|_| self.rng.unit() * PI).collect();
            for n in 0..len {
                let t = n as f64 / 8000.0;
                let v: f64 = freqs
                    .iter()
                    .zip(&phases)
                    .map(|((f, a), ph)| a * (2.0 * PI * f * t + ph).sin())
                    .sum();
                self.samples.push(v);
            }
            self
        }

        fn digit(&mut self, d: char, ms: u32) -> &mut Self {
            let (lo, hi) = frequencies(d).unwrap();
            self.tones(&[(lo, LEVEL), (hi, LEVEL)], ms)
        }

        fn silence(&mut self, ms: u32) -> &mut Self {
            self.samples.extend(std::iter::repeat_n(0.0, (ms * 8) as usize));
            self
        }

        /// Adds white noise at `snr_db` below a −10 dBm0 two-tone digit.
        fn noisy(&mut self, snr_db: f64) -> Vec<i16> {
            let tone_power = LEVEL * LEVEL; // two tones of A²/2 each
            let noise_rms = (tone_power / 10f64.powf(snr_db / 10.0)).sqrt();
            let uniform_peak = noise_rms * 3f64.sqrt();
            let rng = &mut self.rng;
            self.samples.iter().map(|v| clamp_i16(v + uniform_peak * rng.unit())).collect()
        }

        fn clean(&self) -> Vec<i16> {
            self.samples.iter().map(|v| clamp_i16(*v)).collect()
        }
    }

    fn detect(samples: &[i16]) -> String {
        let mut det = ToneDetector::new();
        samples.chunks(160).flat_map(|c| det.push(c)).collect()
    }

    #[test]
    fn all_sixteen_digits_in_noise_are_detected_exactly_once() {
        for seed in 1..=5 {
            let mut sig = Signal::new(seed);
            sig.silence(50);
            for d in DIGITS {
                sig.digit(d, 100).silence(100);
            }
            let samples = sig.noisy(20.0);
            assert_eq!(detect(&samples), "0123456789*#ABCD", "seed {seed}");
        }
    }

    #[test]
    fn chunk_size_does_not_matter() {
        let mut sig = Signal::new(9);
        for d in ['1', '5', '9', '#'] {
            sig.digit(d, 60).silence(60);
        }
        let samples = sig.noisy(20.0);
        for chunk in [1, 7, 102, 160, 1000, samples.len()] {
            let mut det = ToneDetector::new();
            let got: String = samples.chunks(chunk).flat_map(|c| det.push(c)).collect();
            assert_eq!(got, "159#", "chunk {chunk}");
        }
    }

    #[test]
    fn minimum_length_digits_and_gaps_are_detected() {
        // Q.24: 40 ms tones with 40 ms pauses must all be recognised.
        for seed in 1..=10 {
            let mut sig = Signal::new(seed);
            sig.silence(13 * seed as u32 % 17);
            for d in "147*2580369#".chars() {
                sig.digit(d, 40).silence(40);
            }
            assert_eq!(detect(&sig.noisy(20.0)), "147*2580369#", "seed {seed}");
        }
    }

    #[test]
    fn digits_shorter_than_40ms_are_not_detected() {
        for seed in 1..=20 {
            for ms in [10, 20, 25, 30] {
                let mut sig = Signal::new(seed);
                sig.silence(seed as u32 % 13).digit('5', ms).silence(100);
                assert_eq!(detect(&sig.noisy(20.0)), "", "{ms} ms, seed {seed}");
            }
        }
    }

    #[test]
    fn a_short_dropout_does_not_split_a_digit_and_a_repeat_after_a_gap_counts() {
        let mut sig = Signal::new(3);
        sig.digit('8', 80).silence(10).digit('8', 80).silence(60).digit('8', 60).silence(40);
        assert_eq!(detect(&sig.noisy(20.0)), "88");
        // Two different digits back to back with no gap are both reported.
        let mut sig = Signal::new(4);
        sig.digit('2', 80).digit('3', 80);
        assert_eq!(detect(&sig.clean()), "23");
    }

    #[test]
    fn quiet_and_twisted_digits() {
        // −25 dBm0 per tone is still a digit.
        let (lo, hi) = frequencies('6').unwrap();
        let mut sig = Signal::new(5);
        sig.tones(&[(lo, 1280.0), (hi, 1280.0)], 80);
        assert_eq!(detect(&sig.clean()), "6");
        // −45 dBm0 is not.
        let mut sig = Signal::new(5);
        sig.tones(&[(lo, 128.0), (hi, 128.0)], 80);
        assert_eq!(detect(&sig.clean()), "");
        // Normal twist of 6 dB passes, 10 dB does not; reverse twist of 3 dB passes, 6 does not.
        for (low_db, high_db, expect) in
            [(0.0, -6.0, "6"), (0.0, -10.0, ""), (-3.0, 0.0, "6"), (-6.0, 0.0, "")]
        {
            let mut sig = Signal::new(6);
            let a = |db: f64| LEVEL * 10f64.powf(db / 20.0);
            sig.tones(&[(lo, a(low_db)), (hi, a(high_db))], 80);
            assert_eq!(detect(&sig.clean()), expect, "twist {low_db}/{high_db} dB");
        }
        // Tones up to 1.5 % off nominal (the Q.24 tolerance) are still recognised.
        for d in DIGITS {
            let (lo, hi) = frequencies(d).unwrap();
            for (dl, dh) in [(1.015, 1.015), (0.985, 0.985), (1.0075, 0.9925), (0.985, 1.015)] {
                let mut sig = Signal::new(7);
                sig.tones(&[(lo * dl, LEVEL), (hi * dh, LEVEL)], 60).silence(50);
                let got = detect(&sig.noisy(20.0));
                assert_eq!(got, d.to_string(), "{d} with deviations {dl}/{dh}");
            }
        }
    }

    #[test]
    fn silence_noise_and_lone_tones_are_rejected() {
        assert_eq!(detect(&vec![0; 16_000]), "");
        let mut sig = Signal::new(11);
        sig.silence(2000);
        assert_eq!(detect(&sig.noisy(-10.0)), "", "loud white noise");
        for f in LOW_FREQS.iter().chain(&HIGH_FREQS) {
            let mut sig = Signal::new(12);
            sig.tones(&[(*f, 2.0 * LEVEL)], 200);
            assert_eq!(detect(&sig.noisy(20.0)), "", "single tone {f} Hz");
        }
        // Two tones from the same group.
        for (a, b) in [(697.0, 770.0), (852.0, 941.0), (1209.0, 1477.0), (1336.0, 1633.0)] {
            let mut sig = Signal::new(13);
            sig.tones(&[(a, LEVEL), (b, LEVEL)], 200);
            assert_eq!(detect(&sig.noisy(20.0)), "", "{a} + {b} Hz");
        }
    }

    #[test]
    fn frequency_sweeps_are_rejected() {
        // A sweep from 300 Hz to 3400 Hz in 2 s, alone and as a swept note with its 2nd and
        // 3rd harmonics (DTMF pairs are chosen so no harmonic pair falls on one).
        let sweep = |harmonics: &[(f64, f64)], seconds: f64| -> Vec<i16> {
            let len = (8000.0 * seconds) as usize;
            let rate = 3100.0 / seconds;
            (0..len)
                .map(|n| {
                    let t = n as f64 / 8000.0;
                    let phase = 2.0 * PI * (300.0 * t + rate * t * t / 2.0);
                    clamp_i16(harmonics.iter().map(|(h, a)| a * (h * phase).sin()).sum())
                })
                .collect()
        };
        for seconds in [0.5, 2.0, 8.0] {
            assert_eq!(detect(&sweep(&[(1.0, 10_000.0)], seconds)), "", "{seconds} s sweep");
            let note = [(1.0, 8000.0), (2.0, 5000.0), (3.0, 3000.0)];
            assert_eq!(detect(&sweep(&note, seconds)), "", "{seconds} s swept note");
        }
    }

    /// Voiced speech: a glottal pulse train (−6 dB/octave) through three formant resonators,
    /// with the pitch gliding slightly as in natural intonation.
    fn vowel(f0: f64, formants: [(f64, f64); 3], ms: u32) -> Vec<i16> {
        let len = (ms * 8) as usize;
        let gain = |f: f64| -> f64 {
            formants
                .iter()
                .map(|&(fc, bw)| {
                    let r = f / fc;
                    1.0 / ((1.0 - r * r).powi(2) + (f * bw / (fc * fc)).powi(2)).sqrt()
                })
                .product()
        };
        let mut phase = [0.0f64; 10];
        let raw: Vec<f64> = (0..len)
            .map(|n| {
                let glide = 1.0 + 0.04 * (n as f64 / len as f64 - 0.5);
                let mut v = 0.0;
                for (h, ph) in phase.iter_mut().enumerate() {
                    let f = f0 * glide * (h + 1) as f64;
                    *ph += 2.0 * PI * f / 8000.0;
                    v += gain(f) / (h + 1) as f64 * ph.sin();
                }
                v
            })
            .collect();
        let peak = raw.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        raw.iter().map(|v| clamp_i16(v / peak * 12_000.0)).collect()
    }

    #[test]
    fn speech_like_harmonic_series_are_rejected() {
        // Formants (frequency, bandwidth) of the vowels /a/, /i/, /u/, /e/, /o/, plus a
        // worst case with formants sitting on DTMF row and column frequencies.
        let vowels = [
            [(730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0)],
            [(270.0, 60.0), (2290.0, 100.0), (3010.0, 120.0)],
            [(300.0, 60.0), (870.0, 90.0), (2240.0, 120.0)],
            [(530.0, 70.0), (1840.0, 100.0), (2480.0, 150.0)],
            [(570.0, 70.0), (840.0, 90.0), (2410.0, 160.0)],
            [(697.0, 90.0), (1209.0, 110.0), (2500.0, 170.0)],
        ];
        for formants in vowels {
            let mut f0 = 120.0;
            while f0 <= 220.0 {
                let samples = vowel(f0, formants, 300);
                assert_eq!(detect(&samples), "", "f0 {f0} Hz, formants {formants:?}");
                f0 += 2.5;
            }
        }
    }
}
