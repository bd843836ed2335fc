//! `dial` as a B2BUA: every target INVITEd at once (a registered user's contacts, or SIP URIs),
//! each with a media leg of its own; the first answer is bridged, the rest cancelled; final
//! responses map to dial outcomes. Also `transfer` (REFER) and calls to registered users
//! with no flow.

use super::*;

/// The legs to ring for one target: a registered user's contacts, or a SIP URI.
pub(super) async fn legs_for(
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

/// A call to a registered user with no flow routed: ring their contacts for 30 s and bridge;
/// busy → 486, no answer → 480, anything else → 502, like a PBX extension. Returns the CDR's
/// outcome and detail.
pub(super) async fn ring_user(mut call: SipCall, user: String) -> (&'static str, String) {
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

/// How one dialled leg ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegEnd {
    Busy,
    NoAnswer,
    Failed,
}

/// Maps a final response of a dialled leg to a dial outcome (RFC 3261 §21).
pub(super) fn leg_end(code: u16) -> LegEnd {
    match code {
        486 | 600 | 603 => LegEnd::Busy,
        408 | 480 | 487 => LegEnd::NoAnswer,
        _ => LegEnd::Failed,
    }
}

/// A dial target as a SIP URI: where to send the INVITE. Only IP literals and names the
/// system resolver knows (no SRV/NAPTR yet); `;transport=tcp` selects TCP.
pub(super) async fn resolve_uri(target: &str) -> Result<(String, Peer), String> {
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
    /// `dial`: the B2BUA (or `queue:NAME`, an agent taking a caller).
    pub(super) async fn dial_targets(
        &mut self,
        targets: Vec<String>,
        opts: DialOptions,
    ) -> CallResult<DialOutcome> {
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
                            self.bridged_at = Some(std::time::Instant::now());
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

    /// Starts the two-channel recording of a bridged `dial` on the caller's leg.
    pub(super) async fn start_bridge_recording(&mut self) -> Option<(String, RecordingDone)> {
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

    pub(super) async fn finish_bridge_recording(&mut self, id: String, done: RecordingDone) {
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
    pub(super) async fn ring(&mut self) {
        if !self.answered && !self.ringing {
            self.ringing = true;
            self.sip.send(Command::Ring(self.call)).await;
        }
    }

    /// Hangs up (cancels) every leg in `legs`.
    pub(super) async fn drop_legs(&self, legs: &mut Vec<CallRef>) {
        for leg in legs.drain(..) {
            self.sip.send(Command::Hangup(leg)).await;
        }
    }

    /// The bridge: waits for either side to hang up. `Ok(talk time)` when the dialled
    /// party hangs up; `Err(Hangup)` (after ending the B-leg) when the caller does.
    pub(super) async fn bridged(
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
    /// `transfer`: a blind transfer by REFER in the caller's dialog.
    pub(super) async fn refer(&mut self, target: String) -> CallResult<()> {
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
}
