//! Calls placed through the API: admitted, INVITEd, listed as ringing, and run on a flow once
//! answered; a call that never connects still gets its CDR.

use super::*;

/// What placing calls from the API needs: set by [`serve`] on its hub.
#[derive(Debug)]
pub(crate) struct Originator {
    pub(super) engine: FlowEngine,
    pub(super) sip: SipHandle,
    pub(super) advertised: SocketAddr,
    pub(crate) media: Option<Arc<MediaServices>>,
    pub(super) kv: MemoryKv,
}

impl Originator {
    /// The SIP task (registrations, dialogs).
    pub(crate) fn sip(&self) -> &SipHandle {
        &self.sip
    }
}

/// Signalling-only SDP (media port 9, inactive), until the media engine allocates ports.
pub(super) fn inactive_sdp(advertised: SocketAddr, session_id: u64) -> Vec<u8> {
    let ip = advertised.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=voxide {session_id} {session_id} IN {family} {ip}\r\ns=voxide\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n"
    )
    .into_bytes()
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
    let route = req.route.clone();
    let ringing = place(hub, &req.tenant, &req.to, req.from.as_deref(), |from, to| {
        hub.start(&req.tenant, "outbound", from, to, &route)
    })
    .await?;
    let snapshot = ringing.live.snapshot();
    tracing::info!(call = %ringing.live.id, to = %req.to, flow = %req.route.label, "placing a call");
    let (hub, engine, kv) = (hub.clone(), ringing.ctx.engine.clone(), ringing.ctx.kv.clone());
    tokio::spawn(async move {
        let live = ringing.live.clone();
        let from = ringing.from.clone();
        let call = match ringing.answered(req.timeout).await {
            Ok(call) => call,
            Err((outcome, detail)) => return hub.finish(&live, live.record(outcome, detail, 0)),
        };
        let handle = Handoff { engine: &engine, kv: &kv, hub: &hub, live: &live };
        handle.run(req.route, call, from, req.to).await;
    });
    Ok(snapshot)
}

/// What running a flow on an answered outbound call needs.
pub(super) struct Handoff<'a> {
    pub(super) engine: &'a FlowEngine,
    pub(super) kv: &'a MemoryKv,
    pub(super) hub: &'a CallHub,
    pub(super) live: &'a LiveCall,
}

impl Handoff<'_> {
    /// Runs `route`'s flow on the answered `call` (from us at `from` to `to`) until it ends;
    /// the CDR is written; returns how it ended.
    pub(super) async fn run(
        self,
        route: Route,
        mut call: SipCall,
        from: String,
        to: String,
    ) -> String {
        call.manifest = route.manifest.clone();
        let info = CallInfo {
            id: CallId(self.live.id.clone()),
            from,
            to,
            direction: Direction::Outbound,
            headers: Vec::new(),
            vars: Vec::new(),
        };
        run_flows(self.engine, self.kv, route, info, Box::new(call), self.live, self.hub).await
    }
}

/// An outbound call whose INVITE is out: listed as ringing, waiting for its answer.
pub(super) struct Ringing {
    pub(super) live: Arc<LiveCall>,
    /// Our From URI.
    pub(super) from: String,
    pub(super) ctx: OriginatorHandle,
    leg: CallRef,
    events: mpsc::UnboundedReceiver<Event>,
    signals: Signals,
    signals_tx: SignalSender,
    session: Option<Session>,
    to_user: String,
}

/// What the node placing a call needs from the hub's originator.
#[derive(Clone)]
pub(super) struct OriginatorHandle {
    pub(super) engine: FlowEngine,
    pub(super) kv: MemoryKv,
    sip: SipHandle,
    advertised: SocketAddr,
    media: Option<Arc<MediaServices>>,
}

/// Admits and INVITEs `to` (a registered user or a SIP URI) as `caller` (`voxide` by
/// default); `register` lists the call (given our From URI and `to`) once the INVITE is out.
pub(super) async fn place(
    hub: &Arc<CallHub>,
    tenant: &str,
    to: &str,
    caller: Option<&str>,
    register: impl FnOnce(String, String) -> Arc<LiveCall>,
) -> Result<Ringing, HubError> {
    // Held until the call is registered below, where it starts counting as live.
    let _permit = hub.admit_originate(tenant, to)?;
    let Some(ctx) = hub.sip.get() else {
        return Err(HubError::Unavailable("this node is not taking calls (SIP is off)".into()));
    };
    let from = format!("sip:{}@{}", user_of(caller.unwrap_or("voxide")), ctx.advertised);
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
    let mut outs =
        legs_for(&ctx.sip, ctx.advertised, to, &from, &sdp).await.map_err(HubError::Invalid)?;
    // A registered user with several contacts: the most recent one is called.
    let out = outs.remove(0);
    let (events_tx, events) = mpsc::unbounded_channel();
    let Some(leg) = ctx.sip.invite(out, events_tx).await else {
        return Err(HubError::Invalid(format!("{to}: not a valid SIP target")));
    };
    let live = register(from.clone(), to.to_owned());
    let (signals_tx, signals) = signals::channel();
    live.set_signals(signals_tx.clone(), ctx.sip.clone(), leg);
    let ctx = OriginatorHandle {
        engine: ctx.engine.clone(),
        kv: ctx.kv.clone(),
        sip: ctx.sip.clone(),
        advertised: ctx.advertised,
        media: ctx.media.clone(),
    };
    Ok(Ringing { live, from, ctx, leg, events, signals, signals_tx, session, to_user: user_of(to) })
}

impl Ringing {
    /// Waits up to `timeout` for the answer. Answered: the call with its media started and
    /// the dialog's later events forwarded as signals. Not: the CDR outcome (`busy`,
    /// `no-answer`, `failed`, `canceled`) and its detail.
    pub(super) async fn answered(
        mut self,
        timeout: Duration,
    ) -> Result<SipCall, (&'static str, String)> {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let answer = loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Event::Answered { sdp, .. }) => break sdp,
                    Some(Event::Rejected { code, reason, .. }) => {
                        let outcome = match leg_end(code) {
                            LegEnd::Busy => "busy",
                            LegEnd::NoAnswer => "no-answer",
                            LegEnd::Failed => "failed",
                        };
                        return Err((outcome, format!("{code} {reason}")));
                    }
                    Some(_) => {}
                    None => return Err(("failed", "the call vanished".into())),
                },
                () = &mut deadline => {
                    self.ctx.sip.send(Command::Hangup(self.leg)).await;
                    return Err(("no-answer", format!("no answer within {timeout:?}")));
                }
                // Hung up through the API while ringing (the hub cancelled the INVITE).
                _ = self.signals.recv() => return Err(("canceled", "hung up before the answer".into())),
            }
        };
        let Ringing { live, ctx, leg, mut events, signals, signals_tx, session, to_user, .. } =
            self;
        let mut call = SipCall::new(leg, ctx.sip, signals, ctx.advertised, to_user)
            .with_media(ctx.media, Vec::new());
        call.answered = true;
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
        // The dialog's later events reach the call as signals.
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
                if !signals_tx.send(signal) {
                    return;
                }
            }
        });
        Ok(call)
    }
}

impl CallHub {
    /// The engine this node's calls run flows on (None while SIP is off).
    pub fn flow_engine(&self) -> Option<FlowEngine> {
        self.sip.get().map(|o| o.engine.clone())
    }
}
