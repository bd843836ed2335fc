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
use crate::transaction::{
    ClientNonInvite, Key, Output as TxOutput, Reliability, ServerInvite, ServerNonInvite, Timers,
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

/// Counters for what was refused or dropped (exported as metrics later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub dropped: u64,
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

#[derive(Debug)]
struct Call {
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
struct ClientEntry {
    tx: ClientNonInvite,
    peer: Peer,
    call: CallRef,
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
}

/// What a timer entry belongs to.
#[derive(Debug, Clone)]
enum TimerRef {
    Server(Key),
    Client(String),
    Ok(CallRef),
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

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
        }
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
            Method::Options => {
                let extra = [
                    (HeaderName::Allow, ALLOW.to_owned()),
                    (HeaderName::Other("Accept".into()), "application/sdp".into()),
                ];
                self.reply_in_tx(now, peer, key, &request, 200, "OK", &extra);
            }
            Method::Register
            | Method::Refer
            | Method::Info
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
            Some(c) => (Some(c.local_tag.clone()), c.local_sdp.clone()),
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
        c.ok = None;
        if let Some(d) = c.dialog.as_mut() {
            d.confirm();
        }
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
        let Some(entry) = self.client.get_mut(branch) else {
            // Not ours (or a late retransmission after termination): RFC 3261 §18.1.2.
            self.stats.dropped += 1;
            return;
        };
        entry.tx.handle_response(now, response);
        let branch = branch.to_owned();
        self.drain_client(&branch);
    }

    // --- commands ----------------------------------------------------------------------------

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
        if !self.calls.get(&call).is_some_and(|c| c.phase == CallPhase::Offered) {
            return false;
        }
        self.final_response(now, call, code, reason);
        self.out.push_back(Output::Event(Event::Ended { call }));
        true
    }

    /// Ends the call: BYE if answered, `603 Decline` if not. Idempotent.
    pub fn hangup(&mut self, now: Instant, call: CallRef) {
        let Some(phase) = self.calls.get(&call).map(|c| c.phase) else { return };
        match phase {
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
                self.client.insert(branch.clone(), ClientEntry { tx, peer, call });
                if let Some(c) = self.calls.get_mut(&call) {
                    c.client_txs += 1;
                }
                self.drain_client(&branch);
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

    fn drain_client(&mut self, branch: &str) {
        let Some(entry) = self.client.get_mut(branch) else { return };
        let (peer, call) = (entry.peer, entry.call);
        let mut outputs = Vec::new();
        let mut done = false;
        while let Some(o) = entry.tx.poll_output() {
            match o {
                TxOutput::Transmit(bytes) => outputs.push(bytes),
                TxOutput::Response(code) if code >= 200 => done = true,
                TxOutput::Timeout => done = true,
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
        if done {
            self.out.push_back(Output::Event(Event::Ended { call }));
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
