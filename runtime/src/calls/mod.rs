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
//!
//! Layout, one file per responsibility:
//! - `dispatch.rs`: [`serve`], the dispatcher (SIP events → a task per call) and the redirect
//!   loop that runs a call's flows and reports its CDR;
//! - `sip_call.rs`: [`SipCall`]'s own verbs (answer, prompts, gather, record, DTMF) and its
//!   [`CallControl`] impl, which hands the verbs below to their files;
//! - `dial.rs`: `dial` as a B2BUA, `transfer` (REFER), calls to registered users, SIP targets;
//! - `rendezvous.rs`: queues and conference rooms (per tenant);
//! - `originate.rs`: calls placed through the API;
//! - `campaign.rs`: a dialer campaign's calls to leads, bridged to agents by the host.

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
use crate::speech::SpeechEngine;
use std::path::PathBuf;
use voxide_media::sdp::{self, Codec, Direction as MediaDirection};
use voxide_media::session::{
    LegLink, MediaEngine, MediaEvent, RecordSpec, Room, Session, WeakRoom, bridge, bridge_links,
    unbridge, unbridge_links,
};

mod campaign;
mod dial;
mod dispatch;
mod listen;
mod originate;
mod rendezvous;
mod signals;
mod sip_call;

pub use campaign::{AgentPicker, LeadCall, LeadCallEnd, MachinePlan, place_lead_call};
use dial::{LegEnd, leg_end, legs_for, ring_user};
use dispatch::run_flows;
pub use dispatch::serve;
pub(crate) use originate::Originator;
use originate::inactive_sdp;
pub use originate::{Originate, originate};
pub use rendezvous::QueueMember;
use rendezvous::Waiting;
pub(crate) use signals::SignalSender;
use signals::Signals;
pub use signals::digits_shed;
use sip_call::Wake;

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

/// A flow's view of a real SIP call.
#[derive(Debug)]
pub struct SipCall {
    call: CallRef,
    sip: SipHandle,
    signals: Signals,
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
    /// When the last `dial` bridged a party (a caller hanging up mid-bridge makes `dial` a
    /// hang-up, yet the party was connected).
    bridged_at: Option<std::time::Instant>,
}

/// What real media needs: the RTP engine, prompts, where recordings go, conference rooms.
#[derive(Debug)]
pub struct MediaServices {
    pub engine: MediaEngine,
    pub prompts: Prompts,
    pub recordings_dir: PathBuf,
    /// The speech recognizer for `listen` and speech barge-in, or why there is none (said
    /// to a flow that listens).
    pub speech: Result<Arc<SpeechEngine>, String>,
    /// Rooms by name; an entry does not keep its room alive.
    rooms: std::sync::Mutex<HashMap<String, WeakRoom>>,
    /// Callers waiting in queues, longest-waiting first.
    queues: std::sync::Mutex<HashMap<String, VecDeque<Waiting>>>,
    /// Agents waiting in `dial("queue:…")` for a caller, longest-waiting first.
    members: std::sync::Mutex<HashMap<String, VecDeque<QueueMember>>>,
}

/// Resolves with a recording once it is finalized.
type RecordingDone = tokio::sync::oneshot::Receiver<
    Result<voxide_media::session::Recorded, voxide_media::wav::WavError>,
>;

impl MediaServices {
    pub fn new(engine: MediaEngine, prompts: Prompts, recordings_dir: PathBuf) -> MediaServices {
        MediaServices {
            engine,
            prompts,
            recordings_dir,
            speech: Err("no speech recognizer is configured".into()),
            rooms: Default::default(),
            queues: Default::default(),
            members: Default::default(),
        }
    }

    /// With speech recognition (`Err`: why there is none, for flows that listen).
    pub fn with_speech(mut self, speech: Result<Arc<SpeechEngine>, String>) -> MediaServices {
        self.speech = speech;
        self
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

/// The user part of a SIP URI (`sip:alice@host;x` → `alice`); the input if it has none.
fn user_of(uri: &str) -> String {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let user = rest.split('@').next().unwrap_or(rest);
    user.split(';').next().unwrap_or(user).to_owned()
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
