//! The socket shell (feature `net`): one tokio task per call leg owns its RTP/RTCP sockets,
//! its 20 ms clock and the pure parts — jitter buffer, G.711, DTMF receivers, recorder.
//!
//! The application talks to a leg through a [`Session`] handle: [`start`](Session::start) it
//! with what SDP negotiated, [`play`](Session::play) audio, [`record`](Session::record) the
//! caller, [`bridge`] two legs, and read [`MediaEvent`]s (digits, RTP timeout). Dropping the
//! handle ends the task, which finalizes a recording in progress, closes the sockets and then
//! returns the ports to the pool.
//!
//! Security: symmetric RTP with strict latching. Until a packet arrives, only the address SDP
//! named (any port on that IP, for NAT) is accepted; the first accepted packet latches the
//! leg to its exact source, and packets from anywhere else are dropped and counted — no RTP
//! bleed from a stranger who guesses the port.

use std::collections::{HashSet, VecDeque};
use std::io::BufWriter;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::amd::{AmdSpec, Detection, Detector};
use crate::codec::{self, Decoder, Encoder};
use crate::dtmf::{DtmfEventReceiver, DtmfEventSender, ToneDetector};
use crate::jitter::{Frame, JitterBuffer, JitterConfig};
use crate::rtcp::{NtpTimestamp, ReceiverStats, SenderInfo, SenderReport};
use crate::rtp::{MAX_DROPOUT, MAX_MISORDER, RtpHeader, RtpPacket, Seq, Ssrc, Timestamp};
use crate::sdp::{Codec, Negotiated};
use crate::wav::{WavError, WavWriter};

/// Samples per 20 ms at 8 kHz.
const FRAME: usize = 160;
const FRAME_MS: u64 = 20;

/// Media settings of a process.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Where RTP sockets bind.
    pub bind_ip: IpAddr,
    /// The address put in SDP.
    pub advertised_ip: IpAddr,
    /// RTP port range (even ports for RTP, the next odd one for RTCP).
    pub port_min: u16,
    pub port_max: u16,
    /// No RTP from the peer for this long ends the call ([`MediaEvent::RtpTimeout`]).
    pub rtp_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            advertised_ip: IpAddr::from([127, 0, 0, 1]),
            port_min: 10_000,
            port_max: 20_000,
            rtp_timeout: Duration::from_secs(60),
        }
    }
}

/// Even ports handed out round-robin (a just-released port is reused last, so late packets
/// of an old call rarely reach a new one).
#[derive(Debug)]
struct PortPool {
    min: u16,
    max: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl PortPool {
    fn new(min: u16, max: u16) -> PortPool {
        let min = min.max(1024) & !1;
        let max = max.max(min + 1);
        PortPool { min, max, next: min, in_use: HashSet::new() }
    }

    fn take(&mut self) -> Option<u16> {
        let slots = usize::from((self.max - self.min) / 2).max(1);
        for _ in 0..slots {
            let port = self.next;
            self.next = if self.next + 2 >= self.max { self.min } else { self.next + 2 };
            if self.in_use.insert(port) {
                return Some(port);
            }
        }
        None
    }

    fn give(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

/// Counters of one leg, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    /// From an address other than the latched/negotiated one.
    pub dropped_foreign: AtomicU64,
    /// Not RTP, or with a payload type we did not negotiate.
    pub dropped_malformed: AtomicU64,
    pub concealed: AtomicU64,
    pub late: AtomicU64,
    /// Received frames a [`tap`](Session::tap) had no room for (its reader fell behind):
    /// shed, not queued, so a slow listener never delays the leg.
    pub tap_shed: AtomicU64,
}

/// Something the application should know about a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A digit: RFC 4733 event, or an in-band tone when the peer has no telephone-event.
    Dtmf { digit: char, duration_ms: u32 },
    /// No RTP from the peer for `rtp_timeout`.
    RtpTimeout,
}

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordEnd {
    MaxDuration,
    Silence,
    FinishKey(char),
    /// Stopped by the application or the call ended (the file is finalized either way).
    Stopped,
}

/// A finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub path: PathBuf,
    pub duration_ms: u64,
    pub ended_by: RecordEnd,
}

/// What to record and when to stop.
#[derive(Debug, Clone)]
pub struct RecordSpec {
    pub path: PathBuf,
    pub max_duration: Duration,
    /// Stop after this much silence once speech was heard (zero: never).
    pub silence_timeout: Duration,
    pub finish_keys: String,
    /// Two channels: the peer on the left, the bridged far end on the right (a recorded
    /// `dial`). Mono otherwise.
    pub stereo: bool,
}

enum Command {
    Start(Negotiated),
    Play {
        pcm: Arc<[i16]>,
        done: oneshot::Sender<bool>,
    },
    StopPlay,
    /// Stop the prompt, replying with how many of its samples were sent (None: none playing).
    StopPlayAt(oneshot::Sender<Option<usize>>),
    /// Copy each received 20 ms frame, decoded, to this channel (None: stop).
    Tap(Option<mpsc::Sender<Vec<i16>>>),
    Record {
        spec: RecordSpec,
        done: oneshot::Sender<Result<Recorded, WavError>>,
    },
    StopRecord,
    /// Classify the peer (person or machine) from the audio received from now on.
    Detect {
        spec: AmdSpec,
        done: oneshot::Sender<Detection>,
    },
    SendDtmf {
        digits: String,
        done: oneshot::Sender<()>,
    },
    /// Relay packets received from now on to this other leg (None: stop). Weak, so two
    /// bridged legs never keep each other alive once their handles are dropped.
    Bridge(Option<(mpsc::WeakUnboundedSender<Command>, std::sync::Weak<Outlet>)>),
    /// Join a conference room (None: leave the one we are in).
    Conference(Option<(mpsc::UnboundedSender<RoomMsg>, u64)>),
    /// The room's mix for us (everyone but us), to play in our next frame.
    Mix(Vec<i16>),
    /// Audio the transcoding bridged leg decoded, for us to encode and send to our peer.
    FarPcm(Vec<i16>),
    /// A copy of a packet the bridged leg relayed to our peer, for a stereo recording.
    FarAudio {
        packet: Vec<u8>,
        codec: Codec,
        pt: u8,
    },
}

/// What another leg needs to send to this leg's peer directly (a bridge relays on the
/// receiving leg's task, without waking this one): the socket, where the peer is, and the
/// numbering relayed packets take.
#[derive(Debug)]
struct Outlet {
    socket: Arc<UdpSocket>,
    state: Mutex<OutletState>,
    /// This leg records the bridge in stereo: copies of relayed packets go to its task too.
    wants_copies: std::sync::atomic::AtomicBool,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct OutletState {
    /// The peer's address (latched, else negotiated) and what it negotiated.
    peer: Option<(SocketAddr, Negotiated)>,
    /// While bridged: our stream's numbering, which relayed packets continue.
    numbering: Option<Numbering>,
}

impl Outlet {
    fn update(&self, to: Option<SocketAddr>, negotiated: &Negotiated) {
        if let Ok(mut state) = self.state.lock() {
            state.peer = to.map(|to| (to, negotiated.clone()));
        }
    }
}

/// A bridged leg's outgoing stream. Relayed packets are renumbered onto it — our SSRC, our
/// next sequence number, timestamps offset onto our clock — so the peer sees one continuous
/// stream from our prompts to the far end's audio and back, as an SBC anchoring media does.
/// (Relayed untouched, the far end's packets arrive as a new SSRC whose sequence numbers may
/// be below ours: baresip 1.0 drops every one of them as late.)
#[derive(Debug)]
struct Numbering {
    ssrc: Ssrc,
    /// The next sequence number to send.
    seq: Seq,
    /// Our RTP clock: `ts` at `at`, `rate` units per second.
    ts: Timestamp,
    at: Instant,
    rate: u32,
    /// The far stream being relayed: its SSRC, and what to add to its sequence numbers and
    /// timestamps to make them ours.
    anchor: Option<(Ssrc, u16, u32)>,
    /// The newest timestamp sent (relayed or ours), which our own stream resumes after.
    last_ts: Option<Timestamp>,
    /// Relayed packets and payload octets, for our sender reports.
    packets: u32,
    octets: u32,
}

impl Numbering {
    fn new(ssrc: Ssrc, seq: Seq, ts: Timestamp, rate: u32) -> Numbering {
        Numbering {
            ssrc,
            seq,
            ts,
            at: Instant::now(),
            rate,
            anchor: None,
            last_ts: None,
            packets: 0,
            octets: 0,
        }
    }

    /// Our RTP clock now.
    fn clock(&self) -> Timestamp {
        let elapsed = self.at.elapsed().as_millis() as u64 * u64::from(self.rate) / 1000;
        self.ts.wrapping_add(elapsed as u32)
    }

    /// A packet of our own (sent while bridged, e.g. when the bridge transcodes): its sequence
    /// number, and our clock set to its timestamp.
    fn own(&mut self, ts: Timestamp) -> Seq {
        let seq = self.seq;
        self.seq = seq.next();
        (self.ts, self.at, self.last_ts) = (ts, Instant::now(), Some(ts));
        seq
    }

    /// Rewrites a relayed RTP packet onto our stream. The first packet of a far stream (a new
    /// SSRC there, or a jump in its sequence numbers beyond what loss or reordering explains)
    /// continues from our next sequence number and our clock now, with the marker bit set (a
    /// new talkspurt: receivers resynchronise their playout on it).
    /// `far` is the packet's header as received (parsed once, on the receive path).
    fn renumber(&mut self, packet: &mut [u8], far: &RtpHeader, payload_len: usize) {
        let (seq, ts, ssrc) = (far.seq.0, far.timestamp.0, far.ssrc);
        let anchored = match self.anchor {
            Some((far, seq_offset, ts_offset)) if far == ssrc => {
                let ahead = i32::from(Seq(seq.wrapping_add(seq_offset)).diff(self.seq));
                (-i32::from(MAX_MISORDER)..=i32::from(MAX_DROPOUT))
                    .contains(&ahead)
                    .then_some((seq_offset, ts_offset))
            }
            _ => None,
        };
        let (seq_offset, ts_offset) = match anchored {
            Some(offsets) => offsets,
            None => {
                let offsets = (self.seq.0.wrapping_sub(seq), self.clock().0.wrapping_sub(ts));
                self.anchor = Some((ssrc, offsets.0, offsets.1));
                packet[1] |= 0x80;
                offsets
            }
        };
        let (seq, ts) = (Seq(seq.wrapping_add(seq_offset)), Timestamp(ts.wrapping_add(ts_offset)));
        if seq.diff(self.seq) >= 0 {
            // The newest so far (a reordered older packet keeps its place behind it).
            self.seq = seq.next();
            (self.ts, self.at, self.last_ts) = (ts, Instant::now(), Some(ts));
        }
        packet[2..4].copy_from_slice(&seq.0.to_be_bytes());
        packet[4..8].copy_from_slice(&ts.0.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
    }
}

/// Rewrites a packet from a leg that negotiated `from` for a peer that negotiated `to`:
/// payload type numbers, and µ-law↔A-law payloads. `None` if it cannot go there (including
/// when the codecs differ beyond G.711: such bridges transcode through the legs' tasks).
fn translate(mut packet: Vec<u8>, from: &Negotiated, to: &Negotiated) -> Option<Vec<u8>> {
    if !to.direction.sends() || packet.len() < 12 {
        return None;
    }
    let their_pt = packet[1] & 0x7f;
    let marker = packet[1] & 0x80;
    if Some(their_pt) == from.telephone_event {
        packet[1] = marker | to.telephone_event?;
        return Some(packet);
    }
    if their_pt != from.pt {
        return None;
    }
    if from.codec != to.codec {
        let (Some(a), Some(b)) = (codec::g711_law(from.codec), codec::g711_law(to.codec)) else {
            return None;
        };
        let parsed = RtpPacket::parse(&packet).ok()?;
        let header_len = packet.len() - parsed.payload.len();
        let mut payload = Vec::with_capacity(parsed.payload.len());
        a.transcode(b, parsed.payload, &mut payload);
        packet.truncate(header_len);
        packet.extend_from_slice(&payload);
    }
    packet[1] = marker | to.pt;
    Some(packet)
}

/// Opens media legs.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    config: Arc<MediaConfig>,
    pool: Arc<Mutex<PortPool>>,
}

impl MediaEngine {
    pub fn new(config: MediaConfig) -> MediaEngine {
        let pool = PortPool::new(config.port_min, config.port_max);
        MediaEngine { config: Arc::new(config), pool: Arc::new(Mutex::new(pool)) }
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Ports in use (each leg holds an RTP/RTCP pair).
    pub fn legs_in_use(&self) -> usize {
        self.pool.lock().map_or(0, |p| p.in_use.len())
    }

    /// A new leg on a fresh port pair, idle until [`Session::start`].
    pub async fn open(&self) -> std::io::Result<Session> {
        let mut last_error = None;
        for _ in 0..64 {
            let Some(port) = self.pool.lock().ok().and_then(|mut p| p.take()) else { break };
            let guard = PortGuard { port, pool: self.pool.clone() };
            let bound = async {
                let rtp = UdpSocket::bind((self.config.bind_ip, port)).await?;
                let rtcp = UdpSocket::bind((self.config.bind_ip, port + 1)).await?;
                Ok::<_, std::io::Error>((rtp, rtcp))
            };
            let (rtp, rtcp) = match bound.await {
                Ok(pair) => pair,
                // Taken by another process: try the next pair. Running out of file
                // descriptors is not a port problem: say so.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    last_error = Some(std::io::Error::new(e.kind(), format!("port {port}: {e}")));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            let (ev_tx, ev_rx) = mpsc::unbounded_channel();
            let stats = Arc::new(Stats::default());
            let rtp = Arc::new(rtp);
            let outlet = Arc::new(Outlet {
                socket: rtp.clone(),
                state: Mutex::new(OutletState::default()),
                wants_copies: std::sync::atomic::AtomicBool::new(false),
                stats: stats.clone(),
            });
            let leg = Leg::new(self.config.clone(), stats.clone(), ev_tx, outlet.clone());
            // The task owns the port pair: it is free again only once its sockets are closed.
            tokio::spawn(async move {
                leg.run(rtp, rtcp, cmd_rx).await;
                drop(guard);
            });
            return Ok(Session {
                local: SocketAddr::new(self.config.advertised_ip, port),
                commands: cmd_tx,
                events: ev_rx,
                stats,
                outlet,
            });
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "no free RTP port pair in {}-{} ({})",
                self.config.port_min,
                self.config.port_max,
                last_error.map_or_else(|| "all in use".into(), |e| e.to_string())
            ),
        ))
    }
}

/// Returns the port pair to the pool when the leg's task ends (after its sockets closed).
#[derive(Debug)]
struct PortGuard {
    port: u16,
    pool: Arc<Mutex<PortPool>>,
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.give(self.port);
        }
    }
}

/// The application's handle on one leg.
#[derive(Debug)]
pub struct Session {
    local: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    stats: Arc<Stats>,
    outlet: Arc<Outlet>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Start(_) => "Start",
            Command::Play { .. } => "Play",
            Command::StopPlay => "StopPlay",
            Command::StopPlayAt(_) => "StopPlayAt",
            Command::Tap(_) => "Tap",
            Command::Record { .. } => "Record",
            Command::StopRecord => "StopRecord",
            Command::Detect { .. } => "Detect",
            Command::SendDtmf { .. } => "SendDtmf",
            Command::Bridge(_) => "Bridge",
            Command::Conference(_) => "Conference",
            Command::Mix(_) => "Mix",
            Command::FarAudio { .. } => "FarAudio",
            Command::FarPcm(_) => "FarPcm",
        })
    }
}

impl Session {
    /// Where we receive RTP (for our SDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Starts (or, after a re-INVITE, updates) the stream with what SDP agreed.
    pub fn start(&self, negotiated: Negotiated) {
        let _ = self.commands.send(Command::Start(negotiated));
    }

    /// Plays 8 kHz samples; resolves `true` when played to the end, `false` when stopped
    /// ([`stop_play`](Self::stop_play), another play, or the leg ended).
    pub fn play(&self, pcm: Arc<[i16]>) -> oneshot::Receiver<bool> {
        let (done, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Play { pcm, done });
        rx
    }

    pub fn stop_play(&self) {
        let _ = self.commands.send(Command::StopPlay);
    }

    /// Stops the prompt playing and says how many of its samples had been sent to the peer
    /// (`None`: nothing was playing, it had finished). What the caller heard is that prefix.
    pub fn stop_play_at(&self) -> oneshot::Receiver<Option<usize>> {
        let (done, rx) = oneshot::channel();
        let _ = self.commands.send(Command::StopPlayAt(done));
        rx
    }

    /// From now on, a copy of every 20 ms frame received (decoded to 8 kHz; silence when
    /// nothing arrived) goes to `frames`; `None` stops it. A full channel sheds the frame and
    /// counts it in [`Stats::tap_shed`].
    pub fn tap(&self, frames: Option<mpsc::Sender<Vec<i16>>>) {
        let _ = self.commands.send(Command::Tap(frames));
    }

    /// Records what the peer says to a mono 8 kHz WAV file until a stop condition; the file is
    /// finalized (valid WAV) whatever ends it, the leg's end included.
    pub fn record(&self, spec: RecordSpec) -> oneshot::Receiver<Result<Recorded, WavError>> {
        let (done, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Record { spec, done });
        rx
    }

    pub fn stop_record(&self) {
        let _ = self.commands.send(Command::StopRecord);
    }

    /// Answering-machine detection on the audio received from now on (replacing one in
    /// progress). The receiver errs if the leg ends first.
    pub fn detect(&self, spec: AmdSpec) -> oneshot::Receiver<Detection> {
        let (done, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Detect { spec, done });
        rx
    }

    /// Sends digits as RFC 4733 events (in-band tones are not generated).
    pub fn send_dtmf(&self, digits: &str) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        let _ = self.commands.send(Command::SendDtmf { digits: digits.to_owned(), done });
        rx
    }

    /// The next event; `None` once the leg's task has ended.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }

    /// An event if one is waiting.
    pub fn try_event(&mut self) -> Option<MediaEvent> {
        self.events.try_recv().ok()
    }
}

/// Connects two legs: what each peer sends is relayed to the other — payloads untouched when
/// both legs use the same codec, transcoded between µ-law and A-law, decoded and re-encoded
/// between Opus and G.711 — renumbered onto the receiving leg's own stream. While bridged, a
/// leg sends nothing of its own (unless it transcodes).
pub fn bridge(a: &Session, b: &Session) {
    let _ =
        a.commands.send(Command::Bridge(Some((b.commands.downgrade(), Arc::downgrade(&b.outlet)))));
    let _ =
        b.commands.send(Command::Bridge(Some((a.commands.downgrade(), Arc::downgrade(&a.outlet)))));
}

/// A handle on a leg owned by another call (a queued caller's), for bridging across calls.
/// Weak: it does not keep the leg alive.
#[derive(Debug, Clone)]
pub struct LegLink(mpsc::WeakUnboundedSender<Command>, std::sync::Weak<Outlet>);

impl Session {
    /// A link to this leg for [`bridge_links`].
    pub fn link(&self) -> LegLink {
        LegLink(self.commands.downgrade(), Arc::downgrade(&self.outlet))
    }
}

impl LegLink {
    /// [`Session::play`] on a leg known by link; `None` if the leg is gone.
    pub fn play(&self, pcm: Arc<[i16]>) -> Option<oneshot::Receiver<bool>> {
        let commands = self.0.upgrade()?;
        let (done, rx) = oneshot::channel();
        commands.send(Command::Play { pcm, done }).ok()?;
        Some(rx)
    }
}

/// [`bridge`] for legs known by link; `false` if either leg is gone.
pub fn bridge_links(a: &LegLink, b: &LegLink) -> bool {
    let (Some(x), Some(y)) = (a.0.upgrade(), b.0.upgrade()) else { return false };
    x.send(Command::Bridge(Some((b.0.clone(), b.1.clone())))).is_ok()
        && y.send(Command::Bridge(Some((a.0.clone(), a.1.clone())))).is_ok()
}

/// Ends the bridges of the linked legs.
pub fn unbridge_links(a: &LegLink, b: &LegLink) {
    for link in [a, b] {
        if let Some(leg) = link.0.upgrade() {
            let _ = leg.send(Command::Bridge(None));
        }
    }
}

/// Ends a bridge made by [`bridge`].
pub fn unbridge(a: &Session, b: &Session) {
    let _ = a.commands.send(Command::Bridge(None));
    let _ = b.commands.send(Command::Bridge(None));
}

/// Messages to a conference room's task.
#[derive(Debug)]
enum RoomMsg {
    Join { id: u64, leg: mpsc::WeakUnboundedSender<Command>, done: oneshot::Sender<RoomEnd> },
    Leave { id: u64 },
    Frame { id: u64, samples: Vec<i16> },
}

/// Why a participant's conference ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomEnd {
    /// Everyone else left (after someone else had been there).
    Alone,
    /// The room was closed.
    Closed,
}

/// A conference room: a task that mixes its participants every 20 ms, each hearing everyone
/// but themselves (mix-minus), with a short tone when someone joins (high) or leaves (low).
/// Cheap to clone; the room ends when its last handle and participant are gone.
#[derive(Debug, Clone)]
pub struct Room {
    tx: mpsc::UnboundedSender<RoomMsg>,
}

impl Default for Room {
    fn default() -> Self {
        Room::new()
    }
}

impl Room {
    pub fn new() -> Room {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(room_task(rx));
        Room { tx }
    }

    /// Puts `leg` in the room; resolves when the conference ends for it (or with an error
    /// once the leg leaves the room — it hung up or was moved).
    pub fn join(&self, leg: &Session) -> oneshot::Receiver<RoomEnd> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(RoomMsg::Join { id, leg: leg.commands.downgrade(), done });
        let _ = leg.commands.send(Command::Conference(Some((self.tx.clone(), id))));
        rx
    }

    /// Takes `leg` out of the room.
    pub fn leave(leg: &Session) {
        let _ = leg.commands.send(Command::Conference(None));
    }

    /// A handle that does not keep the room alive (for a registry of rooms by name).
    pub fn downgrade(&self) -> WeakRoom {
        WeakRoom(self.tx.downgrade())
    }
}

/// A room handle that does not keep it alive; see [`Room::downgrade`].
#[derive(Debug, Clone)]
pub struct WeakRoom(mpsc::WeakUnboundedSender<RoomMsg>);

impl WeakRoom {
    /// The room, if it still has handles or participants.
    pub fn upgrade(&self) -> Option<Room> {
        self.0.upgrade().map(|tx| Room { tx })
    }
}

struct Member {
    leg: mpsc::WeakUnboundedSender<Command>,
    frame: Option<Vec<i16>>,
    done: Option<oneshot::Sender<RoomEnd>>,
}

/// A tone of `hz` for 200 ms at -18 dBFS.
fn room_tone(hz: f64) -> Vec<i16> {
    (0..1600)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * hz / 8000.0).sin() * 4000.0) as i16)
        .collect()
}

async fn room_task(mut rx: mpsc::UnboundedReceiver<RoomMsg>) {
    let mut members: std::collections::BTreeMap<u64, Member> = std::collections::BTreeMap::new();
    let mut mixer = crate::mixer::Mixer::new();
    let mut tick = tokio::time::interval(Duration::from_millis(FRAME_MS));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tone: Vec<i16> = Vec::new();
    let mut peak = 0usize;
    let silence = vec![0i16; FRAME];
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                None => break,
                Some(RoomMsg::Join { id, leg, done }) => {
                    members.insert(id, Member { leg, frame: None, done: Some(done) });
                    peak = peak.max(members.len());
                    if members.len() > 1 {
                        tone = room_tone(880.0);
                    }
                }
                Some(RoomMsg::Leave { id }) => {
                    if members.remove(&id).is_some() {
                        tone = room_tone(440.0);
                    }
                    // The last one left after a conversation: the conference is over for them.
                    if members.len() == 1 && peak > 1
                        && let Some(last) = members.values_mut().next()
                        && let Some(done) = last.done.take()
                    {
                        let _ = done.send(RoomEnd::Alone);
                    }
                }
                Some(RoomMsg::Frame { id, samples }) => {
                    if let Some(m) = members.get_mut(&id) {
                        m.frame = Some(samples);
                    }
                }
            },
            _ = tick.tick() => {
                if members.is_empty() {
                    continue;
                }
                let inputs: Vec<Vec<i16>> =
                    members.values_mut().map(|m| m.frame.take().unwrap_or_else(|| silence.clone())).collect();
                let refs: Vec<&[i16]> = inputs.iter().map(Vec::as_slice).collect();
                let mut mixes = mixer.mix_minus(&refs);
                if !tone.is_empty() {
                    let n = tone.len().min(FRAME);
                    let chunk: Vec<i16> = tone.drain(..n).collect();
                    for mix in &mut mixes {
                        for (s, t) in mix.iter_mut().zip(&chunk) {
                            *s = s.saturating_add(*t);
                        }
                    }
                }
                let mut mixes = mixes.into_iter();
                members.retain(|_, m| {
                    let mix = mixes.next().unwrap_or_default();
                    match m.leg.upgrade() {
                        Some(leg) => {
                            let _ = leg.send(Command::Mix(mix));
                            true
                        }
                        None => false,
                    }
                });
            }
        }
    }
    for m in members.into_values() {
        if let Some(done) = m.done {
            let _ = done.send(RoomEnd::Closed);
        }
    }
}

/// A recording in progress. Silence is held back until speech follows it, so a recording
/// starts shortly before the first word and ends at the last (leading and trailing silence
/// trimmed; pauses inside the message kept), and one with no speech at all is empty.
struct Recording {
    writer: WavWriter<BufWriter<std::fs::File>>,
    spec: RecordSpec,
    path: PathBuf,
    /// Samples written to the file.
    samples: u64,
    /// Samples seen since the recording started (for the maximum duration).
    elapsed: u64,
    /// Silent samples not written yet.
    held: Vec<i16>,
    done: oneshot::Sender<Result<Recorded, WavError>>,
}

/// Mean absolute amplitude above which a frame counts as speech (about -40 dBFS).
const SPEECH_LEVEL: u64 = 330;
/// Silence kept before the first speech of a recording (100 ms).
const PRE_ROLL: usize = 800;

impl Recording {
    /// Appends a frame; `Some(end)` when a stop condition is met.
    fn push(&mut self, left: &[i16], right: Option<&[i16]>) -> Option<RecordEnd> {
        let level = |x: &[i16]| {
            x.iter().map(|s| u64::from(s.unsigned_abs())).sum::<u64>() / x.len().max(1) as u64
        };
        let loudest = level(left).max(right.map_or(0, level));
        // Samples as written: interleaved left/right for a stereo file.
        let frame: Vec<i16> = match right {
            Some(right) => left
                .iter()
                .zip(right.iter().chain(std::iter::repeat(&0)))
                .flat_map(|(l, r)| [*l, *r])
                .collect(),
            None => left.to_vec(),
        };
        let channels = if right.is_some() { 2 } else { 1 };
        self.elapsed += left.len() as u64;
        let written = if loudest >= SPEECH_LEVEL {
            let mut held = std::mem::take(&mut self.held);
            if self.samples == 0 {
                // Leading silence is trimmed too, keeping a short pre-roll so a soft start
                // under the speech threshold is not clipped.
                held.drain(..held.len().saturating_sub(PRE_ROLL * channels));
            }
            self.writer
                .write_interleaved(&held)
                .and_then(|()| self.writer.write_interleaved(&frame))
                .map(|()| (held.len() + frame.len()) / channels)
        } else {
            self.held.extend_from_slice(&frame);
            Ok(0)
        };
        match written {
            Ok(n) => self.samples += n as u64,
            Err(e) => {
                tracing::warn!("recording {}: {e}", self.path.display());
                return Some(RecordEnd::Stopped);
            }
        }
        let ms = |samples: u64| samples / 8;
        if ms(self.elapsed) >= self.spec.max_duration.as_millis() as u64 {
            return Some(RecordEnd::MaxDuration);
        }
        let silence = self.spec.silence_timeout.as_millis() as u64;
        let held_frames = self.held.len() as u64 / if self.spec.stereo { 2 } else { 1 };
        if silence > 0 && ms(held_frames) >= silence {
            return Some(RecordEnd::Silence);
        }
        None
    }

    fn finish(self, ended_by: RecordEnd) {
        let duration_ms = self.samples / 8;
        let result =
            self.writer.finalize().map(|_| Recorded { path: self.path, duration_ms, ended_by });
        let _ = self.done.send(result);
    }
}

/// The state of one leg, owned by its task.
struct Leg {
    config: Arc<MediaConfig>,
    stats: Arc<Stats>,
    events: mpsc::UnboundedSender<MediaEvent>,
    negotiated: Option<Negotiated>,
    /// The negotiated address (port may change once, to the latched source).
    expected: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    ssrc: Ssrc,
    seq: Seq,
    timestamp: Timestamp,
    jitter: JitterBuffer<Vec<u8>>,
    /// The negotiated codec's state (None until started, or if it could not be set up).
    decoder: Option<Decoder>,
    encoder: Option<Encoder>,
    tones: ToneDetector,
    events_in: DtmfEventReceiver,
    playing: Option<(Arc<[i16]>, usize, oneshot::Sender<bool>)>,
    dtmf_out: VecDeque<(Vec<u8>, bool, u64)>,
    dtmf_done: Option<oneshot::Sender<()>>,
    recording: Option<Recording>,
    detecting: Option<(Detector, oneshot::Sender<Detection>)>,
    tap: Option<mpsc::Sender<Vec<i16>>>,
    bridge: Option<(mpsc::WeakUnboundedSender<Command>, std::sync::Weak<Outlet>)>,
    /// Ours, shared with the leg we are bridged to.
    outlet: Arc<Outlet>,
    /// The room we are in and our id there.
    room: Option<(mpsc::UnboundedSender<RoomMsg>, u64)>,
    /// The latest mix the room sent us.
    mix: Option<Vec<i16>>,
    /// The bridged far end's audio, decoded, for the right channel of a stereo recording.
    far: VecDeque<i16>,
    /// Its decoder, made when the first copy arrives.
    far_decoder: Option<(Codec, Decoder)>,
    /// A transcoding bridge's audio from the far end, decoded by its leg, for us to send.
    far_pcm: VecDeque<i16>,
    /// Bridged to a leg whose codec our packets cannot be relayed to (Opus to G.711): each leg
    /// decodes what its peer sends and hands the audio across to be encoded for the other.
    /// Set on bridging and on every packet we relay (where the other leg's codec is read
    /// anyway), so the per-packet loop never locks for it.
    transcode: bool,
    last_rx: Instant,
    /// Since when the 20 ms clock has been paused (relaying only).
    relay_since: Option<Instant>,
    timed_out: bool,
    started: Instant,
    last_frame: Vec<i16>,
    /// RFC 3550 reception statistics of the peer's stream, for our reports.
    rx_stats: ReceiverStats,
    peer_ssrc: Option<Ssrc>,
    sent_packets: u32,
    sent_octets: u32,
    ticks: u64,
    /// Seconds spent only relaying (its RTCP reports are sent from the slow clock).
    slow_ticks: u64,
    /// Back from a bridge: our stream resumes after this timestamp, and marks the resumption.
    resume_after: Option<Timestamp>,
    marker: bool,
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x0056_544d_4544_4941);
    h.finish() as u32
}

impl Leg {
    fn new(
        config: Arc<MediaConfig>,
        stats: Arc<Stats>,
        events: mpsc::UnboundedSender<MediaEvent>,
        outlet: Arc<Outlet>,
    ) -> Leg {
        let now = Instant::now();
        Leg {
            config,
            stats,
            events,
            negotiated: None,
            expected: None,
            latched: None,
            ssrc: Ssrc(random_u32()),
            seq: Seq(random_u32() as u16),
            timestamp: Timestamp(random_u32()),
            jitter: JitterBuffer::new(JitterConfig::default()),
            decoder: None,
            encoder: None,
            tones: ToneDetector::new(),
            events_in: DtmfEventReceiver::new(),
            playing: None,
            dtmf_out: VecDeque::new(),
            dtmf_done: None,
            recording: None,
            detecting: None,
            tap: None,
            bridge: None,
            outlet,
            room: None,
            mix: None,
            far: VecDeque::new(),
            far_decoder: None,
            far_pcm: VecDeque::new(),
            transcode: false,
            last_rx: now,
            relay_since: None,
            timed_out: false,
            started: now,
            last_frame: vec![0; FRAME],
            rx_stats: ReceiverStats::new(),
            peer_ssrc: None,
            sent_packets: 0,
            sent_octets: 0,
            ticks: 0,
            slow_ticks: 0,
            resume_after: None,
            marker: false,
        }
    }

    async fn run(
        mut self,
        rtp: Arc<UdpSocket>,
        rtcp: UdpSocket,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(FRAME_MS));
        // Catch up after a stall: the peer's clock keeps running, so must ours.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 1500];
        let mut slow = tokio::time::interval(Duration::from_secs(1));
        slow.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.relay_only() {
                self.relay_since.get_or_insert_with(Instant::now);
            }
            tokio::select! {
                // Commands first (a leg is started before its packets count), then the clock
                // (playout timing), then packets.
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                // A leg that only relays needs no 20 ms clock: its packets move as they
                // arrive. A slow check keeps the RTP timeout; the clock resumes on unbridge.
                _ = tick.tick(), if !self.relay_only() => {
                    self.timestamp = self.clock_now();
                    self.resume_after = None;
                    if self.relay_since.take().is_some() {
                        // Back from relaying: the 20 ms clock restarts from now.
                        tick.reset();
                    }
                    self.tick(&rtp).await;
                    self.ticks += 1;
                    // RTCP: a first report after 1 s, then every 5 s (RFC 3550 §6.2).
                    if self.ticks == 50 || (self.ticks > 50 && self.ticks.is_multiple_of(250)) {
                        self.report(&rtcp).await;
                    }
                }
                _ = slow.tick(), if self.relay_only() => {
                    self.check_timeout();
                    self.slow_ticks += 1;
                    if self.slow_ticks.is_multiple_of(5) {
                        self.report(&rtcp).await;
                    }
                }
                received = rtp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received {
                        self.receive(&buf[..n], from);
                    }
                }
                // RTCP from the peer: read and dropped. Each leg reports on its own hop (a
                // bridge renumbers what it relays, so the far end's reports would describe a
                // stream our peer never saw).
                _ = rtcp.recv_from(&mut rtcp_buf) => {}
            }
        }
        if let Some((_, _, done)) = self.playing.take() {
            let _ = done.send(false);
        }
        if let Some(recording) = self.recording.take() {
            recording.finish(RecordEnd::Stopped);
        }
        if let Some((room, id)) = self.room.take() {
            let _ = room.send(RoomMsg::Leave { id });
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether a packet from `from` belongs to this leg (strict latching).
    fn accept_source(&mut self, from: SocketAddr) -> bool {
        match (self.latched, self.expected) {
            (Some(latched), _) => latched == from,
            (None, Some(expected)) if expected.ip() == from.ip() => {
                self.latched = Some(from);
                if let Some(n) = &self.negotiated {
                    self.outlet.update(Some(from), n);
                }
                true
            }
            // Started without an address (peer on hold): nothing is accepted.
            _ => false,
        }
    }

    fn receive(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(n) = self.negotiated.clone() else {
            self.stats.dropped_foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !self.accept_source(from) {
            self.stats.dropped_foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(packet) = RtpPacket::parse(bytes) else {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
        self.last_rx = Instant::now();
        self.timed_out = false;
        let pt = packet.header.payload_type;
        self.peer_ssrc = Some(packet.header.ssrc);
        let arrival = (self.now_ms() * u64::from(n.codec.rate()) / 1000) as u32;
        self.rx_stats.record(packet.header.seq, packet.header.timestamp, arrival);
        if let Some((peer, outlet)) = &self.bridge
            && let Some(outlet) = outlet.upgrade()
        {
            // Straight out of the other leg's socket to its peer, from this task, renumbered
            // onto that leg's stream (nothing goes until that leg has handed its numbering
            // over: at most a packet at the start of the bridge).
            let mut relayed = None;
            if let Ok(mut state) = outlet.state.lock()
                && let OutletState { peer: Some((to, theirs)), numbering } = &mut *state
            {
                self.transcode = !codec::relayable(n.codec, theirs.codec);
                // A transcoding bridge relays nothing (that leg sends its own numbered
                // frames; digits are sent anew by it, below).
                if !self.transcode
                    && let Some(numbering) = numbering
                    && let Some(mut relay) = translate(bytes.to_vec(), &n, theirs)
                {
                    numbering.renumber(&mut relay, &packet.header, packet.payload.len());
                    relayed = Some((relay, *to));
                }
            }
            if let Some((packet, to)) = relayed
                && outlet.socket.try_send_to(&packet, to).is_ok()
            {
                outlet.stats.packets_out.fetch_add(1, Ordering::Relaxed);
            }
            if outlet.wants_copies.load(Ordering::Relaxed)
                && !self.transcode
                && let Some(peer) = peer.upgrade()
            {
                let copy = Command::FarAudio { packet: bytes.to_vec(), codec: n.codec, pt: n.pt };
                let _ = peer.send(copy);
            }
        }
        if Some(pt) == n.telephone_event {
            if self.events_in.handle_packet(packet.header.timestamp, packet.payload).is_err() {
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            }
            while let Some(d) = self.events_in.poll_digit() {
                if self.transcode
                    && let Some(peer) = self.bridge.as_ref().and_then(|(peer, _)| peer.upgrade())
                {
                    let done = oneshot::channel().0;
                    let _ = peer.send(Command::SendDtmf { digits: d.digit.to_string(), done });
                }
                self.digit(d.digit, d.duration_ms(8000));
            }
            return;
        }
        if pt != n.pt {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.decoding() {
            return;
        }
        let now = self.now_ms();
        let seq = packet.header.seq;
        let ts = packet.header.timestamp;
        if self.jitter.push(seq, ts, packet.payload.to_vec(), now)
            == crate::jitter::PushOutcome::Late
        {
            self.stats.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bridged with nothing else to do: no recording, room, prompt or digits to send.
    fn relay_only(&self) -> bool {
        self.bridge.is_some() && !self.decoding() && self.dtmf_out.is_empty()
    }

    /// Whether the bridge must transcode, from the other leg's current negotiation (false
    /// when not bridged or either side has not negotiated yet).
    fn needs_transcoding(&self) -> bool {
        let Some((_, outlet)) = &self.bridge else { return false };
        let Some(ours) = self.negotiated.as_ref().map(|n| n.codec) else { return false };
        outlet.upgrade().is_some_and(|o| {
            o.state
                .lock()
                .ok()
                .and_then(|s| {
                    s.peer.as_ref().map(|(_, theirs)| !codec::relayable(ours, theirs.codec))
                })
                .unwrap_or(false)
        })
    }

    /// Appends the far end's decoded audio to `queue`, keeping at most `max` samples (the
    /// two legs' clocks drift; the oldest audio goes).
    fn queue_far(queue: &mut VecDeque<i16>, samples: impl IntoIterator<Item = i16>, max: usize) {
        queue.extend(samples);
        let excess = queue.len().saturating_sub(max);
        queue.drain(..excess);
    }

    /// RTP timestamp units per 20 ms frame (160 for G.711, 960 for Opus).
    fn ts_step(&self) -> u32 {
        self.negotiated.as_ref().map_or(FRAME as u32, |n| n.codec.rate() / 50)
    }

    /// Ends the call's media when the peer has been silent for the RTP timeout.
    fn check_timeout(&mut self) {
        let expecting = self.negotiated.as_ref().is_some_and(|n| n.remote.is_some());
        if !self.timed_out && expecting && self.last_rx.elapsed() >= self.config.rtp_timeout {
            self.timed_out = true;
            let _ = self.events.send(MediaEvent::RtpTimeout);
        }
    }

    /// Our RTP clock now: it keeps running while the 20 ms clock is paused for relaying, and
    /// after a bridge it never falls behind what was relayed (a re-bridge before our clock
    /// ticks included).
    fn clock_now(&self) -> Timestamp {
        let mut ts = self.timestamp;
        if let Some(since) = self.relay_since {
            let frames = since.elapsed().as_millis() as u64 / FRAME_MS;
            ts = ts.wrapping_add((frames * u64::from(self.ts_step())) as u32);
        }
        if let Some(after) = self.resume_after
            && !ts.is_after(after)
        {
            ts = after.wrapping_add(self.ts_step());
        }
        ts
    }

    /// Bridged: hands our stream's numbering to the outlet, where relayed packets continue
    /// it. Unbridged: takes it back, so our own packets follow the relayed ones.
    fn hand_over_numbering(&mut self) {
        let rate = self.negotiated.as_ref().map_or(8000, |n| n.codec.rate());
        let Ok(mut state) = self.outlet.state.lock() else { return };
        match (self.bridge.is_some(), state.numbering.take()) {
            // Bridged to another leg: its stream is anchored anew on its first packet.
            (true, Some(numbering)) => state.numbering = Some(numbering),
            (true, None) => {
                state.numbering = Some(Numbering::new(self.ssrc, self.seq, self.clock_now(), rate));
            }
            (false, Some(numbering)) => {
                self.seq = numbering.seq;
                self.resume_after = numbering.last_ts;
                self.marker = true;
                self.sent_packets = self.sent_packets.wrapping_add(numbering.packets);
                self.sent_octets = self.sent_octets.wrapping_add(numbering.octets);
            }
            (false, None) => {}
        }
    }

    /// The sequence number for a packet of ours with timestamp `ts` (while bridged, from the
    /// numbering relayed packets share).
    fn next_seq(&mut self, ts: Timestamp) -> Seq {
        if self.bridge.is_some()
            && let Ok(mut state) = self.outlet.state.lock()
            && let Some(numbering) = state.numbering.as_mut()
        {
            return numbering.own(ts);
        }
        let seq = self.seq;
        self.seq = seq.next();
        seq
    }

    /// Whether the peer's audio is needed here: not while a bridge just relays it.
    fn decoding(&self) -> bool {
        self.bridge.is_none() || self.recording.is_some() || self.room.is_some() || self.transcode
    }

    fn digit(&mut self, digit: char, duration_ms: u32) {
        if let Some(recording) = &self.recording
            && recording.spec.finish_keys.contains(digit)
        {
            if let Some(r) = self.recording.take() {
                r.finish(RecordEnd::FinishKey(digit));
            }
            return;
        }
        let _ = self.events.send(MediaEvent::Dtmf { digit, duration_ms });
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Start(n) => {
                if self.expected.map(|a| a.ip()) != n.remote.map(|a| a.ip()) {
                    self.latched = None;
                }
                self.expected = n.remote;
                self.last_rx = Instant::now();
                self.outlet.update(self.latched.or(n.remote), &n);
                if self.negotiated.as_ref().map(|old| old.codec) != Some(n.codec) {
                    let clock_rate = n.codec.rate();
                    self.jitter =
                        JitterBuffer::new(JitterConfig { clock_rate, ..Default::default() });
                    let made = Decoder::new(n.codec).and_then(|d| Ok((d, Encoder::new(n.codec)?)));
                    match made {
                        Ok((decoder, encoder)) => {
                            self.decoder = Some(decoder);
                            self.encoder = Some(encoder);
                        }
                        Err(e) => {
                            tracing::warn!("media leg: {e}; the leg stays silent");
                            (self.decoder, self.encoder) = (None, None);
                        }
                    }
                }
                if let Ok(mut state) = self.outlet.state.lock()
                    && let Some(numbering) = state.numbering.as_mut()
                {
                    (numbering.ts, numbering.at) = (numbering.clock(), Instant::now());
                    numbering.rate = n.codec.rate();
                }
                self.negotiated = Some(n);
                self.transcode = self.needs_transcoding();
            }
            Command::Play { pcm, done } => {
                if let Some((_, _, old)) = self.playing.replace((pcm, 0, done)) {
                    let _ = old.send(false);
                }
            }
            Command::StopPlay => {
                if let Some((_, _, done)) = self.playing.take() {
                    let _ = done.send(false);
                }
            }
            Command::StopPlayAt(reply) => {
                let sent = self.playing.take().map(|(_, pos, done)| {
                    let _ = done.send(false);
                    pos
                });
                let _ = reply.send(sent);
            }
            Command::Tap(frames) => self.tap = frames,
            Command::Detect { spec, done } => {
                self.detecting = Some((Detector::new(spec), done));
            }
            Command::Record { spec, done } => {
                if let Some(old) = self.recording.take() {
                    old.finish(RecordEnd::Stopped);
                }
                let writer =
                    std::fs::File::create(&spec.path).map_err(WavError::from).and_then(|f| {
                        WavWriter::new(BufWriter::new(f), 8000, if spec.stereo { 2 } else { 1 })
                    });
                self.outlet.wants_copies.store(spec.stereo, Ordering::Relaxed);
                match writer {
                    Ok(writer) => {
                        self.recording = Some(Recording {
                            writer,
                            path: spec.path.clone(),
                            spec,
                            samples: 0,
                            elapsed: 0,
                            held: Vec::new(),
                            done,
                        });
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            }
            Command::StopRecord => {
                if let Some(r) = self.recording.take() {
                    r.finish(RecordEnd::Stopped);
                }
            }
            Command::SendDtmf { digits, done } => {
                let Some(te) = self.negotiated.as_ref().and_then(|n| n.telephone_event) else {
                    let _ = done.send(());
                    return;
                };
                let sender = DtmfEventSender::new(8000);
                let mut at = self.now_ms();
                for digit in digits.chars() {
                    let start = self.timestamp;
                    if let Ok(packets) = sender.packets(digit, start, 100) {
                        for p in packets {
                            let mut header = RtpHeader::new(te, Seq(0), p.timestamp, self.ssrc);
                            header.marker = p.marker;
                            if let Ok(bytes) = header.to_packet(&p.payload()) {
                                self.dtmf_out.push_back((
                                    bytes,
                                    p.marker,
                                    at + u64::from(p.send_at_ms),
                                ));
                            }
                        }
                    }
                    at += 200;
                }
                self.dtmf_done = Some(done);
            }
            Command::Bridge(peer) => {
                self.bridge = peer;
                self.transcode = self.needs_transcoding();
                self.hand_over_numbering();
                if let Some((_, _, done)) = self.playing.take() {
                    let _ = done.send(false);
                }
            }
            Command::Conference(room) => {
                if let Some((old, id)) = self.room.take() {
                    let _ = old.send(RoomMsg::Leave { id });
                }
                self.mix = None;
                self.room = room;
            }
            Command::Mix(samples) => self.mix = Some(samples),
            Command::FarAudio { packet, codec, pt } => {
                if self.recording.as_ref().is_some_and(|r| r.spec.stereo)
                    && let Ok(p) = RtpPacket::parse(&packet)
                    && p.header.payload_type == pt
                {
                    if self.far_decoder.as_ref().map(|(c, _)| *c) != Some(codec) {
                        self.far_decoder = Decoder::new(codec).ok().map(|d| (codec, d));
                    }
                    let mut pcm = Vec::with_capacity(FRAME);
                    if let Some((_, decoder)) = self.far_decoder.as_mut()
                        && decoder.decode(p.payload, &mut pcm).is_ok()
                    {
                        // At most a second behind; older audio is dropped.
                        Leg::queue_far(&mut self.far, pcm, 8000);
                    }
                }
            }
            Command::FarPcm(pcm) => {
                if self.recording.as_ref().is_some_and(|r| r.spec.stereo) {
                    Leg::queue_far(&mut self.far, pcm.iter().copied(), 8000);
                }
                // At most 100 ms queued for sending.
                Leg::queue_far(&mut self.far_pcm, pcm, 800);
            }
        }
    }

    async fn tick(&mut self, rtp: &UdpSocket) {
        let Some(n) = self.negotiated.clone() else { return };
        let now = self.now_ms();
        if !self.decoding() {
            // Bridged: packets are relayed as they come; only the clocks move on.
            self.timestamp = self.timestamp.wrapping_add(self.ts_step());
            self.check_timeout();
            return;
        }
        // Receive path: one frame of the peer's audio, for the tone detector and recorder.
        let mut frame = Vec::with_capacity(FRAME);
        let popped = self.jitter.pop(now);
        if let Some(decoder) = self.decoder.as_mut() {
            match popped {
                Frame::Audio { payload, .. } => {
                    if decoder.decode(&payload, &mut frame).is_err() {
                        self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                        decoder.conceal(FRAME, &self.last_frame, &mut frame);
                    }
                }
                Frame::Concealed { .. } => {
                    self.stats.concealed.fetch_add(1, Ordering::Relaxed);
                    decoder.conceal(FRAME, &self.last_frame, &mut frame);
                }
                Frame::Empty => {}
            }
        }
        frame.resize(FRAME.max(frame.len()), 0);
        if n.telephone_event.is_none() {
            for digit in self.tones.push(&frame) {
                self.digit(digit, 0);
            }
        }
        let far: Option<Vec<i16>> = self.recording.as_ref().filter(|r| r.spec.stereo).map(|_| {
            let n = FRAME.min(self.far.len());
            self.far.drain(..n).collect()
        });
        if let Some(recording) = self.recording.as_mut()
            && let Some(end) = recording.push(&frame, far.as_deref())
            && let Some(r) = self.recording.take()
        {
            r.finish(end);
        }
        if let Some((detector, _)) = self.detecting.as_mut()
            && let Some(verdict) = detector.push(&frame)
            && let Some((_, done)) = self.detecting.take()
        {
            let _ = done.send(verdict);
        }
        if let Some(tap) = &self.tap {
            match tap.try_send(frame.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.tap_shed.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.tap = None,
            }
        }
        if let Some((room, id)) = &self.room {
            let _ = room.send(RoomMsg::Frame { id: *id, samples: frame.clone() });
        }
        if self.transcode
            && let Some(peer) = self.bridge.as_ref().and_then(|(peer, _)| peer.upgrade())
        {
            let _ = peer.send(Command::FarPcm(frame.clone()));
        }
        self.last_frame = frame;
        self.check_timeout();
        // Send path: our frame (prompt or silence) unless bridged or not sending.
        let ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(self.ts_step());
        let Some(to) = self.latched.or(n.remote) else { return };
        let transcoding = self.transcode;
        if !n.direction.sends() || (self.bridge.is_some() && !transcoding) {
            return;
        }
        while let Some((_, _, at)) = self.dtmf_out.front() {
            if *at > now {
                break;
            }
            if let Some((mut bytes, _, _)) = self.dtmf_out.pop_front() {
                // Sequence numbers are assigned at send time.
                let seq = self.next_seq(ts);
                bytes[2..4].copy_from_slice(&seq.0.to_be_bytes());
                let _ = rtp.send_to(&bytes, to).await;
            }
            if self.dtmf_out.is_empty()
                && let Some(done) = self.dtmf_done.take()
            {
                let _ = done.send(());
            }
        }
        let mut samples = [0i16; FRAME];
        let mut finished = false;
        if let Some((pcm, pos, _)) = self.playing.as_mut() {
            let end = (*pos + FRAME).min(pcm.len());
            if let Some(chunk) = pcm.get(*pos..end) {
                samples[..chunk.len()].copy_from_slice(chunk);
            }
            *pos = end;
            finished = end >= pcm.len();
        }
        if finished && let Some((_, _, done)) = self.playing.take() {
            let _ = done.send(true);
        }
        // In a conference we hear the room (everyone else), mixed over any prompt.
        if let Some(mix) = self.mix.take() {
            for (out, m) in samples.iter_mut().zip(&mix) {
                *out = out.saturating_add(*m);
            }
        }
        if transcoding {
            let n = FRAME.min(self.far_pcm.len());
            for (out, s) in samples.iter_mut().zip(self.far_pcm.drain(..n)) {
                *out = out.saturating_add(s);
            }
        }
        let mut payload = Vec::with_capacity(FRAME);
        let Some(encoder) = self.encoder.as_mut() else { return };
        if let Err(e) = encoder.encode(&samples, &mut payload) {
            tracing::warn!("media leg: {e}");
            return;
        }
        let mut header = RtpHeader::new(n.pt, self.next_seq(ts), ts, self.ssrc);
        header.marker = std::mem::take(&mut self.marker);
        if let Ok(bytes) = header.to_packet(&payload)
            && rtp.send_to(&bytes, to).await.is_ok()
        {
            self.stats.packets_out.fetch_add(1, Ordering::Relaxed);
            self.sent_packets = self.sent_packets.wrapping_add(1);
            self.sent_octets = self.sent_octets.wrapping_add(payload.len() as u32);
        }
    }

    /// Sends a sender report (with a reception report of the peer's stream, if any) to the
    /// peer's RTCP port: the RTP port + 1 (no rtcp-mux).
    async fn report(&mut self, rtcp: &UdpSocket) {
        let Some(n) = &self.negotiated else { return };
        let Some(rtp_to) = self.latched.or(n.remote) else { return };
        let to = SocketAddr::new(rtp_to.ip(), rtp_to.port().wrapping_add(1));
        let reports = match self.peer_ssrc {
            Some(ssrc) => vec![self.rx_stats.report_block(ssrc, 0, 0)],
            None => Vec::new(),
        };
        let unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // NTP time: seconds since 1900 in the high 32 bits, the fraction in the low 32.
        let ntp = ((unix.as_secs() + 2_208_988_800) << 32)
            | ((u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000);
        // Packets relayed onto our stream count as ours, on our clock.
        let (mut rtp_timestamp, mut packet_count, mut octet_count) =
            (self.timestamp, self.sent_packets, self.sent_octets);
        if let Ok(state) = self.outlet.state.lock()
            && let Some(numbering) = &state.numbering
        {
            rtp_timestamp = numbering.clock();
            packet_count = packet_count.wrapping_add(numbering.packets);
            octet_count = octet_count.wrapping_add(numbering.octets);
        }
        let sr = SenderReport {
            ssrc: self.ssrc,
            info: SenderInfo {
                ntp_timestamp: NtpTimestamp(ntp),
                rtp_timestamp,
                packet_count,
                octet_count,
            },
            reports,
        };
        let mut bytes = Vec::with_capacity(64);
        if sr.write(&mut bytes).is_ok() {
            let _ = rtcp.send_to(&bytes, to).await;
        }
    }
}
