//! `SipCall`: the `CallControl` of a real SIP call — answer, prompts, digits, recording — and
//! the dispatch of the verbs implemented beside it (`dial`, `transfer`: dial.rs; `enqueue`,
//! `conference`: rendezvous.rs).

use super::*;
use crate::call::{ListenOptions, SpeakOptions, Spoken, Utterance};

impl SipCall {
    pub(super) fn new(
        call: CallRef,
        sip: SipHandle,
        signals: Signals,
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
            bridged_at: None,
        }
    }

    /// A queue or room name within the call's tenant.
    pub(super) fn scoped(&self, name: &str) -> String {
        let tenant = self.live.as_ref().map_or("", |l| l.tenant.as_str());
        format!("{tenant}/{name}")
    }

    pub(super) fn with_media(
        mut self,
        media: Option<Arc<MediaServices>>,
        offer: Vec<u8>,
    ) -> SipCall {
        self.media = media;
        self.offer = offer;
        self
    }

    /// Our SDP for this call, opening the media leg first if needed: an answer to the
    /// INVITE's offer (the leg starts at once), or an offer when the INVITE had none (the
    /// leg starts when the ACK brings the answer). Signalling-only calls get an inactive SDP.
    pub(super) async fn local_sdp(&mut self) -> Result<Vec<u8>, SdpError> {
        let Some(media) = self.media.clone() else { return Ok(self.sdp()) };
        if self.session.is_none() {
            let session = media.engine.open().await.map_err(|e| {
                tracing::warn!(call = self.call.0, "no RTP port: {e}");
                SdpError::NoPort(format!("no media port available: {e}"))
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
            .map_err(|e| SdpError::Unusable(format!("the caller's SDP is unusable: {e}")))?;
        let (text, negotiated) = sdp::answer(&offer, &local, codecs(), MediaDirection::SendRecv)
            .map_err(|e| SdpError::Unusable(format!("media negotiation failed: {e}")))?;
        self.caller_codec = Some(negotiated.codec);
        session.start(negotiated);
        Ok(text.into_bytes())
    }

    /// Applies the caller's SDP answer that came in the ACK.
    pub(super) fn apply_pending_answer(&mut self) {
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
    pub(super) async fn ensure_media(&mut self) -> CallResult<()> {
        if self.session.is_some() || self.media.is_none() {
            return Ok(());
        }
        let sdp = self.local_sdp().await?;
        if !self.answered {
            self.ringing = true;
            self.sip.send(Command::EarlyMedia { call: self.call, sdp }).await;
        }
        Ok(())
    }

    /// The peer stopped sending RTP: end the call (BYE), the flow sees a hang-up.
    pub(super) async fn media_lost(&mut self) -> CallError {
        tracing::info!(call = self.call.0, "no RTP from the caller: ending the call (RTP timeout)");
        self.hangup().await;
        self.hung_up = true;
        self.caller_gone = true;
        CallError::Hangup
    }

    /// Plays `pcm` to the caller. `Ok(true)` if a digit interrupted it (with `barge_in`).
    /// Signalling-only calls let the prompt's duration pass instead.
    pub(super) async fn play_pcm(&mut self, pcm: Arc<[i16]>, barge_in: bool) -> CallResult<bool> {
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
                wake = self.next_event(&mut session) => match wake {
                    Wake::Gone => break Err(CallError::Hangup),
                    Wake::MediaLost => return Err(CallError::Hangup),
                    Wake::Digit | Wake::Signal if barge_in && !self.dtmf.is_empty() => {
                        break Ok(true);
                    }
                    Wake::Digit | Wake::Signal => {}
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

    pub(super) fn live(&mut self) -> CallResult<()> {
        while let Some(signal) = self.signals.try_recv() {
            self.signal(signal);
        }
        if self.hung_up || self.ended { Err(CallError::Hangup) } else { Ok(()) }
    }

    pub(super) fn signal(&mut self, signal: Signal) {
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

    /// The next thing that happens to the call while a verb waits on it with its media leg
    /// taken out as `session`: a signal (applied), or a media event of `session` (a digit is
    /// queued). When the leg has ended (RTP timeout), the leg is put back, the call is hung up
    /// and `MediaLost` is returned: the verb then returns `Hangup`.
    pub(super) async fn next_event(&mut self, session: &mut Option<Session>) -> Wake {
        tokio::select! {
            signal = self.signals.recv() => {
                // A closed channel means the dispatcher is gone: treat as the caller gone.
                self.signal(signal.unwrap_or(Signal::CallerGone));
                if self.hung_up { Wake::Gone } else { Wake::Signal }
            }
            event = media_event(session) => match event {
                Some(MediaEvent::Dtmf { digit, .. }) => {
                    self.digit(digit);
                    Wake::Digit
                }
                Some(MediaEvent::RtpTimeout) | None => {
                    self.session = session.take();
                    self.media_lost().await;
                    Wake::MediaLost
                }
            },
        }
    }

    /// A digit from the caller: queued for `gather`, reported as `call.dtmf`.
    pub(super) fn digit(&mut self, digit: char) {
        self.dtmf.push_back(digit);
        if let Some(live) = &self.live {
            live.event("call.dtmf", serde_json::json!({ "digit": digit.to_string() }));
        }
    }

    /// Lets `ms` pass on the call; ends early with `Hangup` if the caller goes.
    pub(super) async fn wait(&mut self, ms: u64) -> CallResult<()> {
        self.wait_until(tokio::time::Instant::now() + Duration::from_millis(ms), false)
            .await
            .map(|_| ())
    }

    /// Waits until `deadline` (`Ok(false)`), or with `barge_in` until a digit is waiting
    /// (`Ok(true)`); `Err(Hangup)` as soon as the caller goes.
    pub(super) async fn wait_until(
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
                wake = self.next_event(&mut session) => match wake {
                    Wake::Gone => break Err(CallError::Hangup),
                    Wake::MediaLost => return Err(CallError::Hangup),
                    Wake::Digit | Wake::Signal => {}
                },
            }
        };
        self.session = session;
        self.apply_pending_answer();
        result
    }

    /// Answering-machine detection on what the callee says from now on. A call without media
    /// has nothing to analyse: `NotSure` at once. `Err(Hangup)` if the callee goes first.
    pub(super) async fn detect_machine(
        &mut self,
        spec: voxide_media::amd::AmdSpec,
    ) -> CallResult<voxide_media::amd::Detection> {
        use voxide_media::amd::{Detection, Verdict};
        self.live()?;
        let unsure = |reason| Detection {
            verdict: Verdict::NotSure,
            reason,
            decided_ms: 0,
            greeting_end_ms: None,
            words: 0,
            voiced_ms: 0,
        };
        let Some(s) = self.session.as_ref() else { return Ok(unsure("no-media")) };
        let mut done = s.detect(spec);
        let mut session = self.session.take();
        let result = loop {
            tokio::select! {
                verdict = &mut done => break Ok(verdict.unwrap_or_else(|_| unsure("call-ended"))),
                wake = self.next_event(&mut session) => match wake {
                    Wake::Gone => break Err(CallError::Hangup),
                    Wake::MediaLost => return Err(CallError::Hangup),
                    Wake::Digit | Wake::Signal => {}
                },
            }
        };
        self.session = session;
        result
    }

    /// Speech for `text`: rendered by the TTS engine (cached); signalling-only calls and
    /// machines without TTS get silence of the time the words would take (logged once).
    pub(super) async fn speech(
        &mut self,
        text: &str,
        voice: Option<&str>,
    ) -> CallResult<Arc<[i16]>> {
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
    pub(super) async fn record_media(
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
    pub(super) fn call_id(&self) -> String {
        self.live.as_ref().map_or_else(|| format!("c{}", self.call.0), |l| l.id.clone())
    }

    pub(super) fn sdp(&self) -> Vec<u8> {
        inactive_sdp(self.advertised, self.call.0)
    }

    pub(super) fn unavailable(what: &str) -> CallError {
        CallError::Failed(format!(
            "{what} is not available yet on SIP calls (needs the media engine)"
        ))
    }

    /// The legs to ring for one dial target.
    pub(super) async fn legs_for(&self, target: &str, from: &str) -> Result<Vec<Outbound>, String> {
        legs_for(&self.sip, self.advertised, target, from, &self.sdp()).await
    }
}

/// What woke a verb waiting on its call ([`SipCall::next_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// The caller left, or the API ended or redirected the call.
    Gone,
    /// A signal was applied (a SIP INFO digit, the ACK's answer, a REFER response).
    Signal,
    /// A digit arrived in the media (RFC 4733 or in-band), queued for `gather`.
    Digit,
    /// The media leg ended (no RTP): the call has been hung up.
    MediaLost,
}

/// Why a call has no SDP of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SdpError {
    /// No RTP port pair is free.
    NoPort(String),
    /// Nothing in the caller's offer is usable.
    Unusable(String),
}

impl SdpError {
    /// The final response refusing the call: 503 without ports, 488 when nothing in the
    /// offer is usable (RFC 3264).
    fn response(&self) -> (u16, &'static str) {
        match self {
            SdpError::NoPort(_) => (503, "Service Unavailable"),
            SdpError::Unusable(_) => (488, "Not Acceptable Here"),
        }
    }
}

impl From<SdpError> for CallError {
    fn from(e: SdpError) -> CallError {
        match e {
            SdpError::NoPort(m) | SdpError::Unusable(m) => CallError::Failed(m),
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
                    let (code, reason) = e.response();
                    self.ended = true;
                    self.sip
                        .send(Command::Reject { call: self.call, code, reason: reason.into() })
                        .await;
                    return Err(e.into());
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
        // `speech: true` listens (open vocabulary) through the same path as `listen`; a key
        // press ends that and the digits are collected as usual. Without a recognizer the
        // flag is ignored, as the WIT says.
        let recognizer = self.media.as_ref().is_some_and(|m| m.speech.is_ok());
        if opts.speech && recognizer && self.dtmf.is_empty() {
            let listen = ListenOptions {
                no_input_ms: opts.timeout_ms.clamp(100, 60_000),
                ..ListenOptions::default()
            };
            match self.listen_turn(listen).await? {
                None => {
                    return Ok(GatherResult {
                        digits: String::new(),
                        speech: None,
                        timed_out: true,
                    });
                }
                Some(u) if u.digits.is_empty() => {
                    return Ok(GatherResult {
                        digits: String::new(),
                        speech: Some(u.text),
                        timed_out: false,
                    });
                }
                Some(u) => u.digits.chars().rev().for_each(|d| self.dtmf.push_front(d)),
            }
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
        self.dial_targets(targets, opts).await
    }

    async fn enqueue(&mut self, queue: String) -> CallResult<()> {
        self.wait_in_queue(queue).await
    }

    async fn conference(&mut self, room: String) -> CallResult<()> {
        self.join_room(room).await
    }

    async fn transfer(&mut self, target: String) -> CallResult<()> {
        self.refer(target).await
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

    async fn listen(&mut self, opts: ListenOptions) -> CallResult<Option<Utterance>> {
        self.listen_turn(opts).await
    }

    async fn speak(&mut self, text: String, opts: SpeakOptions) -> CallResult<Spoken> {
        self.speak_text(text, opts).await
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
        while let Some(signal) = self.signals.try_recv() {
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
