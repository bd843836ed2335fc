//! RFC 3261 §17 transactions as sans-IO state machines (with the RFC 6026 Accepted state).
//!
//! A transaction never reads the clock, sleeps or touches a socket. Its owner feeds it
//! messages and the current time (`handle_*`), asks when it next needs attention
//! ([`poll_timeout`](ClientInvite::poll_timeout)), calls `handle_timeout(now)` then, and drains
//! what it wants done with `poll_output`: bytes to transmit, responses for the transaction
//! user, a timeout, termination. A 32-second Timer B therefore runs in microseconds in a test.
//!
//! Method order in each type: constructor, getters, `handle_*`, `poll_*` (as in quinn-proto).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::message::{HeaderName, Message, Method};

/// RFC 3261 timer base values (§17.1.1.1); configurable per transport layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J, L, M.
    fn long(&self) -> Duration {
        self.t1 * 64
    }
}

/// Whether the transport retransmits for us (TCP, TLS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Unreliable,
    Reliable,
}

/// What a transaction asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the transaction's peer.
    Transmit(Vec<u8>),
    /// Deliver this response to the transaction user (client transactions only).
    Response(u16),
    /// No final response (client) or no ACK (server INVITE) in time.
    Timeout,
    /// The transaction is finished; the owner can drop it.
    Terminated,
}

/// The RFC's timer names; each transaction uses a few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
}

/// Deadlines of the armed timers (a handful at most, so a small vector).
#[derive(Debug, Default)]
struct TimerTable(Vec<(Timer, Instant)>);

impl TimerTable {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.stop(timer);
        self.0.push((timer, at));
    }
    fn stop(&mut self, timer: Timer) {
        self.0.retain(|(t, _)| *t != timer);
    }
    fn clear(&mut self) {
        self.0.clear();
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().map(|(_, at)| *at).min()
    }
    /// Removes and returns the earliest timer due at `now`.
    fn expired(&mut self, now: Instant) -> Option<Timer> {
        let i = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, (_, at))| *at <= now)
            .min_by_key(|(_, (_, at))| *at)?
            .0;
        Some(self.0.swap_remove(i).0)
    }
}

/// Shared output queue and termination bookkeeping.
#[derive(Debug, Default)]
struct Outbox {
    out: VecDeque<Output>,
    timers: TimerTable,
}

impl Outbox {
    fn terminate(&mut self) {
        self.timers.clear();
        self.out.push_back(Output::Terminated);
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    Calling,
    Proceeding,
    Completed,
    /// RFC 6026: a 2xx arrived; retransmitted 2xx are passed to the TU until Timer M.
    Accepted,
    Terminated,
}

/// Client INVITE transaction (§17.1.1): sends the INVITE, retransmits it over UDP (Timer A),
/// gives up after Timer B, ACKs non-2xx final responses itself.
#[derive(Debug)]
pub struct ClientInvite {
    state: ClientInviteState,
    request: Message,
    bytes: Vec<u8>,
    reliability: Reliability,
    timers: Timers,
    interval_a: Duration,
    outbox: Outbox,
}

impl ClientInvite {
    /// Starts the transaction: the INVITE is queued for transmission at once.
    pub fn new(now: Instant, request: Message, reliability: Reliability, timers: Timers) -> Self {
        let bytes = request.to_bytes();
        let mut outbox = Outbox::default();
        outbox.out.push_back(Output::Transmit(bytes.clone()));
        if reliability == Reliability::Unreliable {
            outbox.timers.set(Timer::A, now + timers.t1);
        }
        outbox.timers.set(Timer::B, now + timers.long());
        ClientInvite {
            state: ClientInviteState::Calling,
            request,
            bytes,
            reliability,
            timers,
            interval_a: timers.t1,
            outbox,
        }
    }

    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// A response whose top Via branch matched this transaction.
    pub fn handle_response(&mut self, now: Instant, response: &Message) {
        let Some(code) = response.status() else { return };
        use ClientInviteState::*;
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.outbox.timers.stop(Timer::A);
                self.outbox.timers.stop(Timer::B);
                self.outbox.out.push_back(Output::Response(code));
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.outbox.timers.clear();
                self.outbox.timers.set(Timer::M, now + self.timers.long());
                self.outbox.out.push_back(Output::Response(code));
            }
            (Calling | Proceeding, _) => {
                self.state = Completed;
                self.outbox.timers.clear();
                self.outbox.out.push_back(Output::Response(code));
                self.outbox.out.push_back(Output::Transmit(ack_for(&self.request, response)));
                match self.reliability {
                    Reliability::Unreliable => {
                        self.outbox.timers.set(Timer::D, now + Duration::from_secs(32))
                    }
                    Reliability::Reliable => self.terminate(),
                }
            }
            // A retransmitted final response: our ACK was lost, send it again.
            (Completed, 300..) => {
                self.outbox.out.push_back(Output::Transmit(ack_for(&self.request, response)))
            }
            // Retransmitted (or forked) 2xx go to the TU, which ACKs them end to end.
            (Accepted, 200..=299) => self.outbox.out.push_back(Output::Response(code)),
            _ => {}
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.outbox.timers.expired(now) {
            match timer {
                Timer::A if self.state == ClientInviteState::Calling => {
                    self.outbox.out.push_back(Output::Transmit(self.bytes.clone()));
                    self.interval_a *= 2;
                    self.outbox.timers.set(Timer::A, now + self.interval_a);
                }
                Timer::B if self.state == ClientInviteState::Calling => {
                    self.outbox.out.push_back(Output::Timeout);
                    self.terminate();
                }
                Timer::D | Timer::M => self.terminate(),
                _ => {}
            }
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.timers.next()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.out.pop_front()
    }

    fn terminate(&mut self) {
        self.state = ClientInviteState::Terminated;
        self.outbox.terminate();
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): same Request-URI, top Via, From, Call-ID
/// and CSeq number as the INVITE, the To of the response (with its tag), the INVITE's Route.
fn ack_for(invite: &Message, response: &Message) -> Vec<u8> {
    let uri = match &invite.start {
        crate::message::StartLine::Request { uri, .. } => uri.as_str(),
        crate::message::StartLine::Response { .. } => "",
    };
    let mut out = format!("ACK {uri} SIP/2.0\r\n");
    if let Some(via) = invite.header_values(&HeaderName::Via).next() {
        // Our own requests carry one Via value per header line; keep only the first value.
        let top = via.split(',').next().unwrap_or(via);
        out.push_str(&format!("Via: {top}\r\n"));
    }
    for route in invite.header_values(&HeaderName::Route) {
        out.push_str(&format!("Route: {route}\r\n"));
    }
    let from = invite.header_values(&HeaderName::From).next().unwrap_or_default();
    let to = response.header_values(&HeaderName::To).next().unwrap_or_default();
    out.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
        invite.call_id, invite.cseq.seq
    ));
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Client non-INVITE transaction (§17.1.2): retransmits with Timer E (doubling up to T2, then
/// every T2 once a provisional arrived), times out with Timer F.
#[derive(Debug)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    bytes: Vec<u8>,
    reliability: Reliability,
    timers: Timers,
    interval_e: Duration,
    outbox: Outbox,
}

impl ClientNonInvite {
    pub fn new(now: Instant, request: &Message, reliability: Reliability, timers: Timers) -> Self {
        let bytes = request.to_bytes();
        let mut outbox = Outbox::default();
        outbox.out.push_back(Output::Transmit(bytes.clone()));
        if reliability == Reliability::Unreliable {
            outbox.timers.set(Timer::E, now + timers.t1);
        }
        outbox.timers.set(Timer::F, now + timers.long());
        ClientNonInvite {
            state: ClientNonInviteState::Trying,
            bytes,
            reliability,
            timers,
            interval_e: timers.t1,
            outbox,
        }
    }

    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    pub fn handle_response(&mut self, now: Instant, response: &Message) {
        let Some(code) = response.status() else { return };
        use ClientNonInviteState::*;
        match (self.state, code) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.outbox.out.push_back(Output::Response(code));
            }
            (Trying | Proceeding, _) => {
                self.state = Completed;
                self.outbox.timers.clear();
                self.outbox.out.push_back(Output::Response(code));
                match self.reliability {
                    Reliability::Unreliable => {
                        self.outbox.timers.set(Timer::K, now + self.timers.t4)
                    }
                    Reliability::Reliable => self.terminate(),
                }
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        use ClientNonInviteState::*;
        while let Some(timer) = self.outbox.timers.expired(now) {
            match (timer, self.state) {
                (Timer::E, Trying | Proceeding) => {
                    self.outbox.out.push_back(Output::Transmit(self.bytes.clone()));
                    self.interval_e = match self.state {
                        Proceeding => self.timers.t2,
                        _ => (self.interval_e * 2).min(self.timers.t2),
                    };
                    self.outbox.timers.set(Timer::E, now + self.interval_e);
                }
                (Timer::F, Trying | Proceeding) => {
                    self.outbox.out.push_back(Output::Timeout);
                    self.terminate();
                }
                (Timer::K, _) => self.terminate(),
                _ => {}
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.timers.next()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.out.pop_front()
    }

    fn terminate(&mut self) {
        self.state = ClientNonInviteState::Terminated;
        self.outbox.terminate();
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    Proceeding,
    Completed,
    Confirmed,
    /// RFC 6026: a 2xx was sent; retransmitted INVITEs are absorbed until Timer L.
    Accepted,
    Terminated,
}

/// Server INVITE transaction (§17.2.1): answers retransmitted INVITEs with the last response,
/// retransmits a non-2xx final with Timer G until the ACK, gives up after Timer H.
#[derive(Debug)]
pub struct ServerInvite {
    state: ServerInviteState,
    last_response: Option<Vec<u8>>,
    reliability: Reliability,
    timers: Timers,
    interval_g: Duration,
    outbox: Outbox,
}

impl ServerInvite {
    /// Starts on a new INVITE; `trying` (a 100 Trying for it) is sent at once so the caller's
    /// Timer A stops retransmitting while the flow decides. `None` when a final response
    /// follows immediately.
    pub fn new(reliability: Reliability, timers: Timers, trying: Option<Vec<u8>>) -> Self {
        let mut outbox = Outbox::default();
        if let Some(trying) = &trying {
            outbox.out.push_back(Output::Transmit(trying.clone()));
        }
        ServerInvite {
            state: ServerInviteState::Proceeding,
            last_response: trying,
            reliability,
            timers,
            interval_g: timers.t1,
            outbox,
        }
    }

    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// A CANCEL can still stop this INVITE (no final response sent yet).
    pub fn is_cancellable(&self) -> bool {
        self.state == ServerInviteState::Proceeding
    }

    /// The TU answers: `code` and the encoded response.
    pub fn send_response(&mut self, now: Instant, code: u16, bytes: Vec<u8>) {
        if self.state != ServerInviteState::Proceeding {
            return;
        }
        self.outbox.out.push_back(Output::Transmit(bytes.clone()));
        self.last_response = Some(bytes);
        match code {
            100..=199 => {}
            200..=299 => {
                self.state = ServerInviteState::Accepted;
                self.outbox.timers.set(Timer::L, now + self.timers.long());
            }
            _ => {
                self.state = ServerInviteState::Completed;
                if self.reliability == Reliability::Unreliable {
                    self.outbox.timers.set(Timer::G, now + self.timers.t1);
                }
                self.outbox.timers.set(Timer::H, now + self.timers.long());
            }
        }
    }

    /// A request matching this transaction: a retransmitted INVITE or the ACK of a non-2xx.
    pub fn handle_request(&mut self, now: Instant, method: &Method) {
        use ServerInviteState::*;
        match (method, self.state) {
            (Method::Invite, Proceeding | Completed) => {
                if let Some(last) = &self.last_response {
                    self.outbox.out.push_back(Output::Transmit(last.clone()));
                }
            }
            (Method::Ack, Completed) => {
                self.state = Confirmed;
                self.outbox.timers.clear();
                match self.reliability {
                    Reliability::Unreliable => {
                        self.outbox.timers.set(Timer::I, now + self.timers.t4)
                    }
                    Reliability::Reliable => self.terminate(),
                }
            }
            // Accepted: retransmitted INVITEs are absorbed; the TU resends its 2xx.
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.outbox.timers.expired(now) {
            match (timer, self.state) {
                (Timer::G, ServerInviteState::Completed) => {
                    if let Some(last) = &self.last_response {
                        self.outbox.out.push_back(Output::Transmit(last.clone()));
                    }
                    self.interval_g = (self.interval_g * 2).min(self.timers.t2);
                    self.outbox.timers.set(Timer::G, now + self.interval_g);
                }
                (Timer::H, ServerInviteState::Completed) => {
                    self.outbox.out.push_back(Output::Timeout);
                    self.terminate();
                }
                (Timer::I | Timer::L, _) => self.terminate(),
                _ => {}
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.timers.next()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.out.pop_front()
    }

    fn terminate(&mut self) {
        self.state = ServerInviteState::Terminated;
        self.outbox.terminate();
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Server non-INVITE transaction (§17.2.2): absorbs retransmitted requests, answering them
/// with the last response sent; lingers for Timer J over UDP.
#[derive(Debug)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    last_response: Option<Vec<u8>>,
    reliability: Reliability,
    timers: Timers,
    outbox: Outbox,
}

impl ServerNonInvite {
    pub fn new(reliability: Reliability, timers: Timers) -> Self {
        ServerNonInvite {
            state: ServerNonInviteState::Trying,
            last_response: None,
            reliability,
            timers,
            outbox: Outbox::default(),
        }
    }

    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    pub fn send_response(&mut self, now: Instant, code: u16, bytes: Vec<u8>) {
        use ServerNonInviteState::*;
        if !matches!(self.state, Trying | Proceeding) {
            return;
        }
        self.outbox.out.push_back(Output::Transmit(bytes.clone()));
        self.last_response = Some(bytes);
        if code < 200 {
            self.state = Proceeding;
            return;
        }
        self.state = Completed;
        match self.reliability {
            Reliability::Unreliable => self.outbox.timers.set(Timer::J, now + self.timers.long()),
            Reliability::Reliable => self.terminate(),
        }
    }

    /// A retransmission of the request.
    pub fn handle_request(&mut self) {
        if matches!(self.state, ServerNonInviteState::Proceeding | ServerNonInviteState::Completed)
            && let Some(last) = &self.last_response
        {
            self.outbox.out.push_back(Output::Transmit(last.clone()));
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.outbox.timers.expired(now) {
            if timer == Timer::J {
                self.terminate();
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.timers.next()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.out.pop_front()
    }

    fn terminate(&mut self) {
        self.state = ServerNonInviteState::Terminated;
        self.outbox.terminate();
    }
}

// ---------------------------------------------------------------------------------------------

/// Identifies a transaction (§17.2.3): top Via branch and sent-by, and the method, with ACK
/// matching its INVITE. A CANCEL has its own key; [`Key::cancelled_invite`] finds its INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

impl Key {
    /// The key of a request (server side) or response (client side, by CSeq method).
    /// Requests from RFC 2543 peers (no `z9hG4bK` cookie) get a key from Call-ID, CSeq
    /// number, From tag and Via branch (§17.2.3's fallback); a bare cookie with nothing
    /// after it (RFC 4475 §3.2.1) has no key: the request is refused with 400.
    pub fn of(message: &Message) -> Option<Key> {
        let via = message.via.first()?;
        let branch = match via.branch() {
            Some("z9hG4bK") => return None,
            Some(b) if b.starts_with("z9hG4bK") => b.to_owned(),
            other => format!(
                "rfc2543:{}:{}:{}:{}",
                message.call_id,
                message.cseq.seq,
                message.from.tag().unwrap_or_default(),
                other.unwrap_or_default()
            ),
        };
        let method = match message.method() {
            Some(Method::Ack) => Method::Invite,
            Some(m) => m.clone(),
            None => match &message.cseq.method {
                Method::Ack => Method::Invite,
                m => m.clone(),
            },
        };
        Some(Key { branch, sent_by: via.sent_by.to_ascii_lowercase(), method })
    }

    /// For a CANCEL's key: the key of the INVITE it cancels.
    pub fn cancelled_invite(&self) -> Key {
        Key { method: Method::Invite, ..self.clone() }
    }
}

#[cfg(test)]
mod tests;
