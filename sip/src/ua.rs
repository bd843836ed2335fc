//! The SIP user-agent core: transactions, dialogs and the call-facing commands, sans-IO.
//!
//! The transport shell feeds it datagrams/frames with their source and the current time
//! ([`UserAgent::handle_input`], [`UserAgent::handle_timeout`]) and executes what it asks
//! for ([`UserAgent::poll_output`]: bytes to send to a peer, call events for the application).
//! The application answers, rejects or hangs up calls with commands that take `now` too.
//!
//! What it does on its own (RFC 3261 UAS core, §8.2): `100 Trying` for every INVITE,
//! `OPTIONS` keep-alives, CANCEL matching (200 to the CANCEL, 487 to the INVITE), 2xx
//! retransmission until the ACK (§13.3.1.4, BYE after 64·T1 without one), BYE handling,
//! `481` for unknown dialogs, `416`/`420`/`415` for what it cannot serve, `400` with a reason
//! for malformed requests, and nothing at all for garbage or broken responses (counted).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dialog::{Dialog, DialogId};
use crate::message::{self, HeaderName, Message, Method, StartLine};
use crate::registrar::Registrar;
use crate::transaction::{
    ClientInvite, ClientNonInvite, Key, Output as TxOutput, Reliability, ServerInvite,
    ServerNonInvite, Timers,
};

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn reliability(self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp => Reliability::Reliable,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// The other end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Voxide's handle for one inbound call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

/// What happened to a call, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new INVITE. Answer, reject or ring it.
    Incoming { call: CallRef, request: Box<Message>, peer: Peer },
    /// The caller cancelled before the answer (487 already sent).
    Cancelled { call: CallRef },
    /// The caller hung up (BYE answered 200).
    HungUp { call: CallRef },
    /// The call is over after our BYE (answered or timed out) or our rejection.
    Ended { call: CallRef },
    /// Our 2xx was never acknowledged; we sent BYE.
    NoAck { call: CallRef },
    /// An outbound call got a provisional response (180 Ringing, 183 with early media).
    Progress { call: CallRef, code: u16, sdp: Option<Vec<u8>> },
    /// An outbound call was answered; we sent the ACK. `sdp` is the callee's answer.
    Answered { call: CallRef, sdp: Vec<u8> },
    /// An outbound call ended without an answer: the final response, or `408` when nothing
    /// answered in time (Timer B).
    Rejected { call: CallRef, code: u16, reason: String },
    /// A DTMF digit signalled in the dialog (SIP INFO, `application/dtmf-relay` or
    /// `application/dtmf`), for phones and trunks that do not send RFC 4733 events.
    Dtmf { call: CallRef, digit: char, duration_ms: u32 },
    /// The final response to our REFER (blind transfer): 202 = the peer will call the target;
    /// 408 when nothing answered.
    ReferAnswered { call: CallRef, code: u16 },
    /// The caller's SDP answer arrived in the ACK (its INVITE had no offer, so our 200
    /// carried one, RFC 3264 §4).
    AckAnswer { call: CallRef, sdp: Vec<u8> },
}

impl Event {
    /// The call the event is about.
    pub fn call(&self) -> CallRef {
        match self {
            Event::Incoming { call, .. }
            | Event::Cancelled { call }
            | Event::HungUp { call }
            | Event::Ended { call }
            | Event::NoAck { call }
            | Event::Progress { call, .. }
            | Event::Answered { call, .. }
            | Event::Rejected { call, .. }
            | Event::Dtmf { call, .. }
            | Event::ReferAnswered { call, .. }
            | Event::AckAnswer { call, .. } => *call,
        }
    }

    /// Nothing more will be reported about the call after this event.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Event::Cancelled { .. }
                | Event::HungUp { .. }
                | Event::Ended { .. }
                | Event::Rejected { .. }
        )
    }
}

/// An outbound call to place ([`UserAgent::invite`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The Request-URI (a registered contact, or the dialled SIP URI).
    pub uri: String,
    /// Where the INVITE goes (the registration's source, or the URI's resolved host).
    pub peer: Peer,
    /// Our From URI (the caller ID presented).
    pub from: String,
    /// The To URI (the dialled address of record).
    pub to: String,
    /// Our SDP offer.
    pub sdp: Vec<u8>,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit { to: Peer, bytes: Vec<u8> },
    Event(Event),
}

/// Configuration of the user agent.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// Address advertised in Via and Contact.
    pub advertised: SocketAddr,
    pub timers: Timers,
    /// Value of the User-Agent/Server header.
    pub product: String,
}

/// Counters for what was refused or dropped (`vox serve --http` exports them as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Garbage, stray or broken responses: nothing was sent back.
    pub dropped: u64,
    /// Requests answered with an error (4xx-6xx), calls refused by routing or a flow included.
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
    Offered,
    Answered,
    Ended,
}

/// Pending retransmission of our 2xx until the ACK (§13.3.1.4).
#[derive(Debug)]
struct OkRetransmit {
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// Which side of the call we are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// We received the INVITE.
    Uas,
    /// We sent the INVITE (a B-leg or an originated call).
    Uac {
        /// Branch of our INVITE (its CANCEL shares it).
        branch: String,
        /// The ACK of the 2xx, re-sent when the 2xx is retransmitted.
        ack: Option<Vec<u8>>,
        /// The application hung up before the answer.
        cancel: Cancel,
        /// A provisional response arrived (a CANCEL may be sent, RFC 3261 §9.1).
        provisional: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    No,
    /// Wanted before any provisional response: sent when one arrives.
    Wanted,
    Sent,
}

#[derive(Debug)]
struct Call {
    role: Role,
    invite: Message,
    invite_key: Key,
    peer: Peer,
    local_tag: String,
    phase: CallPhase,
    dialog: Option<Dialog>,
    ok: Option<OkRetransmit>,
    /// Our SDP answer, reused for re-INVITEs (hold/resume).
    local_sdp: Vec<u8>,
    /// The application hung up before the caller's ACK arrived.
    bye_pending: bool,
    /// Our client transactions (BYE) still running for this call.
    client_txs: usize,
}

#[derive(Debug)]
enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTx,
    peer: Peer,
}

#[derive(Debug)]
enum ClientTx {
    /// Boxed: it holds the whole INVITE (for the ACK of non-2xx and retransmission).
    Invite(Box<ClientInvite>),
    NonInvite(ClientNonInvite),
}

impl ClientTx {
    fn handle_response(&mut self, now: Instant, response: &Message) {
        match self {
            ClientTx::Invite(tx) => tx.handle_response(now, response),
            ClientTx::NonInvite(tx) => tx.handle_response(now, response),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            ClientTx::Invite(tx) => tx.handle_timeout(now),
            ClientTx::NonInvite(tx) => tx.handle_timeout(now),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ClientTx::Invite(tx) => tx.poll_timeout(),
            ClientTx::NonInvite(tx) => tx.poll_timeout(),
        }
    }
    fn poll_output(&mut self) -> Option<TxOutput> {
        match self {
            ClientTx::Invite(tx) => tx.poll_output(),
            ClientTx::NonInvite(tx) => tx.poll_output(),
        }
    }
}

/// Why we sent a client request: decides what its outcome means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    Bye,
    Cancel,
    Refer,
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTx,
    peer: Peer,
    call: CallRef,
    purpose: Purpose,
}

/// Client transactions are keyed by branch and method: a CANCEL reuses its INVITE's branch.
fn client_key(branch: &str, method: &Method) -> String {
    format!("{branch} {method}")
}

/// The user agent. One per listening address set; owned by the SIP task.
#[derive(Debug)]
pub struct UserAgent {
    config: UaConfig,
    next_id: u64,
    server: HashMap<Key, ServerEntry>,
    client: HashMap<String, ClientEntry>,
    calls: HashMap<CallRef, Call>,
    dialogs: HashMap<DialogId, CallRef>,
    invites: HashMap<Key, CallRef>,
    out: VecDeque<Output>,
    stats: Stats,
    seed: u64,
    draining: bool,
    /// Deadlines of transactions and 2xx retransmissions, earliest first. Entries are lazy:
    /// a popped entry whose owner is gone or rescheduled later is skipped, so scheduling is
    /// O(log n) and no per-packet scan of every transaction is needed.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_refs: HashMap<u64, TimerRef>,
    next_timer: u64,
    /// REGISTER is served when a registrar is configured (405 otherwise).
    registrar: Option<Registrar>,
    /// Wall-clock seconds at `clock_base` (digest nonces carry Unix time).
    clock: (Instant, u64),
    last_purge: Option<Instant>,
}

/// What a timer entry belongs to.
#[derive(Debug, Clone)]
enum TimerRef {
    Server(Key),
    Client(String),
    Ok(CallRef),
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";

impl UserAgent {
    pub fn new(config: UaConfig) -> Self {
        UserAgent {
            config,
            next_id: 1,
            server: HashMap::new(),
            client: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            invites: HashMap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            seed: random_seed(),
            draining: false,
            timers: BinaryHeap::new(),
            timer_refs: HashMap::new(),
            next_timer: 0,
            registrar: None,
            clock: (Instant::now(), 0),
            last_purge: None,
        }
    }

    /// Serves REGISTER with `registrar` (users, digest auth, bindings).
    pub fn set_registrar(&mut self, registrar: Registrar) {
        self.registrar = Some(registrar);
    }

    /// Tells the core the Unix time (seconds) at `now`; later times are derived from it.
    pub fn set_clock(&mut self, now: Instant, unix_secs: u64) {
        self.clock = (now, unix_secs);
    }

    fn unix_time(&self, now: Instant) -> u64 {
        self.clock.1 + now.saturating_duration_since(self.clock.0).as_secs()
    }

    /// Where a registered `user` can be reached: (contact URI, the address its REGISTER came
    /// from), best first. Empty if not registered (or no registrar).
    pub fn lookup(&self, now: Instant, user: &str) -> Vec<(String, Peer)> {
        self.registrar.as_ref().map_or_else(Vec::new, |r| {
            r.lookup(now, user).into_iter().map(|b| (b.contact, b.source)).collect()
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Stops taking new calls: from now on INVITEs outside a dialog get `503` with
    /// `Retry-After`, while calls in progress continue (graceful shutdown, first step).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Hangs up every call still in progress (graceful shutdown, second step).
    pub fn hangup_all(&mut self, now: Instant) {
        let calls: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| c.phase != CallPhase::Ended)
            .map(|(call, _)| *call)
            .collect();
        for call in calls {
            self.hangup(now, call);
        }
    }

    /// Calls that are not over yet.
    pub fn active_calls(&self) -> usize {
        self.calls.values().filter(|c| c.phase != CallPhase::Ended).count()
    }

    /// A tag or branch suffix unique to this process run: a random seed plus a counter.
    fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:x}{:x}", self.seed, self.next_id)
    }

    // --- input -------------------------------------------------------------------------------

    /// One datagram (UDP) or framed message (TCP) from `peer`.
    pub fn handle_input(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        match message::parse(bytes) {
            Err(e) => match e.reply() {
                Some(reply) => {
                    self.stats.rejected += 1;
                    self.transmit(peer, reply);
                }
                None => self.stats.dropped += 1,
            },
            Ok(m) if m.status().is_some() => self.handle_response(now, &m),
            Ok(m) => self.handle_request(now, peer, m),
        }
    }

    fn handle_request(&mut self, now: Instant, peer: Peer, request: Message) {
        let Some(method) = request.method().cloned() else { return };
        let Some(key) = Key::of(&request) else {
            // RFC 4475 §3.2.1: no usable branch; answer statelessly.
            return self.reply_stateless(&request, peer, 400, "Missing or invalid Via branch", &[]);
        };
        if let Some(entry) = self.server.get_mut(&key) {
            match &mut entry.tx {
                ServerTx::Invite(tx) => tx.handle_request(now, &method),
                ServerTx::NonInvite(tx) => tx.handle_request(),
            }
            self.drain_server(&key);
            // RFC 2543 peers' ACK of our 2xx shares the INVITE's key; RFC 6026 still hands it
            // to the call layer (a no-op for the ACK of a non-2xx, which has no dialog).
            if method == Method::Ack {
                self.handle_ack(now, &request);
            }
            return;
        }
        match method {
            Method::Ack => return self.handle_ack(now, &request),
            Method::Cancel => return self.handle_cancel(now, peer, key, &request),
            _ => {}
        }
        // What a UAS must refuse whatever the method (RFC 3261 §8.2.2).
        let uri = match &request.start {
            StartLine::Request { uri, .. } => uri.to_ascii_lowercase(),
            StartLine::Response { .. } => return,
        };
        if !(uri.starts_with("sip:") || uri.starts_with("sips:") || uri.starts_with("tel:")) {
            return self.reply_in_tx(now, peer, key, &request, 416, "Unsupported URI Scheme", &[]);
        }
        let required: Vec<String> = request
            .header_values(&HeaderName::Require)
            .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        if !required.is_empty() {
            let unsupported = (HeaderName::Other("Unsupported".into()), required.join(", "));
            return self.reply_in_tx(
                now,
                peer,
                key,
                &request,
                420,
                "Bad Extension",
                &[unsupported],
            );
        }
        match method {
            Method::Ack | Method::Cancel => {}
            Method::Invite if request.to.tag().is_some() => {
                self.handle_reinvite(now, peer, key, &request)
            }
            Method::Invite => self.handle_invite(now, peer, key, request),
            Method::Bye => self.handle_bye(now, peer, key, &request),
            Method::Info => self.handle_info(now, peer, key, &request),
            // Progress of a transfer we asked for (RFC 3515 §2.4.4): acknowledged, and the
            // transferor leaves the call after the 202 anyway.
            Method::Notify if request.to.tag().is_some() => {
                if self.in_dialog(now, peer, &key, &request).is_some() {
                    self.reply_in_tx(now, peer, key, &request, 200, "OK", &[]);
                }
            }
            Method::Options => {
                let extra = [
                    (HeaderName::Allow, ALLOW.to_owned()),
                    (HeaderName::Other("Accept".into()), "application/sdp".into()),
                ];
                self.reply_in_tx(now, peer, key, &request, 200, "OK", &extra);
            }
            Method::Register if self.registrar.is_some() => {
                self.handle_register(now, peer, key, &request)
            }
            Method::Register
            | Method::Refer
            | Method::Update
            | Method::Notify
            | Method::Subscribe
            | Method::Prack
            | Method::Message => {
                self.reply_in_tx(
                    now,
                    peer,
                    key,
                    &request,
                    405,
                    "Method Not Allowed",
                    &[(HeaderName::Allow, ALLOW.to_owned())],
                );
            }
            Method::Extension(_) => {
                self.reply_in_tx(
                    now,
                    peer,
                    key,
                    &request,
                    501,
                    "Not Implemented",
                    &[(HeaderName::Allow, ALLOW.to_owned())],
                );
            }
        }
    }

    fn handle_invite(&mut self, now: Instant, peer: Peer, key: Key, request: Message) {
        if self.draining {
            let retry = (HeaderName::Other("Retry-After".into()), "30".to_owned());
            return self.reply_in_tx(
                now,
                peer,
                key,
                &request,
                503,
                "Service Unavailable",
                &[retry],
            );
        }
        // What an INVITE must carry before anything rings (RFC 3261 §8.2.3).
        if let Some(ct) = request.header_values(&HeaderName::ContentType).next()
            && !request.body.is_empty()
            && !ct.to_ascii_lowercase().starts_with("application/sdp")
        {
            let accept = (HeaderName::Other("Accept".into()), "application/sdp".into());
            return self.reply_in_tx(
                now,
                peer,
                key,
                &request,
                415,
                "Unsupported Media Type",
                &[accept],
            );
        }
        if request.contact.is_empty() {
            return self.reply_in_tx(now, peer, key, &request, 400, "Missing Contact", &[]);
        }
        let local_tag = self.fresh("vx");
        let trying = response(&request, peer, 100, "Trying", None, &[], None, &self.config);
        let tx = ServerInvite::new(peer.transport.reliability(), self.config.timers, Some(trying));
        self.server.insert(key.clone(), ServerEntry { tx: ServerTx::Invite(tx), peer });
        self.drain_server(&key);
        self.next_id += 1;
        let call = CallRef(self.next_id);
        self.invites.insert(key.clone(), call);
        self.calls.insert(
            call,
            Call {
                role: Role::Uas,
                invite: request.clone(),
                invite_key: key,
                peer,
                local_tag,
                phase: CallPhase::Offered,
                dialog: None,
                ok: None,
                local_sdp: Vec::new(),
                bye_pending: false,
                client_txs: 0,
            },
        );
        self.out.push_back(Output::Event(Event::Incoming {
            call,
            request: Box::new(request),
            peer,
        }));
    }

    fn handle_reinvite(&mut self, now: Instant, peer: Peer, key: Key, request: &Message) {
        let Some(call) = self.in_dialog(now, peer, &key, request) else { return };
        // Hold/resume: answer with our own SDP (unchanged until the media engine negotiates
        // directions) and our Contact.
        let (tag, sdp) = match self.calls.get(&call) {
            Some(c) => (Some(c.local_tag.clone()), answer_direction(&request.body, &c.local_sdp)),
            None => (None, Vec::new()),
        };
        let contact = (HeaderName::Contact, format!("<sip:{}>", self.config.advertised));
        let body = (!sdp.is_empty()).then_some(("application/sdp", sdp.as_slice()));
        let bytes =
            response(request, peer, 200, "OK", tag.as_deref(), &[contact], body, &self.config);
        // Answered at once: no 100 Trying needed.
        let mut tx = ServerInvite::new(peer.transport.reliability(), self.config.timers, None);
        tx.send_response(now, 200, bytes);
        self.server.insert(key.clone(), ServerEntry { tx: ServerTx::Invite(tx), peer });
        self.drain_server(&key);
    }

    /// The call an in-dialog request belongs to, once its dialog accepted the request.
    /// Otherwise the request is answered here (481 unknown dialog, 500 stale CSeq) and `None`.
    fn in_dialog(
        &mut self,
        now: Instant,
        peer: Peer,
        key: &Key,
        request: &Message,
    ) -> Option<CallRef> {
        let call = DialogId::of_request(request).and_then(|id| self.dialogs.get(&id).copied());
        let Some(call) = call else {
            self.reply_in_tx(
                now,
                peer,
                key.clone(),
                request,
                481,
                "Call/Transaction Does Not Exist",
                &[],
            );
            return None;
        };
        let checked = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.dialog.as_mut())
            .map(|d| d.handle_request(request));
        if let Some(Err(e)) = checked {
            self.reply_in_tx(now, peer, key.clone(), request, e.status(), &e.to_string(), &[]);
            return None;
        }
        Some(call)
    }

    fn handle_ack(&mut self, now: Instant, request: &Message) {
        // The ACK of our 2xx is its own transaction: find the call by dialog.
        let Some(call) =
            DialogId::of_request(request).and_then(|id| self.dialogs.get(&id).copied())
        else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else { return };
        let first = c.ok.take().is_some();
        if let Some(d) = c.dialog.as_mut() {
            d.confirm();
        }
        if first && !request.body.is_empty() && c.invite.body.is_empty() {
            let sdp = request.body.clone();
            self.out.push_back(Output::Event(Event::AckAnswer { call, sdp }));
        }
        let Some(c) = self.calls.get_mut(&call) else { return };
        // A hang-up requested before the ACK waited for it (RFC 3261 §15).
        if std::mem::take(&mut c.bye_pending) {
            self.send_bye(now, call);
        }
    }

    fn handle_cancel(&mut self, now: Instant, peer: Peer, key: Key, request: &Message) {
        let invite_key = key.cancelled_invite();
        let cancellable = matches!(
            self.server.get(&invite_key).map(|e| &e.tx),
            Some(ServerTx::Invite(tx)) if tx.is_cancellable()
        );
        if !self.server.contains_key(&invite_key) {
            return self.reply_in_tx(
                now,
                peer,
                key,
                request,
                481,
                "Call/Transaction Does Not Exist",
                &[],
            );
        }
        // The CANCEL itself is always answered 200 when its INVITE exists (§9.2), even if the
        // INVITE was already answered: then the call simply goes on.
        self.reply_in_tx(now, peer, key, request, 200, "OK", &[]);
        if cancellable && let Some(call) = self.invites.get(&invite_key).copied() {
            self.final_response(now, call, 487, "Request Terminated");
            self.out.push_back(Output::Event(Event::Cancelled { call }));
        }
    }

    fn handle_bye(&mut self, now: Instant, peer: Peer, key: Key, request: &Message) {
        let Some(call) = self.in_dialog(now, peer, &key, request) else { return };
        self.reply_in_tx(now, peer, key, request, 200, "OK", &[]);
        if let Some(c) = self.calls.get_mut(&call)
            && c.phase != CallPhase::Ended
        {
            c.phase = CallPhase::Ended;
            c.ok = None;
            self.out.push_back(Output::Event(Event::HungUp { call }));
        }
        // Calls longer than Timer L have no INVITE transaction left to trigger this later.
        self.forget_if_done(call);
    }

    fn handle_response(&mut self, now: Instant, response: &Message) {
        let Some(branch) = response.via.first().and_then(|v| v.branch()) else {
            self.stats.dropped += 1;
            return;
        };
        let key = client_key(branch, &response.cseq.method);
        let Some(entry) = self.client.get_mut(&key) else {
            // Not ours (or a late retransmission after termination): RFC 3261 §18.1.2.
            self.stats.dropped += 1;
            return;
        };
        entry.tx.handle_response(now, response);
        let (purpose, call) = (entry.purpose, entry.call);
        if purpose == Purpose::Invite {
            self.handle_invite_response(now, call, response);
        }
        self.drain_client(&key);
    }

    /// What a response to our INVITE means for the call (the transaction has seen it and
    /// ACKs non-2xx finals itself; the 2xx is ACKed here, end to end).
    fn handle_invite_response(&mut self, now: Instant, call: CallRef, response: &Message) {
        let Some(code) = response.status() else { return };
        let ack_branch = if (200..300).contains(&code) { self.fresh("a") } else { String::new() };
        let advertised = self.config.advertised;
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Role::Uac { ack, cancel, provisional, .. } = &mut c.role else { return };
        match code {
            100..=199 => {
                *provisional = true;
                if *cancel == Cancel::Wanted {
                    self.send_cancel(now, call);
                } else if code > 100 && c.phase == CallPhase::Offered {
                    let sdp = (!response.body.is_empty()).then(|| response.body.clone());
                    self.out.push_back(Output::Event(Event::Progress { call, code, sdp }));
                }
            }
            200..=299 => {
                if let Some(bytes) = ack.clone() {
                    // A retransmitted 2xx: our ACK was lost.
                    let peer = c.peer;
                    return self.transmit(peer, bytes);
                }
                let Ok(mut dialog) = Dialog::uac(&c.invite, response) else { return };
                let via = format!(
                    "SIP/2.0/{} {advertised};branch=z9hG4bK{ack_branch};rport",
                    c.peer.transport.name()
                );
                let contact = format!("sip:{advertised}");
                let seq = c.invite.cseq.seq;
                let bytes = dialog.request(Method::Ack, &via, &contact, &[], None, Some(seq));
                *ack = Some(bytes.clone());
                // The answer crossed our CANCEL (or the call was given up): end it at once.
                let gave_up = *cancel != Cancel::No || c.phase != CallPhase::Offered;
                let peer = c.peer;
                self.dialogs.insert(dialog.id.clone(), call);
                c.dialog = Some(dialog);
                c.phase = CallPhase::Answered;
                self.transmit(peer, bytes);
                if gave_up {
                    self.send_bye(now, call);
                } else {
                    let sdp = response.body.clone();
                    self.out.push_back(Output::Event(Event::Answered { call, sdp }));
                }
            }
            _ => {
                if c.phase != CallPhase::Ended {
                    c.phase = CallPhase::Ended;
                    let reason = response_reason(response);
                    self.out.push_back(Output::Event(Event::Rejected { call, code, reason }));
                }
            }
        }
    }

    fn handle_register(&mut self, now: Instant, peer: Peer, key: Key, request: &Message) {
        let unix = self.unix_time(now);
        let Some(registrar) = self.registrar.as_mut() else { return };
        // Expired bindings are dropped now and then, not on every REGISTER.
        if self
            .last_purge
            .is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(30))
        {
            registrar.expire(now);
            self.last_purge = Some(now);
        }
        let reply = registrar.handle(now, unix, request, peer);
        self.reply_in_tx(now, peer, key, request, reply.code, &reply.reason, &reply.headers);
    }

    /// In-dialog INFO: DTMF relay (RFC 2976 usage by phones and trunks) becomes a [`Event::Dtmf`].
    fn handle_info(&mut self, now: Instant, peer: Peer, key: Key, request: &Message) {
        let Some(call) = self.in_dialog(now, peer, &key, request) else { return };
        let content_type = request
            .header_values(&HeaderName::ContentType)
            .next()
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase())
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&request.body);
        let dtmf = match content_type.as_str() {
            _ if request.body.is_empty() => None,
            "application/dtmf-relay" => Some(parse_dtmf_relay(&body)),
            "application/dtmf" => {
                Some(body.trim().chars().next().filter(|c| is_dtmf(*c)).map(|d| (d, 0)))
            }
            _ => {
                let accept = (
                    HeaderName::Other("Accept".into()),
                    "application/dtmf-relay, application/dtmf".to_owned(),
                );
                return self.reply_in_tx(
                    now,
                    peer,
                    key,
                    request,
                    415,
                    "Unsupported Media Type",
                    &[accept],
                );
            }
        };
        match dtmf {
            Some(None) => {
                self.reply_in_tx(now, peer, key, request, 400, "Invalid DTMF Signal", &[])
            }
            Some(Some((digit, duration_ms))) => {
                self.reply_in_tx(now, peer, key, request, 200, "OK", &[]);
                self.out.push_back(Output::Event(Event::Dtmf { call, digit, duration_ms }));
            }
            // An empty INFO is a keep-alive probe.
            None => self.reply_in_tx(now, peer, key, request, 200, "OK", &[]),
        }
    }

    // --- commands ----------------------------------------------------------------------------

    /// Places an outbound call (a B-leg, or a call originated by the API): sends the INVITE
    /// in a client transaction. Progress, answer or failure arrive as events for the
    /// returned call; [`hangup`](Self::hangup) cancels it while it rings.
    pub fn invite(&mut self, now: Instant, out: Outbound) -> Option<CallRef> {
        let advertised = self.config.advertised;
        let branch = format!("z9hG4bK{}", self.fresh("i"));
        let tag = self.fresh("vx");
        let call_id = format!("{}@{}", self.fresh("c"), advertised.ip());
        let transport = out.peer.transport;
        let contact = match transport {
            Transport::Udp => format!("<sip:{advertised}>"),
            Transport::Tcp => format!("<sip:{advertised};transport=tcp>"),
        };
        let mut text = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/{t} {advertised};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <{from}>;tag={tag}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: {contact}\r\nAllow: {ALLOW}\r\nUser-Agent: {product}\r\n",
            uri = out.uri,
            t = transport.name(),
            from = out.from,
            to = out.to,
            product = self.config.product,
        );
        if out.sdp.is_empty() {
            text.push_str("Content-Length: 0\r\n\r\n");
        } else {
            text.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
                out.sdp.len()
            ));
        }
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&out.sdp);
        // A URI or caller ID that does not make a valid INVITE is refused here.
        let invite = message::parse(&bytes).ok()?;
        let invite_key = Key::of(&invite)?;
        self.next_id += 1;
        let call = CallRef(self.next_id);
        let tx =
            ClientInvite::new(now, invite.clone(), transport.reliability(), self.config.timers);
        self.calls.insert(
            call,
            Call {
                role: Role::Uac {
                    branch: branch.clone(),
                    ack: None,
                    cancel: Cancel::No,
                    provisional: false,
                },
                invite,
                invite_key,
                peer: out.peer,
                local_tag: tag,
                phase: CallPhase::Offered,
                dialog: None,
                ok: None,
                local_sdp: out.sdp,
                bye_pending: false,
                client_txs: 0,
            },
        );
        let entry = ClientEntry {
            tx: ClientTx::Invite(Box::new(tx)),
            peer: out.peer,
            call,
            purpose: Purpose::Invite,
        };
        self.start_client(client_key(&branch, &Method::Invite), entry);
        Some(call)
    }

    /// Gives up an outbound call that has not been answered: CANCEL once the callee has
    /// sent a provisional response (RFC 3261 §9.1), otherwise as soon as one arrives.
    fn cancel(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Role::Uac { cancel, provisional, .. } = &mut c.role else { return };
        if *cancel != Cancel::No {
            return;
        }
        if *provisional {
            self.send_cancel(now, call);
        } else {
            *cancel = Cancel::Wanted;
        }
    }

    fn send_cancel(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Role::Uac { branch, cancel, .. } = &mut c.role else { return };
        *cancel = Cancel::Sent;
        let branch = branch.clone();
        // §9.1: same Request-URI, Call-ID, From, To (no tag), CSeq number and top Via.
        let invite = &c.invite;
        let uri = match &invite.start {
            StartLine::Request { uri, .. } => uri.clone(),
            StartLine::Response { .. } => return,
        };
        let mut text = format!("CANCEL {uri} SIP/2.0\r\n");
        if let Some(via) = invite.header_values(&HeaderName::Via).next() {
            text.push_str(&format!("Via: {via}\r\n"));
        }
        for route in invite.header_values(&HeaderName::Route) {
            text.push_str(&format!("Route: {route}\r\n"));
        }
        let header =
            |name: HeaderName| invite.header_values(&name).next().unwrap_or_default().to_owned();
        text.push_str(&format!(
            "Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} CANCEL\r\n\
             Content-Length: 0\r\n\r\n",
            header(HeaderName::From),
            header(HeaderName::To),
            invite.call_id,
            invite.cseq.seq
        ));
        let peer = c.peer;
        let Ok(request) = message::parse(text.as_bytes()) else { return };
        let tx =
            ClientNonInvite::new(now, &request, peer.transport.reliability(), self.config.timers);
        let entry =
            ClientEntry { tx: ClientTx::NonInvite(tx), peer, call, purpose: Purpose::Cancel };
        self.start_client(client_key(&branch, &Method::Cancel), entry);
    }

    /// Blind transfer (RFC 3515): asks the peer of an answered call to call `target` (a SIP
    /// URI). The outcome arrives as [`Event::ReferAnswered`]. `false` if the call is not
    /// answered (or `target` cannot be put in a Refer-To header).
    pub fn refer(&mut self, now: Instant, call: CallRef, target: &str) -> bool {
        if target.chars().any(|c| c.is_control() || c == '<' || c == '>') {
            return false;
        }
        let branch = format!("z9hG4bK{}", self.fresh("r"));
        let advertised = self.config.advertised;
        let Some(c) = self.calls.get_mut(&call).filter(|c| c.phase == CallPhase::Answered) else {
            return false;
        };
        let Some(dialog) = c.dialog.as_mut() else { return false };
        let via = format!("SIP/2.0/{} {advertised};branch={branch};rport", c.peer.transport.name());
        let extra = [
            (HeaderName::Other("Refer-To".into()), format!("<{target}>")),
            (HeaderName::Other("Referred-By".into()), format!("<sip:{advertised}>")),
        ];
        let bytes =
            dialog.request(Method::Refer, &via, &format!("sip:{advertised}"), &extra, None, None);
        let peer = c.peer;
        let Ok(refer) = message::parse(&bytes) else { return false };
        let tx =
            ClientNonInvite::new(now, &refer, peer.transport.reliability(), self.config.timers);
        let entry =
            ClientEntry { tx: ClientTx::NonInvite(tx), peer, call, purpose: Purpose::Refer };
        self.start_client(client_key(&branch, &Method::Refer), entry);
        true
    }

    /// Sends `180 Ringing` (or `183` with early media when `sdp` is given).
    pub fn ring(&mut self, now: Instant, call: CallRef, sdp: Option<&[u8]>) {
        let Some(c) = self.calls.get(&call).filter(|c| c.phase == CallPhase::Offered) else {
            return;
        };
        let (code, reason) =
            if sdp.is_some() { (183, "Session Progress") } else { (180, "Ringing") };
        let contact = (HeaderName::Contact, format!("<sip:{}>", self.config.advertised));
        let bytes = response(
            &c.invite,
            c.peer,
            code,
            reason,
            Some(&c.local_tag),
            &[contact],
            sdp.map(|b| ("application/sdp", b)),
            &self.config,
        );
        let key = c.invite_key.clone();
        if let Some(ServerEntry { tx: ServerTx::Invite(tx), .. }) = self.server.get_mut(&key) {
            tx.send_response(now, code, bytes);
        }
        self.drain_server(&key);
    }

    /// Answers with `200 OK` and `sdp`, creating the dialog. Retransmits until the ACK.
    pub fn answer(&mut self, now: Instant, call: CallRef, sdp: &[u8]) -> bool {
        let Some(c) = self.calls.get_mut(&call).filter(|c| c.phase == CallPhase::Offered) else {
            return false;
        };
        let contact = (HeaderName::Contact, format!("<sip:{}>", self.config.advertised));
        let bytes = response(
            &c.invite,
            c.peer,
            200,
            "OK",
            Some(&c.local_tag),
            &[contact],
            Some(("application/sdp", sdp)),
            &self.config,
        );
        let Ok(dialog) = Dialog::uas(&c.invite, &c.local_tag, true) else { return false };
        self.dialogs.insert(dialog.id.clone(), call);
        c.dialog = Some(dialog);
        c.phase = CallPhase::Answered;
        c.local_sdp = sdp.to_vec();
        let t1 = self.config.timers.t1;
        c.ok = Some(OkRetransmit {
            bytes: bytes.clone(),
            next: now + t1,
            interval: t1,
            give_up: now + t1 * 64,
        });
        let key = c.invite_key.clone();
        if let Some(ServerEntry { tx: ServerTx::Invite(tx), .. }) = self.server.get_mut(&key) {
            tx.send_response(now, 200, bytes);
        }
        self.drain_server(&key);
        self.schedule(now + t1, TimerRef::Ok(call));
        true
    }

    /// Refuses an unanswered call with a final response (4xx-6xx).
    pub fn reject(&mut self, now: Instant, call: CallRef, code: u16, reason: &str) -> bool {
        if !self
            .calls
            .get(&call)
            .is_some_and(|c| c.phase == CallPhase::Offered && c.role == Role::Uas)
        {
            return false;
        }
        if code >= 400 {
            self.stats.rejected += 1;
        }
        self.final_response(now, call, code, reason);
        self.out.push_back(Output::Event(Event::Ended { call }));
        true
    }

    /// Ends the call: BYE if answered, `603 Decline` if not. Idempotent.
    pub fn hangup(&mut self, now: Instant, call: CallRef) {
        let Some((phase, uac)) =
            self.calls.get(&call).map(|c| (c.phase, matches!(c.role, Role::Uac { .. })))
        else {
            return;
        };
        match phase {
            CallPhase::Offered if uac => self.cancel(now, call),
            CallPhase::Offered => {
                self.reject(now, call, 603, "Decline");
            }
            CallPhase::Answered => {
                // No BYE before the ACK of our 200 (RFC 3261 §15): keep retransmitting the
                // 200 and send the BYE when the ACK arrives (or at Timer L without one).
                if let Some(c) = self.calls.get_mut(&call)
                    && c.ok.is_some()
                {
                    c.bye_pending = true;
                    return;
                }
                self.send_bye(now, call);
            }
            CallPhase::Ended => {}
        }
    }

    fn send_bye(&mut self, now: Instant, call: CallRef) {
        let branch = format!("z9hG4bK{}", self.fresh("b"));
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.peer_transport(call).name(),
            self.config.advertised
        );
        let contact = format!("sip:{}", self.config.advertised);
        let Some(c) = self.calls.get_mut(&call) else { return };
        c.phase = CallPhase::Ended;
        c.ok = None;
        let Some(dialog) = c.dialog.as_mut() else { return };
        let bytes = dialog.request(Method::Bye, &via, &contact, &[], None, None);
        dialog.terminate();
        let peer = c.peer;
        match message::parse(&bytes) {
            Ok(bye) => {
                let tx = ClientNonInvite::new(
                    now,
                    &bye,
                    peer.transport.reliability(),
                    self.config.timers,
                );
                let key = client_key(&branch, &Method::Bye);
                let entry =
                    ClientEntry { tx: ClientTx::NonInvite(tx), peer, call, purpose: Purpose::Bye };
                self.start_client(key, entry);
            }
            // Our own request always parses; if it ever did not, end the call locally.
            Err(_) => self.out.push_back(Output::Event(Event::Ended { call })),
        }
    }

    fn peer_transport(&self, call: CallRef) -> Transport {
        self.calls.get(&call).map_or(Transport::Udp, |c| c.peer.transport)
    }

    fn final_response(&mut self, now: Instant, call: CallRef, code: u16, reason: &str) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        c.phase = CallPhase::Ended;
        let bytes =
            response(&c.invite, c.peer, code, reason, Some(&c.local_tag), &[], None, &self.config);
        let key = c.invite_key.clone();
        if let Some(ServerEntry { tx: ServerTx::Invite(tx), .. }) = self.server.get_mut(&key) {
            tx.send_response(now, code, bytes);
        }
        self.drain_server(&key);
    }

    // --- time --------------------------------------------------------------------------------

    /// Fires everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(owner) = self.timer_refs.remove(&id) else { continue };
            match owner {
                TimerRef::Server(key) => {
                    if let Some(entry) = self.server.get_mut(&key) {
                        match &mut entry.tx {
                            ServerTx::Invite(tx) => tx.handle_timeout(now),
                            ServerTx::NonInvite(tx) => tx.handle_timeout(now),
                        }
                        self.drain_server(&key);
                    }
                }
                TimerRef::Client(branch) => {
                    if let Some(entry) = self.client.get_mut(&branch) {
                        entry.tx.handle_timeout(now);
                        self.drain_client(&branch);
                    }
                }
                TimerRef::Ok(call) => self.retransmit_ok(now, call),
            }
        }
    }

    /// Timer G/L-style retransmission of our 2xx until the ACK (§13.3.1.4).
    fn retransmit_ok(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Some(ok) = c.ok.as_mut() else { return };
        if now >= ok.give_up {
            self.out.push_back(Output::Event(Event::NoAck { call }));
            self.send_bye(now, call);
            return;
        }
        if now >= ok.next {
            self.out.push_back(Output::Transmit { to: c.peer, bytes: ok.bytes.clone() });
            ok.interval = (ok.interval * 2).min(self.config.timers.t2);
            ok.next = now + ok.interval;
        }
        let next = ok.next.min(ok.give_up);
        self.schedule(next, TimerRef::Ok(call));
    }

    fn schedule(&mut self, at: Instant, owner: TimerRef) {
        self.next_timer += 1;
        self.timer_refs.insert(self.next_timer, owner);
        self.timers.push(Reverse((at, self.next_timer)));
    }

    /// Forgets a call once it is over and none of its transactions is still running.
    fn forget_if_done(&mut self, call: CallRef) {
        let done = self.calls.get(&call).is_some_and(|c| {
            c.phase == CallPhase::Ended
                && c.client_txs == 0
                && !self.server.contains_key(&c.invite_key)
        });
        if done && let Some(c) = self.calls.remove(&call) {
            self.invites.remove(&c.invite_key);
            if let Some(d) = c.dialog {
                self.dialogs.remove(&d.id);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run (possibly a little early:
    /// stale entries are skipped then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    // --- plumbing ----------------------------------------------------------------------------

    fn transmit(&mut self, to: Peer, bytes: Vec<u8>) {
        self.out.push_back(Output::Transmit { to, bytes });
    }

    fn drain_server(&mut self, key: &Key) {
        let Some(entry) = self.server.get_mut(key) else { return };
        let peer = entry.peer;
        let mut terminated = false;
        let mut outputs = Vec::new();
        loop {
            let next = match &mut entry.tx {
                ServerTx::Invite(tx) => tx.poll_output(),
                ServerTx::NonInvite(tx) => tx.poll_output(),
            };
            match next {
                None => break,
                Some(TxOutput::Transmit(bytes)) => outputs.push(bytes),
                Some(TxOutput::Terminated) => terminated = true,
                Some(TxOutput::Timeout | TxOutput::Response(_)) => {}
            }
        }
        for bytes in outputs {
            self.transmit(peer, bytes);
        }
        if terminated {
            self.server.remove(key);
            if let Some(call) = self.invites.get(key).copied() {
                self.forget_if_done(call);
            }
        } else if let Some(at) = self.server.get(key).and_then(|e| server_timeout(&e.tx)) {
            self.schedule(at, TimerRef::Server(key.clone()));
        }
    }

    fn start_client(&mut self, key: String, entry: ClientEntry) {
        let call = entry.call;
        self.client.insert(key.clone(), entry);
        if let Some(c) = self.calls.get_mut(&call) {
            c.client_txs += 1;
        }
        self.drain_client(&key);
    }

    fn drain_client(&mut self, branch: &str) {
        let Some(entry) = self.client.get_mut(branch) else { return };
        let (peer, call, purpose) = (entry.peer, entry.call, entry.purpose);
        let mut outputs = Vec::new();
        let mut done = false;
        let mut timed_out = false;
        let mut final_code = None;
        while let Some(o) = entry.tx.poll_output() {
            match o {
                TxOutput::Transmit(bytes) => outputs.push(bytes),
                TxOutput::Response(code) if code >= 200 => {
                    done = true;
                    final_code = Some(code);
                }
                TxOutput::Timeout => {
                    done = true;
                    timed_out = true;
                }
                TxOutput::Terminated => {
                    self.client.remove(branch);
                    break;
                }
                TxOutput::Response(_) => {}
            }
        }
        for bytes in outputs {
            self.transmit(peer, bytes);
        }
        match purpose {
            Purpose::Bye if done => self.out.push_back(Output::Event(Event::Ended { call })),
            Purpose::Refer if done => {
                let code = final_code.unwrap_or(408);
                self.out.push_back(Output::Event(Event::ReferAnswered { call, code }));
            }
            // Nobody answered our INVITE at all (Timer B): the call failed with a 408.
            Purpose::Invite if timed_out => {
                if let Some(c) = self.calls.get_mut(&call)
                    && c.phase != CallPhase::Ended
                {
                    c.phase = CallPhase::Ended;
                    let (code, reason) = (408, "Request Timeout".to_owned());
                    self.out.push_back(Output::Event(Event::Rejected { call, code, reason }));
                }
            }
            _ => {}
        }
        match self.client.get(branch).map(|e| e.tx.poll_timeout()) {
            Some(Some(at)) => self.schedule(at, TimerRef::Client(branch.to_owned())),
            Some(None) => {}
            None => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.client_txs = c.client_txs.saturating_sub(1);
                }
                self.forget_if_done(call);
            }
        }
    }

    /// Answers inside a new server transaction (so retransmissions are absorbed).
    #[allow(clippy::too_many_arguments)]
    fn reply_in_tx(
        &mut self,
        now: Instant,
        peer: Peer,
        key: Key,
        request: &Message,
        code: u16,
        reason: &str,
        extra: &[(HeaderName, String)],
    ) {
        let tag = (code >= 200 && request.to.tag().is_none()).then(|| self.fresh("vx"));
        let bytes =
            response(request, peer, code, reason, tag.as_deref(), extra, None, &self.config);
        if code >= 400 {
            self.stats.rejected += 1;
        }
        let tx = if request.method() == Some(&Method::Invite) {
            let mut tx = ServerInvite::new(peer.transport.reliability(), self.config.timers, None);
            tx.send_response(now, code, bytes);
            ServerTx::Invite(tx)
        } else {
            let mut tx = ServerNonInvite::new(peer.transport.reliability(), self.config.timers);
            tx.send_response(now, code, bytes);
            ServerTx::NonInvite(tx)
        };
        self.server.insert(key.clone(), ServerEntry { tx, peer });
        self.drain_server(&key);
    }

    fn reply_stateless(
        &mut self,
        request: &Message,
        peer: Peer,
        code: u16,
        reason: &str,
        extra: &[(HeaderName, String)],
    ) {
        self.stats.rejected += 1;
        let bytes = response(request, peer, code, reason, None, extra, None, &self.config);
        self.transmit(peer, bytes);
    }
}

/// Randomness for tags without a dependency: std's `RandomState` is seeded from the OS.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x766f_7869_6465);
    h.finish() & 0xffff_ffff
}

/// The `a=` direction attribute of an SDP body (RFC 3264 §6.1), `sendrecv` when absent.
fn sdp_direction(sdp: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(sdp);
    let mut direction = "sendrecv";
    for line in text.lines() {
        direction = match line.trim() {
            "a=sendonly" => "sendonly",
            "a=recvonly" => "recvonly",
            "a=inactive" => "inactive",
            "a=sendrecv" => "sendrecv",
            _ => continue,
        };
    }
    direction
}

/// Our answer to a re-offer: our SDP with the direction that mirrors the offer's, limited by
/// what we can do (hold: `sendonly` offered → `recvonly` answered; resume → back to ours).
/// An offerless re-INVITE gets our SDP unchanged.
fn answer_direction(offer: &[u8], local: &[u8]) -> Vec<u8> {
    if offer.is_empty() || local.is_empty() {
        return local.to_vec();
    }
    let ours = sdp_direction(local);
    let (we_send, we_recv) =
        (matches!(ours, "sendrecv" | "sendonly"), matches!(ours, "sendrecv" | "recvonly"));
    let answer = match sdp_direction(offer) {
        "sendonly" if we_recv => "recvonly",
        "recvonly" if we_send => "sendonly",
        "sendrecv" => ours,
        _ => "inactive",
    };
    let text = String::from_utf8_lossy(local);
    let mut out = String::with_capacity(text.len() + 12);
    let mut replaced = false;
    for line in text.split_inclusive('\n') {
        if matches!(line.trim(), "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive") {
            if !replaced {
                out.push_str(&format!("a={answer}\r\n"));
                replaced = true;
            }
        } else {
            out.push_str(line);
        }
    }
    if !replaced && answer != "sendrecv" {
        if !out.ends_with('\n') {
            out.push_str("\r\n");
        }
        out.push_str(&format!("a={answer}\r\n"));
    }
    out.into_bytes()
}

/// The reason phrase of a response.
fn response_reason(response: &Message) -> String {
    match &response.start {
        StartLine::Response { reason, .. } => reason.clone(),
        StartLine::Request { .. } => String::new(),
    }
}

fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// `application/dtmf-relay` bodies: `Signal=5\r\nDuration=160`. `None` without a valid
/// signal; the duration defaults to 0 when absent. `Signal=10`/`11` are `*`/`#` (Cisco).
fn parse_dtmf_relay(body: &str) -> Option<(char, u32)> {
    let mut digit = None;
    let mut duration = 0;
    for line in body.lines() {
        let Some((name, value)) = line.split_once('=') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                digit = match value {
                    "10" => Some('*'),
                    "11" => Some('#'),
                    v if v.chars().count() == 1 => {
                        v.chars().next().map(|c| c.to_ascii_uppercase()).filter(|c| is_dtmf(*c))
                    }
                    _ => None,
                }
            }
            "duration" => duration = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    digit.map(|d| (d, duration))
}

fn server_timeout(tx: &ServerTx) -> Option<Instant> {
    match tx {
        ServerTx::Invite(tx) => tx.poll_timeout(),
        ServerTx::NonInvite(tx) => tx.poll_timeout(),
    }
}

/// Builds a response to `request` (§8.2.6): Via (with `received`/`rport` filled in per
/// RFC 3581 on the top value), From, To (plus our tag), Call-ID, CSeq, then `extra`.
#[allow(clippy::too_many_arguments)]
fn response(
    request: &Message,
    peer: Peer,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(HeaderName, String)],
    body: Option<(&str, &[u8])>,
    config: &UaConfig,
) -> Vec<u8> {
    // The reason can come from a flow (`reject`): never let it carry CR/LF into the message.
    let reason: String = reason.chars().filter(|c| !c.is_control()).take(120).collect();
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    let mut first = true;
    for via in request.header_values(&HeaderName::Via) {
        if first {
            out.push_str(&format!("Via: {}\r\n", received(via, peer)));
            first = false;
        } else {
            out.push_str(&format!("Via: {via}\r\n"));
        }
    }
    let to = request.header_values(&HeaderName::To).next().unwrap_or_default();
    let to = match to_tag {
        Some(tag) if request.to.tag().is_none() => format!("{to};tag={tag}"),
        _ => to.to_owned(),
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nServer: {}\r\n",
        request.header_values(&HeaderName::From).next().unwrap_or_default(),
        request.call_id,
        request.header_values(&HeaderName::CSeq).next().unwrap_or_default(),
        config.product
    ));
    // Dialog-creating responses carry the Record-Route set back (RFC 3261 §12.1.1).
    if (101..300).contains(&code) {
        for rr in request.header_values(&HeaderName::RecordRoute) {
            out.push_str(&format!("Record-Route: {rr}\r\n"));
        }
    }
    for (name, value) in extra {
        out.push_str(&format!("{}: {value}\r\n", name.as_str()));
    }
    let mut bytes = match body {
        Some((ct, b)) => {
            out.push_str(&format!("Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n", b.len()));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(b);
            bytes
        }
        None => {
            out.push_str("Content-Length: 0\r\n\r\n");
            out.into_bytes()
        }
    };
    bytes.shrink_to_fit();
    bytes
}

/// RFC 3581: fill in `rport` and add `received` to the top Via value of a request from `peer`.
fn received(via: &str, peer: Peer) -> String {
    let (top, rest) = match via.split_once(',') {
        Some((t, r)) => (t.to_owned(), format!(",{r}")),
        None => (via.to_owned(), String::new()),
    };
    let mut params: Vec<String> = top.split(';').map(str::to_owned).collect();
    let has_rport = params.iter().skip(1).any(|p| p.trim() == "rport");
    if has_rport {
        for p in params.iter_mut().skip(1) {
            if p.trim() == "rport" {
                *p = format!("rport={}", peer.addr.port());
            }
        }
    }
    if !params.iter().skip(1).any(|p| p.trim().starts_with("received=")) {
        params.push(format!("received={}", peer.addr.ip()));
    }
    format!("{}{rest}", params.join(";"))
}

#[cfg(test)]
mod tests;
