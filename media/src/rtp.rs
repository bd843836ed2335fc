//! RTP packets (RFC 3550 §5.1) and the wrap-around counters they carry.
//!
//! Every media path starts here, and its input comes straight off the network: a malformed
//! packet must come back as an [`RtpError`], never as a panic or a read past the end.
//! [`RtpPacket::parse`] borrows the payload (no copy per packet) and skips the CSRC list,
//! the header extension (§5.3.1) and the padding (§5.1, P bit) so the payload is exactly the
//! codec's bytes. [`RtpHeader::write`] builds packets.
//!
//! Sequence numbers are 16 bits and wrap every ~22 minutes at 50 packets/s; timestamps are 32
//! bits and wrap every ~6 days at 8 kHz (sooner, since they start at a random value). So
//! [`Seq`] and [`Timestamp`] have no `Ord`: they compare and subtract the short way round the
//! circle (serial-number arithmetic, RFC 1982), and [`SeqExtender`] / [`TimestampExtender`]
//! turn them into monotonic 64-bit indices for anything that needs a total order
//! (RFC 3550 Appendix A.1).

use thiserror::Error;

use crate::bytes;

/// The only RTP version (RFC 3550 §5.1).
pub const VERSION: u8 = 2;
/// Length of the fixed header, before CSRCs and the extension.
pub const FIXED_HEADER_LEN: usize = 12;
/// The CC field is 4 bits.
pub const MAX_CSRCS: usize = 15;

/// Why bytes are not a valid RTP packet, or a header cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpError {
    /// The packet ends inside the fixed header, the CSRC list or the header extension.
    #[error("RTP packet is {len} bytes but its header needs {needed}")]
    Truncated { len: usize, needed: usize },
    /// The version field is not 2 (RFC 3550 §5.1); often STUN, DTLS or RTCP-by-mistake.
    #[error("RTP version {0} is not supported (only version 2)")]
    UnsupportedVersion(u8),
    /// The padding count is zero or larger than what follows the header (§5.1, P bit).
    #[error("RTP padding count {count} is invalid: {available} bytes follow the header")]
    InvalidPadding { count: u8, available: usize },
    /// A payload type above 127 cannot be written (the field is 7 bits).
    #[error("RTP payload type {0} does not fit in 7 bits (0..=127)")]
    PayloadTypeOutOfRange(u8),
    /// More than 15 contributing sources were given.
    #[error("{0} CSRCs given, RTP allows at most 15")]
    TooManyCsrcs(usize),
}

/// A synchronisation source identifier (RFC 3550 §5.1), also used for CSRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// A 16-bit RTP sequence number, compared and subtracted modulo 2^16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u16);

impl Seq {
    /// The sequence number after this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.wrapping_add(1))
    }

    /// `self + n`, wrapping.
    #[must_use]
    pub fn wrapping_add(self, n: u16) -> Seq {
        Seq(self.0.wrapping_add(n))
    }

    /// Signed distance from `other` to `self` the short way round: positive when `self` comes
    /// after `other`. Numbers exactly half a cycle apart are ambiguous (RFC 1982 leaves them
    /// undefined); both directions then give `i16::MIN`, so neither is after the other.
    pub fn diff(self, other: Seq) -> i16 {
        self.0.wrapping_sub(other.0) as i16
    }

    /// Whether `self` comes after `other` (wrap-aware).
    pub fn is_after(self, other: Seq) -> bool {
        self.diff(other) > 0
    }
}

/// A 32-bit RTP timestamp, compared and subtracted modulo 2^32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timestamp(pub u32);

impl Timestamp {
    /// `self + n` clock units, wrapping.
    #[must_use]
    pub fn wrapping_add(self, n: u32) -> Timestamp {
        Timestamp(self.0.wrapping_add(n))
    }

    /// Signed distance from `other` to `self` in clock units, the short way round (see
    /// [`Seq::diff`] for the half-cycle case).
    pub fn diff(self, other: Timestamp) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Whether `self` comes after `other` (wrap-aware).
    pub fn is_after(self, other: Timestamp) -> bool {
        self.diff(other) > 0
    }
}

/// Largest forward jump still taken as the same stream (RFC 3550 A.1 `MAX_DROPOUT`).
pub const MAX_DROPOUT: u16 = 3000;
/// Largest backward step taken as reordering rather than a jump (A.1 `MAX_MISORDER`).
pub const MAX_MISORDER: u16 = 100;

/// Extends 16-bit sequence numbers to a monotonic 64-bit index, counting rollovers the way
/// RFC 3550 Appendix A.1 does.
///
/// The first packet's index is its sequence number. A packet up to [`MAX_DROPOUT`] ahead of
/// the highest so far advances it (crossing 65535→0 adds a cycle); one up to
/// [`MAX_MISORDER`] behind is a reordered or duplicate packet and gets its (older) index. Any
/// other jump is suspicious: that packet is rejected (`None`), and if the very next packet
/// continues from it, the sender is taken to have restarted its numbering and the stream
/// resynchronises there (indices keep increasing; [`restarts`](Self::restarts) counts it).
#[derive(Debug, Clone, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
    /// The sequence number that would confirm a restart (one after a rejected jump).
    probe: Option<u16>,
    restarts: u32,
}

impl SeqExtender {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest index so far, `None` before the first packet.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// How many times the stream resynchronised after a jump.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The 64-bit index of `seq`, or `None` if the packet is rejected: a suspicious jump not
    /// (yet) confirmed, or a reordered packet from before index 0.
    pub fn extend(&mut self, seq: Seq) -> Option<u64> {
        let Some(highest) = self.highest else {
            self.highest = Some(u64::from(seq.0));
            return self.highest;
        };
        let udelta = seq.0.wrapping_sub(highest as u16);
        if udelta < MAX_DROPOUT {
            let ext = highest + u64::from(udelta);
            self.highest = Some(ext);
            self.probe = None;
            Some(ext)
        } else if u32::from(udelta) <= (1 << 16) - u32::from(MAX_MISORDER) {
            if self.probe == Some(seq.0) {
                // Two consecutive packets agree on the new numbering: a restart. Keep indices
                // monotonic by placing it in the first cycle above the current highest.
                let same_cycle = (highest & !0xFFFF) | u64::from(seq.0);
                let ext = if same_cycle > highest { same_cycle } else { same_cycle + 0x1_0000 };
                self.highest = Some(ext);
                self.probe = None;
                self.restarts += 1;
                Some(ext)
            } else {
                self.probe = Some(seq.0.wrapping_add(1));
                None
            }
        } else {
            let back = (highest as u16).wrapping_sub(seq.0);
            highest.checked_sub(u64::from(back))
        }
    }
}

/// Extends 32-bit timestamps to a monotonic 64-bit clock, taking each timestamp as the one
/// nearest to the highest seen so far (so reordering up to half a cycle is understood).
#[derive(Debug, Clone, Default)]
pub struct TimestampExtender {
    highest: Option<u64>,
}

impl TimestampExtender {
    pub fn new() -> Self {
        Self::default()
    }

    /// The 64-bit value of `ts`, `None` only for a timestamp that would fall before 0 (older
    /// than the first one seen by more than the first one's value).
    pub fn extend(&mut self, ts: Timestamp) -> Option<u64> {
        let Some(highest) = self.highest else {
            self.highest = Some(u64::from(ts.0));
            return self.highest;
        };
        let ext = highest.checked_add_signed(i64::from(ts.diff(Timestamp(highest as u32))))?;
        self.highest = Some(highest.max(ext));
        Some(ext)
    }
}

/// The fixed header fields of an RTP packet plus its CSRC list (copyable, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    /// 7 bits; [`write`](Self::write) rejects larger values.
    pub payload_type: u8,
    pub seq: Seq,
    pub timestamp: Timestamp,
    pub ssrc: Ssrc,
    csrcs: [Ssrc; MAX_CSRCS],
    csrc_count: u8,
}

impl RtpHeader {
    /// A header with no marker and no CSRCs.
    pub fn new(payload_type: u8, seq: Seq, timestamp: Timestamp, ssrc: Ssrc) -> Self {
        RtpHeader {
            marker: false,
            payload_type,
            seq,
            timestamp,
            ssrc,
            csrcs: [Ssrc(0); MAX_CSRCS],
            csrc_count: 0,
        }
    }

    /// The contributing sources (a mixer's inputs, §5.1).
    pub fn csrcs(&self) -> &[Ssrc] {
        self.csrcs.get(..usize::from(self.csrc_count)).unwrap_or(&[])
    }

    /// Sets the contributing sources; at most [`MAX_CSRCS`].
    pub fn set_csrcs(&mut self, csrcs: &[Ssrc]) -> Result<(), RtpError> {
        let slot = self.csrcs.get_mut(..csrcs.len()).ok_or(RtpError::TooManyCsrcs(csrcs.len()))?;
        slot.copy_from_slice(csrcs);
        self.csrc_count = csrcs.len() as u8;
        Ok(())
    }

    /// Encoded length of this header (fixed part and CSRCs; this crate writes no extension).
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + 4 * usize::from(self.csrc_count)
    }

    /// Appends the packet (header, then `payload`) to `out`.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RtpError> {
        self.write_padded(payload, 0, out)
    }

    /// Like [`write`](Self::write), then `padding` bytes whose last one holds the count
    /// (§5.1, P bit; e.g. to align for encryption). `padding == 0` means no padding.
    pub fn write_padded(
        &self,
        payload: &[u8],
        padding: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), RtpError> {
        if self.payload_type > 0x7F {
            return Err(RtpError::PayloadTypeOutOfRange(self.payload_type));
        }
        out.reserve(self.encoded_len() + payload.len() + usize::from(padding));
        let p_bit = if padding > 0 { 0x20 } else { 0 };
        out.push((VERSION << 6) | p_bit | self.csrc_count);
        out.push(if self.marker { 0x80 } else { 0 } | self.payload_type);
        out.extend_from_slice(&self.seq.0.to_be_bytes());
        out.extend_from_slice(&self.timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        for csrc in self.csrcs() {
            out.extend_from_slice(&csrc.0.to_be_bytes());
        }
        out.extend_from_slice(payload);
        if padding > 0 {
            out.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            out.push(padding);
        }
        Ok(())
    }

    /// The packet as a new buffer.
    pub fn to_packet(&self, payload: &[u8]) -> Result<Vec<u8>, RtpError> {
        let mut out = Vec::new();
        self.write(payload, &mut out)?;
        Ok(out)
    }
}

/// A header extension (RFC 3550 §5.3.1); its contents are profile-specific (e.g. RFC 8285).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    /// The 16-bit "defined by profile" field.
    pub profile: u16,
    /// The extension data, a multiple of 4 bytes.
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    pub extension: Option<HeaderExtension<'a>>,
    /// The codec payload, with padding removed.
    pub payload: &'a [u8],
    /// How many padding bytes followed the payload (0 without the P bit).
    pub padding: u8,
}

impl<'a> RtpPacket<'a> {
    /// Parses a packet; every malformation is an error, never a panic.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let truncated = |needed: usize| RtpError::Truncated { len: buf.len(), needed };
        let (Some(b0), Some(b1), Some(seq), Some(timestamp), Some(ssrc)) = (
            buf.first().copied(),
            buf.get(1).copied(),
            bytes::be_u16(buf, 2),
            bytes::be_u32(buf, 4),
            bytes::be_u32(buf, 8),
        ) else {
            return Err(truncated(FIXED_HEADER_LEN));
        };
        let version = b0 >> 6;
        if version != VERSION {
            return Err(RtpError::UnsupportedVersion(version));
        }
        let mut header = RtpHeader::new(b1 & 0x7F, Seq(seq), Timestamp(timestamp), Ssrc(ssrc));
        header.marker = b1 & 0x80 != 0;

        let csrc_count = usize::from(b0 & 0x0F);
        let mut pos = FIXED_HEADER_LEN;
        let mut csrcs = [Ssrc(0); MAX_CSRCS];
        for slot in csrcs.iter_mut().take(csrc_count) {
            *slot = Ssrc(bytes::be_u32(buf, pos).ok_or(truncated(pos + 4))?);
            pos += 4;
        }
        header.set_csrcs(csrcs.get(..csrc_count).unwrap_or(&[]))?;

        let extension = if b0 & 0x10 != 0 {
            let (Some(profile), Some(words)) =
                (bytes::be_u16(buf, pos), bytes::be_u16(buf, pos + 2))
            else {
                return Err(truncated(pos + 4));
            };
            pos += 4;
            let len = 4 * usize::from(words);
            let data = bytes::slice(buf, pos, len).ok_or(truncated(pos + len))?;
            pos += len;
            Some(HeaderExtension { profile, data })
        } else {
            None
        };

        let rest = buf.get(pos..).unwrap_or(&[]);
        let padding = if b0 & 0x20 != 0 {
            let count = rest.last().copied().unwrap_or(0);
            if count == 0 || usize::from(count) > rest.len() {
                return Err(RtpError::InvalidPadding { count, available: rest.len() });
            }
            count
        } else {
            0
        };
        let payload = rest.get(..rest.len() - usize::from(padding)).unwrap_or(&[]);
        Ok(RtpPacket { header, extension, payload, padding })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    fn header() -> RtpHeader {
        let mut h = RtpHeader::new(0, Seq(0x1234), Timestamp(0xDEAD_BEEF), Ssrc(0x0102_0304));
        h.marker = true;
        h
    }

    #[test]
    fn parses_a_hand_made_packet() {
        let bytes =
            [0x80, 0x88, 0x00, 0x07, 0x00, 0x00, 0x01, 0x40, 0xCA, 0xFE, 0xBA, 0xBE, 1, 2, 3];
        let p = RtpPacket::parse(&bytes).unwrap();
        assert!(p.header.marker);
        assert_eq!(p.header.payload_type, 8);
        assert_eq!(p.header.seq, Seq(7));
        assert_eq!(p.header.timestamp, Timestamp(320));
        assert_eq!(p.header.ssrc, Ssrc(0xCAFE_BABE));
        assert_eq!(p.header.csrcs(), &[]);
        assert_eq!(p.extension, None);
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn round_trips_with_csrcs_and_padding() {
        let mut h = header();
        h.set_csrcs(&[Ssrc(1), Ssrc(2), Ssrc(0xFFFF_FFFF)]).unwrap();
        let payload = [9u8; 160];
        for padding in [0u8, 1, 4, 255] {
            let mut buf = Vec::new();
            h.write_padded(&payload, padding, &mut buf).unwrap();
            assert_eq!(buf.len(), 12 + 12 + 160 + usize::from(padding));
            let p = RtpPacket::parse(&buf).unwrap();
            assert_eq!(p.header, h);
            assert_eq!(p.payload, &payload);
            assert_eq!(p.padding, padding);
        }
    }

    #[test]
    fn skips_the_header_extension() {
        let mut buf = header().to_packet(&[]).unwrap();
        buf[0] |= 0x10;
        buf.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02]); // profile 0xBEDE, 2 words
        buf.extend_from_slice(&[0x10, 0xAA, 0, 0, 0x21, 0xBB, 0xCC, 0]);
        buf.extend_from_slice(&[0x7F, 0xFF]);
        let p = RtpPacket::parse(&buf).unwrap();
        let ext = p.extension.unwrap();
        assert_eq!(ext.profile, 0xBEDE);
        assert_eq!(ext.data.len(), 8);
        assert_eq!(p.payload, &[0x7F, 0xFF]);
    }

    #[test]
    fn rejects_malformed_packets() {
        let good = header().to_packet(&[1, 2, 3, 4]).unwrap();
        assert_eq!(RtpPacket::parse(&good[..11]), Err(RtpError::Truncated { len: 11, needed: 12 }));
        let mut v1 = good.clone();
        v1[0] = (1 << 6) | (v1[0] & 0x3F);
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::UnsupportedVersion(1)));
        let mut cc = good.clone();
        cc[0] |= 0x02; // two CSRCs, but only 4 bytes follow
        assert_eq!(RtpPacket::parse(&cc), Err(RtpError::Truncated { len: 16, needed: 20 }));
        let mut pad0 = good.clone();
        pad0[0] |= 0x20;
        *pad0.last_mut().unwrap() = 0;
        assert_eq!(
            RtpPacket::parse(&pad0),
            Err(RtpError::InvalidPadding { count: 0, available: 4 })
        );
        let mut pad_big = good.clone();
        pad_big[0] |= 0x20;
        *pad_big.last_mut().unwrap() = 5;
        assert!(matches!(RtpPacket::parse(&pad_big), Err(RtpError::InvalidPadding { .. })));
        let mut ext = good.clone();
        ext[0] |= 0x10;
        ext[14] = 0x00;
        ext[15] = 0x01; // one word of extension data, none present
        assert_eq!(RtpPacket::parse(&ext), Err(RtpError::Truncated { len: 16, needed: 20 }));
    }

    #[test]
    fn building_rejects_bad_fields() {
        let mut h = header();
        h.payload_type = 128;
        assert_eq!(h.to_packet(&[]), Err(RtpError::PayloadTypeOutOfRange(128)));
        assert_eq!(h.set_csrcs(&[Ssrc(0); 16]), Err(RtpError::TooManyCsrcs(16)));
        assert!(h.set_csrcs(&[Ssrc(0); 15]).is_ok());
        assert_eq!(h.encoded_len(), 12 + 60);
    }

    #[test]
    fn every_prefix_of_valid_packets_parses_or_errors_without_panicking() {
        let mut h = header();
        h.set_csrcs(&[Ssrc(7), Ssrc(8)]).unwrap();
        let mut buf = Vec::new();
        h.write_padded(&[1, 2, 3, 4, 5], 3, &mut buf).unwrap();
        buf[0] |= 0x10;
        // Insert a one-word extension after the CSRCs.
        buf.splice(20..20, [0, 1, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD]);
        let full = RtpPacket::parse(&buf).unwrap();
        assert_eq!(full.payload, &[1, 2, 3, 4, 5]);
        for end in 0..buf.len() {
            // Shorter prefixes lose the padding count or run out mid-header.
            let _ = RtpPacket::parse(&buf[..end]);
        }
    }

    #[test]
    fn random_bytes_never_panic_and_valid_results_are_consistent() {
        let mut rng = XorShift::new(0x5EED);
        let mut ok = 0;
        for _ in 0..20_000 {
            let len = rng.below(80) as usize;
            let mut bytes = rng.bytes(len);
            if let Some(b) = bytes.first_mut() {
                *b = (*b & 0x3F) | 0x80; // mostly version 2 so we get past the first check
            }
            if let Ok(p) = RtpPacket::parse(&bytes) {
                ok += 1;
                let ext_len = p.extension.map_or(0, |e| 4 + e.data.len());
                assert_eq!(
                    p.header.encoded_len() + ext_len + p.payload.len() + usize::from(p.padding),
                    bytes.len()
                );
            }
        }
        assert!(ok > 100, "the fuzz loop should also produce valid packets ({ok})");
    }

    #[test]
    fn seq_and_timestamp_compare_across_the_wrap() {
        assert!(Seq(0).is_after(Seq(65535)));
        assert!(!Seq(65535).is_after(Seq(0)));
        assert_eq!(Seq(2).diff(Seq(65534)), 4);
        assert_eq!(Seq(65534).diff(Seq(2)), -4);
        assert_eq!(Seq(65535).next(), Seq(0));
        assert_eq!(Seq(0).diff(Seq(0x8000)), i16::MIN);
        assert!(!Seq(0).is_after(Seq(0x8000)) && !Seq(0x8000).is_after(Seq(0)));
        assert!(Timestamp(100).is_after(Timestamp(u32::MAX - 59)));
        assert_eq!(Timestamp(100).diff(Timestamp(u32::MAX - 59)), 160);
        assert_eq!(Timestamp(u32::MAX).wrapping_add(161), Timestamp(160));
    }

    #[test]
    fn seq_extender_counts_rollovers_and_places_reordered_packets() {
        let mut e = SeqExtender::new();
        assert_eq!(e.extend(Seq(65533)), Some(65533));
        assert_eq!(e.extend(Seq(65535)), Some(65535));
        assert_eq!(e.extend(Seq(1)), Some(65537)); // crossed the wrap with a gap
        assert_eq!(e.extend(Seq(65534)), Some(65534)); // reordered, from the previous cycle
        assert_eq!(e.extend(Seq(0)), Some(65536));
        assert_eq!(e.extend(Seq(1)), Some(65537)); // duplicate
        assert_eq!(e.highest(), Some(65537));
        // A long run through several cycles stays monotonic.
        let mut seq = Seq(1);
        for i in 0..200_000u64 {
            seq = seq.next();
            assert_eq!(e.extend(seq), Some(65538 + i));
        }
    }

    #[test]
    fn seq_extender_rejects_a_jump_until_confirmed_then_resyncs() {
        let mut e = SeqExtender::new();
        assert_eq!(e.extend(Seq(100)), Some(100));
        assert_eq!(e.extend(Seq(101)), Some(101));
        assert_eq!(e.extend(Seq(40_000)), None); // stray packet
        assert_eq!(e.extend(Seq(102)), Some(102)); // stream goes on
        assert_eq!(e.restarts(), 0);
        assert_eq!(e.extend(Seq(9_000)), None);
        assert_eq!(e.extend(Seq(9_001)), Some(9_001)); // restart confirmed
        assert_eq!(e.restarts(), 1);
        assert_eq!(e.extend(Seq(9_002)), Some(9_002));
        // A restart to a lower number stays monotonic by moving to the next cycle.
        assert_eq!(e.extend(Seq(5)), None);
        assert_eq!(e.extend(Seq(6)), Some(65_536 + 6));
        // Reordering before index 0 has no index.
        let mut e = SeqExtender::new();
        assert_eq!(e.extend(Seq(1)), Some(1));
        assert_eq!(e.extend(Seq(65535)), None);
    }

    #[test]
    fn timestamp_extender_handles_wrap_and_reordering() {
        let mut e = TimestampExtender::new();
        assert_eq!(e.extend(Timestamp(u32::MAX - 159)), Some(u64::from(u32::MAX) - 159));
        assert_eq!(e.extend(Timestamp(0)), Some(1 << 32));
        assert_eq!(e.extend(Timestamp(u32::MAX)), Some(u64::from(u32::MAX)));
        assert_eq!(e.extend(Timestamp(160)), Some((1 << 32) + 160));
        let mut e = TimestampExtender::new();
        assert_eq!(e.extend(Timestamp(10)), Some(10));
        assert_eq!(e.extend(Timestamp(u32::MAX)), None);
    }
}
