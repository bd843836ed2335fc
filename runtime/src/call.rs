//! The seam between a flow and the call it controls.
//!
//! The Wasm host (`flows`) never talks to SIP, RTP or the simulator directly: every
//! `voxide:flow/call` import lands on a [`CallControl`] implementation owned by the call's
//! task. The simulated caller of `vox test` is one implementation; the SIP/RTP call is another.
//! Types here are plain Rust mirrors of the WIT types, so implementors never depend on
//! generated bindings.

use std::fmt;

use async_trait::async_trait;

/// Voxide's id for one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub String);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which side started the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// A caller dialled in.
    #[default]
    Inbound,
    /// Voxide placed the call.
    Outbound,
}

/// What the flow is told about its call when it starts.
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    pub id: CallId,
    pub from: String,
    pub to: String,
    pub direction: Direction,
    pub headers: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
}

/// Why a call action did not complete (the WIT `call-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("caller hung up")]
    Hangup,
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("timed out")]
    Timeout,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SayOptions {
    pub voice: Option<String>,
    pub language: Option<String>,
    pub interruptible: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherOptions {
    pub max_digits: u32,
    pub finish_on_key: Option<String>,
    pub timeout_ms: u32,
    pub inter_digit_timeout_ms: u32,
    pub speech: bool,
    pub prompt: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatherResult {
    pub digits: String,
    pub speech: Option<String>,
    pub timed_out: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOptions {
    pub max_duration_ms: u32,
    pub silence_timeout_ms: u32,
    pub beep: bool,
    pub finish_on_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: String,
    pub duration_ms: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialOptions {
    pub timeout_ms: u32,
    pub caller_id: Option<String>,
    pub record: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialOutcome {
    Answered { talk_ms: u32 },
    Busy,
    NoAnswer,
    Failed(String),
}

/// Options for [`CallControl::listen`], defaults already applied (see `speech.listen-options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOptions {
    /// Phrase hints (validated syntax); empty = open vocabulary.
    pub hints: Vec<String>,
    pub no_input_ms: u32,
    pub end_silence_ms: u32,
    pub max_ms: u32,
    pub min_speech_ms: u32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            hints: Vec::new(),
            no_input_ms: 5000,
            end_silence_ms: 700,
            max_ms: 15_000,
            min_speech_ms: 200,
        }
    }
}

/// One recognised word; times in ms since the verb started.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    pub start_ms: u32,
    pub end_ms: u32,
}

/// What the caller said or pressed in one turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Utterance {
    pub text: String,
    pub confidence: f32,
    pub start_ms: u32,
    pub end_ms: u32,
    pub words: Vec<Word>,
    pub digits: String,
}

/// What may interrupt a `speak`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Interruptible {
    #[default]
    None,
    Dtmf,
    Speech,
    Any,
}

impl Interruptible {
    pub fn by_dtmf(self) -> bool {
        matches!(self, Interruptible::Dtmf | Interruptible::Any)
    }

    pub fn by_speech(self) -> bool {
        matches!(self, Interruptible::Speech | Interruptible::Any)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpeakOptions {
    pub voice: Option<String>,
    pub interruptible: Interruptible,
    pub listen: ListenOptions,
}

/// How a `speak` went, from the audio actually sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spoken {
    pub completed: bool,
    pub heard_text: String,
    pub heard_ms: u32,
    pub interruption: Option<Utterance>,
}

/// An event a flow emitted with `events.emit`, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEvent {
    pub name: String,
    pub payload: serde_json::Value,
}

/// Result type of call actions.
pub type CallResult<T> = Result<T, CallError>;

/// One live call as seen by its flow. Each method completes when the action has finished on
/// the call (the prompt was heard, digits collected, the bridge ended). Implementations return
/// [`CallError::Hangup`] once the caller has gone.
///
/// Methods take `&mut self`: a call's flow runs one action at a time, in the call's own task.
#[async_trait]
pub trait CallControl: Send {
    async fn answer(&mut self) -> CallResult<()>;
    async fn reject(&mut self, code: u16, reason: Option<String>) -> CallResult<()>;
    async fn say(&mut self, text: String, opts: SayOptions) -> CallResult<()>;
    async fn play(&mut self, media: String) -> CallResult<()>;
    async fn gather(&mut self, opts: GatherOptions) -> CallResult<GatherResult>;
    async fn record(&mut self, opts: RecordOptions) -> CallResult<Recording>;
    async fn dial(&mut self, targets: Vec<String>, opts: DialOptions) -> CallResult<DialOutcome>;
    async fn enqueue(&mut self, queue: String) -> CallResult<()>;
    async fn conference(&mut self, room: String) -> CallResult<()>;
    async fn transfer(&mut self, target: String) -> CallResult<()>;
    async fn send_dtmf(&mut self, digits: String) -> CallResult<()>;
    async fn pause(&mut self, ms: u32) -> CallResult<()>;
    /// Waits for the caller's next utterance and recognises it; `None` if nobody spoke (or
    /// pressed a key) in time. Calls without speech recognition fail with `Failed`.
    async fn listen(&mut self, _opts: ListenOptions) -> CallResult<Option<Utterance>> {
        Err(CallError::Failed("listen: this call has no speech recognition".into()))
    }
    /// Speaks `text`, interruptible as `opts` says, and reports what the caller heard.
    async fn speak(&mut self, _text: String, _opts: SpeakOptions) -> CallResult<Spoken> {
        Err(CallError::Failed("speak: this call has no speech engine".into()))
    }
    /// Record a call variable; never blocks.
    fn set_var(&mut self, key: String, value: String);
    /// End the call; idempotent, never blocks the flow for long.
    async fn hangup(&mut self);
    /// The host ends the call after its flow finished; `fault` if the flow failed or was
    /// stopped (an unanswered SIP call then gets `500`, not a polite decline). Idempotent; by
    /// default the same as [`hangup`](Self::hangup).
    async fn end(&mut self, _fault: bool) {
        self.hangup().await
    }
    /// A validated event from `events.emit`.
    fn emit(&mut self, event: FlowEvent);
    /// A log line from the flow (already tagged with the call id by the host).
    fn log(&mut self, _level: LogLevel, _message: &str) {}
    /// True once the caller has gone (hung up, or the call was ended by the API).
    fn caller_hung_up(&self) -> bool;
    /// What the running flow may do beyond its own call: the host checks every gated action
    /// against it before the action reaches the implementation.
    fn manifest(&self) -> &crate::manifest::Manifest;
    /// After the flow ended because the call was redirected to another flow: readies the
    /// call for that flow, `false` if the call cannot go on (the caller left meanwhile, or it
    /// was not redirected).
    fn resume(&mut self) -> bool {
        false
    }
}

/// Severity of a flow log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Checks that apply to every implementation, done once by the host before dispatch.
pub(crate) fn validate_dtmf(digits: &str) -> CallResult<()> {
    if digits.is_empty() {
        return Err(CallError::InvalidArgument("no DTMF digits given".into()));
    }
    match digits.chars().find(|c| !is_dtmf(*c)) {
        Some(c) => {
            Err(CallError::InvalidArgument(format!("{c:?} is not a DTMF key (use 0-9, *, #, A-D)")))
        }
        None => Ok(()),
    }
}

pub(crate) fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}
