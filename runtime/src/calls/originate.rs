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
    let (signals_tx, mut signals) = signals::channel();
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
                if !signals_tx.send(signal) {
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
