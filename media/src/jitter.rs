//! An adaptive, bounded jitter buffer for received audio packets.
//!
//! Packets arrive unevenly, out of order, duplicated or not at all; the playout side needs
//! exactly one frame every packetisation interval. The buffer sits between the two:
//! [`push`](JitterBuffer::push) with each packet and its arrival time, and
//! [`pop`](JitterBuffer::pop) once per frame interval with the current time. `pop` answers
//! [`Frame::Audio`] in sequence order, [`Frame::Concealed`] for a sequence number whose slot
//! came and went without its packet (the consumer repeats or fades the last frame), or
//! [`Frame::Empty`] before playout starts and after an underrun.
//!
//! Design (sans-IO; all times are the caller's milliseconds):
//! - Ordering uses [`SeqExtender`] indices, so sequence wrap is invisible and reordered
//!   packets within RFC 3550's misorder window are put back in place.
//! - A packet for a slot already played is *late*: dropped and counted (even if it was a
//!   duplicate of a played packet — the buffer keeps no history). One already queued is a
//!   *duplicate*: dropped and counted.
//! - Capacity is bounded in sequence numbers, not just packets: everything buffered lies within
//!   `capacity` numbers of the newest packet. A packet further ahead pushes the window forward,
//!   dropping (and counting) the oldest frames instead of growing or concealing without end.
//! - The target delay follows observed jitter: the spread (max − min) of the relative transit
//!   time (arrival − media time) over the last [`TRANSIT_WINDOW`] packets, clamped to
//!   `[min_delay_ms, max_delay_ms]`. Playout starts — and restarts after an underrun — once the
//!   first waiting packet has been held for the target delay. A late packet proves the delay too
//!   short: playout pauses ([`Frame::Empty`]) for as many frames as the buffer is short of the
//!   target. So delay grows when jitter makes packets late or the buffer run dry. When the
//!   buffer level stays above the target for a whole adaptation period it drops one frame, so
//!   delay comes back down once the network calms.

use std::collections::{BTreeMap, VecDeque};

use crate::rtp::{Seq, SeqExtender, Timestamp, TimestampExtender};

/// Packets over which jitter is measured (2 s at 20 ms per packet).
pub const TRANSIT_WINDOW: usize = 100;
/// Pops between decisions to shrink the delay (1 s at 20 ms per frame).
const ADAPT_PERIOD: u32 = 50;

/// Jitter buffer parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream (for converting timestamps to ms).
    pub clock_rate: u32,
    /// Packetisation interval: how often [`JitterBuffer::pop`] is called.
    pub frame_ms: u32,
    /// Lowest target delay.
    pub min_delay_ms: u32,
    /// Highest target delay.
    pub max_delay_ms: u32,
    /// Most sequence numbers (hence frames) held at once.
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            clock_rate: 8000,
            frame_ms: 20,
            min_delay_ms: 20,
            max_delay_ms: 200,
            capacity: 50,
        }
    }
}

/// What to play for one frame interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<P> {
    /// The packet for this slot.
    Audio { seq: Seq, timestamp: Timestamp, payload: P },
    /// This slot's packet is missing (lost or late): conceal.
    Concealed { seq: Seq },
    /// Nothing to play: playout has not started, the buffer ran dry and is refilling, or it
    /// is pausing to build up delay after a late packet.
    Empty,
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered for playout.
    Queued,
    /// The same sequence number is already buffered.
    Duplicate,
    /// Its slot has already been played or concealed.
    Late,
    /// Rejected by sequence validation (an unconfirmed jump, RFC 3550 A.1).
    Rejected,
}

/// Counters, for logs and call-quality metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    pub queued: u64,
    pub duplicates: u64,
    pub late: u64,
    pub rejected: u64,
    /// Frames dropped because the buffer's window moved past them.
    pub overflow: u64,
    /// Frames dropped to bring the delay down.
    pub shrunk: u64,
    /// Empty frames inserted to build up delay after late packets.
    pub stretched: u64,
    pub concealed: u64,
    pub underruns: u64,
}

#[derive(Debug, Clone)]
struct Entry<P> {
    seq: Seq,
    timestamp: Timestamp,
    payload: P,
    arrival_ms: u64,
}

/// The jitter buffer; `P` is the payload type (encoded bytes, decoded samples…).
#[derive(Debug, Clone)]
pub struct JitterBuffer<P> {
    config: JitterConfig,
    seqs: SeqExtender,
    timestamps: TimestampExtender,
    queue: BTreeMap<u64, Entry<P>>,
    /// Index of the next slot to play; `None` until playout first starts.
    next: Option<u64>,
    playing: bool,
    /// Empty frames still to insert to grow the delay (after a late packet).
    stretch: u64,
    transits: VecDeque<i64>,
    target_ms: u32,
    /// Lowest buffer level (in frames) seen during the current adaptation period.
    period_min_level: u64,
    period_pops: u32,
    stats: JitterStats,
}

impl<P> JitterBuffer<P> {
    /// A buffer with `config` (values are sanitised: `frame_ms` and `capacity` at least 1,
    /// `max_delay_ms` at least `min_delay_ms`).
    pub fn new(config: JitterConfig) -> Self {
        let config = JitterConfig {
            clock_rate: config.clock_rate.max(1),
            frame_ms: config.frame_ms.max(1),
            max_delay_ms: config.max_delay_ms.max(config.min_delay_ms),
            capacity: config.capacity.max(1),
            ..config
        };
        JitterBuffer {
            config,
            seqs: SeqExtender::new(),
            timestamps: TimestampExtender::new(),
            queue: BTreeMap::new(),
            next: None,
            playing: false,
            stretch: 0,
            transits: VecDeque::with_capacity(TRANSIT_WINDOW),
            target_ms: config.min_delay_ms,
            period_min_level: u64::MAX,
            period_pops: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// The current target delay, from observed jitter.
    pub fn target_delay_ms(&self) -> u32 {
        self.target_ms
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Audio buffered ahead of playout: the span from the next slot to the newest packet,
    /// gaps included, in ms (0 when nothing waits).
    pub fn buffered_ms(&self) -> u64 {
        self.level() * u64::from(self.config.frame_ms)
    }

    /// Whether playout is running (as opposed to waiting to start or refilling).
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Offers a received packet.
    pub fn push(
        &mut self,
        seq: Seq,
        timestamp: Timestamp,
        payload: P,
        arrival_ms: u64,
    ) -> PushOutcome {
        let Some(index) = self.seqs.extend(seq) else {
            self.stats.rejected += 1;
            return PushOutcome::Rejected;
        };
        if let Some(ts) = self.timestamps.extend(timestamp) {
            self.observe_transit(ts, arrival_ms);
        }
        if self.next.is_some_and(|next| index < next) {
            self.stats.late += 1;
            let short = self.target_frames().saturating_sub(self.level());
            self.stretch = self.stretch.max(short);
            return PushOutcome::Late;
        }
        if self.queue.contains_key(&index) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        self.queue.insert(index, Entry { seq, timestamp, payload, arrival_ms });
        self.stats.queued += 1;
        self.enforce_window();
        PushOutcome::Queued
    }

    /// The frame to play now. Call once per `frame_ms`.
    pub fn pop(&mut self, now_ms: u64) -> Frame<P> {
        if !self.playing {
            let Some(first) = self.queue.first_key_value().map(|(_, e)| e.arrival_ms) else {
                return Frame::Empty;
            };
            if now_ms < first.saturating_add(u64::from(self.target_ms)) {
                return Frame::Empty;
            }
            self.playing = true;
            if self.next.is_none() {
                self.next = self.queue.first_key_value().map(|(k, _)| *k);
            }
        }
        let Some(mut next) = self.next else {
            return Frame::Empty; // unreachable: `next` is set whenever playing
        };
        if self.queue.is_empty() {
            self.playing = false;
            self.stretch = 0; // refilling restores the target delay anyway
            self.stats.underruns += 1;
            return Frame::Empty;
        }
        if self.stretch > 0 {
            self.stretch -= 1;
            self.stats.stretched += 1;
            return Frame::Empty;
        }

        if self.should_shrink() {
            if self.queue.remove(&next).is_some() {
                self.stats.shrunk += 1;
            }
            next += 1;
        }
        self.next = Some(next + 1);
        match self.queue.remove(&next) {
            Some(e) => Frame::Audio { seq: e.seq, timestamp: e.timestamp, payload: e.payload },
            None => {
                self.stats.concealed += 1;
                Frame::Concealed { seq: Seq(next as u16) }
            }
        }
    }

    /// Frames from the next slot to the newest packet.
    fn level(&self) -> u64 {
        match (self.next, self.queue.last_key_value()) {
            (Some(next), Some((&newest, _))) => (newest + 1).saturating_sub(next),
            (None, Some((&newest, _))) => {
                self.queue.first_key_value().map_or(0, |(&oldest, _)| newest + 1 - oldest)
            }
            _ => 0,
        }
    }

    /// Tracks the buffer level over an adaptation period; at its end, says whether the level
    /// stayed more than a frame above the target throughout.
    fn should_shrink(&mut self) -> bool {
        self.period_min_level = self.period_min_level.min(self.level());
        self.period_pops += 1;
        if self.period_pops < ADAPT_PERIOD {
            return false;
        }
        let shrink = self.period_min_level > self.target_frames() + 1;
        self.period_pops = 0;
        self.period_min_level = u64::MAX;
        shrink
    }

    /// The target delay in whole frames.
    fn target_frames(&self) -> u64 {
        u64::from(self.target_ms.div_ceil(self.config.frame_ms))
    }

    /// Keeps every buffered index within `capacity` of the newest.
    fn enforce_window(&mut self) {
        let Some((&newest, _)) = self.queue.last_key_value() else { return };
        let floor = (newest + 1).saturating_sub(self.config.capacity as u64);
        while let Some(entry) = self.queue.first_entry() {
            if *entry.key() >= floor {
                break;
            }
            entry.remove();
            self.stats.overflow += 1;
        }
        if let Some(next) = &mut self.next
            && *next < floor
        {
            *next = floor;
        }
    }

    fn observe_transit(&mut self, ts: u64, arrival_ms: u64) {
        let media_ms = ts.saturating_mul(1000) / u64::from(self.config.clock_rate);
        let transit = i64::try_from(arrival_ms).unwrap_or(i64::MAX)
            - i64::try_from(media_ms).unwrap_or(i64::MAX);
        if self.transits.len() == TRANSIT_WINDOW {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
        let (min, max) =
            self.transits.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        let spread = u32::try_from(max.saturating_sub(min)).unwrap_or(u32::MAX);
        self.target_ms = spread.clamp(self.config.min_delay_ms, self.config.max_delay_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    type Jb = JitterBuffer<u32>;

    fn new_jb() -> Jb {
        JitterBuffer::new(JitterConfig::default())
    }

    /// Pushes packet `n` of a stream starting at `seq0` (payload = n).
    fn push(jb: &mut Jb, seq0: u16, n: u32, arrival_ms: u64) -> PushOutcome {
        jb.push(Seq(seq0.wrapping_add(n as u16)), Timestamp(n * 160), n, arrival_ms)
    }

    /// Pops every 20 ms from `from_ms` for `count` frames, describing each frame.
    fn pops(jb: &mut Jb, from_ms: u64, count: u64) -> Vec<String> {
        (0..count)
            .map(|i| match jb.pop(from_ms + i * 20) {
                Frame::Audio { payload, .. } => payload.to_string(),
                Frame::Concealed { seq } => format!("C{}", seq.0),
                Frame::Empty => "-".into(),
            })
            .collect()
    }

    #[test]
    fn waits_for_the_target_delay_then_plays_in_order() {
        let mut jb = new_jb();
        assert_eq!(jb.pop(0), Frame::Empty);
        assert_eq!(push(&mut jb, 0, 0, 100), PushOutcome::Queued);
        assert_eq!(jb.pop(110), Frame::Empty); // held 10 of 20 ms
        assert_eq!(push(&mut jb, 0, 1, 120), PushOutcome::Queued);
        assert_eq!(jb.pop(120), Frame::Audio { seq: Seq(0), timestamp: Timestamp(0), payload: 0 });
        assert!(jb.is_playing());
        assert_eq!(pops(&mut jb, 140, 1), vec!["1"]);
    }

    #[test]
    fn reordering_is_restored() {
        let mut jb = new_jb();
        for (i, n) in [0, 2, 1, 3, 5, 4, 7, 6].into_iter().enumerate() {
            push(&mut jb, 1000, n, i as u64);
        }
        assert_eq!(pops(&mut jb, 1000, 8), vec!["0", "1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn missing_packets_are_concealed_exactly_at_their_slots() {
        let mut jb = new_jb();
        for n in (0..10).filter(|n| ![3, 4, 8].contains(n)) {
            push(&mut jb, 0, n, 0);
        }
        assert_eq!(
            pops(&mut jb, 1000, 10),
            vec!["0", "1", "2", "C3", "C4", "5", "6", "7", "C8", "9"]
        );
        assert_eq!(jb.stats().concealed, 3);
        // Now empty: an underrun, then a refill.
        assert_eq!(jb.pop(1200), Frame::Empty);
        assert_eq!(jb.stats().underruns, 1);
        assert!(!jb.is_playing());
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut jb = new_jb();
        assert_eq!(push(&mut jb, 0, 0, 0), PushOutcome::Queued);
        assert_eq!(push(&mut jb, 0, 1, 0), PushOutcome::Queued);
        assert_eq!(push(&mut jb, 0, 1, 5), PushOutcome::Duplicate);
        assert_eq!(pops(&mut jb, 1000, 2), vec!["0", "1"]);
        assert_eq!(jb.stats().duplicates, 1);
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let mut jb = new_jb();
        push(&mut jb, 0, 0, 0);
        push(&mut jb, 0, 2, 40);
        assert_eq!(pops(&mut jb, 40, 2), vec!["0", "C1"]);
        assert_eq!(push(&mut jb, 0, 1, 65), PushOutcome::Late);
        assert_eq!(push(&mut jb, 0, 0, 66), PushOutcome::Late); // already played
        assert_eq!(jb.stats().late, 2);
        // Packet 0 arriving 66 ms after its media time raises the target to 66 ms (4 frames)
        // while one frame is buffered: playout pauses 3 frames to build up delay.
        assert_eq!(jb.target_delay_ms(), 66);
        assert_eq!(pops(&mut jb, 80, 4), vec!["-", "-", "-", "2"]);
        assert_eq!(jb.stats().stretched, 3);
        assert_eq!(jb.stats().underruns, 0);
    }

    #[test]
    fn sequence_wrap_is_seamless() {
        let mut jb = new_jb();
        for n in 0..10 {
            push(&mut jb, 65530, n, u64::from(n) * 20);
        }
        let played = pops(&mut jb, 20, 10);
        assert_eq!(played, (0..10).map(|n| n.to_string()).collect::<Vec<_>>());
        let mut jb = new_jb();
        for n in [0, 1, 2, 3, 4, 6, 7] {
            push(&mut jb, 65533, n, 0);
        }
        // Seq 65533 + 5 = 2 (after the wrap) is missing.
        assert_eq!(pops(&mut jb, 1000, 8), vec!["0", "1", "2", "3", "4", "C2", "6", "7"]);
    }

    #[test]
    fn capacity_bounds_the_buffer_and_counts_drops() {
        let config = JitterConfig { capacity: 5, ..JitterConfig::default() };
        let mut jb: Jb = JitterBuffer::new(config);
        for n in 0..12 {
            push(&mut jb, 0, n, 0);
        }
        assert_eq!(jb.len(), 5);
        assert_eq!(jb.stats().overflow, 7);
        assert_eq!(pops(&mut jb, 1000, 5), vec!["7", "8", "9", "10", "11"]);
        // A packet far ahead moves the window rather than queueing 1000 concealments.
        push(&mut jb, 0, 12, 1100);
        push(&mut jb, 0, 1012, 1100);
        let played = pops(&mut jb, 1120, 6);
        assert_eq!(played, vec!["C1008", "C1009", "C1010", "C1011", "1012", "-"]);
        assert!(jb.len() <= 5);
        assert_eq!(jb.stats().overflow, 8);
    }

    #[test]
    fn rejected_sequence_jumps_are_counted() {
        let mut jb = new_jb();
        push(&mut jb, 0, 0, 0);
        assert_eq!(push(&mut jb, 0, 20_000, 20), PushOutcome::Rejected);
        assert_eq!(jb.stats().rejected, 1);
    }

    /// Drives a stream for `frames` frames starting at packet `n0`, arriving at
    /// `n·20 + delay(n)` ms, popping every 20 ms. Returns the frames played.
    fn run(
        jb: &mut Jb,
        n0: u32,
        frames: u32,
        clock_offset: u64,
        mut delay: impl FnMut(u32) -> u64,
    ) -> Vec<Frame<u32>> {
        let mut arrivals: Vec<(u64, u32)> =
            (n0..n0 + frames).map(|n| (u64::from(n) * 20 + delay(n), n)).collect();
        arrivals.sort();
        let mut out = Vec::new();
        let mut i = 0;
        for tick in 0..u64::from(frames) {
            let now = (u64::from(n0) + tick) * 20 + clock_offset;
            while let Some(&(at, n)) = arrivals.get(i) {
                if at > now {
                    break;
                }
                push(jb, 0, n, at);
                i += 1;
            }
            out.push(jb.pop(now));
        }
        out
    }

    #[test]
    fn delay_adapts_up_under_jitter_and_back_down() {
        let mut jb = new_jb();
        let mut rng = XorShift::new(42);
        // Calm network: target stays at the minimum and nothing is lost.
        let calm = run(&mut jb, 0, 250, 5, |_| 10);
        assert_eq!(jb.target_delay_ms(), 20);
        assert!(calm.iter().skip(2).all(|f| matches!(f, Frame::Audio { .. })));
        let calm_buffered = jb.buffered_ms();
        assert!(calm_buffered <= 40, "{calm_buffered}");

        // Jitter of 0..120 ms: the target rises, and after the first underruns the buffer
        // holds enough that late packets become rare.
        let stormy = run(&mut jb, 250, 1000, 5, |_| 10 + rng.below(120));
        assert!(jb.target_delay_ms() >= 100, "target {}", jb.target_delay_ms());
        let late_at_first = jb.stats().late + jb.stats().underruns;
        assert!(late_at_first > 0);
        let tail_bad =
            stormy.iter().skip(500).filter(|f| !matches!(f, Frame::Audio { .. })).count();
        assert!(tail_bad < 25, "{tail_bad} of 500 frames not audio once adapted");
        assert!(jb.buffered_ms() >= 60, "buffered {}", jb.buffered_ms());

        // Calm again: the target returns to the minimum and the buffer drains down to it.
        run(&mut jb, 1250, 1500, 5, |_| 10);
        assert_eq!(jb.target_delay_ms(), 20);
        assert!(jb.buffered_ms() <= 60, "buffered {}", jb.buffered_ms());
        assert!(jb.stats().shrunk > 0);
    }

    #[test]
    fn late_packets_grow_the_delay_even_without_an_underrun() {
        // Every 10th packet is 80 ms later than the rest; the others keep the buffer from
        // running dry, so only the late arrivals can tell the buffer its delay is too short.
        let mut jb = new_jb();
        let frames = run(&mut jb, 0, 500, 5, |n| if n % 10 == 5 { 90 } else { 10 });
        assert_eq!(jb.stats().underruns, 0);
        assert!(jb.stats().late >= 1 && jb.stats().stretched > 0, "{:?}", jb.stats());
        assert!(jb.target_delay_ms() >= 80);
        // Once grown, every packet makes it in time.
        assert!(frames.iter().skip(100).all(|f| matches!(f, Frame::Audio { .. })));
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn target_is_clamped_to_the_configured_range() {
        let mut jb = new_jb();
        run(&mut jb, 0, 200, 0, |n| if n % 10 == 0 { 1000 } else { 0 });
        assert_eq!(jb.target_delay_ms(), 200);
        let config = JitterConfig { min_delay_ms: 60, ..JitterConfig::default() };
        let mut jb: Jb = JitterBuffer::new(config);
        run(&mut jb, 0, 100, 0, |_| 0);
        assert_eq!(jb.target_delay_ms(), 60);
    }
}
