//! RTCP sender and receiver reports (RFC 3550 §6.4) and the receiver statistics behind them.
//!
//! Peers, SBCs and monitoring judge call quality from report blocks: fraction lost,
//! cumulative lost, extended highest sequence number and interarrival jitter. This module
//! parses and builds SR/RR packets (other packet types in a compound packet are skipped, not
//! rejected) and computes those fields in [`ReceiverStats`] exactly as RFC 3550 Appendix A.3
//! and A.8 do, from packets fed in with their arrival time. It never reads a clock: arrival
//! times are given in RTP timestamp units, which is what the jitter formula wants anyway.

use thiserror::Error;

use crate::bytes;
use crate::rtp::{Seq, SeqExtender, Ssrc, Timestamp, VERSION};

/// Sender report packet type (§6.4.1).
pub const PT_SR: u8 = 200;
/// Receiver report packet type (§6.4.2).
pub const PT_RR: u8 = 201;
/// The RC field is 5 bits.
pub const MAX_REPORT_BLOCKS: usize = 31;

const HEADER_LEN: usize = 4;
const SENDER_INFO_LEN: usize = 20;
const REPORT_BLOCK_LEN: usize = 24;
/// Cumulative lost is a signed 24-bit field; A.3 clamps to its range.
const LOST_MAX: i64 = 0x7F_FFFF;
const LOST_MIN: i64 = -0x80_0000;

/// Why bytes are not a valid RTCP packet, or a report cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// The packet is shorter than its header or than its length field says.
    #[error("RTCP packet is truncated: {len} bytes where {needed} are needed")]
    Truncated { len: usize, needed: usize },
    /// The version field is not 2.
    #[error("RTCP version {0} is not supported (only version 2)")]
    UnsupportedVersion(u8),
    /// An SR/RR is too short for the report blocks its RC field announces.
    #[error(
        "RTCP packet type {packet_type} announces {count} report blocks but has room for fewer"
    )]
    BadReportCount { packet_type: u8, count: u8 },
    /// The padding count is zero or exceeds the packet.
    #[error("RTCP padding count {0} is invalid")]
    InvalidPadding(u8),
    /// More than 31 report blocks were given to write.
    #[error("{0} report blocks given, an RTCP packet holds at most 31")]
    TooManyReportBlocks(usize),
}

/// A 64-bit NTP timestamp (seconds since 1900 in the high 32 bits, fraction in the low 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// The middle 32 bits, as echoed in a report block's LSR field (§6.4.1).
    pub fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// One reception report block (§6.4.1): what we received from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: Ssrc,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since reception began (negative with duplicates); written clamped to
    /// 24 bits.
    pub cumulative_lost: i32,
    /// Highest sequence number received, with the rollover count in the high 16 bits.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp from this source (0 if none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s (0 if none).
    pub delay_since_last_sr: u32,
}

/// The sender information of an SR (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    pub ntp_timestamp: NtpTimestamp,
    /// The same instant as `ntp_timestamp`, in the RTP clock of the sender's media.
    pub rtp_timestamp: Timestamp,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// A sender report: sender info plus reports on the sources it receives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderReport {
    pub ssrc: Ssrc,
    pub info: SenderInfo,
    pub reports: Vec<ReportBlock>,
}

/// A receiver report, sent by a participant that is not sending media.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverReport {
    pub ssrc: Ssrc,
    pub reports: Vec<ReportBlock>,
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket {
    SenderReport(SenderReport),
    ReceiverReport(ReceiverReport),
    /// SDES, BYE, APP, feedback…: recognised as well-formed and skipped.
    Other {
        packet_type: u8,
        count: u8,
        len: usize,
    },
}

/// Parses a compound RTCP packet into its parts. Any malformed part fails the whole
/// packet (RFC 3550 A.2: a receiver cannot trust the rest of a broken compound).
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Truncated { len: 0, needed: HEADER_LEN });
    }
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rest = buf.get(pos..).unwrap_or(&[]);
        let (packet, len) = parse_one(rest)?;
        packets.push(packet);
        pos += len;
    }
    Ok(packets)
}

/// Parses the first packet of `buf`, returning it and its length.
fn parse_one(buf: &[u8]) -> Result<(RtcpPacket, usize), RtcpError> {
    let (Some(b0), Some(packet_type), Some(words)) =
        (buf.first().copied(), buf.get(1).copied(), bytes::be_u16(buf, 2))
    else {
        return Err(RtcpError::Truncated { len: buf.len(), needed: HEADER_LEN });
    };
    let version = b0 >> 6;
    if version != VERSION {
        return Err(RtcpError::UnsupportedVersion(version));
    }
    let count = b0 & 0x1F;
    let len = (usize::from(words) + 1) * 4;
    let packet =
        bytes::slice(buf, 0, len).ok_or(RtcpError::Truncated { len: buf.len(), needed: len })?;
    let mut body = packet.get(HEADER_LEN..).unwrap_or(&[]);
    if b0 & 0x20 != 0 {
        let pad = body.last().copied().unwrap_or(0);
        if pad == 0 || usize::from(pad) > body.len() {
            return Err(RtcpError::InvalidPadding(pad));
        }
        body = body.get(..body.len() - usize::from(pad)).unwrap_or(&[]);
    }
    let bad_count = RtcpError::BadReportCount { packet_type, count };
    let parsed = match packet_type {
        PT_SR => {
            let (Some(ssrc), Some(ntp), Some(rtp), Some(packets), Some(octets)) = (
                bytes::be_u32(body, 0),
                bytes::be_u64(body, 4),
                bytes::be_u32(body, 12),
                bytes::be_u32(body, 16),
                bytes::be_u32(body, 20),
            ) else {
                return Err(bad_count);
            };
            RtcpPacket::SenderReport(SenderReport {
                ssrc: Ssrc(ssrc),
                info: SenderInfo {
                    ntp_timestamp: NtpTimestamp(ntp),
                    rtp_timestamp: Timestamp(rtp),
                    packet_count: packets,
                    octet_count: octets,
                },
                reports: parse_blocks(body, 4 + SENDER_INFO_LEN, count).ok_or(bad_count)?,
            })
        }
        PT_RR => {
            let ssrc = bytes::be_u32(body, 0).ok_or(bad_count.clone())?;
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: Ssrc(ssrc),
                reports: parse_blocks(body, 4, count).ok_or(bad_count)?,
            })
        }
        _ => RtcpPacket::Other { packet_type, count, len },
    };
    Ok((parsed, len))
}

/// `count` report blocks from `at`; anything after them is a profile-specific extension and
/// is ignored (§6.4.1).
fn parse_blocks(body: &[u8], at: usize, count: u8) -> Option<Vec<ReportBlock>> {
    (0..usize::from(count))
        .map(|i| {
            let b = bytes::slice(body, at + i * REPORT_BLOCK_LEN, REPORT_BLOCK_LEN)?;
            let lost = bytes::be_u32(b, 4)?;
            Some(ReportBlock {
                ssrc: Ssrc(bytes::be_u32(b, 0)?),
                fraction_lost: (lost >> 24) as u8,
                // Sign-extend the low 24 bits.
                cumulative_lost: ((lost << 8) as i32) >> 8,
                extended_highest_seq: bytes::be_u32(b, 8)?,
                jitter: bytes::be_u32(b, 12)?,
                last_sr: bytes::be_u32(b, 16)?,
                delay_since_last_sr: bytes::be_u32(b, 20)?,
            })
        })
        .collect()
}

fn write_header(out: &mut Vec<u8>, count: usize, packet_type: u8, body_len: usize) {
    let words = (HEADER_LEN + body_len) / 4 - 1;
    out.push((VERSION << 6) | count as u8);
    out.push(packet_type);
    out.extend_from_slice(&(words as u16).to_be_bytes());
}

fn write_blocks(out: &mut Vec<u8>, blocks: &[ReportBlock]) {
    for b in blocks {
        let lost = i64::from(b.cumulative_lost).clamp(LOST_MIN, LOST_MAX) as u32 & 0xFF_FFFF;
        out.extend_from_slice(&b.ssrc.0.to_be_bytes());
        out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&b.extended_highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
}

impl SenderReport {
    /// Appends the SR to `out` (which may already hold other parts of a compound packet).
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        if self.reports.len() > MAX_REPORT_BLOCKS {
            return Err(RtcpError::TooManyReportBlocks(self.reports.len()));
        }
        let body = 4 + SENDER_INFO_LEN + REPORT_BLOCK_LEN * self.reports.len();
        write_header(out, self.reports.len(), PT_SR, body);
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        out.extend_from_slice(&self.info.ntp_timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.info.rtp_timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.info.packet_count.to_be_bytes());
        out.extend_from_slice(&self.info.octet_count.to_be_bytes());
        write_blocks(out, &self.reports);
        Ok(())
    }
}

impl ReceiverReport {
    /// Appends the RR to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        if self.reports.len() > MAX_REPORT_BLOCKS {
            return Err(RtcpError::TooManyReportBlocks(self.reports.len()));
        }
        write_header(out, self.reports.len(), PT_RR, 4 + REPORT_BLOCK_LEN * self.reports.len());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        write_blocks(out, &self.reports);
        Ok(())
    }
}

/// Reception statistics for one source, per RFC 3550 A.1 (sequence validation), A.3 (loss)
/// and A.8 (jitter).
///
/// Feed every received packet to [`record`](Self::record); call
/// [`report_block`](Self::report_block) when sending an SR/RR, which also starts the next
/// interval for "fraction lost".
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    seq: SeqExtender,
    /// Extended sequence number of the first packet (A.1 `base_seq`), reset on a restart.
    base: Option<u64>,
    restarts_seen: u32,
    /// Packets counted, duplicates included (as A.1 does).
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// The previous packet's relative transit time (arrival − timestamp), wrapping.
    transit: Option<u32>,
    /// Jitter scaled by 16, the integer form of A.8.
    jitter_x16: u64,
}

impl ReceiverStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Packets received (duplicates count, packets rejected as sequence jumps do not).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected from the first to the highest sequence number.
    pub fn expected(&self) -> u64 {
        match (self.base, self.seq.highest()) {
            (Some(base), Some(highest)) => highest + 1 - base,
            _ => 0,
        }
    }

    /// Expected minus received: negative when duplicates outnumber losses (A.3).
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// The highest sequence number with the cycle count since the first packet in the high 16
    /// bits, as a report block carries it.
    pub fn extended_highest_seq(&self) -> u32 {
        match (self.base, self.seq.highest()) {
            (Some(base), Some(highest)) => (highest - (base & !0xFFFF)) as u32,
            _ => 0,
        }
    }

    /// Interarrival jitter in timestamp units (A.8).
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }

    /// Records a received packet. `arrival` is its arrival time in the same clock units as
    /// RTP timestamps (any origin; it may wrap). Returns `false` if the packet was rejected
    /// by sequence validation (a jump not yet confirmed, A.1) and is not counted.
    pub fn record(&mut self, seq: Seq, timestamp: Timestamp, arrival: u32) -> bool {
        let Some(ext) = self.seq.extend(seq) else {
            return false;
        };
        if self.base.is_none() || self.seq.restarts() != self.restarts_seen {
            // First packet, or the source restarted its sequence: start counting afresh
            // (A.1 init_seq).
            self.restarts_seen = self.seq.restarts();
            self.base = Some(ext);
            self.received = 0;
            self.expected_prior = 0;
            self.received_prior = 0;
        }
        self.received += 1;

        let transit = arrival.wrapping_sub(timestamp.0);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            // J += (|D| - J) / 16, in integers with J scaled by 16 (A.8).
            self.jitter_x16 = (self.jitter_x16 + d).saturating_sub((self.jitter_x16 + 8) >> 4);
        }
        self.transit = Some(transit);
        true
    }

    /// The report block for this source, closing the current "fraction lost" interval.
    pub fn report_block(
        &mut self,
        ssrc: Ssrc,
        last_sr: u32,
        delay_since_last_sr: u32,
    ) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(LOST_MIN, LOST_MAX) as i32,
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    fn block(n: u32) -> ReportBlock {
        ReportBlock {
            ssrc: Ssrc(0x1000 + n),
            fraction_lost: 25,
            cumulative_lost: -3 + n as i32,
            extended_highest_seq: 0x0001_0010 + n,
            jitter: 42,
            last_sr: 0xAABB_CCDD,
            delay_since_last_sr: 65536,
        }
    }

    fn sr(blocks: u32) -> SenderReport {
        SenderReport {
            ssrc: Ssrc(0xCAFE),
            info: SenderInfo {
                ntp_timestamp: NtpTimestamp(0xE8A0_1234_8000_0000),
                rtp_timestamp: Timestamp(160_000),
                packet_count: 1000,
                octet_count: 160_000,
            },
            reports: (0..blocks).map(block).collect(),
        }
    }

    #[test]
    fn sender_report_round_trips_and_has_the_rfc_layout() {
        let report = sr(2);
        let mut buf = Vec::new();
        report.write(&mut buf).unwrap();
        assert_eq!(buf.len(), 4 + 24 + 2 * 24);
        assert_eq!(&buf[..4], &[0x82, 200, 0, 18]); // V=2, RC=2; 76 bytes = 19 words - 1
        // First block's lost word: fraction 25, cumulative -3 as 24-bit two's complement.
        assert_eq!(&buf[32..36], &[25, 0xFF, 0xFF, 0xFD]);
        assert_eq!(parse_compound(&buf).unwrap(), vec![RtcpPacket::SenderReport(report)]);
    }

    #[test]
    fn receiver_report_round_trips_including_empty() {
        for n in [0, 1, 31] {
            let rr = ReceiverReport { ssrc: Ssrc(7), reports: (0..n).map(block).collect() };
            let mut buf = Vec::new();
            rr.write(&mut buf).unwrap();
            assert_eq!(buf.len(), 8 + 24 * n as usize);
            assert_eq!(parse_compound(&buf).unwrap(), vec![RtcpPacket::ReceiverReport(rr)]);
        }
        let rr = ReceiverReport { ssrc: Ssrc(7), reports: (0..32).map(block).collect() };
        assert_eq!(rr.write(&mut Vec::new()), Err(RtcpError::TooManyReportBlocks(32)));
    }

    #[test]
    fn cumulative_lost_is_clamped_to_24_bits() {
        let mut b = block(0);
        b.cumulative_lost = 10_000_000;
        let rr = ReceiverReport { ssrc: Ssrc(1), reports: vec![b] };
        let mut buf = Vec::new();
        rr.write(&mut buf).unwrap();
        let parsed = parse_compound(&buf);
        let Ok([RtcpPacket::ReceiverReport(back)]) = parsed.as_deref() else {
            panic!("not one RR");
        };
        assert_eq!(back.reports[0].cumulative_lost, 0x7F_FFFF);
        b.cumulative_lost = -10_000_000;
        let mut buf = Vec::new();
        ReceiverReport { ssrc: Ssrc(1), reports: vec![b] }.write(&mut buf).unwrap();
        let parsed = parse_compound(&buf);
        let Ok([RtcpPacket::ReceiverReport(back)]) = parsed.as_deref() else {
            panic!("not one RR");
        };
        assert_eq!(back.reports[0].cumulative_lost, -0x80_0000);
    }

    #[test]
    fn compound_packets_skip_other_types_and_extensions() {
        let mut buf = Vec::new();
        sr(1).write(&mut buf).unwrap();
        // SDES with one chunk: SSRC + CNAME "ab" + end, padded to a word.
        buf.extend_from_slice(&[0x81, 202, 0, 2, 0, 0, 0xCA, 0xFE, 1, 2, b'a', b'b']);
        // An RR with a one-word profile-specific extension after its block.
        let mut rr = Vec::new();
        ReceiverReport { ssrc: Ssrc(9), reports: vec![block(5)] }.write(&mut rr).unwrap();
        rr.extend_from_slice(&[1, 2, 3, 4]);
        rr[3] += 1;
        buf.extend_from_slice(&rr);
        let parts = parse_compound(&buf).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1], RtcpPacket::Other { packet_type: 202, count: 1, len: 12 });
        assert_eq!(
            parts[2],
            RtcpPacket::ReceiverReport(ReceiverReport { ssrc: Ssrc(9), reports: vec![block(5)] })
        );
    }

    #[test]
    fn padding_in_the_last_packet_is_removed() {
        let mut buf = Vec::new();
        ReceiverReport { ssrc: Ssrc(3), reports: vec![] }.write(&mut buf).unwrap();
        buf[0] |= 0x20;
        buf[3] = 2; // 3 words: header, SSRC, padding
        buf.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(
            parse_compound(&buf).unwrap(),
            vec![RtcpPacket::ReceiverReport(ReceiverReport { ssrc: Ssrc(3), reports: vec![] })]
        );
        *buf.last_mut().unwrap() = 0;
        assert_eq!(parse_compound(&buf), Err(RtcpError::InvalidPadding(0)));
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse_compound(&[]), Err(RtcpError::Truncated { len: 0, needed: 4 }));
        assert_eq!(parse_compound(&[0x80, 201]), Err(RtcpError::Truncated { len: 2, needed: 4 }));
        assert_eq!(
            parse_compound(&[0x40, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::UnsupportedVersion(1))
        );
        // Length says 3 words but only 2 are there.
        assert_eq!(
            parse_compound(&[0x80, 201, 0, 2, 0, 0, 0, 1]),
            Err(RtcpError::Truncated { len: 8, needed: 12 })
        );
        // RC=1 but no room for the block.
        assert_eq!(
            parse_compound(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadReportCount { packet_type: 201, count: 1 })
        );
        // An SR too short for its sender info.
        assert!(matches!(
            parse_compound(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadReportCount { packet_type: 200, .. })
        ));
    }

    #[test]
    fn every_prefix_and_random_bytes_never_panic() {
        let mut buf = Vec::new();
        sr(3).write(&mut buf).unwrap();
        ReceiverReport { ssrc: Ssrc(1), reports: vec![block(1)] }.write(&mut buf).unwrap();
        assert_eq!(parse_compound(&buf).unwrap().len(), 2);
        for end in 0..buf.len() {
            let _ = parse_compound(&buf[..end]);
        }
        let mut rng = XorShift::new(77);
        for _ in 0..20_000 {
            let len = rng.below(120) as usize;
            let mut b = rng.bytes(len);
            if let Some(first) = b.first_mut() {
                *first = (*first & 0x3F) | 0x80;
            }
            if b.len() > 3 {
                b[2] = 0;
                b[3] %= 32;
            }
            let _ = parse_compound(&b);
        }
    }

    #[test]
    fn ntp_middle_bits_for_lsr() {
        assert_eq!(NtpTimestamp(0x1122_3344_5566_7788).middle32(), 0x3344_5566);
    }

    /// Feeds packets 160 timestamp units apart, arriving exactly on time.
    fn feed(stats: &mut ReceiverStats, seqs: impl IntoIterator<Item = u16>) {
        for s in seqs {
            let ts = u32::from(s) * 160;
            assert!(stats.record(Seq(s), Timestamp(ts), ts.wrapping_add(1000)));
        }
    }

    #[test]
    fn loss_and_fraction_lost_per_interval() {
        let mut stats = ReceiverStats::new();
        feed(&mut stats, (0..10).filter(|s| *s != 3 && *s != 7));
        assert_eq!((stats.expected(), stats.received(), stats.cumulative_lost()), (10, 8, 2));
        let b = stats.report_block(Ssrc(1), 0, 0);
        // 2 lost of 10 expected: 2 * 256 / 10 = 51.
        assert_eq!((b.fraction_lost, b.cumulative_lost, b.extended_highest_seq), (51, 2, 9));
        assert_eq!(b.jitter, 0);

        // Next interval: everything arrives plus one duplicate, so the interval shows no
        // loss and the cumulative count goes down by one.
        feed(&mut stats, (10..20).chain([15]));
        let b = stats.report_block(Ssrc(1), 0, 0);
        assert_eq!((b.fraction_lost, b.cumulative_lost, b.extended_highest_seq), (0, 1, 19));

        // An interval with nothing received reports no fraction (expected_interval = 0).
        let b = stats.report_block(Ssrc(1), 0, 0);
        assert_eq!(b.fraction_lost, 0);

        // Heavy loss: 1 of 5 received → 4 * 256 / 5 = 204.
        feed(&mut stats, [24]);
        assert_eq!(stats.report_block(Ssrc(1), 0, 0).fraction_lost, 204);
    }

    #[test]
    fn reordering_is_not_loss() {
        let mut stats = ReceiverStats::new();
        feed(&mut stats, [0, 1, 3, 2, 4, 6, 5]);
        assert_eq!(stats.cumulative_lost(), 0);
        assert_eq!(stats.extended_highest_seq(), 6);
        assert_eq!(stats.report_block(Ssrc(1), 0, 0).fraction_lost, 0);
    }

    #[test]
    fn sequence_wrap_is_counted_in_the_high_bits() {
        let mut stats = ReceiverStats::new();
        feed(&mut stats, [65533, 65535, 0, 65534, 2]);
        assert_eq!(stats.extended_highest_seq(), 0x0001_0002);
        assert_eq!(stats.expected(), 6);
        assert_eq!(stats.cumulative_lost(), 1); // seq 1 missing
        let b = stats.report_block(Ssrc(1), 0, 0);
        assert_eq!((b.extended_highest_seq, b.cumulative_lost, b.fraction_lost), (0x1_0002, 1, 42));
    }

    #[test]
    fn restart_resets_the_counts() {
        let mut stats = ReceiverStats::new();
        feed(&mut stats, [10, 11, 12]);
        assert!(!stats.record(Seq(30_000), Timestamp(0), 0));
        assert!(stats.record(Seq(30_001), Timestamp(160), 160));
        assert_eq!((stats.received(), stats.expected(), stats.cumulative_lost()), (1, 1, 0));
        assert_eq!(stats.extended_highest_seq(), 30_001);
    }

    #[test]
    fn jitter_matches_a_hand_computed_a8_sequence() {
        // Timestamps 160 apart; arrivals (in timestamp units) early and late.
        // transit: 1000, 1010, 990, 1020 → |D| = 10, 20, 30.
        // J×16: 0 → 0+10-0 = 10 → 10+20-1 = 29 → 29+30-2 = 57; J = 57 >> 4 = 3
        // (the floating-point A.8 gives 0.625, 1.836, 3.596).
        let mut stats = ReceiverStats::new();
        for (seq, arrival) in [(0u16, 1000u32), (1, 1170), (2, 1310), (3, 1500)] {
            stats.record(Seq(seq), Timestamp(u32::from(seq) * 160), arrival);
        }
        assert_eq!(stats.jitter_x16, 57);
        assert_eq!(stats.jitter(), 3);
        assert_eq!(stats.report_block(Ssrc(1), 0, 0).jitter, 3);
    }

    #[test]
    fn jitter_survives_timestamp_and_clock_wrap() {
        // Same deltas as above but with both clocks about to wrap: the result is identical.
        let mut stats = ReceiverStats::new();
        let ts0 = u32::MAX - 200;
        let arrival0 = u32::MAX - 500;
        for (seq, offset) in [(0u16, 0u32), (1, 170), (2, 310), (3, 500)] {
            let ts = ts0.wrapping_add(u32::from(seq) * 160);
            stats.record(Seq(seq), Timestamp(ts), arrival0.wrapping_add(offset));
        }
        assert_eq!(stats.jitter_x16, 57);
    }

    #[test]
    fn jitter_converges_to_the_mean_deviation() {
        // Arrivals alternately on time and 40 units late: |D| = 40 every packet, so J → 40.
        let mut stats = ReceiverStats::new();
        for seq in 0..400u16 {
            let ts = u32::from(seq) * 160;
            let wobble = if seq % 2 == 0 { 40 } else { 0 };
            stats.record(Seq(seq), Timestamp(ts), ts + wobble);
        }
        assert!((39..=40).contains(&stats.jitter()), "jitter {}", stats.jitter());
    }
}
