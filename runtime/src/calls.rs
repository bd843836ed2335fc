//! Calls: the only module that composes SIP, flows and (later) media.
//!
//! The SIP task reports call events; [`serve`] routes each new INVITE to a flow by the
//! Request-URI user, and runs the flow in a task of its own against a [`SipCall`] — the
//! [`CallControl`] implementation for real SIP calls. Unknown numbers get `404`.
//!
//! Until the media engine lands, a SIP call has signalling only: `answer` sends `200 OK` with
//! a minimal SDP, prompts take the time they would take to play, `gather` hears no digits,
//! `record` hears silence; dial/enqueue/conference/transfer/send-dtmf fail with a clear
//! `failed("…not available yet…")` error instead of pretending.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use voxide_sip::message::{Message, StartLine};
use voxide_sip::shell::{Command, SipHandle};
use voxide_sip::ua::{CallRef, Event};

use crate::call::{
    CallControl, CallError, CallId, CallInfo, CallResult, DialOptions, DialOutcome, Direction,
    FlowEvent, GatherOptions, GatherResult, LogLevel, RecordOptions, Recording, SayOptions,
};
use crate::flows::{Flow, FlowEngine};
use crate::kv::MemoryKv;
use crate::sim::speech_ms;

/// One routing rule: a called number / Request-URI user to a flow.
#[derive(Debug, Clone)]
pub struct Route {
    /// Exact user, or a prefix ending in `*` (`+1555*`), or `*` for everything.
    pub pattern: String,
    /// Name used for logs and the flow's KV namespace.
    pub name: String,
    pub flow: Flow,
    pub vars: Vec<(String, String)>,
}

/// Routes in priority order: the first match wins.
#[derive(Debug, Clone, Default)]
pub struct Router {
    pub routes: Vec<Route>,
}

impl Router {
    pub fn lookup(&self, user: &str) -> Option<&Route> {
        self.routes.iter().find(|r| match r.pattern.strip_suffix('*') {
            Some(prefix) => user.starts_with(prefix),
            None => r.pattern == user,
        })
    }
}

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

/// Signals from the SIP task to one call's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    CallerGone,
}

/// Runs calls until the SIP event channel closes.
pub async fn serve(
    engine: FlowEngine,
    router: Arc<Router>,
    sip: SipHandle,
    mut events: mpsc::UnboundedReceiver<Event>,
    kv: MemoryKv,
    media_ip: IpAddr,
) {
    let mut live: HashMap<CallRef, mpsc::Sender<Signal>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallRef>();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                match event {
                    Event::Incoming { call, request, peer } => {
                        let user = request_user(&request).unwrap_or_default();
                        let Some(route) = router.lookup(&user).cloned() else {
                            tracing::info!(call = call.0, "no route for {user:?}: 404");
                            sip.send(Command::Reject { call, code: 404, reason: "Not Found".into() }).await;
                            continue;
                        };
                        let (tx, rx) = mpsc::channel(4);
                        live.insert(call, tx);
                        let info = CallInfo {
                            id: CallId(format!("c{}", call.0)),
                            from: request.from.uri.clone(),
                            to: user,
                            direction: Direction::Inbound,
                            headers: request.headers.iter().filter(|h| matches!(h.name, voxide_sip::message::HeaderName::Other(_)))
                                .map(|h| (h.name.as_str().to_owned(), h.value.clone())).collect(),
                            vars: route.vars.clone(),
                        };
                        tracing::info!(call = %info.id, flow = %route.name, peer = %peer.addr, "incoming call");
                        let sip_call = SipCall { call, sip: sip.clone(), signals: rx, hung_up: false, ended: false, answered: false, media_ip };
                        let (engine, kv, done) = (engine.clone(), kv.namespace("local", &route.name), done_tx.clone());
                        tokio::spawn(async move {
                            let report = engine.run(&route.flow, info, Box::new(sip_call), kv).await;
                            tracing::info!(call = %report.call_id, outcome = %report.outcome, "call ended");
                            let _ = done.send(call);
                        });
                    }
                    Event::Cancelled { call } | Event::HungUp { call } | Event::NoAck { call } | Event::Ended { call } => {
                        if let Some(tx) = live.get(&call) {
                            let _ = tx.try_send(Signal::CallerGone);
                        }
                    }
                }
            }
            Some(call) = done_rx.recv() => { live.remove(&call); }
        }
    }
}

/// A flow's view of a real SIP call.
#[derive(Debug)]
pub struct SipCall {
    call: CallRef,
    sip: SipHandle,
    signals: mpsc::Receiver<Signal>,
    hung_up: bool,
    ended: bool,
    answered: bool,
    media_ip: IpAddr,
}

impl SipCall {
    fn live(&mut self) -> CallResult<()> {
        while let Ok(Signal::CallerGone) = self.signals.try_recv() {
            self.hung_up = true;
        }
        if self.hung_up || self.ended { Err(CallError::Hangup) } else { Ok(()) }
    }

    /// Lets `ms` pass on the call; ends early with `Hangup` if the caller goes.
    async fn wait(&mut self, ms: u64) -> CallResult<()> {
        self.live()?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
            signal = self.signals.recv() => {
                // A closed channel means the dispatcher is gone: treat as the caller gone.
                let _ = signal;
                self.hung_up = true;
                Err(CallError::Hangup)
            }
        }
    }

    fn sdp(&self) -> Vec<u8> {
        let ip = self.media_ip;
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        // Signalling-only answer until the media engine allocates real RTP ports.
        format!(
            "v=0\r\no=voxide {0} {0} IN {family} {ip}\r\ns=voxide\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
             m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n",
            self.call.0
        )
        .into_bytes()
    }

    fn unavailable(what: &str) -> CallError {
        CallError::Failed(format!(
            "{what} is not available yet on SIP calls (needs the B2BUA/media engine)"
        ))
    }
}

#[async_trait]
impl CallControl for SipCall {
    async fn answer(&mut self) -> CallResult<()> {
        self.live()?;
        if !self.answered {
            self.answered = true;
            let sdp = self.sdp();
            let (done, answered) = tokio::sync::oneshot::channel();
            // `false`: the caller cancelled (or the call vanished) before our 200 went out.
            if !self.sip.send(Command::Answer { call: self.call, sdp, done }).await
                || !answered.await.unwrap_or(false)
            {
                self.hung_up = true;
                return Err(CallError::Hangup);
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

    async fn say(&mut self, text: String, _opts: SayOptions) -> CallResult<()> {
        self.wait(speech_ms(&text)).await
    }

    async fn play(&mut self, _media: String) -> CallResult<()> {
        self.wait(2000).await
    }

    async fn gather(&mut self, opts: GatherOptions) -> CallResult<GatherResult> {
        if let Some(prompt) = &opts.prompt {
            self.wait(speech_ms(prompt)).await?;
        }
        // No DTMF reaches us before the media engine: the gather times out.
        self.wait(u64::from(opts.timeout_ms)).await?;
        Ok(GatherResult { digits: String::new(), speech: None, timed_out: true })
    }

    async fn record(&mut self, opts: RecordOptions) -> CallResult<Recording> {
        if opts.beep {
            self.wait(500).await?;
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

    async fn dial(&mut self, _targets: Vec<String>, _opts: DialOptions) -> CallResult<DialOutcome> {
        self.live()?;
        Err(Self::unavailable("dial"))
    }

    async fn enqueue(&mut self, _queue: String) -> CallResult<()> {
        self.live()?;
        Err(Self::unavailable("enqueue"))
    }

    async fn conference(&mut self, _room: String) -> CallResult<()> {
        self.live()?;
        Err(Self::unavailable("conference"))
    }

    async fn transfer(&mut self, _target: String) -> CallResult<()> {
        self.live()?;
        Err(Self::unavailable("transfer"))
    }

    async fn send_dtmf(&mut self, _digits: String) -> CallResult<()> {
        self.live()?;
        Err(Self::unavailable("send-dtmf"))
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
    }

    fn log(&mut self, _level: LogLevel, _message: &str) {}

    fn caller_hung_up(&self) -> bool {
        self.hung_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
