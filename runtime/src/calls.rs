//! Calls: the only module that composes SIP, flows and media.
//!
//! The SIP task reports call events; [`serve`] routes each new INVITE to a flow by the
//! Request-URI user (or rings a registered user), and runs the flow in a task of its own
//! against a [`SipCall`] — the [`CallControl`] implementation for real SIP calls, which owns
//! the call's media leg. Unknown numbers get `404`.
//!
//! `dial` is a B2BUA: it INVITEs every target at once (a registered user's contacts, or SIP
//! URIs), each with a media leg of its own, forwards their ringing to the caller, bridges the
//! first to answer (cancelling the rest), maps final responses to dial outcomes and ends the
//! B-leg when either side hangs up. `dial("queue:NAME")` takes a caller waiting in `enqueue`.
//!
//! Media ([`MediaServices`]): `answer` negotiates SDP and starts the leg; `say`/`play` render
//! prompts and play them (barge-in for `gather`); digits come from RFC 4733, in-band tones or
//! SIP INFO; `record` writes WAV files with a JSON sidecar; `conference` joins a mixing room.
//! Without media services (a signalling-only setup) prompts take their time in silence and
//! the media-only actions fail with a clear `failed("…not available yet…")`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use voxide_sip::message::{Message, StartLine};
use voxide_sip::shell::{Command, SipHandle};
use voxide_sip::ua::{CallRef, Event, Outbound, Peer, Transport};

use crate::call::{
    CallControl, CallError, CallId, CallInfo, CallResult, DialOptions, DialOutcome, Direction,
    FlowEvent, GatherOptions, GatherResult, LogLevel, RecordOptions, Recording, SayOptions,
};
use crate::flows::FlowEngine;
use crate::hub::{CallHub, CallSnapshot, HubError, LiveCall, RecordingInfo};
use crate::kv::MemoryKv;
use crate::manifest::Manifest;
use crate::prompts::{self, PromptError, Prompts};
pub use crate::routing::{Route, Router, weighted_index};
use crate::sim::speech_ms;
use std::path::PathBuf;
use voxide_media::sdp::{self, Codec, Direction as MediaDirection};
use voxide_media::session::{
    LegLink, MediaEngine, MediaEvent, RecordSpec, Room, Session, WeakRoom, bridge, bridge_links,
    unbridge, unbridge_links,
};

/// The user part of a SIP/SIPS/tel Request-URI (`sip:hello@host` → `hello`).
pub fn request_user(request: &Message) -> Option<String> {
    let StartLine::Request { uri, .. } = &request.start else { return None };
    let (_, rest) = uri.split_once(':')?;
    let user = match rest.split_once('@') {
        Some((user, _)) => user,
        None if uri.to_ascii_lowercase().starts_with("tel:") => rest,
        None => return None,
    };
    Some(user.split(';').next().unwrap_or(user).to_owned())
}

/// Signals from the SIP task (and the control API) to one call's flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The caller's SDP answer, from the ACK of an offerless INVITE.
    AckAnswer(Vec<u8>),
    CallerGone,
    Dtmf(char),
    /// The final response to our REFER.
    Referred(u16),
    /// The API redirected the call: end the running flow; another one takes the call.
    Redirect,
}

/// What placing calls from the API needs: set by [`serve`] on its hub.
#[derive(Debug)]
pub(crate) struct Originator {
    engine: FlowEngine,
    sip: SipHandle,
    advertised: SocketAddr,
    pub(crate) media: Option<Arc<MediaServices>>,
    kv: MemoryKv,
}

/// What [`serve`] runs calls with.
#[derive(Debug, Clone)]
pub struct CallServices {
    pub engine: FlowEngine,
    pub kv: MemoryKv,
    /// Our SIP address as peers reach it (contact, SDP without media).
    pub advertised: SocketAddr,
    /// RTP, prompts and recordings (None: signalling only).
    pub media: Option<Arc<MediaServices>>,
    /// Where live calls are registered for the API and report what they do.
    pub hub: Arc<CallHub>,
    /// The tenant (store id) that calls to registered users belong to: the config file's
    /// tenant, like the config file's routes.
    pub config_tenant: String,
}

/// Runs calls until the SIP event channel closes.
pub async fn serve(
    services: CallServices,
    routes: tokio::sync::watch::Receiver<Arc<Router>>,
    sip: SipHandle,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let CallServices { engine, kv, advertised, media, hub, config_tenant } = services;
    let _ = hub.sip.set(Originator {
        engine: engine.clone(),
        sip: sip.clone(),
        advertised,
        media: media.clone(),
        kv: kv.clone(),
    });
    let mut live: HashMap<CallRef, mpsc::UnboundedSender<Signal>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallRef>();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                match event {
                    Event::Incoming { call, request, peer } => {
                        let user = request_user(&request).unwrap_or_default();
                        let (tx, rx) = mpsc::unbounded_channel();
                        // An exact route wins; then a registered user is rung directly;
                        // then prefix and catch-all routes.
                        // The routes as of now: a change made through the API applies to
                        // calls that start after it.
                        let router = routes.borrow().clone();
                        let route = match router.lookup_exact(&user) {
                            Some(route) => Some(route.clone()),
                            None if !sip.lookup(&user).await.is_empty() => {
                                let live_call = hub.start_to_user(&config_tenant, request.from.uri.clone(), user.clone());
                                live_call.set_signals(tx.clone(), sip.clone(), call);
                                live.insert(call, tx);
                                let mut sip_call = SipCall::new(call, sip.clone(), rx, advertised, user_of(&request.from.uri))
                                    .with_media(media.clone(), request.body.clone());
                                sip_call.live = Some(live_call.clone());
                                let (done, hub) = (done_tx.clone(), hub.clone());
                                tracing::info!(call = %live_call.id, peer = %peer.addr, "call to registered user {user:?}");
                                tokio::spawn(async move {
                                    let (outcome, detail) = ring_user(sip_call, user).await;
                                    hub.finish(&live_call, live_call.record(outcome, detail, 0));
                                    let _ = done.send(call);
                                });
                                continue;
                            }
                            None => router.lookup(&user).cloned(),
                        };
                        let Some(route) = route else {
                            tracing::info!(call = call.0, "no route for {user:?}: 404");
                            sip.send(Command::Reject { call, code: 404, reason: "Not Found".into() }).await;
                            continue;
                        };
                        let live_call = hub.start(&route.tenant, "inbound", request.from.uri.clone(), user.clone(), &route);
                        live_call.set_signals(tx.clone(), sip.clone(), call);
                        live.insert(call, tx);
                        let info = CallInfo {
                            id: CallId(live_call.id.clone()),
                            from: request.from.uri.clone(),
                            to: user,
                            direction: Direction::Inbound,
                            headers: request.headers.iter().filter(|h| matches!(h.name, voxide_sip::message::HeaderName::Other(_)))
                                .map(|h| (h.name.as_str().to_owned(), h.value.clone())).collect(),
                            vars: route.vars.clone(),
                        };
                        tracing::info!(call = %info.id, flow = %route.label, peer = %peer.addr, "incoming call");
                        let mut sip_call = SipCall::new(call, sip.clone(), rx, advertised, user_of(&request.from.uri))
                            .with_media(media.clone(), request.body.clone());
                        sip_call.manifest = route.manifest.clone();
                        sip_call.live = Some(live_call.clone());
                        let (engine, kv, done, hub) = (engine.clone(), kv.clone(), done_tx.clone(), hub.clone());
                        tokio::spawn(async move {
                            run_flows(&engine, &kv, route, info, Box::new(sip_call), &live_call, &hub).await;
                            let _ = done.send(call);
                        });
                    }
                    Event::Cancelled { call } | Event::HungUp { call } | Event::NoAck { call } | Event::Ended { call } => {
                        if let Some(tx) = live.get(&call) {
                            let _ = tx.send(Signal::CallerGone);
                        }
                    }
                    Event::Dtmf { call, digit, .. } => {
                        if let Some(tx) = live.get(&call) {
                            let _ = tx.send(Signal::Dtmf(digit));
                        }
                    }
                    Event::ReferAnswered { call, code } => {
                        if let Some(tx) = live.get(&call) {
                            let _ = tx.send(Signal::Referred(code));
                        }
                    }
                    Event::AckAnswer { call, sdp } => {
                        if let Some(tx) = live.get(&call) {
                            let _ = tx.send(Signal::AckAnswer(sdp));
                        }
                    }
                    // Outbound-call events go to the dialling call's own channel.
                    Event::Progress { .. } | Event::Answered { .. } | Event::Rejected { .. } => {}
                }
            }
            Some(call) = done_rx.recv() => { live.remove(&call); }
        }
    }
}

/// Signalling-only SDP (media port 9, inactive), until the media engine allocates ports.
fn inactive_sdp(advertised: SocketAddr, session_id: u64) -> Vec<u8> {
    let ip = advertised.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=voxide {session_id} {session_id} IN {family} {ip}\r\ns=voxide\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n"
    )
    .into_bytes()
}

/// The legs to ring for one target: a registered user's contacts, or a SIP URI.
async fn legs_for(
    sip: &SipHandle,
    advertised: SocketAddr,
    target: &str,
    from: &str,
    sdp: &[u8],
) -> Result<Vec<Outbound>, String> {
    let target = target.trim();
    let is_uri = target.contains(':') || target.contains('@');
    if !is_uri {
        let contacts = sip.lookup(target).await;
        if contacts.is_empty() {
            return Err(format!("{target}: not registered"));
        }
        let to = format!("sip:{target}@{advertised}");
        return Ok(contacts
            .into_iter()
            .map(|(uri, peer)| Outbound {
                uri,
                peer,
                from: from.to_owned(),
                to: to.clone(),
                sdp: sdp.to_vec(),
            })
            .collect());
    }
    let (uri, peer) = resolve_uri(target).await?;
    Ok(vec![Outbound { uri: uri.clone(), peer, from: from.to_owned(), to: uri, sdp: sdp.to_vec() }])
}

/// Runs the call's flow — and, when the API redirects the call, the next one — then reports
/// the CDR.
async fn run_flows(
    engine: &FlowEngine,
    kv: &MemoryKv,
    mut route: Route,
    mut info: CallInfo,
    mut call: Box<dyn CallControl>,
    live: &LiveCall,
    hub: &CallHub,
) {
    let mut actions = 0;
    loop {
        info.vars = route.vars.clone();
        let ns = kv.namespace(&route.tenant, &route.name);
        let report = engine.run(&route.flow, info.clone(), call, ns).await;
        actions += report.actions;
        let mut rest = report.call;
        if let Some(next) = live.take_redirect()
            && rest.resume()
        {
            tracing::info!(call = %info.id, from = %route.label, to = %next.label, "call redirected");
            live.set_flow(&next);
            route = next;
            call = rest;
            continue;
        }
        tracing::info!(call = %report.call_id, outcome = %report.outcome, "call ended");
        hub.finish(live, live.record(report.outcome.kind(), report.outcome.to_string(), actions));
        return;
    }
}

/// An outbound call placed through the API.
#[derive(Debug, Clone)]
pub struct Originate {
    pub tenant: String,
    /// A registered user, or a SIP URI (`sip:bob@host:port`).
    pub to: String,
    /// Caller ID presented (the From user); `voxide` by default.
    pub from: Option<String>,
    /// The flow that runs once the called party answers; its vars are the call's vars.
    pub route: Route,
    /// How long to ring before giving up (`no-answer`).
    pub timeout: Duration,
}

/// Places `req`: the INVITE goes out now and the call is listed as ringing; when answered,
/// the route's flow runs on it as an outbound call. A call that never connects still gets
/// a CDR (`busy`, `no-answer`, `failed`).
pub async fn originate(hub: &Arc<CallHub>, req: Originate) -> Result<CallSnapshot, HubError> {
    // Held until the call is registered below, where it starts counting as live.
    let _permit = hub.admit_originate(&req.tenant, &req.to)?;
    let Some(ctx) = hub.sip.get() else {
        return Err(HubError::Unavailable("this node is not taking calls (SIP is off)".into()));
    };
    let caller = req.from.clone().unwrap_or_else(|| "voxide".into());
    let from = format!("sip:{}@{}", user_of(&caller), ctx.advertised);
    let session = match &ctx.media {
        Some(media) => Some(
            media
                .engine
                .open()
                .await
                .map_err(|e| HubError::Unavailable(format!("no media port available: {e}")))?,
        ),
        None => None,
    };
    let sdp = match &session {
        Some(s) => {
            let local = sdp::Local { addr: s.local_addr(), session_id: 1, version: 1 };
            sdp::offer(&local, codecs(), MediaDirection::SendRecv).into_bytes()
        }
        None => inactive_sdp(ctx.advertised, 1),
    };
    let mut outs = legs_for(&ctx.sip, ctx.advertised, &req.to, &from, &sdp)
        .await
        .map_err(HubError::Invalid)?;
    // A registered user with several contacts: the most recent one is called.
    let out = outs.remove(0);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let Some(leg) = ctx.sip.invite(out, events_tx).await else {
        return Err(HubError::Invalid(format!("{}: not a valid SIP target", req.to)));
    };
    let live = hub.start(&req.tenant, "outbound", from.clone(), req.to.clone(), &req.route);
    let (signals_tx, mut signals) = mpsc::unbounded_channel();
    live.set_signals(signals_tx.clone(), ctx.sip.clone(), leg);
    let snapshot = live.snapshot();
    tracing::info!(call = %live.id, to = %req.to, flow = %req.route.label, "placing a call");
    let (hub, sip, advertised) = (hub.clone(), ctx.sip.clone(), ctx.advertised);
    let (engine, kv, media) = (ctx.engine.clone(), ctx.kv.clone(), ctx.media.clone());
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let not_connected = |outcome: &str, detail: String| {
            hub.finish(&live, live.record(outcome, detail, 0));
        };
        let answer = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Answered { sdp, .. }) => break sdp,
                    Some(Event::Rejected { code, reason, .. }) => {
                        let outcome = match leg_end(code) {
                            LegEnd::Busy => "busy",
                            LegEnd::NoAnswer => "no-answer",
                            LegEnd::Failed => "failed",
                        };
                        return not_connected(outcome, format!("{code} {reason}"));
                    }
                    Some(_) => {}
                    None => return not_connected("failed", "the call vanished".into()),
                },
                () = &mut deadline => {
                    sip.send(Command::Hangup(leg)).await;
                    return not_connected("no-answer", format!("no answer within {:?}", req.timeout));
                }
                // Hung up through the API while ringing (the hub cancelled the INVITE).
                _ = signals.recv() => return not_connected("canceled", "hung up before the answer".into()),
            }
        };
        let mut call = SipCall::new(leg, sip, signals, advertised, user_of(&req.to))
            .with_media(media, Vec::new());
        call.answered = true;
        call.manifest = req.route.manifest.clone();
        call.live = Some(live.clone());
        if let Some(session) = session {
            match sdp::parse(&answer)
                .and_then(|a| sdp::accept(&a, codecs(), MediaDirection::SendRecv))
            {
                Ok(negotiated) => {
                    call.caller_codec = Some(negotiated.codec);
                    session.start(negotiated);
                }
                Err(e) => {
                    tracing::warn!(call = %live.id, "the called party's SDP is unusable: {e}")
                }
            }
            live.set_leg(session.link());
            call.session = Some(session);
        }
        live.answered();
        // The dialog's later events reach the flow as signals.
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let signal = match event {
                    Event::HungUp { .. }
                    | Event::Ended { .. }
                    | Event::NoAck { .. }
                    | Event::Cancelled { .. } => Signal::CallerGone,
                    Event::Dtmf { digit, .. } => Signal::Dtmf(digit),
                    Event::ReferAnswered { code, .. } => Signal::Referred(code),
                    _ => continue,
                };
                if signals_tx.send(signal).is_err() {
                    return;
                }
            }
        });
        let info = CallInfo {
            id: CallId(live.id.clone()),
            from,
            to: req.to.clone(),
            direction: Direction::Outbound,
            headers: Vec::new(),
            vars: Vec::new(),
        };
        run_flows(&engine, &kv, req.route, info, Box::new(call), &live, &hub).await;
    });
    Ok(snapshot)
}

/// A call to a registered user with no flow routed: ring their contacts for 30 s and bridge;
/// busy → 486, no answer → 480, anything else → 502, like a PBX extension. Returns the CDR's
/// outcome and detail.
async fn ring_user(mut call: SipCall, user: String) -> (&'static str, String) {
    let opts = DialOptions { timeout_ms: 30_000, caller_id: None, record: false };
    let (outcome, code, reason, detail) = match call.dial(vec![user.clone()], opts).await {
        Ok(DialOutcome::Answered { talk_ms }) => {
            call.hangup().await;
            return ("completed", format!("bridged to {user} for {talk_ms} ms"));
        }
        Err(CallError::Hangup) => {
            call.hangup().await;
            return ("hung-up", format!("the caller hung up while {user} rang or talked"));
        }
        Err(e) => {
            call.hangup().await;
            return ("failed", e.to_string());
        }
        Ok(DialOutcome::Busy) => ("busy", 486, "Busy Here", format!("{user} is busy")),
        Ok(DialOutcome::NoAnswer) => {
            ("no-answer", 480, "Temporarily Unavailable", format!("{user} did not answer"))
        }
        Ok(DialOutcome::Failed(why)) => {
            tracing::info!(call = call.call.0, "call to registered user failed: {why}");
            ("failed", 502, "Bad Gateway", why)
        }
    };
    let _ = call.reject(code, Some(reason.into())).await;
    (outcome, detail)
}

/// A flow's view of a real SIP call.
#[derive(Debug)]
pub struct SipCall {
    call: CallRef,
    sip: SipHandle,
    signals: mpsc::UnboundedReceiver<Signal>,
    hung_up: bool,
    ended: bool,
    answered: bool,
    /// 180 Ringing already sent to the caller.
    ringing: bool,
    /// Digits the caller sent that no gather has taken yet (type-ahead).
    dtmf: VecDeque<char>,
    advertised: SocketAddr,
    /// The caller's user part: the default caller ID of dialled legs.
    caller: String,
    /// The final response to our REFER, once it arrived.
    referred: Option<u16>,
    /// RTP ports, prompts and the recordings directory (None: signalling only).
    media: Option<Arc<MediaServices>>,
    /// The INVITE's SDP offer (empty for an offerless INVITE).
    offer: Vec<u8>,
    /// This call's media leg, once answered (or early media started).
    session: Option<Session>,
    /// The caller's SDP answer from the ACK, not applied yet.
    pending_answer: Option<Vec<u8>>,
    /// The codec the caller's leg negotiated: offered first to dialled legs, so a bridge can
    /// relay packets untouched instead of transcoding.
    caller_codec: Option<Codec>,
    recordings: u32,
    /// The running flow's manifest: what it may do beyond its own call.
    manifest: Arc<Manifest>,
    /// The call as the hub shows it (None for a registered user rung without a flow).
    live: Option<Arc<LiveCall>>,
    /// The caller (or the API) ended the call: `hung_up` stays set across a redirect.
    caller_gone: bool,
    /// The API redirected the call: the running flow sees a hang-up, the next one resumes.
    redirecting: bool,
}

/// What real media needs: the RTP engine, prompts, where recordings go, conference rooms.
#[derive(Debug)]
pub struct MediaServices {
    pub engine: MediaEngine,
    pub prompts: Prompts,
    pub recordings_dir: PathBuf,
    /// Rooms by name; an entry does not keep its room alive.
    rooms: std::sync::Mutex<HashMap<String, WeakRoom>>,
    /// Callers waiting in queues, longest-waiting first.
    queues: std::sync::Mutex<HashMap<String, VecDeque<Waiting>>>,
}

/// A caller waiting in a queue for an agent.
#[derive(Debug)]
struct Waiting {
    leg: LegLink,
    /// Closes when the caller leaves the queue or the conversation (hangs up).
    caller_alive: tokio::sync::oneshot::Receiver<()>,
    matched: tokio::sync::oneshot::Sender<Matched>,
}

/// What a queued caller learns when an agent takes the call.
#[derive(Debug)]
struct Matched {
    /// Closes when the agent's side of the conversation ends.
    agent_alive: tokio::sync::oneshot::Receiver<()>,
}

/// Resolves with a recording once it is finalized.
type RecordingDone = tokio::sync::oneshot::Receiver<
    Result<voxide_media::session::Recorded, voxide_media::wav::WavError>,
>;

/// The longest a caller waits in a queue before `enqueue` returns `err(timeout)`.
const QUEUE_MAX_WAIT: Duration = Duration::from_secs(600);

impl MediaServices {
    pub fn new(engine: MediaEngine, prompts: Prompts, recordings_dir: PathBuf) -> MediaServices {
        MediaServices {
            engine,
            prompts,
            recordings_dir,
            rooms: Default::default(),
            queues: Default::default(),
        }
    }

    fn enqueue(&self, queue: &str, waiting: Waiting) {
        if let Ok(mut queues) = self.queues.lock() {
            queues.entry(queue.to_owned()).or_default().push_back(waiting);
        }
    }

    /// The longest-waiting caller still there, taken off `queue`.
    fn next_caller(&self, queue: &str) -> Option<Waiting> {
        let mut queues = self.queues.lock().ok()?;
        let waiting = queues.get_mut(queue)?;
        while let Some(mut w) = waiting.pop_front() {
            // A caller who hung up has closed the channel: skip them.
            if matches!(
                w.caller_alive.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            ) {
                return Some(w);
            }
        }
        None
    }

    /// The room called `name`, created on first use.
    fn room(&self, name: &str) -> Room {
        let Ok(mut rooms) = self.rooms.lock() else { return Room::new() };
        if let Some(room) = rooms.get(name).and_then(WeakRoom::upgrade) {
            return room;
        }
        // Forget rooms that ended, so names do not pile up.
        rooms.retain(|_, r| r.upgrade().is_some());
        let room = Room::new();
        rooms.insert(name.to_owned(), room.downgrade());
        room
    }
}

/// Codecs we negotiate, in our order of preference (Opus when built with the `opus` feature).
fn codecs() -> &'static [Codec] {
    voxide_media::codec::available()
}

/// The next media event of an optional leg (pending forever without one).
async fn media_event(session: &mut Option<Session>) -> Option<MediaEvent> {
    match session {
        Some(s) => s.next_event().await,
        None => std::future::pending().await,
    }
}

/// How one dialled leg ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegEnd {
    Busy,
    NoAnswer,
    Failed,
}

/// Maps a final response of a dialled leg to a dial outcome (RFC 3261 §21).
fn leg_end(code: u16) -> LegEnd {
    match code {
        486 | 600 | 603 => LegEnd::Busy,
        408 | 480 | 487 => LegEnd::NoAnswer,
        _ => LegEnd::Failed,
    }
}

/// The user part of a SIP URI (`sip:alice@host;x` → `alice`); the input if it has none.
fn user_of(uri: &str) -> String {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let user = rest.split('@').next().unwrap_or(rest);
    user.split(';').next().unwrap_or(user).to_owned()
}

/// A dial target as a SIP URI: where to send the INVITE. Only IP literals and names the
/// system resolver knows (no SRV/NAPTR yet); `;transport=tcp` selects TCP.
async fn resolve_uri(target: &str) -> Result<(String, Peer), String> {
    let uri = target.trim();
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("sips:") {
        return Err(format!("{uri}: sips (TLS) is not supported yet"));
    }
    // The same parse `originate.allow` is checked against: what was allowed is what is dialled.
    let canonical = crate::admission::destination(uri)?;
    let Some(rest) = canonical.strip_prefix("sip:") else {
        return Err(format!("{uri}: not a SIP URI and not a registered user"));
    };
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let transport = if lower.split(';').skip(1).any(|p| p == "transport=tcp") {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let addr = match hostport.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let mut addrs = tokio::net::lookup_host(hostport)
                .await
                .map_err(|e| format!("{uri}: cannot resolve {hostport}: {e}"))?;
            addrs.next().ok_or_else(|| format!("{uri}: {hostport} has no address"))?
        }
    };
    Ok((uri.to_owned(), Peer { addr, transport }))
}

impl SipCall {
    fn new(
        call: CallRef,
        sip: SipHandle,
        signals: mpsc::UnboundedReceiver<Signal>,
        advertised: SocketAddr,
        caller: String,
    ) -> SipCall {
        SipCall {
            call,
            sip,
            signals,
            hung_up: false,
            ended: false,
            answered: false,
            ringing: false,
            dtmf: VecDeque::new(),
            advertised,
            caller,
            referred: None,
            media: None,
            offer: Vec::new(),
            session: None,
            pending_answer: None,
            caller_codec: None,
            recordings: 0,
            manifest: Arc::default(),
            live: None,
            caller_gone: false,
            redirecting: false,
        }
    }

    /// A queue or room name within the call's tenant.
    fn scoped(&self, name: &str) -> String {
        let tenant = self.live.as_ref().map_or("", |l| l.tenant.as_str());
        format!("{tenant}/{name}")
    }

    fn with_media(mut self, media: Option<Arc<MediaServices>>, offer: Vec<u8>) -> SipCall {
        self.media = media;
        self.offer = offer;
        self
    }

    /// Our SDP for this call, opening the media leg first if needed: an answer to the
    /// INVITE's offer (the leg starts at once), or an offer when the INVITE had none (the
    /// leg starts when the ACK brings the answer). Signalling-only calls get an inactive SDP.
    async fn local_sdp(&mut self) -> CallResult<Vec<u8>> {
        let Some(media) = self.media.clone() else { return Ok(self.sdp()) };
        if self.session.is_none() {
            let session = media.engine.open().await.map_err(|e| {
                tracing::warn!(call = self.call.0, "no RTP port: {e}");
                CallError::Failed(format!("no media port available: {e}"))
            })?;
            if let Some(live) = &self.live {
                live.set_leg(session.link());
            }
            self.session = Some(session);
        }
        let Some(session) = &self.session else { return Ok(self.sdp()) };
        let local = sdp::Local { addr: session.local_addr(), session_id: self.call.0, version: 1 };
        if self.offer.is_empty() {
            return Ok(sdp::offer(&local, codecs(), MediaDirection::SendRecv).into_bytes());
        }
        let offer = sdp::parse(&self.offer)
            .map_err(|e| CallError::Failed(format!("the caller's SDP is unusable: {e}")))?;
        let (text, negotiated) = sdp::answer(&offer, &local, codecs(), MediaDirection::SendRecv)
            .map_err(|e| CallError::Failed(format!("media negotiation failed: {e}")))?;
        self.caller_codec = Some(negotiated.codec);
        session.start(negotiated);
        Ok(text.into_bytes())
    }

    /// Applies the caller's SDP answer that came in the ACK.
    fn apply_pending_answer(&mut self) {
        let (Some(sdp), Some(session)) = (self.pending_answer.take(), &self.session) else {
            return;
        };
        match sdp::parse(&sdp).and_then(|a| sdp::accept(&a, codecs(), MediaDirection::SendRecv)) {
            Ok(negotiated) => {
                self.caller_codec = Some(negotiated.codec);
                session.start(negotiated);
            }
            Err(e) => {
                tracing::warn!(call = self.call.0, "the caller's SDP answer is unusable: {e}")
            }
        }
    }

    /// Media before the answer (a prompt or recording on an unanswered call): 183 Session
    /// Progress with our SDP, then the leg plays.
    async fn ensure_media(&mut self) -> CallResult<()> {
        if self.session.is_some() || self.media.is_none() {
            return Ok(());
        }
        let sdp = match self.local_sdp().await {
            Ok(sdp) => sdp,
            Err(e) => return Err(e),
        };
        if !self.answered {
            self.ringing = true;
            self.sip.send(Command::EarlyMedia { call: self.call, sdp }).await;
        }
        Ok(())
    }

    /// The peer stopped sending RTP: end the call (BYE), the flow sees a hang-up.
    async fn media_lost(&mut self) -> CallError {
        tracing::info!(call = self.call.0, "no RTP from the caller: ending the call (RTP timeout)");
        self.hangup().await;
        self.hung_up = true;
        self.caller_gone = true;
        CallError::Hangup
    }

    /// Plays `pcm` to the caller. `Ok(true)` if a digit interrupted it (with `barge_in`).
    /// Signalling-only calls let the prompt's duration pass instead.
    async fn play_pcm(&mut self, pcm: Arc<[i16]>, barge_in: bool) -> CallResult<bool> {
        self.live()?;
        self.ensure_media().await?;
        if barge_in && !self.dtmf.is_empty() {
            return Ok(true);
        }
        // A prompt the API played into the call finishes first.
        if let Some(injected) = self.live.as_ref().and_then(|l| l.take_injected()) {
            let _ = injected.await;
        }
        let ms = pcm.len() as u64 * 1000 / u64::from(prompts::RATE);
        let Some(session) = self.session.take() else {
            return self
                .wait_until(tokio::time::Instant::now() + Duration::from_millis(ms), barge_in)
                .await;
        };
        let mut done = session.play(pcm);
        let mut session = Some(session);
        let result = loop {
            tokio::select! {
                _ = &mut done => break Ok(false),
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break Err(CallError::Hangup);
                    }
                    if barge_in && !self.dtmf.is_empty() {
                        break Ok(true);
                    }
                }
                event = media_event(&mut session) => match event {
                    Some(MediaEvent::Dtmf { digit, .. }) => {
                        self.digit(digit);
                        if barge_in {
                            break Ok(true);
                        }
                    }
                    Some(MediaEvent::RtpTimeout) | None => {
                        self.session = session.take();
                        return Err(self.media_lost().await);
                    }
                },
            }
        };
        if let Some(s) = &session {
            s.stop_play();
        }
        self.session = session;
        self.apply_pending_answer();
        result
    }

    fn live(&mut self) -> CallResult<()> {
        while let Ok(signal) = self.signals.try_recv() {
            self.signal(signal);
        }
        if self.hung_up || self.ended { Err(CallError::Hangup) } else { Ok(()) }
    }

    fn signal(&mut self, signal: Signal) {
        match signal {
            Signal::CallerGone => {
                self.hung_up = true;
                self.caller_gone = true;
            }
            Signal::Redirect => {
                self.hung_up = true;
                self.redirecting = true;
            }
            Signal::Dtmf(digit) => self.digit(digit),
            Signal::Referred(code) => self.referred = Some(code),
            Signal::AckAnswer(sdp) => self.pending_answer = Some(sdp),
        }
    }

    /// A digit from the caller: queued for `gather`, reported as `call.dtmf`.
    fn digit(&mut self, digit: char) {
        self.dtmf.push_back(digit);
        if let Some(live) = &self.live {
            live.event("call.dtmf", serde_json::json!({ "digit": digit.to_string() }));
        }
    }

    /// Lets `ms` pass on the call; ends early with `Hangup` if the caller goes.
    async fn wait(&mut self, ms: u64) -> CallResult<()> {
        self.wait_until(tokio::time::Instant::now() + Duration::from_millis(ms), false)
            .await
            .map(|_| ())
    }

    /// Waits until `deadline` (`Ok(false)`), or with `barge_in` until a digit is waiting
    /// (`Ok(true)`); `Err(Hangup)` as soon as the caller goes.
    async fn wait_until(
        &mut self,
        deadline: tokio::time::Instant,
        barge_in: bool,
    ) -> CallResult<bool> {
        self.live()?;
        let mut session = self.session.take();
        let result = loop {
            if barge_in && !self.dtmf.is_empty() {
                break Ok(true);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break Ok(false),
                signal = self.signals.recv() => {
                    // A closed channel means the dispatcher is gone: treat as the caller gone.
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break Err(CallError::Hangup);
                    }
                }
                event = media_event(&mut session) => match event {
                    Some(MediaEvent::Dtmf { digit, .. }) => self.digit(digit),
                    Some(MediaEvent::RtpTimeout) | None => {
                        self.session = session.take();
                        return Err(self.media_lost().await);
                    }
                },
            }
        };
        self.session = session;
        self.apply_pending_answer();
        result
    }

    /// Speech for `text`: rendered by the TTS engine (cached); signalling-only calls and
    /// machines without TTS get silence of the time the words would take (logged once).
    async fn speech(&mut self, text: &str, voice: Option<&str>) -> CallResult<Arc<[i16]>> {
        self.live()?;
        let silence = |text: &str| -> Arc<[i16]> {
            vec![0i16; (speech_ms(text) * u64::from(prompts::RATE) / 1000) as usize].into()
        };
        let Some(media) = self.media.clone() else { return Ok(silence(text)) };
        match media.prompts.say(text, voice).await {
            Ok(pcm) => Ok(pcm),
            Err(PromptError::NoTts) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!("say(): {}; prompts are silent", PromptError::NoTts)
                });
                Ok(silence(text))
            }
            Err(e) => Err(CallError::Failed(e.to_string())),
        }
    }

    /// `record` on a call with media: the caller's audio to a WAV file under the recordings
    /// directory, with a JSON sidecar (id, call, duration). A hang-up mid-recording finalizes
    /// the file and returns it (the voicemail is kept).
    async fn record_media(
        &mut self,
        media: &MediaServices,
        opts: RecordOptions,
    ) -> CallResult<Recording> {
        self.live()?;
        self.ensure_media().await?;
        self.recordings += 1;
        let id = format!("rec-{}-{}", self.call_id(), self.recordings);
        let dir = &media.recordings_dir;
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            CallError::Failed(format!("recordings directory {}: {e}", dir.display()))
        })?;
        let path = dir.join(format!("{id}.wav"));
        let spec = RecordSpec {
            path,
            max_duration: Duration::from_millis(u64::from(opts.max_duration_ms.max(1))),
            silence_timeout: Duration::from_millis(u64::from(opts.silence_timeout_ms)),
            finish_keys: opts.finish_on_key.clone().unwrap_or_default(),
            stereo: false,
        };
        let Some(session) = self.session.take() else {
            return Err(Self::unavailable("record"));
        };
        let mut done = session.record(spec);
        let mut session = Some(session);
        let mut hung_up = false;
        let result = loop {
            tokio::select! {
                r = &mut done => break r,
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up && !hung_up {
                        // Keep what was said: stop, finalize, and return the recording.
                        hung_up = true;
                        if let Some(s) = &session {
                            s.stop_record();
                        }
                    }
                }
                event = media_event(&mut session), if !hung_up => match event {
                    Some(MediaEvent::Dtmf { digit, .. }) => self.digit(digit),
                    Some(MediaEvent::RtpTimeout) | None => {
                        hung_up = true;
                        if let Some(s) = &session {
                            s.stop_record();
                        }
                    }
                },
            }
        };
        self.session = session;
        let recorded = match result {
            Ok(Ok(recorded)) => recorded,
            Ok(Err(e)) => return Err(CallError::Failed(format!("recording failed: {e}"))),
            Err(_) => {
                return Err(CallError::Failed("recording was lost with the media leg".into()));
            }
        };
        let duration_ms = u32::try_from(recorded.duration_ms).unwrap_or(u32::MAX);
        let sidecar = serde_json::json!({
            "id": id,
            "call": self.call_id(),
            "from": self.caller,
            "duration_ms": duration_ms,
            "ended_by": format!("{:?}", recorded.ended_by),
            "file": format!("{id}.wav"),
        });
        let _ = tokio::fs::write(dir.join(format!("{id}.json")), sidecar.to_string()).await;
        if let Some(live) = &self.live {
            let file = format!("{id}.wav");
            live.recorded(RecordingInfo {
                id: id.clone(),
                file,
                duration_ms: recorded.duration_ms,
                channels: 1,
            });
        }
        tracing::info!(call = self.call.0, recording = %id, duration_ms, "recorded");
        if hung_up && !self.hung_up {
            return Err(self.media_lost().await);
        }
        Ok(Recording { id, duration_ms })
    }

    /// The call's id as the API and CDRs know it.
    fn call_id(&self) -> String {
        self.live.as_ref().map_or_else(|| format!("c{}", self.call.0), |l| l.id.clone())
    }

    fn sdp(&self) -> Vec<u8> {
        inactive_sdp(self.advertised, self.call.0)
    }

    fn unavailable(what: &str) -> CallError {
        CallError::Failed(format!(
            "{what} is not available yet on SIP calls (needs the media engine)"
        ))
    }

    /// The legs to ring for one dial target.
    async fn legs_for(&self, target: &str, from: &str) -> Result<Vec<Outbound>, String> {
        legs_for(&self.sip, self.advertised, target, from, &self.sdp()).await
    }

    /// `dial("queue:NAME")`: an agent takes the longest-waiting caller of a queue (waiting up to
    /// `timeout_ms` for one) and talks to them until either hangs up.
    async fn take_from_queue(&mut self, queue: &str, timeout_ms: u32) -> CallResult<DialOutcome> {
        let Some(media) = self.media.clone() else {
            return Err(Self::unavailable("dial(queue:…)"));
        };
        let key = self.scoped(queue);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        let caller = loop {
            if let Some(caller) = media.next_caller(&key) {
                break caller;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(DialOutcome::NoAnswer);
            }
            let poll = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
            self.wait_until(poll, false).await?;
        };
        self.answer().await?;
        let Some(agent_link) = self.session.as_ref().map(Session::link) else {
            return Err(Self::unavailable("dial(queue:…)"));
        };
        if !bridge_links(&agent_link, &caller.leg) {
            return Ok(DialOutcome::Failed("the caller left the queue".into()));
        }
        let (alive, agent_alive) = tokio::sync::oneshot::channel::<()>();
        if caller.matched.send(Matched { agent_alive }).is_err() {
            unbridge_links(&agent_link, &caller.leg);
            return Ok(DialOutcome::Failed("the caller left the queue".into()));
        }
        tracing::info!(call = self.call.0, "took a caller from queue {queue}");
        let start = tokio::time::Instant::now();
        let mut caller_gone = caller.caller_alive;
        let result = loop {
            tokio::select! {
                _ = &mut caller_gone => {
                    let talk_ms = u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX);
                    break Ok(DialOutcome::Answered { talk_ms });
                }
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break Err(CallError::Hangup);
                    }
                }
            }
        };
        unbridge_links(&agent_link, &caller.leg);
        drop(alive);
        result
    }

    /// Starts the two-channel recording of a bridged `dial` on the caller's leg.
    async fn start_bridge_recording(&mut self) -> Option<(String, RecordingDone)> {
        let media = self.media.clone()?;
        self.recordings += 1;
        let id = format!("rec-{}-{}", self.call_id(), self.recordings);
        if let Err(e) = tokio::fs::create_dir_all(&media.recordings_dir).await {
            tracing::warn!(call = self.call.0, "not recording the bridged call: {e}");
            return None;
        }
        let spec = RecordSpec {
            path: media.recordings_dir.join(format!("{id}.wav")),
            max_duration: Duration::from_secs(4 * 3600),
            silence_timeout: Duration::ZERO,
            finish_keys: String::new(),
            stereo: true,
        };
        Some((id, self.session.as_ref()?.record(spec)))
    }

    async fn finish_bridge_recording(&mut self, id: String, done: RecordingDone) {
        let Some(media) = self.media.clone() else { return };
        match done.await {
            Ok(Ok(recorded)) => {
                let sidecar = serde_json::json!({
                    "id": id,
                    "call": self.call_id(),
                    "from": self.caller,
                    "duration_ms": recorded.duration_ms,
                    "channels": 2,
                    "file": format!("{id}.wav"),
                });
                let path = media.recordings_dir.join(format!("{id}.json"));
                let _ = tokio::fs::write(path, sidecar.to_string()).await;
                if let Some(live) = &self.live {
                    let (file, duration_ms) = (format!("{id}.wav"), recorded.duration_ms);
                    live.recorded(RecordingInfo { id: id.clone(), file, duration_ms, channels: 2 });
                }
                tracing::info!(call = self.call.0, recording = %id, "bridged call recorded");
            }
            Ok(Err(e)) => tracing::warn!(call = self.call.0, "bridged call recording failed: {e}"),
            Err(_) => tracing::warn!(call = self.call.0, "bridged call recording was lost"),
        }
    }

    /// Sends 180 Ringing to the caller once, while unanswered (a dialled leg is ringing).
    async fn ring(&mut self) {
        if !self.answered && !self.ringing {
            self.ringing = true;
            self.sip.send(Command::Ring(self.call)).await;
        }
    }

    /// Hangs up (cancels) every leg in `legs`.
    async fn drop_legs(&self, legs: &mut Vec<CallRef>) {
        for leg in legs.drain(..) {
            self.sip.send(Command::Hangup(leg)).await;
        }
    }

    /// The bridge: waits for either side to hang up. `Ok(talk time)` when the dialled
    /// party hangs up; `Err(Hangup)` (after ending the B-leg) when the caller does.
    async fn bridged(
        &mut self,
        leg: CallRef,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> CallResult<u32> {
        let start = tokio::time::Instant::now();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::HungUp { .. } | Event::Ended { .. } | Event::NoAck { .. }) | None => {
                        let talk = start.elapsed().as_millis();
                        return Ok(u32::try_from(talk).unwrap_or(u32::MAX));
                    }
                    // Digits from the dialled party are not relayed yet (media issue).
                    Some(_) => {}
                },
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        self.sip.send(Command::Hangup(leg)).await;
                        return Err(CallError::Hangup);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl CallControl for SipCall {
    async fn answer(&mut self) -> CallResult<()> {
        self.live()?;
        if !self.answered {
            let sdp = match self.local_sdp().await {
                Ok(sdp) => sdp,
                Err(e) => {
                    // 488 when nothing in the offer is usable (RFC 3264), 503 without ports.
                    let (code, reason) = if matches!(&e, CallError::Failed(m) if m.starts_with("no media port"))
                    {
                        (503, "Service Unavailable")
                    } else {
                        (488, "Not Acceptable Here")
                    };
                    self.ended = true;
                    self.sip
                        .send(Command::Reject { call: self.call, code, reason: reason.into() })
                        .await;
                    return Err(e);
                }
            };
            self.answered = true;
            let (done, answered) = tokio::sync::oneshot::channel();
            // `false`: the caller cancelled (or the call vanished) before our 200 went out.
            if !self.sip.send(Command::Answer { call: self.call, sdp, done }).await
                || !answered.await.unwrap_or(false)
            {
                self.hung_up = true;
                self.caller_gone = true;
                return Err(CallError::Hangup);
            }
            if let Some(live) = &self.live {
                live.answered();
            }
        }
        Ok(())
    }

    async fn reject(&mut self, code: u16, reason: Option<String>) -> CallResult<()> {
        self.live()?;
        if self.answered {
            return Err(CallError::Failed("the call is already answered; use hangup".into()));
        }
        self.ended = true;
        let reason = reason.unwrap_or_else(|| "Rejected".into());
        self.sip.send(Command::Reject { call: self.call, code, reason }).await;
        Ok(())
    }

    async fn say(&mut self, text: String, opts: SayOptions) -> CallResult<()> {
        let pcm = self.speech(&text, opts.voice.as_deref()).await?;
        self.play_pcm(pcm, opts.interruptible).await.map(|_| ())
    }

    async fn play(&mut self, media: String) -> CallResult<()> {
        self.live()?;
        let Some(services) = self.media.clone() else { return self.wait(2000).await };
        let pcm = match self.manifest.check_play(&media).map_err(CallError::Failed)? {
            Some(url) => services.prompts.fetch(&url).await,
            None => services.prompts.play(&media).await,
        }
        .map_err(|e| CallError::Failed(e.to_string()))?;
        self.play_pcm(pcm, false).await.map(|_| ())
    }

    async fn gather(&mut self, opts: GatherOptions) -> CallResult<GatherResult> {
        let ms = |ms: u64| tokio::time::Instant::now() + Duration::from_millis(ms);
        if let Some(prompt) = &opts.prompt {
            // A digit interrupts the prompt (barge-in); digits typed ahead count.
            let pcm = self.speech(prompt, None).await?;
            self.play_pcm(pcm, true).await?;
        }
        let finish = opts.finish_on_key.clone().unwrap_or_default();
        let mut digits = String::new();
        loop {
            while let Some(d) = self.dtmf.pop_front() {
                if finish.contains(d) {
                    return Ok(GatherResult { digits, speech: None, timed_out: false });
                }
                digits.push(d);
                if digits.len() >= opts.max_digits as usize {
                    return Ok(GatherResult { digits, speech: None, timed_out: false });
                }
            }
            let wait =
                if digits.is_empty() { opts.timeout_ms } else { opts.inter_digit_timeout_ms };
            if !self.wait_until(ms(u64::from(wait)), true).await? {
                return Ok(GatherResult { digits, speech: None, timed_out: true });
            }
        }
    }

    async fn record(&mut self, opts: RecordOptions) -> CallResult<Recording> {
        if opts.beep {
            self.play_pcm(prompts::beep(), false).await?;
        }
        if let Some(media) = self.media.clone() {
            return self.record_media(&media, opts).await;
        }
        // Without media the caller is silent: the recording ends at the silence timeout.
        let ms = if opts.silence_timeout_ms > 0 {
            opts.silence_timeout_ms
        } else {
            opts.max_duration_ms
        };
        match self.wait(u64::from(ms.min(opts.max_duration_ms))).await {
            Ok(()) | Err(CallError::Hangup) => {
                Ok(Recording { id: format!("rec-c{}", self.call.0), duration_ms: 0 })
            }
            Err(e) => Err(e),
        }
    }

    async fn dial(&mut self, targets: Vec<String>, opts: DialOptions) -> CallResult<DialOutcome> {
        self.live()?;
        if targets.is_empty() {
            return Err(CallError::InvalidArgument("dial needs at least one target".into()));
        }
        if let [target] = targets.as_slice()
            && let Some(queue) = target.strip_prefix("queue:")
        {
            return self.take_from_queue(queue, opts.timeout_ms).await;
        }
        let caller_id = opts.caller_id.clone().unwrap_or_else(|| self.caller.clone());
        let from = format!("sip:{}@{}", user_of(&caller_id), self.advertised);
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut legs = Vec::new();
        let mut leg_media: HashMap<CallRef, Session> = HashMap::new();
        let mut problems = Vec::new();
        // The caller's codec first: a callee that takes it is relayed without transcoding.
        let offered: Vec<Codec> = self
            .caller_codec
            .into_iter()
            .chain(codecs().iter().copied().filter(|c| Some(*c) != self.caller_codec))
            .collect();
        for target in &targets {
            match self.legs_for(target, &from).await {
                Ok(outs) => {
                    for mut out in outs {
                        // Each leg gets a media leg of its own, offered in its INVITE.
                        let media = match self.media.clone() {
                            Some(m) => match m.engine.open().await {
                                Ok(session) => {
                                    let local = sdp::Local {
                                        addr: session.local_addr(),
                                        session_id: self.call.0,
                                        version: 1,
                                    };
                                    out.sdp =
                                        sdp::offer(&local, &offered, MediaDirection::SendRecv)
                                            .into_bytes();
                                    Some(session)
                                }
                                Err(e) => {
                                    problems.push(format!("{target}: no media port: {e}"));
                                    continue;
                                }
                            },
                            None => None,
                        };
                        match self.sip.invite(out, tx.clone()).await {
                            Some(leg) => {
                                legs.push(leg);
                                if let Some(session) = media {
                                    leg_media.insert(leg, session);
                                }
                            }
                            None => problems.push(format!("{target}: not a valid SIP target")),
                        }
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        drop(tx);
        if legs.is_empty() {
            return Ok(DialOutcome::Failed(problems.join("; ")));
        }
        tracing::info!(call = self.call.0, legs = legs.len(), "dialling {}", targets.join(", "));
        let deadline = tokio::time::sleep(Duration::from_millis(u64::from(opts.timeout_ms)));
        tokio::pin!(deadline);
        let mut ends = Vec::new();
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    match event {
                        Event::Progress { .. } => self.ring().await,
                        Event::Answered { call: leg, sdp: answer } => {
                            legs.retain(|l| *l != leg);
                            self.drop_legs(&mut legs).await;
                            let b_media = leg_media.remove(&leg);
                            drop(leg_media);
                            if let Err(e) = self.answer().await {
                                self.sip.send(Command::Hangup(leg)).await;
                                return Err(e);
                            }
                            // Bridge the media: the callee's answer starts its leg, and the
                            // two legs relay to each other until either side hangs up.
                            if let (Some(b), Some(a)) = (&b_media, &self.session) {
                                match sdp::parse(&answer).and_then(|s| sdp::accept(&s, &offered, MediaDirection::SendRecv)) {
                                    Ok(negotiated) => {
                                        b.start(negotiated);
                                        bridge(a, b);
                                    }
                                    Err(e) => tracing::warn!(call = self.call.0, "dialled party's SDP is unusable: {e}"),
                                }
                            }
                            let party = targets.join(", ");
                            if let Some(live) = &self.live {
                                live.add_leg("dialled", party.clone(), "bridged");
                            }
                            // `record`: both parties, one channel each (caller left).
                            let recording = if opts.record { self.start_bridge_recording().await } else { None };
                            let talk = self.bridged(leg, &mut events).await;
                            if let (Some(b), Some(a)) = (&b_media, &self.session) {
                                unbridge(a, b);
                            }
                            if let Some((id, done)) = recording {
                                if let Some(a) = &self.session {
                                    a.stop_record();
                                }
                                self.finish_bridge_recording(id, done).await;
                            }
                            if let Some(live) = &self.live {
                                live.remove_leg(&party);
                            }
                            return Ok(DialOutcome::Answered { talk_ms: talk? });
                        }
                        Event::Rejected { call: leg, code, reason } => {
                            legs.retain(|l| *l != leg);
                            ends.push(leg_end(code));
                            problems.push(format!("{code} {reason}"));
                            if legs.is_empty() {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                () = &mut deadline => {
                    self.drop_legs(&mut legs).await;
                    return Ok(DialOutcome::NoAnswer);
                }
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        // The caller hung up (or cancelled) while the legs rang: cancel them.
                        self.drop_legs(&mut legs).await;
                        return Err(CallError::Hangup);
                    }
                }
            }
        }
        Ok(if !ends.is_empty() && ends.iter().all(|e| *e == LegEnd::Busy) {
            DialOutcome::Busy
        } else if ends.contains(&LegEnd::NoAnswer) {
            DialOutcome::NoAnswer
        } else {
            DialOutcome::Failed(problems.join("; "))
        })
    }

    async fn enqueue(&mut self, queue: String) -> CallResult<()> {
        self.live()?;
        let Some(media) = self.media.clone() else { return Err(Self::unavailable("enqueue")) };
        if queue.is_empty() || queue.len() > 128 {
            return Err(CallError::InvalidArgument("queue names are 1-128 characters".into()));
        }
        self.answer().await?;
        let Some(link) = self.session.as_ref().map(Session::link) else {
            return Err(Self::unavailable("enqueue"));
        };
        let (alive, caller_alive) = tokio::sync::oneshot::channel::<()>();
        let (matched, mut on_match) = tokio::sync::oneshot::channel();
        media.enqueue(&self.scoped(&queue), Waiting { leg: link, caller_alive, matched });
        tracing::info!(call = self.call.0, "waiting in queue {queue}");
        // Hold music until an agent takes the call (or the wait is too long).
        let hold = match media.prompts.play("hold-music.wav").await {
            Ok(pcm) => pcm,
            Err(_) => prompts::hold_music(),
        };
        let deadline = tokio::time::Instant::now() + QUEUE_MAX_WAIT;
        let agent = loop {
            let Some(session) = self.session.take() else {
                return Err(Self::unavailable("enqueue"));
            };
            let mut done = session.play(hold.clone());
            let mut session = Some(session);
            let outcome = loop {
                tokio::select! {
                    _ = &mut done => break None,
                    m = &mut on_match => break Some(m.map_err(|_| CallError::Failed("the queue went away".into()))),
                    _ = tokio::time::sleep_until(deadline) => break Some(Err(CallError::Timeout)),
                    signal = self.signals.recv() => {
                        self.signal(signal.unwrap_or(Signal::CallerGone));
                        if self.hung_up {
                            break Some(Err(CallError::Hangup));
                        }
                    }
                    event = media_event(&mut session) => match event {
                        Some(MediaEvent::Dtmf { digit, .. }) => self.digit(digit),
                        Some(MediaEvent::RtpTimeout) | None => {
                            self.session = session.take();
                            return Err(self.media_lost().await);
                        }
                    },
                }
            };
            if let Some(s) = &session {
                s.stop_play();
            }
            self.session = session;
            match outcome {
                None => continue, // the hold music ended: play it again
                Some(result) => break result?,
            }
        };
        // Bridged by the agent's side; talk until either side hangs up.
        let mut agent_gone = agent.agent_alive;
        let result = loop {
            tokio::select! {
                _ = &mut agent_gone => break Ok(()),
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break Err(CallError::Hangup);
                    }
                }
            }
        };
        drop(alive);
        result
    }

    async fn conference(&mut self, room: String) -> CallResult<()> {
        self.live()?;
        let Some(media) = self.media.clone() else { return Err(Self::unavailable("conference")) };
        if room.is_empty() || room.len() > 128 {
            return Err(CallError::InvalidArgument("room names are 1-128 characters".into()));
        }
        self.answer().await?;
        let Some(session) = self.session.take() else {
            return Err(Self::unavailable("conference"));
        };
        // Rooms, like queues, are per tenant: another tenant's "support" is another room.
        let room = media.room(&self.scoped(&room));
        let mut done = room.join(&session);
        drop(room);
        tracing::info!(call = self.call.0, "joined conference");
        let mut session = Some(session);
        let result = loop {
            tokio::select! {
                // The others all left (or the room closed): the conference is over for us.
                _ = &mut done => break Ok(()),
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break Err(CallError::Hangup);
                    }
                }
                event = media_event(&mut session) => match event {
                    Some(MediaEvent::Dtmf { digit, .. }) => self.digit(digit),
                    Some(MediaEvent::RtpTimeout) | None => {
                        if let Some(s) = &session {
                            Room::leave(s);
                        }
                        self.session = session.take();
                        return Err(self.media_lost().await);
                    }
                },
            }
        };
        if let Some(s) = &session {
            Room::leave(s);
        }
        self.session = session;
        result
    }

    async fn transfer(&mut self, target: String) -> CallResult<()> {
        self.live()?;
        if !self.answered {
            return Err(CallError::Failed(
                "transfer needs an answered call (REFER is sent in the dialog)".into(),
            ));
        }
        // A registered user (or any bare name) is reached through us: the caller's new
        // INVITE for it comes back here and rings the user's phones.
        let target = target.trim();
        let uri = if target.contains(':') {
            target.to_owned()
        } else if target.is_empty() {
            return Err(CallError::InvalidArgument("transfer needs a target".into()));
        } else {
            format!("sip:{target}@{}", self.advertised)
        };
        self.referred = None;
        let (done, accepted) = tokio::sync::oneshot::channel();
        let command = Command::Refer { call: self.call, target: uri.clone(), done };
        if !self.sip.send(command).await || !accepted.await.unwrap_or(false) {
            return Err(CallError::InvalidArgument(format!("cannot transfer to {uri:?}")));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(35);
        while self.referred.is_none() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        return Err(CallError::Hangup);
                    }
                }
            }
        }
        match self.referred {
            // Accepted: the caller calls the target; this flow is done with the call.
            Some(code) if (200..300).contains(&code) => {
                tracing::info!(call = self.call.0, "transferred to {uri}");
                self.hangup().await;
                Ok(())
            }
            Some(code) => {
                Err(CallError::Failed(format!("the caller refused the transfer ({code})")))
            }
            None => Err(CallError::Failed("no answer to the transfer request".into())),
        }
    }

    async fn send_dtmf(&mut self, digits: String) -> CallResult<()> {
        self.live()?;
        self.ensure_media().await?;
        let Some(session) = &self.session else { return Err(Self::unavailable("send-dtmf")) };
        drop(session.send_dtmf(&digits));
        // The events go out 200 ms apart; the caller hanging up ends the wait.
        self.wait(200 * digits.len() as u64 + 200).await
    }

    async fn pause(&mut self, ms: u32) -> CallResult<()> {
        self.wait(u64::from(ms)).await
    }

    fn set_var(&mut self, key: String, value: String) {
        tracing::debug!(call = self.call.0, "set-var {key}={value}");
    }

    async fn hangup(&mut self) {
        if !self.ended {
            self.ended = true;
            self.sip.send(Command::Hangup(self.call)).await;
        }
    }

    async fn end(&mut self, fault: bool) {
        if self.ended || self.hung_up {
            return;
        }
        self.ended = true;
        // A flow that ends without answering: 480 if it simply returned, 500 if it failed;
        // never 603, which would stop a proxy from trying other destinations.
        let command = match (self.answered, fault) {
            (true, _) => Command::Hangup(self.call),
            (false, false) => Command::Reject {
                call: self.call,
                code: 480,
                reason: "Temporarily Unavailable".into(),
            },
            (false, true) => Command::Reject {
                call: self.call,
                code: 500,
                reason: "Server Internal Error".into(),
            },
        };
        self.sip.send(command).await;
    }

    fn emit(&mut self, event: FlowEvent) {
        tracing::info!(call = self.call.0, event = %event.name, payload = %event.payload, "flow event");
        if let Some(live) = &self.live {
            live.event(
                "flow.event",
                serde_json::json!({ "name": event.name, "payload": event.payload }),
            );
        }
    }

    fn resume(&mut self) -> bool {
        if !self.redirecting {
            return false;
        }
        while let Ok(signal) = self.signals.try_recv() {
            self.signal(signal);
        }
        self.redirecting = false;
        self.hung_up = self.caller_gone;
        !self.hung_up && !self.ended
    }

    fn log(&mut self, _level: LogLevel, _message: &str) {}

    fn caller_hung_up(&self) -> bool {
        self.hung_up
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_weights_split_rolls_in_proportion() {
        assert_eq!(weighted_index(&[], 7), None);
        assert_eq!(weighted_index(&[0, 0], 7), Some(0));
        assert_eq!(weighted_index(&[100], 12345), Some(0));
        let mut counts = [0u32; 2];
        for roll in 0..1000 {
            counts[weighted_index(&[90, 10], roll).unwrap()] += 1;
        }
        assert_eq!(counts, [900, 100]);
        // A zero-weight target never gets a call.
        assert!((0..1000).all(|roll| weighted_index(&[0, 5, 5], roll) != Some(0)));
    }

    #[test]
    fn request_user_of_common_uris() {
        let m = |uri: &str| {
            voxide_sip::parse(
                format!(
                    "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
                     To: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(request_user(&m("sip:hello@127.0.0.1:5060")).as_deref(), Some("hello"));
        assert_eq!(request_user(&m("sip:+15550100;npdi@pbx.test")).as_deref(), Some("+15550100"));
        assert_eq!(request_user(&m("tel:+15550100")).as_deref(), Some("+15550100"));
        assert_eq!(request_user(&m("sip:pbx.test")), None);
    }
}
