//! Opus (RFC 6716, RTP payload RFC 7587) through the system's libopus (feature `opus`,
//! Debian `libopus-dev`).
//!
//! The call's audio path runs at 8 kHz, so the encoder takes and the decoder produces 8 kHz
//! mono: libopus resamples internally to and from its 48 kHz RTP clock, which is the
//! resampling RFC 7587 asks of an endpoint that runs at a lower rate. The RTP timestamp still
//! advances at 48 kHz (960 per 20 ms), whatever rate the audio runs at.
//!
//! This is the crate's only `unsafe` code: a handful of calls into libopus. Each handle is
//! owned by exactly one wrapper, created non-null or not at all, freed once in `Drop`, and
//! every buffer passed in carries its length.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uchar};
use std::ptr::NonNull;

/// The sample rate the wrappers take and give (the call's audio path).
pub const RATE: u32 = 8000;
/// Largest packet we ever produce (RFC 6716 allows 1275 bytes per frame).
const MAX_PACKET: usize = 1275;
/// Largest frame a packet may decode to: 120 ms at 8 kHz.
const MAX_FRAME: usize = 960;

const OPUS_OK: c_int = 0;
const OPUS_APPLICATION_VOIP: c_int = 2048;
const OPUS_SET_BITRATE_REQUEST: c_int = 4002;
const OPUS_SET_INBAND_FEC_REQUEST: c_int = 4012;
const OPUS_SET_PACKET_LOSS_PERC_REQUEST: c_int = 4014;

#[repr(C)]
struct OpusEncoder {
    _private: [u8; 0],
}

#[repr(C)]
struct OpusDecoder {
    _private: [u8; 0],
}

#[link(name = "opus")]
unsafe extern "C" {
    fn opus_encoder_create(
        fs: i32,
        channels: c_int,
        application: c_int,
        error: *mut c_int,
    ) -> *mut OpusEncoder;
    fn opus_encode(
        st: *mut OpusEncoder,
        pcm: *const i16,
        frame_size: c_int,
        data: *mut c_uchar,
        max_data_bytes: i32,
    ) -> i32;
    fn opus_encoder_ctl(st: *mut OpusEncoder, request: c_int, ...) -> c_int;
    fn opus_encoder_destroy(st: *mut OpusEncoder);
    fn opus_decoder_create(fs: i32, channels: c_int, error: *mut c_int) -> *mut OpusDecoder;
    fn opus_decode(
        st: *mut OpusDecoder,
        data: *const c_uchar,
        len: i32,
        pcm: *mut i16,
        frame_size: c_int,
        decode_fec: c_int,
    ) -> c_int;
    fn opus_decoder_destroy(st: *mut OpusDecoder);
    fn opus_strerror(error: c_int) -> *const c_char;
}

/// A libopus error code, with libopus's own description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("opus: {text} ({code})", text = describe(*.0), code = .0)]
pub struct OpusError(pub i32);

fn describe(code: i32) -> String {
    // SAFETY: opus_strerror returns a pointer to a static NUL-terminated string for any code.
    let text = unsafe { opus_strerror(code) };
    if text.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, static and NUL-terminated (above).
    unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// An 8 kHz mono Opus encoder tuned for voice (VoIP application, in-band FEC on).
#[derive(Debug)]
pub struct Encoder(NonNull<OpusEncoder>);

// SAFETY: an encoder state is plain memory with no thread affinity; `&mut self` on every use
// keeps it to one thread at a time.
unsafe impl Send for Encoder {}

impl Encoder {
    /// `bitrate` in bits per second (libopus clamps it to what the mode allows).
    pub fn new(bitrate: i32) -> Result<Encoder, OpusError> {
        let mut error = OPUS_OK;
        // SAFETY: valid rate/channels/application; `error` outlives the call.
        let st = unsafe { opus_encoder_create(RATE as i32, 1, OPUS_APPLICATION_VOIP, &mut error) };
        let st = NonNull::new(st).ok_or(OpusError(error))?;
        let encoder = Encoder(st);
        for (request, value) in [
            (OPUS_SET_BITRATE_REQUEST, bitrate),
            (OPUS_SET_INBAND_FEC_REQUEST, 1),
            (OPUS_SET_PACKET_LOSS_PERC_REQUEST, 5),
        ] {
            // SAFETY: these requests take exactly one opus_int32 argument.
            let rc = unsafe { opus_encoder_ctl(encoder.0.as_ptr(), request, value) };
            if rc != OPUS_OK {
                return Err(OpusError(rc));
            }
        }
        Ok(encoder)
    }

    /// Encodes one frame (2.5–60 ms of 8 kHz samples; 160 for 20 ms), appending the packet
    /// payload to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), OpusError> {
        let start = out.len();
        out.resize(start + MAX_PACKET, 0);
        // SAFETY: `pcm` holds `pcm.len()` samples (one channel) and `out[start..]` has
        // MAX_PACKET writable bytes; the encoder is ours.
        let n = unsafe {
            opus_encode(
                self.0.as_ptr(),
                pcm.as_ptr(),
                pcm.len() as c_int,
                out[start..].as_mut_ptr(),
                MAX_PACKET as i32,
            )
        };
        if n < 0 {
            out.truncate(start);
            return Err(OpusError(n));
        }
        out.truncate(start + n as usize);
        Ok(())
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { opus_encoder_destroy(self.0.as_ptr()) }
    }
}

/// An 8 kHz mono Opus decoder (a stereo stream is downmixed by libopus).
#[derive(Debug)]
pub struct Decoder(NonNull<OpusDecoder>);

// SAFETY: as for `Encoder`.
unsafe impl Send for Decoder {}

impl Decoder {
    pub fn new() -> Result<Decoder, OpusError> {
        let mut error = OPUS_OK;
        // SAFETY: valid rate/channels; `error` outlives the call.
        let st = unsafe { opus_decoder_create(RATE as i32, 1, &mut error) };
        NonNull::new(st).map(Decoder).ok_or(OpusError(error))
    }

    /// Decodes one packet's payload, appending its samples to `out`.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), OpusError> {
        self.run(Some(payload), MAX_FRAME, out)
    }

    /// Packet loss concealment: `samples` of audio continuing what came before.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<(), OpusError> {
        self.run(None, samples.min(MAX_FRAME), out)
    }

    fn run(
        &mut self,
        payload: Option<&[u8]>,
        max: usize,
        out: &mut Vec<i16>,
    ) -> Result<(), OpusError> {
        let start = out.len();
        out.resize(start + max, 0);
        let (data, len) = match payload {
            Some(p) => (p.as_ptr(), p.len() as i32),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `data` is null (concealment) or points at `len` readable bytes;
        // `out[start..]` has room for `max` samples of one channel; the decoder is ours.
        let n = unsafe {
            opus_decode(self.0.as_ptr(), data, len, out[start..].as_mut_ptr(), max as c_int, 0)
        };
        if n < 0 {
            out.truncate(start);
            return Err(OpusError(n));
        }
        out.truncate(start + n as usize);
        Ok(())
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed once.
        unsafe { opus_decoder_destroy(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sine;

    #[test]
    fn a_tone_survives_a_round_trip() {
        let mut enc = Encoder::new(24_000).unwrap();
        let mut dec = Decoder::new().unwrap();
        let input = sine(440.0, 8000.0, 8000, 8000);
        let mut decoded = Vec::new();
        let mut bytes = 0;
        for frame in input.chunks(160) {
            let mut packet = Vec::new();
            enc.encode(frame, &mut packet).unwrap();
            bytes += packet.len();
            dec.decode(&packet, &mut decoded).unwrap();
        }
        assert_eq!(decoded.len(), input.len());
        // 24 kb/s is ~60 bytes per 20 ms frame.
        assert!(bytes / 50 < 100, "{} bytes per frame", bytes / 50);
        // Opus delays the signal (look-ahead); compare at the best lag in the first 20 ms.
        let best = (0..160).map(|lag| correlation(&input[..7000], &decoded[lag..lag + 7000]));
        let best = best.fold(f64::MIN, f64::max);
        assert!(best > 0.9, "correlation {best}");
    }

    #[test]
    fn concealment_continues_and_garbage_is_an_error() {
        let mut dec = Decoder::new().unwrap();
        let mut out = Vec::new();
        dec.conceal(160, &mut out).unwrap();
        assert_eq!(out.len(), 160);
        // A TOC byte announcing code 3 (arbitrary frames) with no frame count is malformed.
        let err = dec.decode(&[0x03], &mut out).unwrap_err();
        assert!(err.to_string().contains("opus:"), "{err}");
        assert_eq!(out.len(), 160, "nothing appended on error");
    }

    fn correlation(a: &[i16], b: &[i16]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb).max(1.0)
    }
}
