//! The live calls of this node, as the control API sees them.
//!
//! Every call a flow runs on is registered here while it lasts: the API lists and shows them
//! (tenant-scoped), hangs them up, redirects them to another flow, and plays prompts into
//! them. What calls do is reported on the hub's activity channel — events (`call.ringing`,
//! `call.answered`, `call.dtmf`, `flow.event`, `recording.completed`, `call.redirected`) and,
//! when a call ends, its [`CallRecord`]. The owner of the channel (the control plane) makes
//! them durable; the hub itself keeps nothing after a call ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use voxide_media::session::LegLink;
use voxide_sip::shell::{Command, SipHandle};
use voxide_sip::ua::CallRef;

use crate::admission::{Admission, OriginateLimits, Permit};
use crate::calls::{Route, Signal, SignalSender};
use crate::manifest::Manifest;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A fresh call id: `CA` and 32 hex digits from the OS's random source, unique across
/// restarts and nodes (CDRs are keyed by it).
pub fn new_call_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: time and a counter still keep ids unique on this node.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&now_ms().to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    format!("CA{}", hex::encode(bytes))
}

/// What calls report, in order per call.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    Event { tenant: String, call_id: String, kind: &'static str, data: serde_json::Value },
    Recording { tenant: String, call_id: String, recording: RecordingInfo },
    Completed(CallRecord),
}

/// A finished recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingInfo {
    pub id: String,
    /// File name in the recordings directory.
    pub file: String,
    pub duration_ms: u64,
    pub channels: u8,
}

/// What is known about an ended call: the CDR.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    pub flow: String,
    pub version: Option<i64>,
    pub digest: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// `completed`, `hung-up`, `trapped`, … or `busy` / `no-answer` / `failed` for an
    /// originated call that never connected.
    pub outcome: String,
    pub detail: String,
    pub actions: u64,
}

/// One live call as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSnapshot {
    pub id: String,
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    /// `ringing`, `answered` or `ending`.
    pub state: &'static str,
    pub flow: String,
    /// `ivr-menu v3 via live`.
    pub label: String,
    pub digest: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub legs: Vec<LegInfo>,
}

/// A party on the call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegInfo {
    /// `caller`, `callee` (the originated party) or `dialled`.
    pub role: &'static str,
    pub party: String,
    /// `ringing`, `answered`, `bridged`.
    pub state: &'static str,
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("call {0} not found")]
    NotFound(String),
    /// The call cannot do that now (no media yet, already ending).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// This node takes no calls (no SIP) or cannot place them.
    #[error("{0}")]
    Unavailable(String),
    /// Not allowed by the server's policy (a destination outside `originate.allow`).
    #[error("{0}")]
    Forbidden(String),
    /// Over a limit for now (calls at once, calls per second); try again after `retry_after`.
    #[error("{message}")]
    Limited { message: String, retry_after: std::time::Duration },
}

/// The mutable part of a live call.
#[derive(Debug)]
struct LiveState {
    state: &'static str,
    answered_at: Option<i64>,
    flow: String,
    label: String,
    digest: String,
    version: Option<i64>,
    manifest: Arc<Manifest>,
    legs: Vec<LegInfo>,
    /// The flow to run next (`redirect`), taken by the call's task.
    redirect: Option<Route>,
    /// Its media leg, once open: prompts are played into it.
    leg: Option<LegLink>,
    /// An injected prompt still playing: the flow's next prompt waits for it.
    injected: Option<oneshot::Receiver<bool>>,
    signals: Option<SignalSender>,
    /// Ended through the API (the CDR says so).
    hung_up_by_api: bool,
    /// The SIP dialog to end on `hangup`.
    sip: Option<(SipHandle, CallRef)>,
}

/// One live call, shared by its task (which updates it) and the hub (which reads and
/// controls it).
#[derive(Debug)]
pub struct LiveCall {
    pub id: String,
    pub tenant: String,
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    pub started_at: i64,
    activity: mpsc::UnboundedSender<Activity>,
    state: Mutex<LiveState>,
}

impl LiveCall {
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reports an event of this call.
    pub fn event(&self, kind: &'static str, data: serde_json::Value) {
        let _ = self.activity.send(Activity::Event {
            tenant: self.tenant.clone(),
            call_id: self.id.clone(),
            kind,
            data,
        });
    }

    pub fn recorded(&self, recording: RecordingInfo) {
        let _ = self.activity.send(Activity::Recording {
            tenant: self.tenant.clone(),
            call_id: self.id.clone(),
            recording,
        });
    }

    /// The flow now running on the call.
    pub fn set_flow(&self, route: &Route) {
        let mut s = self.lock();
        s.flow = route.name.clone();
        s.label = route.label.clone();
        s.digest = route.flow.digest().to_owned();
        s.version = route.version;
        s.manifest = route.manifest.clone();
    }

    pub fn answered(&self) {
        let first = {
            let mut s = self.lock();
            let first = s.answered_at.is_none();
            if first {
                s.answered_at = Some(now_ms());
                s.state = "answered";
                if let Some(leg) = s.legs.first_mut() {
                    leg.state = "answered";
                }
            }
            first
        };
        if first {
            self.event("call.answered", serde_json::json!({}));
        }
    }

    pub(crate) fn set_signals(&self, signals: SignalSender, sip: SipHandle, call: CallRef) {
        let mut s = self.lock();
        s.signals = Some(signals);
        s.sip = Some((sip, call));
    }

    pub fn set_leg(&self, leg: LegLink) {
        self.lock().leg = Some(leg);
    }

    pub fn add_leg(&self, role: &'static str, party: String, state: &'static str) {
        self.lock().legs.push(LegInfo { role, party, state });
    }

    pub fn remove_leg(&self, party: &str) {
        self.lock().legs.retain(|l| l.role == "caller" || l.role == "callee" || l.party != party);
    }

    pub(crate) fn take_redirect(&self) -> Option<Route> {
        self.lock().redirect.take()
    }

    /// The prompt the API injected, if one is still playing.
    pub(crate) fn take_injected(&self) -> Option<oneshot::Receiver<bool>> {
        self.lock().injected.take()
    }

    pub fn snapshot(&self) -> CallSnapshot {
        let s = self.lock();
        CallSnapshot {
            id: self.id.clone(),
            direction: self.direction,
            from: self.from.clone(),
            to: self.to.clone(),
            state: s.state,
            flow: s.flow.clone(),
            label: s.label.clone(),
            digest: s.digest.clone(),
            started_at: self.started_at,
            answered_at: s.answered_at,
            legs: s.legs.clone(),
        }
    }

    /// The CDR of this call, ended now with `outcome`.
    pub fn record(&self, outcome: &str, detail: String, actions: u64) -> CallRecord {
        let s = self.lock();
        let detail = if s.hung_up_by_api && outcome == "hung-up" {
            "hung up through the API".to_owned()
        } else {
            detail
        };
        CallRecord {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            direction: self.direction,
            from: self.from.clone(),
            to: self.to.clone(),
            flow: s.flow.clone(),
            version: s.version,
            digest: s.digest.clone(),
            started_at: self.started_at,
            answered_at: s.answered_at,
            ended_at: now_ms(),
            outcome: outcome.to_owned(),
            detail,
            actions,
        }
    }
}

/// This node's live calls.
#[derive(Debug)]
pub struct CallHub {
    calls: Mutex<HashMap<String, Arc<LiveCall>>>,
    /// Taken by [`close`](Self::close): the channel closes when the last call has gone.
    activity: Mutex<Option<mpsc::UnboundedSender<Activity>>>,
    /// How to place calls, once the SIP side is running.
    pub(crate) sip: std::sync::OnceLock<crate::calls::Originator>,
    /// What each tenant may originate.
    admission: Arc<Admission>,
}

impl CallHub {
    /// A hub reporting on `activity`, with the default [`OriginateLimits`].
    pub fn new(activity: mpsc::UnboundedSender<Activity>) -> Arc<CallHub> {
        CallHub::with_limits(activity, OriginateLimits::default())
    }

    /// A hub reporting on `activity` that lets each tenant originate within `limits`.
    pub fn with_limits(
        activity: mpsc::UnboundedSender<Activity>,
        limits: OriginateLimits,
    ) -> Arc<CallHub> {
        Arc::new(CallHub {
            calls: Mutex::default(),
            activity: Mutex::new(Some(activity)),
            sip: std::sync::OnceLock::new(),
            admission: Admission::new(limits),
        })
    }

    /// Admits an outbound call from `tenant` to `to` within the limits; the permit holds a
    /// slot until the call is registered with [`start`](Self::start).
    pub fn admit_originate(&self, tenant: &str, to: &str) -> Result<Permit, HubError> {
        self.admission.admit(tenant, to, || {
            self.calls()
                .values()
                .filter(|c| c.tenant == tenant && c.direction == "outbound")
                .count()
        })
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveCall>>> {
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new call (ringing) running `route`'s flow and reports `call.ringing`.
    pub fn start(
        &self,
        tenant: &str,
        direction: &'static str,
        from: String,
        to: String,
        route: &Route,
    ) -> Arc<LiveCall> {
        self.register(tenant, direction, from, to, Some(route), String::new())
    }

    /// Registers an inbound call to a registered user that no flow runs (their phones are
    /// rung and bridged): listed, controlled and recorded like any other call, its CDR's
    /// flow is empty.
    pub fn start_to_user(&self, tenant: &str, from: String, user: String) -> Arc<LiveCall> {
        let label = format!("registered user {user}");
        self.register(tenant, "inbound", from, user, None, label)
    }

    /// Registers an outbound call that no flow runs (a campaign's call to a lead, bridged to
    /// an agent by the host), shown as `label`.
    pub fn start_unrouted(
        &self,
        tenant: &str,
        from: String,
        to: String,
        label: String,
    ) -> Arc<LiveCall> {
        self.register(tenant, "outbound", from, to, None, label)
    }

    fn register(
        &self,
        tenant: &str,
        direction: &'static str,
        from: String,
        to: String,
        route: Option<&Route>,
        label: String,
    ) -> Arc<LiveCall> {
        let id = new_call_id();
        let activity = self
            .activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| mpsc::unbounded_channel().0);
        let party = if direction == "inbound" { from.clone() } else { to.clone() };
        let call = Arc::new(LiveCall {
            id: id.clone(),
            tenant: tenant.to_owned(),
            direction,
            from,
            to,
            started_at: now_ms(),
            activity,
            state: Mutex::new(LiveState {
                state: "ringing",
                answered_at: None,
                flow: String::new(),
                label,
                digest: String::new(),
                version: None,
                manifest: Arc::default(),
                legs: vec![LegInfo {
                    role: if direction == "inbound" { "caller" } else { "callee" },
                    party,
                    state: "ringing",
                }],
                redirect: None,
                leg: None,
                injected: None,
                signals: None,
                hung_up_by_api: false,
                sip: None,
            }),
        });
        if let Some(route) = route {
            call.set_flow(route);
        }
        self.calls().insert(id, call.clone());
        let flow = route.map(|r| r.label.as_str()).unwrap_or_default();
        call.event(
            "call.ringing",
            serde_json::json!({
                "direction": direction, "from": call.from, "to": call.to, "flow": flow,
            }),
        );
        call
    }

    /// Forgets a call that ended and reports its CDR (`call.completed`).
    pub fn finish(&self, call: &LiveCall, record: CallRecord) {
        self.calls().remove(&call.id);
        let _ = call.activity.send(Activity::Completed(record));
    }

    /// No new calls will report: the activity channel closes once the calls in progress
    /// have ended (and reported their CDRs).
    pub fn close(&self) {
        self.activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }

    /// A tenant's call (another tenant's is not found).
    pub fn get(&self, tenant: &str, id: &str) -> Result<Arc<LiveCall>, HubError> {
        self.calls()
            .get(id)
            .filter(|c| c.tenant == tenant)
            .cloned()
            .ok_or_else(|| HubError::NotFound(id.to_owned()))
    }

    /// The tenant's live calls, oldest first.
    pub fn list(&self, tenant: &str) -> Vec<CallSnapshot> {
        let mut calls: Vec<CallSnapshot> =
            self.calls().values().filter(|c| c.tenant == tenant).map(|c| c.snapshot()).collect();
        calls.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        calls
    }

    /// Calls in progress on this node (all tenants).
    pub fn len(&self) -> usize {
        self.calls().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends the call: BYE when answered, CANCEL while an originated call rings, a decline
    /// while an inbound call rings. Its flow sees a hang-up.
    pub async fn hangup(&self, tenant: &str, id: &str) -> Result<(), HubError> {
        let call = self.get(tenant, id)?;
        let (signals, sip) = {
            let mut s = call.lock();
            s.state = "ending";
            s.hung_up_by_api = true;
            (s.signals.clone(), s.sip.clone())
        };
        if let Some(signals) = signals {
            signals.send(Signal::CallerGone);
        }
        if let Some((sip, leg)) = sip {
            sip.send(Command::Hangup(leg)).await;
        }
        Ok(())
    }

    /// Runs `route`'s flow on the call instead of the current one, from the flow's next
    /// call action (like Twilio's call update). The caller stays on the line.
    pub fn redirect(&self, tenant: &str, id: &str, route: Route) -> Result<(), HubError> {
        let call = self.get(tenant, id)?;
        let mut s = call.lock();
        let Some(signals) = s.signals.clone() else {
            return Err(HubError::Conflict(format!("call {id} is not connected to a flow yet")));
        };
        if s.state == "ending" {
            return Err(HubError::Conflict(format!("call {id} is ending")));
        }
        let label = route.label.clone();
        s.redirect = Some(route);
        drop(s);
        signals.send(Signal::Redirect);
        call.event("call.redirected", serde_json::json!({ "flow": label }));
        Ok(())
    }

    /// The flow's manifest (what URLs `play` may fetch for this call).
    pub fn manifest(&self, tenant: &str, id: &str) -> Result<Arc<Manifest>, HubError> {
        Ok(self.get(tenant, id)?.lock().manifest.clone())
    }

    /// The prompt renderer, when this node has media.
    fn media(&self) -> Result<Arc<crate::calls::MediaServices>, HubError> {
        self.sip
            .get()
            .and_then(|o| o.media.clone())
            .ok_or_else(|| HubError::Unavailable("this node has no media engine".into()))
    }

    /// Plays a built-in prompt, or a URL the call's flow manifest allows, into the call.
    pub async fn play(&self, tenant: &str, id: &str, media: &str) -> Result<(), HubError> {
        let manifest = self.manifest(tenant, id)?;
        let services = self.media()?;
        let pcm = match manifest.check_play(media).map_err(HubError::Invalid)? {
            Some(url) => services.prompts.fetch(&url).await,
            None => services.prompts.play(media).await,
        }
        .map_err(|e| HubError::Invalid(e.to_string()))?;
        self.inject(tenant, id, pcm)
    }

    /// Speaks `text` into the call (text to speech).
    pub async fn say(
        &self,
        tenant: &str,
        id: &str,
        text: &str,
        voice: Option<&str>,
    ) -> Result<(), HubError> {
        self.get(tenant, id)?;
        if text.trim().is_empty() || text.len() > 4096 {
            return Err(HubError::Invalid("text must be 1-4096 bytes".into()));
        }
        let pcm = self
            .media()?
            .prompts
            .say(text, voice)
            .await
            .map_err(|e| HubError::Invalid(e.to_string()))?;
        self.inject(tenant, id, pcm)
    }

    /// Plays 8 kHz audio to the caller now, over whatever the flow is playing; the flow's
    /// next prompt waits until it has finished.
    pub fn inject(&self, tenant: &str, id: &str, pcm: Arc<[i16]>) -> Result<(), HubError> {
        let call = self.get(tenant, id)?;
        let mut s = call.lock();
        let Some(done) = s.leg.as_ref().and_then(|leg| leg.play(pcm)) else {
            return Err(HubError::Conflict(format!(
                "call {id} has no media yet (it is not answered, or its media ended)"
            )));
        };
        s.injected = Some(done);
        Ok(())
    }
}
