//! voxide-media: the media plane of a call, as pure functions and state machines.
//!
//! - [`rtp`]: RFC 3550 RTP packet parsing and building, wrap-aware [`Seq`](rtp::Seq) and
//!   [`Timestamp`](rtp::Timestamp) newtypes and 64-bit sequence extension.
//! - [`rtcp`]: RFC 3550 §6.4 sender and receiver reports, and the receiver statistics
//!   (loss, extended highest sequence number, interarrival jitter) that fill them.
//! - [`g711`]: G.711 µ-law and A-law encoding, decoding and transcoding.
//! - `opus` (feature `opus`): Opus through the system libopus, at 8 kHz; [`codec`] puts
//!   G.711 and Opus behind one stateful encoder/decoder per leg.
//! - [`dtmf`]: RFC 4733 telephone events (send and receive) and an in-band Goertzel detector.
//! - [`jitter`]: an adaptive, bounded jitter buffer for the receive path.
//! - [`mixer`]: N-party conference mixing where each participant hears everyone but itself.
//! - [`wav`]: reading PCM/float WAV files to mono 16-bit, and a crash-tolerant WAV writer.
//! - [`sdp`]: SDP parsing and RFC 3264 offer/answer for audio (codecs, telephone-event,
//!   ptime, hold/resume directions).
//! - `session` (feature `net`): the tokio shell — one task per call leg with its RTP/RTCP
//!   sockets, 20 ms clock, latching, playout, recording and bridging.
//! - [`amd`]: answering-machine detection from the callee's first speech/silence pattern.
//! - [`beep`]: the beep after an answering machine's greeting (Goertzel filters, one steady tone).
//! - [`vad`]: voice activity (adaptive noise floor) and utterance endpointing.
//! - [`resample`]: polyphase windowed-sinc sample-rate conversion for 16-bit mono audio.
//!
//! Invariants, stated as absences: outside the `net` feature's `session` module, this crate
//! (except `opus`'s calls into libopus) never opens a socket, reads a clock, sleeps, spawns a thread or task, or panics on input. Time is always an argument (milliseconds or
//! RTP clock units, as each API documents), so a minute of call audio runs in milliseconds in a
//! test. The only I/O is [`wav::WavWriter`]'s, and it goes through a caller-supplied
//! `Write + Seek`.

mod bytes;

pub mod amd;
pub mod beep;
pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod mixer;
#[cfg(feature = "opus")]
pub mod opus;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
#[cfg(feature = "net")]
pub mod session;
pub mod vad;
pub mod wav;

pub use rtp::{RtpError, RtpHeader, RtpPacket, Seq, SeqExtender, Ssrc, Timestamp};

#[cfg(test)]
mod testutil;
