//! G.711 µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8) companding.
//!
//! G.711 is the codec every SIP endpoint supports, so every call passes through here. The
//! conversions re-implement the classic Sun/CCITT reference (`linear2ulaw`, `ulaw2linear`,
//! `linear2alaw`, `alaw2linear` from `g711.c`) bit for bit, on 16-bit linear samples. All four
//! directions are tables computed at compile time (`const fn`), so encoding and decoding are
//! one lookup per sample and there is nothing to initialise at run time.
//!
//! µ-law has two codes for zero (0xFF "+0" and 0x7F "−0"); both decode to 0 and the encoder,
//! like the reference, produces 0xFF for silence. A-law has no zero code: its smallest
//! magnitudes are ±8.
//!
//! Transcoding between the laws ([`ulaw_to_alaw`], [`alaw_to_ulaw`]) goes through linear,
//! which is what a media server bridging a PCMU leg to a PCMA leg does.

/// Segment end points for A-law, on the 13-bit magnitude (reference `seg_aend`).
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
/// Segment end points for µ-law, on the biased 14-bit magnitude (reference `seg_uend`).
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// µ-law bias (reference `BIAS`), added so segment 0 has the same step as the others.
const ULAW_BIAS: i32 = 0x84;
/// Largest µ-law magnitude on the 14-bit scale (reference `CLIP`).
const ULAW_CLIP: i32 = 8159;

/// The first segment whose end point is at least `value`, or 8 if none.
const fn segment(value: i32, ends: &[i32; 8]) -> i32 {
    let mut i = 0;
    while i < 8 {
        if value <= ends[i] {
            return i as i32;
        }
        i += 1;
    }
    8
}

const fn linear_to_ulaw_ref(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 2;
    let mask = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    if pcm > ULAW_CLIP {
        pcm = ULAW_CLIP;
    }
    pcm += ULAW_BIAS >> 2;
    let seg = segment(pcm, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let code = (seg << 4) | ((pcm >> (seg + 1)) & 0x0F);
    (code as u8) ^ mask
}

const fn ulaw_to_linear_ref(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + ULAW_BIAS;
    t <<= ((u & 0x70) >> 4) as i32;
    if u & 0x80 != 0 { (ULAW_BIAS - t) as i16 } else { (t - ULAW_BIAS) as i16 }
}

const fn linear_to_alaw_ref(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg = segment(pcm, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let quant = if seg < 2 { (pcm >> 1) & 0x0F } else { (pcm >> seg) & 0x0F };
    (((seg << 4) | quant) as u8) ^ mask
}

const fn alaw_to_linear_ref(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    if seg == 0 {
        t += 8;
    } else {
        t += 0x108;
        t <<= seg - 1;
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

static ULAW_DECODE: [i16; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_to_linear_ref(i as u8);
        i += 1;
    }
    table
};

static ALAW_DECODE: [i16; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_to_linear_ref(i as u8);
        i += 1;
    }
    table
};

/// µ-law code for each 14-bit value (`sample >> 2`), indexed by its two's complement bits.
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut table = [0; 1 << 14];
    let mut i = 0;
    while i < (1 << 14) {
        // Sign-extend the 14-bit index back to the sample it stands for (times 4).
        let sample = (((i as i32) << 18) >> 16) as i16;
        table[i] = linear_to_ulaw_ref(sample);
        i += 1;
    }
    table
};

/// A-law code for each 13-bit value (`sample >> 3`), indexed by its two's complement bits.
static ALAW_ENCODE: [u8; 1 << 13] = {
    let mut table = [0; 1 << 13];
    let mut i = 0;
    while i < (1 << 13) {
        let sample = (((i as i32) << 19) >> 16) as i16;
        table[i] = linear_to_alaw_ref(sample);
        i += 1;
    }
    table
};

static ULAW_TO_ALAW: [u8; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = linear_to_alaw_ref(ulaw_to_linear_ref(i as u8));
        i += 1;
    }
    table
};

static ALAW_TO_ULAW: [u8; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = linear_to_ulaw_ref(alaw_to_linear_ref(i as u8));
        i += 1;
    }
    table
};

/// Encodes one 16-bit sample to µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    // The reference only looks at the top 14 bits; the mask keeps the index in the table.
    ULAW_ENCODE[usize::from((sample >> 2) as u16 & 0x3FFF)]
}

/// Decodes one µ-law code to a 16-bit sample (range ±32124).
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Encodes one 16-bit sample to A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[usize::from((sample >> 3) as u16 & 0x1FFF)]
}

/// Decodes one A-law code to a 16-bit sample (range ±32256).
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// Converts a µ-law code to the A-law code of the same linear value.
pub fn ulaw_to_alaw(code: u8) -> u8 {
    ULAW_TO_ALAW[usize::from(code)]
}

/// Converts an A-law code to the µ-law code of the same linear value.
pub fn alaw_to_ulaw(code: u8) -> u8 {
    ALAW_TO_ULAW[usize::from(code)]
}

/// Which G.711 companding law a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law (North America, Japan): PCMU.
    Mu,
    /// A-law (Europe, most of the world): PCMA.
    A,
}

impl Law {
    /// The static RTP payload type (RFC 3551 §6).
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    /// The law for a static payload type, if it is PCMU or PCMA.
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Mu),
            8 => Some(Law::A),
            _ => None,
        }
    }

    /// Encodes one sample.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Law::Mu => ulaw_encode(sample),
            Law::A => alaw_encode(sample),
        }
    }

    /// Decodes one code.
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Law::Mu => ulaw_decode(code),
            Law::A => alaw_decode(code),
        }
    }

    /// Appends the encoding of `samples` to `out`.
    pub fn encode(self, samples: &[i16], out: &mut Vec<u8>) {
        out.extend(samples.iter().map(|&s| self.encode_sample(s)));
    }

    /// Appends the decoding of `codes` to `out`.
    pub fn decode(self, codes: &[u8], out: &mut Vec<i16>) {
        out.extend(codes.iter().map(|&c| self.decode_sample(c)));
    }

    /// Appends `codes`, encoded in this law, re-encoded in `to`.
    pub fn transcode(self, to: Law, codes: &[u8], out: &mut Vec<u8>) {
        match (self, to) {
            (Law::Mu, Law::A) => out.extend(codes.iter().map(|&c| ulaw_to_alaw(c))),
            (Law::A, Law::Mu) => out.extend(codes.iter().map(|&c| alaw_to_ulaw(c))),
            _ => out.extend_from_slice(codes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantisation step of the segment a decoded value lies in.
    fn ulaw_step(code: u8) -> i32 {
        8 << ((!code & 0x70) >> 4)
    }

    fn alaw_step(code: u8) -> i32 {
        let seg = ((code ^ 0x55) & 0x70) >> 4;
        if seg == 0 { 16 } else { 16 << (seg - 1) }
    }

    #[test]
    fn published_ulaw_values() {
        // From the reference ulaw2linear table.
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x0F), -16764);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x70), -120);
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(-1), 0x7E); // the reference's arithmetic shift rounds down
    }

    #[test]
    fn published_alaw_values() {
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x54), -24);
        assert_eq!(alaw_decode(0xD4), 24);
        assert_eq!(alaw_decode(0x45), -264);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn tables_match_the_reference_algorithm_for_every_input() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(s), linear_to_ulaw_ref(s), "µ-law {s}");
            assert_eq!(alaw_encode(s), linear_to_alaw_ref(s), "A-law {s}");
        }
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for c in 0..=255u8 {
            let expected_mu = if c == 0x7F { 0xFF } else { c }; // −0 re-encodes as +0
            assert_eq!(ulaw_encode(ulaw_decode(c)), expected_mu, "µ-law code {c:#04x}");
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law code {c:#04x}");
        }
    }

    #[test]
    fn decode_of_encode_is_within_one_step_and_monotonic() {
        let (mut prev_mu, mut prev_a) = (i16::MIN, i16::MIN);
        for s in i16::MIN..=i16::MAX {
            let (mu, a) = (ulaw_encode(s), alaw_encode(s));
            let (mu_back, a_back) = (ulaw_decode(mu), alaw_decode(a));
            let mu_err = (i32::from(mu_back) - i32::from(s)).abs();
            let a_err = (i32::from(a_back) - i32::from(s)).abs();
            assert!(mu_err <= ulaw_step(mu), "µ-law {s} → {mu_back} (error {mu_err})");
            assert!(a_err <= alaw_step(a), "A-law {s} → {a_back} (error {a_err})");
            assert!(mu_back >= prev_mu && a_back >= prev_a, "not monotonic at {s}");
            (prev_mu, prev_a) = (mu_back, a_back);
        }
    }

    #[test]
    fn small_signals_keep_their_sign_and_rough_size() {
        for s in [100i16, 1000, 10_000] {
            let mu = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            assert!((i32::from(mu) - i32::from(s)).abs() * 8 <= i32::from(s), "{s} → {mu}");
            assert!((i32::from(a) - i32::from(s)).abs() * 8 <= i32::from(s), "{s} → {a}");
            assert_eq!(ulaw_decode(ulaw_encode(-s)), -mu);
        }
    }

    #[test]
    fn transcoding_goes_through_linear() {
        for c in 0..=255u8 {
            assert_eq!(ulaw_to_alaw(c), alaw_encode(ulaw_decode(c)));
            assert_eq!(alaw_to_ulaw(c), ulaw_encode(alaw_decode(c)));
            // There and back changes the value by at most one coarse step.
            let back = ulaw_decode(alaw_to_ulaw(ulaw_to_alaw(c)));
            let err = (i32::from(back) - i32::from(ulaw_decode(c))).abs();
            assert!(err <= ulaw_step(c).max(16), "code {c:#04x}: {err}");
        }
        assert_eq!(ulaw_to_alaw(0xFF), 0xD5); // silence stays silence
        assert_eq!(alaw_to_ulaw(0xD5), 0xFE); // A-law +8 is µ-law +8
    }

    #[test]
    fn law_helpers_encode_decode_and_map_payload_types() {
        let samples = [0i16, 8, -8, 1000, -1000, 32767, -32768];
        for law in [Law::Mu, Law::A] {
            assert_eq!(Law::from_payload_type(law.payload_type()), Some(law));
            let mut codes = Vec::new();
            law.encode(&samples, &mut codes);
            let mut back = Vec::new();
            law.decode(&codes, &mut back);
            assert_eq!(back.len(), samples.len());
            for (s, b) in samples.iter().zip(&back) {
                assert!((i32::from(*s) - i32::from(*b)).abs() <= 1024);
            }
            let mut same = Vec::new();
            law.transcode(law, &codes, &mut same);
            assert_eq!(same, codes);
        }
        assert_eq!(Law::from_payload_type(9), None);
        let mut a = Vec::new();
        Law::Mu.transcode(Law::A, &[0xFF, 0x80], &mut a);
        assert_eq!(a, vec![0xD5, 0xAA]);
    }
}
