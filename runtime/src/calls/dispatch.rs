//! The call dispatcher: every SIP event of the node arrives here. A new INVITE is routed
//! (exact route, then a registered user, then prefix and catch-all routes; else 404) and gets
//! a task of its own; later events of a call go to that task's signal channel.

use super::*;

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
    let mut live: HashMap<CallRef, SignalSender> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallRef>();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                match event {
                    Event::Incoming { call, request, peer } => {
                        let user = request_user(&request).unwrap_or_default();
                        let (tx, rx) = signals::channel();
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
                            tx.send(Signal::CallerGone);
                        }
                    }
                    Event::Dtmf { call, digit, .. } => {
                        if let Some(tx) = live.get(&call) {
                            tx.send(Signal::Dtmf(digit));
                        }
                    }
                    Event::ReferAnswered { call, code } => {
                        if let Some(tx) = live.get(&call) {
                            tx.send(Signal::Referred(code));
                        }
                    }
                    Event::AckAnswer { call, sdp } => {
                        if let Some(tx) = live.get(&call) {
                            tx.send(Signal::AckAnswer(sdp));
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

/// Runs the call's flow — and, when the API redirects the call, the next one — then reports
/// the CDR.
pub(super) async fn run_flows(
    engine: &FlowEngine,
    kv: &MemoryKv,
    mut route: Route,
    mut info: CallInfo,
    mut call: Box<dyn CallControl>,
    live: &LiveCall,
    hub: &CallHub,
) -> String {
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
        let outcome = report.outcome.to_string();
        hub.finish(live, live.record(report.outcome.kind(), outcome.clone(), actions));
        return outcome;
    }
}
