//! One interface over the audio codecs a leg can speak: G.711 µ-law/A-law (always) and Opus
//! (feature `opus`). Everything runs at the call's 8 kHz audio rate; a codec's RTP clock may
//! differ ([`Codec::rate`]: 48 kHz for Opus).
//!
//! G.711 is stateless, Opus is not (prediction, concealment), so a leg keeps one [`Decoder`]
//! and one [`Encoder`] for its stream. Bridged legs with the same codec never decode: payloads
//! are relayed untouched, and µ-law↔A-law is transcoded byte by byte
//! ([`g711::Law::transcode`](crate::g711::Law::transcode)).

use crate::g711::Law;
use crate::sdp::Codec;

/// Opus bit rate for calls: wideband voice quality at a fraction of G.711's 64 kb/s.
pub const OPUS_BITRATE: i32 = 24_000;

/// A codec this build cannot run (Opus without the `opus` feature) or could not set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("codec {0}: {1}")]
pub struct CodecError(pub &'static str, pub String);

/// The codecs this build can negotiate, in our order of preference as an offerer.
pub fn available() -> &'static [Codec] {
    #[cfg(feature = "opus")]
    {
        &[Codec::Pcmu, Codec::Pcma, Codec::Opus]
    }
    #[cfg(not(feature = "opus"))]
    {
        &[Codec::Pcmu, Codec::Pcma]
    }
}

/// Whether a packet of `from` can be relayed to a `to` peer without decoding: same codec, or
/// G.711 on both sides (transcoded per byte).
pub fn relayable(from: Codec, to: Codec) -> bool {
    from == to || (g711_law(from).is_some() && g711_law(to).is_some())
}

/// The G.711 law of a codec, if it is one.
pub fn g711_law(codec: Codec) -> Option<Law> {
    match codec {
        Codec::Pcmu => Some(Law::Mu),
        Codec::Pcma => Some(Law::A),
        Codec::Opus => None,
    }
}

/// Turns a stream's payloads into 8 kHz samples.
#[derive(Debug)]
pub enum Decoder {
    G711(Law),
    #[cfg(feature = "opus")]
    Opus(crate::opus::Decoder),
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Decoder, CodecError> {
        if let Some(law) = g711_law(codec) {
            return Ok(Decoder::G711(law));
        }
        #[cfg(feature = "opus")]
        {
            crate::opus::Decoder::new()
                .map(Decoder::Opus)
                .map_err(|e| CodecError(codec.name(), e.to_string()))
        }
        #[cfg(not(feature = "opus"))]
        Err(CodecError(codec.name(), "not built in (cargo feature `opus`)".into()))
    }

    /// Appends the samples of one payload to `out`; a payload that does not decode appends
    /// nothing and is an error.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        match self {
            Decoder::G711(law) => {
                law.decode(payload, out);
                Ok(())
            }
            #[cfg(feature = "opus")]
            Decoder::Opus(d) => {
                d.decode(payload, out).map_err(|e| CodecError("opus", e.to_string()))
            }
        }
    }

    /// Fills a lost packet's `samples`: the codec's own concealment where it has one,
    /// otherwise `last` repeated at half level (inaudible for a single packet).
    pub fn conceal(&mut self, samples: usize, last: &[i16], out: &mut Vec<i16>) {
        #[cfg(feature = "opus")]
        if let Decoder::Opus(d) = self
            && d.conceal(samples, out).is_ok()
        {
            return;
        }
        out.extend(last.iter().take(samples).map(|s| s / 2));
        out.resize(out.len() + samples.saturating_sub(last.len()), 0);
    }
}

/// Turns 8 kHz frames into a stream's payloads.
#[derive(Debug)]
pub enum Encoder {
    G711(Law),
    #[cfg(feature = "opus")]
    Opus(crate::opus::Encoder),
}

impl Encoder {
    pub fn new(codec: Codec) -> Result<Encoder, CodecError> {
        if let Some(law) = g711_law(codec) {
            return Ok(Encoder::G711(law));
        }
        #[cfg(feature = "opus")]
        {
            crate::opus::Encoder::new(OPUS_BITRATE)
                .map(Encoder::Opus)
                .map_err(|e| CodecError(codec.name(), e.to_string()))
        }
        #[cfg(not(feature = "opus"))]
        Err(CodecError(codec.name(), "not built in (cargo feature `opus`)".into()))
    }

    /// Appends the payload of one frame to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            Encoder::G711(law) => {
                law.encode(pcm, out);
                Ok(())
            }
            #[cfg(feature = "opus")]
            Encoder::Opus(e) => e.encode(pcm, out).map_err(|e| CodecError("opus", e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaying_needs_the_same_codec_or_two_laws() {
        assert!(relayable(Codec::Pcmu, Codec::Pcma));
        assert!(relayable(Codec::Opus, Codec::Opus));
        assert!(!relayable(Codec::Opus, Codec::Pcmu));
        assert!(!relayable(Codec::Pcma, Codec::Opus));
    }

    #[test]
    fn g711_round_trips_and_conceals_from_the_last_frame() {
        let mut enc = Encoder::new(Codec::Pcma).unwrap();
        let mut dec = Decoder::new(Codec::Pcma).unwrap();
        let pcm: Vec<i16> = (0..160).map(|i| (i * 37 % 2000) as i16 - 1000).collect();
        let mut payload = Vec::new();
        enc.encode(&pcm, &mut payload).unwrap();
        assert_eq!(payload.len(), 160);
        let mut out = Vec::new();
        dec.decode(&payload, &mut out).unwrap();
        assert!(out.iter().zip(&pcm).all(|(a, b)| (a - b).abs() <= 32));
        let mut concealed = Vec::new();
        dec.conceal(160, &out, &mut concealed);
        assert_eq!(concealed.len(), 160);
        assert_eq!(concealed[10], out[10] / 2);
    }

    #[test]
    fn opus_is_there_exactly_when_built_in() {
        let built = cfg!(feature = "opus");
        assert_eq!(available().contains(&Codec::Opus), built);
        assert_eq!(Decoder::new(Codec::Opus).is_ok(), built);
        assert_eq!(Encoder::new(Codec::Opus).is_ok(), built);
    }
}
