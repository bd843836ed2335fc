//! Sample-rate conversion for 16-bit mono audio (8, 16, 44.1 and 48 kHz, and any pair whose
//! reduced ratio is small).
//!
//! Prompts arrive at 44.1 or 48 kHz, phones speak 8 kHz (G.711) or 16 kHz (G.722), and
//! recordings and speech engines want their own rates. Plain linear interpolation aliases
//! audibly when going down (a 6 kHz component of a 48 kHz prompt would reappear at 2 kHz on the
//! phone), so this is a rational polyphase resampler: conceptually upsample by L, low-pass,
//! keep every M-th sample, computed without the zeros. The low-pass is a Kaiser-windowed sinc
//! (β = 7.86, ≈ 80 dB stopband, 24 zero crossings per side at the lower rate) cut at 46 % of
//! the lower rate, so the telephone band (to 3.4 kHz at 8 kHz) passes flat and everything
//! above the lower Nyquist frequency is suppressed by ≈ 80 dB.
//!
//! [`Resampler`] is streaming: feed chunks of any size, state carries over, output has a
//! constant delay of [`Resampler::delay`] output samples (so 20 ms in gives 20 ms out).
//! [`resample`] converts a whole clip and removes the delay so output sample n lines up with
//! input time n / rate.

use thiserror::Error;

/// Zero crossings of the sinc on each side, counted at the lower of the two rates.
const ZERO_CROSSINGS: u64 = 24;
/// Cut-off as a fraction of the lower rate's Nyquist frequency.
const ROLLOFF: f64 = 0.92;
/// Kaiser window β for ≈ 80 dB stopband attenuation (0.1102 · (80 − 8.7)).
const KAISER_BETA: f64 = 7.857;
/// Largest reduced up/down factor; bounds the filter size (≈ 2·24·1024 coefficients).
pub const MAX_FACTOR: u64 = 1024;

/// Why a resampler cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ResampleError {
    #[error("sample rate 0 Hz is invalid")]
    ZeroRate,
    /// The reduced ratio needs more than [`MAX_FACTOR`] filter phases.
    #[error("resampling {from} Hz to {to} Hz is not supported: the rate ratio is too irregular")]
    UnsupportedRatio { from: u32, to: u32 },
}

/// A streaming rational resampler.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    up: u64,
    down: u64,
    /// Coefficients per phase.
    taps: usize,
    /// `up` phases of `taps` coefficients each, phase-major.
    coeffs: Vec<f32>,
    /// Input samples with absolute indices `buf_start..received`.
    buf: Vec<f32>,
    buf_start: u64,
    received: u64,
    /// Position of the next output sample on the upsampled time axis (n·M).
    out_pos: u64,
    /// Filter centre on the upsampled axis (its delay).
    center: u64,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        if from == 0 || to == 0 {
            return Err(ResampleError::ZeroRate);
        }
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        if up > MAX_FACTOR || down > MAX_FACTOR {
            return Err(ResampleError::UnsupportedRatio { from, to });
        }
        let (coeffs, taps, center) = if up == down { (vec![1.0], 1, 0) } else { design(up, down) };
        Ok(Resampler {
            from,
            to,
            up,
            down,
            taps,
            coeffs,
            buf: Vec::new(),
            buf_start: 0,
            received: 0,
            out_pos: 0,
            center,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// The filter's delay in output samples (0 when the rates are equal).
    pub fn delay(&self) -> f64 {
        self.center as f64 / self.down as f64
    }

    /// Converts a chunk, appending to `out`. Over a stream, the output length tracks
    /// `input length × to / from` (rounded up overall).
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.up == self.down {
            out.extend_from_slice(input);
            return;
        }
        self.buf.extend(input.iter().map(|&s| f32::from(s)));
        self.received += input.len() as u64;
        out.reserve((input.len() as u64 * self.up / self.down) as usize + 1);
        loop {
            let newest = self.out_pos / self.up;
            if newest >= self.received {
                break;
            }
            let phase = (self.out_pos % self.up) as usize;
            let h = self.coeffs.get(phase * self.taps..(phase + 1) * self.taps).unwrap_or(&[]);
            // Samples newest, newest−1, … (those before the stream began are zero).
            let rel = (newest - self.buf_start) as usize;
            let history = self.buf.get(..=rel).unwrap_or(&[]);
            let acc: f32 = history.iter().rev().zip(h).map(|(x, c)| x * c).sum();
            out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
            self.out_pos += self.down;
        }
        // Keep only the history the next output needs.
        let keep_from = (self.out_pos / self.up).saturating_sub(self.taps as u64 - 1);
        if keep_from > self.buf_start {
            let drop = ((keep_from - self.buf_start) as usize).min(self.buf.len());
            self.buf.drain(..drop);
            self.buf_start += drop as u64;
        }
    }
}

/// Converts a whole clip from `from` Hz to `to` Hz, compensating the filter delay: the output
/// has `ceil(len × to / from)` samples, aligned with the input.
pub fn resample(input: &[i16], from: u32, to: u32) -> Result<Vec<i16>, ResampleError> {
    let mut r = Resampler::new(from, to)?;
    let want = (input.len() as u64 * r.up).div_ceil(r.down) as usize;
    // Start the output clock one filter delay late, then flush with silence.
    r.out_pos = r.center;
    let mut out = Vec::with_capacity(want);
    r.process(input, &mut out);
    let flush = (r.center / r.up + 2) as usize;
    r.process(&vec![0; flush], &mut out);
    out.truncate(want);
    Ok(out)
}

/// The polyphase filter for up/down: (coefficients, taps per phase, centre).
fn design(up: u64, down: u64) -> (Vec<f32>, usize, u64) {
    let r = up.max(down);
    let center = ZERO_CROSSINGS * r;
    let len = 2 * center + 1;
    let taps = len.div_ceil(up) as usize;
    // Cut-off in cycles per sample of the upsampled signal.
    let fc = ROLLOFF * 0.5 / r as f64;
    let i0_beta = bessel_i0(KAISER_BETA);
    let mut coeffs = vec![0.0f64; up as usize * taps];
    let mut sum = 0.0;
    for j in 0..len {
        let x = j as f64 - center as f64;
        let sinc = if x == 0.0 {
            2.0 * fc
        } else {
            (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
        };
        let ratio = x / center as f64;
        let window = bessel_i0(KAISER_BETA * (1.0 - ratio * ratio).max(0.0).sqrt()) / i0_beta;
        let h = sinc * window;
        sum += h;
        let (phase, k) = ((j % up) as usize, (j / up) as usize);
        if let Some(c) = coeffs.get_mut(phase * taps + k) {
            *c = h;
        }
    }
    // Each phase sees one in `up` coefficients: scale so the DC gain is exactly 1.
    let scale = up as f64 / sum;
    (coeffs.iter().map(|c| (c * scale) as f32).collect(), taps, center)
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-12 {
        term *= (x / (2.0 * k)).powi(2);
        sum += term;
        k += 1.0;
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rms, sine};

    /// Sign changes in the middle 80 % of a signal, scaled to the whole length.
    fn crossings(s: &[i16]) -> usize {
        let (a, b) = (s.len() / 10, s.len() * 9 / 10);
        let middle = &s[a..b];
        let n = middle.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        n * s.len() / middle.len()
    }

    fn middle(s: &[i16]) -> &[i16] {
        &s[s.len() / 10..s.len() * 9 / 10]
    }

    fn check_sine(from: u32, to: u32, freq: f64) {
        let input = sine(freq, 10_000.0, from, from as usize); // 1 s
        let out = resample(&input, from, to).unwrap();
        assert_eq!(out.len(), to as usize, "{from}→{to} length");
        let expected = (2.0 * freq) as usize;
        let got = crossings(&out);
        assert!(got.abs_diff(expected) <= 4, "{from}→{to}: {got} crossings, want {expected}");
        let level = rms(middle(&out)) / rms(middle(&input));
        assert!((0.97..1.03).contains(&level), "{from}→{to}: level ratio {level}");
    }

    #[test]
    fn a_1khz_sine_keeps_frequency_and_amplitude() {
        for (from, to) in [
            (48_000, 8_000),
            (8_000, 48_000),
            (44_100, 8_000),
            (8_000, 44_100),
            (16_000, 8_000),
            (8_000, 16_000),
            (44_100, 48_000),
            (48_000, 16_000),
        ] {
            check_sine(from, to, 1000.0);
        }
    }

    #[test]
    fn the_telephone_band_passes_flat() {
        for freq in [300.0, 2000.0, 3000.0] {
            check_sine(48_000, 8_000, freq);
            check_sine(44_100, 8_000, freq);
        }
    }

    #[test]
    fn output_is_aligned_with_the_input() {
        // The peak of a 1 kHz sine at 8 kHz (sample 2 of each period) stays at the same time.
        let input = sine(1000.0, 10_000.0, 48_000, 4800);
        let out = resample(&input, 48_000, 8_000).unwrap();
        let reference = sine(1000.0, 10_000.0, 8_000, 800);
        for i in 100..700 {
            assert!((i32::from(out[i]) - i32::from(reference[i])).abs() < 150, "sample {i}");
        }
    }

    #[test]
    fn downsampling_rejects_aliases() {
        // 6 kHz is above 8 kHz's Nyquist frequency: it must not come back as 2 kHz.
        for (from, freq) in [(48_000, 6_000.0), (44_100, 5_000.0), (16_000, 4_500.0)] {
            let input = sine(freq, 10_000.0, from, from as usize);
            let out = resample(&input, from, 8_000).unwrap();
            let ratio = rms(middle(&out)) / rms(&input);
            assert!(ratio < 0.001, "{from} Hz, {freq} Hz tone: {ratio} of the input level remains");
        }
    }

    #[test]
    fn streaming_in_chunks_matches_one_pass_and_keeps_frame_sizes() {
        let input = sine(700.0, 8000.0, 48_000, 9600);
        let mut whole = Resampler::new(48_000, 8_000).unwrap();
        let mut all = Vec::new();
        whole.process(&input, &mut all);
        for chunk in [1, 7, 960, 1234] {
            let mut r = Resampler::new(48_000, 8_000).unwrap();
            let mut out = Vec::new();
            for c in input.chunks(chunk) {
                r.process(c, &mut out);
            }
            assert_eq!(out, all, "chunk {chunk}");
        }
        // 20 ms in, 20 ms out, every frame.
        for (from, to) in [(48_000, 8_000), (44_100, 8_000), (8_000, 44_100), (8_000, 16_000)] {
            let mut r = Resampler::new(from, to).unwrap();
            let frame = vec![100i16; from as usize / 50];
            for _ in 0..5 {
                let mut out = Vec::new();
                r.process(&frame, &mut out);
                assert_eq!(out.len(), to as usize / 50, "{from}→{to}");
            }
        }
        assert_eq!(Resampler::new(48_000, 8_000).unwrap().delay(), 24.0);
    }

    #[test]
    fn dc_passes_with_unit_gain_and_full_scale_does_not_overflow() {
        let out = resample(&[1000; 8000], 8_000, 44_100).unwrap();
        assert!(middle(&out).iter().all(|&s| (s - 1000).abs() <= 2));
        // A full-scale square wave overshoots after filtering: it must clip, not wrap.
        let square: Vec<i16> =
            (0..4800).map(|i| if (i / 24) % 2 == 0 { i16::MAX } else { i16::MIN }).collect();
        let out = resample(&square, 48_000, 8_000).unwrap();
        assert_eq!(out.len(), 800);
        assert!(out.iter().any(|&s| s == i16::MAX || s == i16::MIN));
    }

    #[test]
    fn same_rate_is_a_copy_and_bad_rates_are_errors() {
        let input = [1, -2, 3];
        assert_eq!(resample(&input, 16_000, 16_000).unwrap(), input);
        assert_eq!(resample(&[], 48_000, 8_000).unwrap(), Vec::<i16>::new());
        assert_eq!(Resampler::new(0, 8000).unwrap_err(), ResampleError::ZeroRate);
        assert_eq!(
            Resampler::new(8000, 44_099).unwrap_err(),
            ResampleError::UnsupportedRatio { from: 8000, to: 44_099 }
        );
        let r = Resampler::new(44_100, 48_000).unwrap();
        assert_eq!((r.from_rate(), r.to_rate(), r.up, r.down), (44_100, 48_000, 160, 147));
    }
}
