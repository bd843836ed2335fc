//! RFC 4733 telephone events: the 4-byte payload, a receiver and a sender.
//!
//! One key press travels as many RTP packets that all carry the event's *start* timestamp
//! (§2.3.5): a first packet with the marker bit, updates with a growing duration, and a final
//! packet with the E bit, sent three times because it must survive loss (§2.5.1.4). The
//! receiver therefore identifies an event by its timestamp, ignores the retransmissions,
//! and still produces the digit when the start or all end packets are lost — exactly one
//! [`DigitEvent`] per press, which is what an IVR flow needs.

use std::collections::VecDeque;

use super::{DtmfError, digit, event_code};
use crate::rtp::Timestamp;

/// Length of one event in the payload (§2.3).
pub const PAYLOAD_LEN: usize = 4;

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0-15 are the DTMF digits (§3.2).
    pub event: u8,
    /// E bit: this is (a retransmission of) the final packet of the event.
    pub end: bool,
    /// Power level as −dBm0, 0..=63 (larger is quieter); clamped to 63 when written.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event of a payload. Extra bytes (RFC 2198 redundancy is negotiated
    /// separately and not handled here) are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let &[event, flags, d0, d1, ..] = payload else {
            return Err(DtmfError::Truncated(payload.len()));
        };
        // The R bit (0x40) is reserved: ignored on receipt (§2.3.3).
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(&self) -> [u8; PAYLOAD_LEN] {
        let [d0, d1] = self.duration.to_be_bytes();
        let end = if self.end { 0x80 } else { 0 };
        [self.event, end | self.volume.min(63), d0, d1]
    }

    /// The DTMF digit, if this event is one.
    pub fn digit(&self) -> Option<char> {
        digit(self.event)
    }
}

/// A completed key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitEvent {
    pub digit: char,
    /// The event's start timestamp (its identity).
    pub timestamp: Timestamp,
    /// The longest duration reported, in RTP timestamp units.
    pub duration: u16,
}

impl DigitEvent {
    /// The duration in milliseconds at the given clock rate (8000 for telephone-event/8000).
    pub fn duration_ms(&self, clock_rate: u32) -> u32 {
        (u64::from(self.duration) * 1000 / u64::from(clock_rate.max(1))) as u32
    }
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: Timestamp,
    event: u8,
    duration: u16,
    reported: bool,
}

/// Turns received telephone-event packets into one [`DigitEvent`] per key press.
///
/// Feed every packet of the telephone-event payload type with
/// [`handle_packet`](Self::handle_packet), then drain [`poll_digit`](Self::poll_digit). A digit
/// is reported when its first end packet arrives; if all end packets are lost it is reported
/// when the next event starts, or on [`flush`](Self::flush) (call it when the stream ends, or
/// from the caller's own timer if no packet came for a while). Non-DTMF events are tracked
/// (so their packets are not mistaken for anything else) but not reported.
#[derive(Debug, Clone, Default)]
pub struct DtmfEventReceiver {
    current: Option<Current>,
    digits: VecDeque<DigitEvent>,
}

impl DtmfEventReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one packet: its RTP timestamp and payload.
    pub fn handle_packet(&mut self, timestamp: Timestamp, payload: &[u8]) -> Result<(), DtmfError> {
        let ev = TelephoneEvent::parse(payload)?;
        if let Some(cur) = &mut self.current {
            let age = timestamp.diff(cur.timestamp);
            if age == 0 && ev.event == cur.event {
                // An update or a retransmitted end packet of the event in progress.
                cur.duration = cur.duration.max(ev.duration);
                if ev.end && !cur.reported {
                    cur.reported = true;
                    let done = *cur;
                    self.report(done);
                }
                return Ok(());
            }
            if age < 0 {
                // A late packet of an event already superseded: it was handled or reported.
                return Ok(());
            }
            // A new event; if the previous one never saw an end packet, it is over now.
            if !cur.reported {
                let done = *cur;
                self.report(done);
            }
        }
        let cur = Current { timestamp, event: ev.event, duration: ev.duration, reported: ev.end };
        self.current = Some(cur);
        if ev.end {
            // Only end packets arrived (start and updates lost): still one digit.
            self.report(cur);
        }
        Ok(())
    }

    /// Ends the event in progress, if it was not reported yet (stream ended, or timed out).
    pub fn flush(&mut self) {
        if let Some(cur) = &mut self.current
            && !cur.reported
        {
            cur.reported = true;
            let done = *cur;
            self.report(done);
        }
    }

    /// The next completed digit.
    pub fn poll_digit(&mut self) -> Option<DigitEvent> {
        self.digits.pop_front()
    }

    fn report(&mut self, cur: Current) {
        if let Some(digit) = digit(cur.event) {
            self.digits.push_back(DigitEvent {
                digit,
                timestamp: cur.timestamp,
                duration: cur.duration,
            });
        }
    }
}

/// One packet to send for a digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// When to send it, in ms after the first packet of the digit.
    pub send_at_ms: u32,
    /// RTP marker bit: set on the first packet of the event (§2.5.1.1).
    pub marker: bool,
    /// The event's start timestamp, the same in every packet of the event.
    pub timestamp: Timestamp,
    pub event: TelephoneEvent,
}

impl EventPacket {
    /// The RTP payload.
    pub fn payload(&self) -> [u8; PAYLOAD_LEN] {
        self.event.to_bytes()
    }
}

/// Spacing of the end-packet retransmissions: one audio packetisation interval.
const END_SPACING_MS: u32 = 20;

/// Produces the RFC 4733 packet sequence for a digit.
///
/// The first packet carries the marker; updates follow every `update_interval_ms`
/// (default 50 ms, §2.5.1.2), each announcing the duration up to the end of its interval;
/// then the end packet is sent three times, 20 ms apart, all with the final duration and the
/// start timestamp (§2.5.1.4). The caller assigns RTP sequence numbers and sends each packet
/// at its `send_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEventSender {
    clock_rate: u32,
    update_interval_ms: u32,
    volume: u8,
    end_packets: u8,
}

impl Default for DtmfEventSender {
    fn default() -> Self {
        DtmfEventSender { clock_rate: 8000, update_interval_ms: 50, volume: 10, end_packets: 3 }
    }
}

impl DtmfEventSender {
    /// A sender for the telephone-event clock rate negotiated in SDP (usually 8000).
    pub fn new(clock_rate: u32) -> Self {
        DtmfEventSender { clock_rate, ..Self::default() }
    }

    /// Sets the interval between updates (ms).
    #[must_use]
    pub fn with_update_interval_ms(mut self, ms: u32) -> Self {
        self.update_interval_ms = ms;
        self
    }

    /// Sets the announced volume in −dBm0 (0..=63; default 10).
    #[must_use]
    pub fn with_volume(mut self, volume: u8) -> Self {
        self.volume = volume.min(63);
        self
    }

    fn units(&self, ms: u32) -> u64 {
        u64::from(ms) * u64::from(self.clock_rate) / 1000
    }

    /// The packets for `digit` pressed for `duration_ms`, starting at RTP time `start`.
    pub fn packets(
        &self,
        digit: char,
        start: Timestamp,
        duration_ms: u32,
    ) -> Result<Vec<EventPacket>, DtmfError> {
        let event = event_code(digit).ok_or(DtmfError::NotADigit(digit))?;
        if duration_ms == 0 || self.update_interval_ms == 0 {
            return Err(DtmfError::ZeroDuration);
        }
        let total = u16::try_from(self.units(duration_ms))
            .map_err(|_| DtmfError::TooLong { ms: duration_ms, clock_rate: self.clock_rate })?;
        let packet = |send_at_ms, marker, end, duration| EventPacket {
            send_at_ms,
            marker,
            timestamp: start,
            event: TelephoneEvent { event, end, volume: self.volume, duration },
        };
        let mut out = Vec::new();
        let mut at_ms = 0;
        while at_ms < duration_ms {
            let covered = at_ms.saturating_add(self.update_interval_ms);
            // `covered` ms never exceeds what fits: it is capped by `total`.
            let duration = u16::try_from(self.units(covered)).unwrap_or(total).min(total);
            out.push(packet(at_ms, at_ms == 0, false, duration));
            at_ms = covered;
        }
        for i in 0..u32::from(self.end_packets) {
            out.push(packet(duration_ms + i * END_SPACING_MS, false, true, total));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(rx: &mut DtmfEventReceiver, packets: &[EventPacket]) -> Vec<DigitEvent> {
        for p in packets {
            rx.handle_packet(p.timestamp, &p.payload()).unwrap();
        }
        std::iter::from_fn(|| rx.poll_digit()).collect()
    }

    #[test]
    fn payload_round_trips_and_matches_the_rfc_layout() {
        // RFC 4733 §2.3: event 5, E=1, volume 10, duration 800.
        let ev = TelephoneEvent { event: 5, end: true, volume: 10, duration: 800 };
        assert_eq!(ev.to_bytes(), [5, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Ok(ev));
        // The reserved bit is ignored; the volume is clamped on write.
        assert_eq!(TelephoneEvent::parse(&[11, 0x40 | 0x3F, 0, 0]).unwrap().volume, 63);
        assert_eq!(TelephoneEvent { volume: 200, ..ev }.to_bytes()[1], 0xBF);
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(DtmfError::Truncated(3)));
        assert_eq!(TelephoneEvent::parse(&[11, 0, 0, 1]).unwrap().digit(), Some('#'));
    }

    #[test]
    fn sender_produces_marker_updates_and_three_end_packets() {
        let tx = DtmfEventSender::default();
        let start = Timestamp(10_000);
        let packets = tx.packets('7', start, 120).unwrap();
        let summary: Vec<_> = packets
            .iter()
            .map(|p| (p.send_at_ms, p.marker, p.event.end, p.event.duration))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, true, false, 400),
                (50, false, false, 800),
                (100, false, false, 960),
                (120, false, true, 960),
                (140, false, true, 960),
                (160, false, true, 960),
            ]
        );
        assert!(packets.iter().all(|p| p.timestamp == start && p.event.event == 7));
        assert!(packets.iter().all(|p| p.event.volume == 10));
    }

    #[test]
    fn sender_validates_its_input() {
        let tx = DtmfEventSender::default();
        assert_eq!(tx.packets('x', Timestamp(0), 100), Err(DtmfError::NotADigit('x')));
        assert_eq!(tx.packets('1', Timestamp(0), 0), Err(DtmfError::ZeroDuration));
        assert_eq!(
            tx.packets('1', Timestamp(0), 9000),
            Err(DtmfError::TooLong { ms: 9000, clock_rate: 8000 })
        );
        let short = tx.packets('1', Timestamp(0), 20).unwrap();
        assert_eq!(short.len(), 4);
        assert!(short[0].marker && short[0].event.duration == 160);
        let wide = DtmfEventSender::new(16_000).with_update_interval_ms(20).with_volume(99);
        let p = wide.packets('D', Timestamp(0), 60).unwrap();
        assert_eq!(p.len(), 3 + 3);
        assert_eq!(p[2].event.duration, 960);
        assert_eq!(p[0].event.volume, 63);
    }

    #[test]
    fn receiver_reports_each_event_once_despite_retransmissions() {
        let tx = DtmfEventSender::default();
        let mut rx = DtmfEventReceiver::new();
        let mut all = Vec::new();
        for (i, d) in "1234567890*#ABCD".chars().enumerate() {
            all.extend(tx.packets(d, Timestamp(i as u32 * 2000), 100).unwrap());
        }
        let digits = receive(&mut rx, &all);
        let s: String = digits.iter().map(|d| d.digit).collect();
        assert_eq!(s, "1234567890*#ABCD");
        assert!(digits.iter().all(|d| d.duration == 800 && d.duration_ms(8000) == 100));
        rx.flush();
        assert_eq!(rx.poll_digit(), None); // everything was already reported
    }

    #[test]
    fn lost_start_and_lost_updates_still_give_one_digit() {
        let tx = DtmfEventSender::default();
        let packets = tx.packets('5', Timestamp(500), 200).unwrap();
        let mut rx = DtmfEventReceiver::new();
        // Only the end packets survive.
        let digits = receive(&mut rx, &packets[packets.len() - 3..]);
        assert_eq!(digits.len(), 1);
        assert_eq!((digits[0].digit, digits[0].duration), ('5', 1600));
        // Only the second end packet survives.
        let mut rx = DtmfEventReceiver::new();
        let digits = receive(&mut rx, &packets[packets.len() - 2..packets.len() - 1]);
        assert_eq!(digits.len(), 1);
    }

    #[test]
    fn lost_end_packets_report_the_digit_when_the_next_event_starts() {
        let tx = DtmfEventSender::default();
        let first = tx.packets('9', Timestamp(0), 100).unwrap();
        let second = tx.packets('9', Timestamp(1600), 100).unwrap();
        let mut rx = DtmfEventReceiver::new();
        // First event loses all its end packets.
        assert!(receive(&mut rx, &first[..first.len() - 3]).is_empty());
        let digits = receive(&mut rx, &second);
        assert_eq!(digits.iter().map(|d| d.timestamp.0).collect::<Vec<_>>(), vec![0, 1600]);
        assert_eq!(digits[0].duration, 800);
        // And via flush at the end of a stream.
        let mut rx = DtmfEventReceiver::new();
        assert!(receive(&mut rx, &first[..2]).is_empty());
        rx.flush();
        assert_eq!(rx.poll_digit().map(|d| d.digit), Some('9'));
        rx.flush();
        assert_eq!(rx.poll_digit(), None);
    }

    #[test]
    fn late_and_reordered_packets_do_not_create_extra_digits() {
        let tx = DtmfEventSender::default();
        let a = tx.packets('1', Timestamp(u32::MAX - 100), 100).unwrap();
        let b = tx.packets('2', Timestamp(u32::MAX - 100).wrapping_add(2000), 100).unwrap();
        let mut rx = DtmfEventReceiver::new();
        let mut stream: Vec<EventPacket> = a.clone();
        stream.swap(1, 2); // an update overtaken by the first end packet
        stream.extend(b.iter().take(2));
        stream.push(a[4]); // a retransmitted end of the previous event, arriving late
        stream.extend(b.iter().skip(2));
        let digits = receive(&mut rx, &stream);
        assert_eq!(digits.iter().map(|d| d.digit).collect::<String>(), "12");
    }

    #[test]
    fn same_digit_twice_is_two_events_and_non_dtmf_events_are_ignored() {
        let tx = DtmfEventSender::default();
        let mut stream = tx.packets('0', Timestamp(0), 80).unwrap();
        stream.extend(tx.packets('0', Timestamp(1280), 80).unwrap());
        let mut rx = DtmfEventReceiver::new();
        assert_eq!(receive(&mut rx, &stream).len(), 2);
        // Flash (event 16) is not a digit.
        rx.handle_packet(Timestamp(5000), &[16, 0x80, 0, 80]).unwrap();
        assert_eq!(rx.poll_digit(), None);
        assert_eq!(rx.handle_packet(Timestamp(6000), &[1]), Err(DtmfError::Truncated(1)));
    }
}
