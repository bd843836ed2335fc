//! The simulated caller behind `vox test`: a [`CallControl`] driven by a scenario script in
//! virtual time.
//!
//! Nothing here sleeps. Each call action computes, from the script, when it would finish and
//! what the caller did meanwhile, then moves the virtual clock there. A flow that waits 30 s
//! for input runs in microseconds, and the same scenario always produces the same transcript.

mod scenario;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;

pub use scenario::{
    CallSetup, CallerAction, CallerKind, DTMF_GAP_MS, DialBehaviour, DialScript, ExpectKind,
    Expectation, OUTCOME_KINDS, QueueBehaviour, Scenario, ScenarioError, speech_ms,
};

use crate::call::{
    CallControl, CallError, CallId, CallInfo, CallResult, DialOptions, DialOutcome, FlowEvent,
    GatherOptions, GatherResult, ListenOptions, LogLevel, RecordOptions, Recording, SayOptions,
    SpeakOptions, Spoken, Utterance,
};
use crate::flows::{Flow, FlowEngine, FlowOutcome};
use crate::kv::KvNamespace;

/// Length of the beep before a recording.
const BEEP_MS: u64 = 500;

/// A flow that keeps acting without letting time pass (e.g. `loop { call.pause(0)? }`) is
/// hung up on after this many transcript steps, so a test run stays bounded.
const MAX_STEPS: usize = 10_000;

/// Who did something in the transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// The flow under test.
    Flow,
    /// The scripted caller.
    Caller,
    /// Scripted parties the flow reached (dial targets, queue agents).
    World,
    /// Voxide itself (limits, outcome).
    Host,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Actor::Flow => "flow",
            Actor::Caller => "caller",
            Actor::World => "world",
            Actor::Host => "host",
        })
    }
}

/// One line of the transcript.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub at_ms: u64,
    pub actor: Actor,
    #[serde(flatten)]
    pub step: Step,
}

/// What happened. The `kind` tag is the JSON name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    Answer,
    Reject {
        code: u16,
    },
    Say {
        text: String,
        interrupted: bool,
    },
    Play {
        media: String,
    },
    GatherStart {
        max_digits: u32,
        timeout_ms: u32,
    },
    Gathered {
        digits: String,
        speech: Option<String>,
        timed_out: bool,
    },
    Dtmf {
        digit: char,
    },
    Speech {
        text: String,
    },
    /// A `listen` ended: what was heard (`None`: nothing in time), or the keys that ended it.
    Heard {
        text: Option<String>,
        digits: String,
    },
    /// A `speak` was cut short after `heard_ms`; the caller heard `heard_text`.
    Interrupted {
        heard_ms: u32,
        heard_text: String,
    },
    Beep,
    RecordStart,
    Recorded {
        id: String,
        duration_ms: u32,
        ended_by: String,
    },
    Dial {
        targets: Vec<String>,
    },
    DialResult {
        result: String,
        detail: String,
    },
    Enqueue {
        queue: String,
    },
    Conference {
        room: String,
    },
    Transfer {
        target: String,
    },
    SendDtmf {
        digits: String,
    },
    Pause {
        ms: u32,
    },
    SetVar {
        key: String,
        value: String,
    },
    Hangup {
        by: String,
    },
    Event {
        name: String,
        payload: serde_json::Value,
    },
    Log {
        level: String,
        message: String,
    },
    Note {
        text: String,
    },
    Outcome {
        outcome: String,
        detail: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Answer => write!(f, "answer"),
            Step::Reject { code } => write!(f, "reject {code}"),
            Step::Say { text, interrupted } => {
                write!(f, "say {text:?}")?;
                if *interrupted {
                    write!(f, " (interrupted by a key)")?;
                }
                Ok(())
            }
            Step::Play { media } => write!(f, "play {media}"),
            Step::GatherStart { max_digits, timeout_ms } => {
                write!(f, "gather up to {max_digits} digit(s), timeout {timeout_ms} ms")
            }
            Step::Gathered { digits, speech, timed_out } => {
                write!(f, "gather -> {digits:?}")?;
                if let Some(s) = speech {
                    write!(f, " speech {s:?}")?;
                }
                if *timed_out {
                    write!(f, " (timed out)")?;
                }
                Ok(())
            }
            Step::Dtmf { digit } => write!(f, "presses {digit}"),
            Step::Speech { text } => write!(f, "says {text:?}"),
            Step::Heard { text: Some(text), .. } => write!(f, "listen -> {text:?}"),
            Step::Heard { text: None, digits } if digits.is_empty() => {
                write!(f, "listen -> nothing (no input)")
            }
            Step::Heard { digits, .. } => write!(f, "listen -> keys {digits:?}"),
            Step::Interrupted { heard_ms, heard_text } => {
                write!(f, "speech interrupted after {heard_ms} ms; heard {heard_text:?}")
            }
            Step::Beep => write!(f, "beep"),
            Step::RecordStart => write!(f, "record starts"),
            Step::Recorded { id, duration_ms, ended_by } => {
                write!(f, "recorded {id} ({duration_ms} ms, ended by {ended_by})")
            }
            Step::Dial { targets } => write!(f, "dial {}", targets.join(", ")),
            Step::DialResult { result, detail } => write!(f, "dial -> {result} {detail}"),
            Step::Enqueue { queue } => write!(f, "enqueue {queue}"),
            Step::Conference { room } => write!(f, "conference {room}"),
            Step::Transfer { target } => write!(f, "transfer to {target}"),
            Step::SendDtmf { digits } => write!(f, "send-dtmf {digits}"),
            Step::Pause { ms } => write!(f, "pause {ms} ms"),
            Step::SetVar { key, value } => write!(f, "set-var {key}={value:?}"),
            Step::Hangup { by } => write!(f, "hangup ({by})"),
            Step::Event { name, payload } => write!(f, "event {name} {payload}"),
            Step::Log { level, message } => write!(f, "log {level}: {message}"),
            Step::Note { text } => write!(f, "{text}"),
            Step::Outcome { outcome, detail } if detail.is_empty() => {
                write!(f, "outcome {outcome}")
            }
            Step::Outcome { outcome, detail } => write!(f, "outcome {outcome}: {detail}"),
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>9.3}s  {:<6}  {}", self.at_ms as f64 / 1000.0, self.actor, self.step)
    }
}

/// Shared transcript: the simulator writes, the runner reads after the flow ends.
type Transcript = Arc<Mutex<Vec<Entry>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    ByCaller,
    ByFlow,
    Transferred,
}

/// What stopped [`SimCall::advance`].
enum Stop {
    Deadline,
    Hangup,
    Dtmf(char),
    Speech { text: String, end_ms: u64 },
}

/// A caller event expanded to one key or utterance.
#[derive(Debug, Clone)]
struct Happening {
    at_ms: u64,
    kind: CallerKind,
}

/// The scripted caller and world for one call.
#[derive(Debug)]
pub struct SimCall {
    scenario: Arc<Scenario>,
    call_id: String,
    now: u64,
    script: VecDeque<Happening>,
    typeahead: VecDeque<char>,
    answered: bool,
    ended: Option<Ended>,
    recordings: u32,
    transcript: Transcript,
    /// The flow's manifest: `play` of a URL it does not allow fails as it would on a call.
    manifest: Arc<crate::manifest::Manifest>,
}

impl SimCall {
    fn new(scenario: Arc<Scenario>, call_id: String, transcript: Transcript) -> Self {
        let mut script = VecDeque::new();
        for action in &scenario.caller {
            match &action.kind {
                CallerKind::Dtmf(digits) => {
                    for (i, d) in digits.chars().enumerate() {
                        script.push_back(Happening {
                            at_ms: action.at_ms + i as u64 * DTMF_GAP_MS,
                            kind: CallerKind::Dtmf(d.to_string()),
                        });
                    }
                }
                other => script.push_back(Happening { at_ms: action.at_ms, kind: other.clone() }),
            }
        }
        script.make_contiguous().sort_by_key(|h| h.at_ms);
        SimCall {
            scenario,
            call_id,
            now: 0,
            script,
            typeahead: VecDeque::new(),
            answered: false,
            ended: None,
            recordings: 0,
            transcript,
            manifest: Arc::default(),
        }
    }

    /// A simulated call for `scenario` with a transcript of its own (see [`SimCall::transcript`]).
    pub fn for_scenario(scenario: Scenario, call_id: &str) -> Self {
        SimCall::new(Arc::new(scenario), call_id.into(), Arc::default())
    }

    fn push(&self, actor: Actor, step: Step) {
        self.push_at(self.now, actor, step);
    }

    fn push_at(&self, at_ms: u64, actor: Actor, step: Step) {
        let mut t = self.transcript.lock().unwrap_or_else(|p| p.into_inner());
        // Beyond the cap only the closing steps are kept (see `live`).
        if t.len() < MAX_STEPS + 8 {
            t.push(Entry { at_ms, actor, step });
        }
    }

    fn steps(&self) -> usize {
        self.transcript.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn caller_hangs_up(&mut self, why: String) {
        self.push(Actor::Host, Step::Note { text: why });
        self.push(Actor::Caller, Step::Hangup { by: "caller".into() });
        self.ended = Some(Ended::ByCaller);
    }

    fn live(&mut self) -> CallResult<()> {
        if self.ended.is_none() && self.steps() >= MAX_STEPS {
            self.caller_hangs_up(format!(
                "{MAX_STEPS} steps without the call ending; caller hangs up"
            ));
        }
        if self.ended.is_some() { Err(CallError::Hangup) } else { Ok(()) }
    }

    /// Moves virtual time forward to `deadline`, replaying the caller's script on the way.
    /// Stops early on hang-up, or on a key/utterance when `stop_on_dtmf`/`stop_on_speech`.
    /// Keys pressed meanwhile are kept as type-ahead for the next gather.
    fn advance(&mut self, deadline: u64, stop_on_dtmf: bool, stop_on_speech: bool) -> Stop {
        let limit = self.scenario.max_duration_ms;
        loop {
            let next_at = self.script.front().map(|h| h.at_ms);
            match next_at {
                Some(at) if at <= deadline && at <= limit => {
                    let Some(h) = self.script.pop_front() else { unreachable!("front was Some") };
                    self.now = self.now.max(h.at_ms);
                    match h.kind {
                        CallerKind::Hangup => {
                            self.push(Actor::Caller, Step::Hangup { by: "caller".into() });
                            self.ended = Some(Ended::ByCaller);
                            return Stop::Hangup;
                        }
                        CallerKind::Dtmf(d) => {
                            let digit = d.chars().next().unwrap_or('?');
                            self.push(Actor::Caller, Step::Dtmf { digit });
                            self.typeahead.push_back(digit);
                            if stop_on_dtmf {
                                return Stop::Dtmf(digit);
                            }
                        }
                        CallerKind::Speech { text, duration_ms } => {
                            self.push(Actor::Caller, Step::Speech { text: text.clone() });
                            if stop_on_speech {
                                return Stop::Speech { text, end_ms: h.at_ms + duration_ms };
                            }
                        }
                    }
                }
                _ if deadline > limit => {
                    self.now = self.now.max(limit);
                    self.caller_hangs_up(format!("scenario time limit of {limit} ms reached"));
                    return Stop::Hangup;
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return Stop::Deadline;
                }
            }
        }
    }

    /// Speak or play something lasting `ms`; returns true if a key interrupted it.
    fn prompt(&mut self, ms: u64, interruptible: bool) -> CallResult<bool> {
        if interruptible && !self.typeahead.is_empty() {
            return Ok(true);
        }
        match self.advance(self.now + ms, interruptible, false) {
            Stop::Hangup => Err(CallError::Hangup),
            Stop::Dtmf(_) => Ok(true),
            Stop::Deadline | Stop::Speech { .. } => Ok(false),
        }
    }

    fn say_text(&mut self, text: String, interruptible: bool) -> CallResult<()> {
        let at = self.now;
        let ms = speech_ms(&text);
        let entry_index = self.transcript.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.push(Actor::Flow, Step::Say { text, interrupted: false });
        let interrupted = self.prompt(ms, interruptible)?;
        if interrupted {
            let mut t = self.transcript.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(Entry { step: Step::Say { interrupted, .. }, at_ms, .. }) =
                t.get_mut(entry_index)
            {
                debug_assert_eq!(*at_ms, at);
                *interrupted = true;
            }
        }
        Ok(())
    }

    /// What the simulated recognizer makes of `text`: lower case words (it hears perfectly).
    fn recognised(text: &str) -> String {
        text.split_whitespace()
            .map(|w| w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').collect::<String>())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    }

    /// The caller's utterance that began now and ends at `end_ms`, heard once `end_silence`
    /// has passed after it; times relative to `since`.
    fn utterance(&mut self, text: &str, end_ms: u64, end_silence: u32, since: u64) -> Utterance {
        let start = self.now;
        self.advance(end_ms + u64::from(end_silence), false, false);
        let rel = |ms: u64| u32::try_from(ms.saturating_sub(since)).unwrap_or(u32::MAX);
        let text = Self::recognised(text);
        self.push(Actor::Flow, Step::Heard { text: Some(text.clone()), digits: String::new() });
        Utterance {
            text,
            confidence: 1.0,
            start_ms: rel(start),
            end_ms: rel(end_ms),
            ..Utterance::default()
        }
    }

    /// The keys waiting, as the turn they ended.
    fn keys(&mut self, since: u64) -> Utterance {
        let digits: String = self.typeahead.drain(..).collect();
        self.push(Actor::Flow, Step::Heard { text: None, digits: digits.clone() });
        let at = u32::try_from(self.now - since).unwrap_or(u32::MAX);
        Utterance { digits, start_ms: at, end_ms: at, ..Utterance::default() }
    }

    /// Rings until the talk is over; shared by dial and enqueue. Returns the talk time.
    fn bridge(&mut self, ring_ms: u64, talk_ms: u64, who: &str) -> CallResult<u32> {
        if let Stop::Hangup = self.advance(self.now + ring_ms, false, false) {
            self.push(
                Actor::World,
                Step::Note { text: format!("{who} stops ringing: caller gone") },
            );
            return Err(CallError::Hangup);
        }
        self.push(Actor::World, Step::Note { text: format!("{who} answers; bridged") });
        let start = self.now;
        let stop = self.advance(self.now + talk_ms, false, false);
        // Keys pressed while bridged went to the other party, not to a later gather.
        self.typeahead.clear();
        if let Stop::Hangup = stop {
            return Err(CallError::Hangup);
        }
        self.push(Actor::World, Step::Note { text: format!("{who} hangs up") });
        Ok(u32::try_from(self.now - start).unwrap_or(u32::MAX))
    }

    /// The transcript so far (for tests and tools).
    pub fn transcript(&self) -> Vec<Entry> {
        self.transcript.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl CallControl for SimCall {
    async fn answer(&mut self) -> CallResult<()> {
        self.live()?;
        if !self.answered {
            self.answered = true;
            self.push(Actor::Flow, Step::Answer);
        }
        Ok(())
    }

    async fn reject(&mut self, code: u16, _reason: Option<String>) -> CallResult<()> {
        self.live()?;
        if self.answered {
            return Err(CallError::Failed("the call is already answered; use hangup".into()));
        }
        self.push(Actor::Flow, Step::Reject { code });
        self.ended = Some(Ended::ByFlow);
        Ok(())
    }

    async fn say(&mut self, text: String, opts: SayOptions) -> CallResult<()> {
        self.live()?;
        self.say_text(text, opts.interruptible)
    }

    async fn play(&mut self, media: String) -> CallResult<()> {
        self.live()?;
        let ms = self.scenario.media_ms.get(&media).copied().unwrap_or(2000);
        self.push(Actor::Flow, Step::Play { media });
        self.prompt(ms, false).map(|_| ())
    }

    async fn gather(&mut self, opts: GatherOptions) -> CallResult<GatherResult> {
        self.live()?;
        if let Some(prompt) = opts.prompt.clone() {
            self.say_text(prompt, true)?;
        }
        self.push(
            Actor::Flow,
            Step::GatherStart { max_digits: opts.max_digits, timeout_ms: opts.timeout_ms },
        );
        let finish = opts.finish_on_key.clone().unwrap_or_default();
        let mut result = GatherResult::default();
        'collect: loop {
            while let Some(d) = self.typeahead.pop_front() {
                if finish.contains(d) {
                    break 'collect;
                }
                result.digits.push(d);
                if result.digits.len() >= opts.max_digits as usize {
                    break 'collect;
                }
            }
            let wait = if result.digits.is_empty() {
                opts.timeout_ms
            } else {
                opts.inter_digit_timeout_ms
            };
            match self.advance(self.now + u64::from(wait), true, opts.speech) {
                Stop::Hangup => return Err(CallError::Hangup),
                Stop::Deadline => {
                    result.timed_out = true;
                    break;
                }
                Stop::Dtmf(_) => continue,
                Stop::Speech { text, end_ms } => {
                    self.advance(end_ms, false, false);
                    result.speech = Some(text);
                    break;
                }
            }
        }
        self.push(
            Actor::Flow,
            Step::Gathered {
                digits: result.digits.clone(),
                speech: result.speech.clone(),
                timed_out: result.timed_out,
            },
        );
        if self.ended.is_some() {
            return Err(CallError::Hangup);
        }
        Ok(result)
    }

    async fn listen(&mut self, opts: ListenOptions) -> CallResult<Option<Utterance>> {
        self.live()?;
        let since = self.now;
        if !self.typeahead.is_empty() {
            return Ok(Some(self.keys(since)));
        }
        match self.advance(self.now + u64::from(opts.no_input_ms), true, true) {
            Stop::Hangup => Err(CallError::Hangup),
            Stop::Deadline => {
                self.push(Actor::Flow, Step::Heard { text: None, digits: String::new() });
                Ok(None)
            }
            Stop::Dtmf(_) => Ok(Some(self.keys(since))),
            Stop::Speech { text, end_ms } => {
                let u = self.utterance(&text, end_ms, opts.end_silence_ms, since);
                if self.ended.is_some() {
                    return Err(CallError::Hangup);
                }
                Ok(Some(u))
            }
        }
    }

    async fn speak(&mut self, text: String, opts: SpeakOptions) -> CallResult<Spoken> {
        self.live()?;
        let (by_dtmf, by_speech) = (opts.interruptible.by_dtmf(), opts.interruptible.by_speech());
        let start = self.now;
        let ms = speech_ms(&text);
        self.push(Actor::Flow, Step::Say { text: text.clone(), interrupted: false });
        let heard = |sent: u64| {
            let heard_text = crate::speech::heard_words(&text, 0, ms as usize, sent as usize);
            (u32::try_from(sent).unwrap_or(u32::MAX), heard_text)
        };
        let stop = if by_dtmf && !self.typeahead.is_empty() {
            Stop::Dtmf('?')
        } else {
            self.advance(start + ms, by_dtmf, by_speech)
        };
        let (heard_ms, interruption) = match stop {
            Stop::Hangup => return Err(CallError::Hangup),
            Stop::Deadline => {
                let (heard_ms, heard_text) = heard(ms);
                return Ok(Spoken { completed: true, heard_text, heard_ms, interruption: None });
            }
            Stop::Dtmf(_) => (self.now - start, None),
            // Barge-in is detected once the caller has spoken for min-speech.
            Stop::Speech { text, end_ms } => (
                (self.now + u64::from(opts.listen.min_speech_ms) - start).min(ms),
                Some((text, end_ms)),
            ),
        };
        let (heard_ms, heard_text) = heard(heard_ms);
        self.push(Actor::Host, Step::Interrupted { heard_ms, heard_text: heard_text.clone() });
        let interruption = match interruption {
            Some((said, end_ms)) => {
                self.utterance(&said, end_ms, opts.listen.end_silence_ms, start)
            }
            None => self.keys(start),
        };
        if self.ended.is_some() {
            return Err(CallError::Hangup);
        }
        Ok(Spoken { completed: false, heard_text, heard_ms, interruption: Some(interruption) })
    }

    async fn record(&mut self, opts: RecordOptions) -> CallResult<Recording> {
        self.live()?;
        if opts.beep {
            self.push(Actor::Flow, Step::Beep);
            self.prompt(BEEP_MS, false)?;
        }
        self.push(Actor::Flow, Step::RecordStart);
        self.typeahead.clear();
        let start = self.now;
        let hard_end = start + u64::from(opts.max_duration_ms);
        let finish = opts.finish_on_key.clone().unwrap_or_default();
        let silence = u64::from(opts.silence_timeout_ms);
        let mut sound_end = start;
        let (end, ended_by) = loop {
            let deadline = if silence > 0 {
                (sound_end.max(self.now) + silence).min(hard_end)
            } else {
                hard_end
            };
            match self.advance(deadline, true, true) {
                // A recording in progress when the caller hangs up is kept, not lost.
                // Trailing silence before the hang-up is trimmed too.
                Stop::Hangup => break (sound_end.min(self.now), "hangup"),
                Stop::Deadline if self.now >= hard_end => break (hard_end, "max duration"),
                // Trailing silence is trimmed, as users expect of a voicemail's length.
                Stop::Deadline => break (sound_end, "silence"),
                Stop::Dtmf(d) if finish.contains(d) => break (self.now, "finish key"),
                Stop::Dtmf(_) => {}
                Stop::Speech { end_ms, .. } => sound_end = sound_end.max(end_ms.min(hard_end)),
            }
        };
        self.typeahead.clear();
        self.recordings += 1;
        let recording = Recording {
            id: format!("rec-{}-{}", self.call_id, self.recordings),
            duration_ms: u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX),
        };
        self.push(
            Actor::Flow,
            Step::Recorded {
                id: recording.id.clone(),
                duration_ms: recording.duration_ms,
                ended_by: ended_by.into(),
            },
        );
        Ok(recording)
    }

    async fn dial(&mut self, targets: Vec<String>, opts: DialOptions) -> CallResult<DialOutcome> {
        self.live()?;
        self.push(Actor::Flow, Step::Dial { targets: targets.clone() });
        let timeout = u64::from(opts.timeout_ms);
        let scenario = self.scenario.clone();
        let scripts: Vec<&DialScript> = targets
            .iter()
            .filter_map(|t| scenario.dial.iter().find(|s| t.contains(s.target.as_str())))
            .collect();
        let scripted_all = scripts.len() == targets.len();
        // The first target to answer within the timeout wins.
        let answer = scripts
            .iter()
            .filter(|s| s.outcome == DialBehaviour::Answer && s.after_ms < timeout)
            .min_by_key(|s| s.after_ms)
            .copied();
        let outcome = if let Some(s) = answer {
            let talk = self.bridge(s.after_ms, s.talk_ms, &s.target)?;
            DialOutcome::Answered { talk_ms: talk }
        } else if scripted_all
            && scripts.iter().all(|s| {
                matches!(s.outcome, DialBehaviour::Busy | DialBehaviour::Failed)
                    && s.after_ms < timeout
            })
        {
            let at = scripts.iter().map(|s| s.after_ms).max().unwrap_or(0).min(timeout);
            if let Stop::Hangup = self.advance(self.now + at, false, false) {
                return Err(CallError::Hangup);
            }
            if scripts.iter().any(|s| s.outcome == DialBehaviour::Busy) {
                DialOutcome::Busy
            } else {
                DialOutcome::Failed("503 Service Unavailable".into())
            }
        } else {
            if let Stop::Hangup = self.advance(self.now + timeout, false, false) {
                return Err(CallError::Hangup);
            }
            DialOutcome::NoAnswer
        };
        let (result, detail) = match &outcome {
            DialOutcome::Answered { talk_ms } => ("answered", format!("(talked {talk_ms} ms)")),
            DialOutcome::Busy => ("busy", String::new()),
            DialOutcome::NoAnswer => ("no-answer", format!("(after {timeout} ms)")),
            DialOutcome::Failed(why) => ("failed", format!("({why})")),
        };
        self.push(Actor::World, Step::DialResult { result: result.into(), detail });
        Ok(outcome)
    }

    async fn enqueue(&mut self, queue: String) -> CallResult<()> {
        self.live()?;
        self.push(Actor::Flow, Step::Enqueue { queue: queue.clone() });
        let script = self.scenario.queue.iter().find(|q| q.name == queue).cloned();
        let (outcome, wait, talk) = match script {
            Some(q) => (q.outcome, q.wait_ms, q.talk_ms),
            None => (QueueBehaviour::Answer, 5000, 30_000),
        };
        match outcome {
            QueueBehaviour::Answer => {
                self.bridge(wait, talk, &format!("agent of {queue}")).map(|_| ())
            }
            QueueBehaviour::Timeout => {
                if let Stop::Hangup = self.advance(self.now + wait, false, false) {
                    return Err(CallError::Hangup);
                }
                self.push(Actor::World, Step::Note { text: format!("queue {queue} timed out") });
                Err(CallError::Timeout)
            }
        }
    }

    async fn conference(&mut self, room: String) -> CallResult<()> {
        self.live()?;
        self.push(Actor::Flow, Step::Conference { room: room.clone() });
        let ms = self
            .scenario
            .conference
            .iter()
            .find(|c| c.room == room)
            .map_or(30_000, |c| c.duration_ms);
        if let Stop::Hangup = self.advance(self.now + ms, false, false) {
            return Err(CallError::Hangup);
        }
        self.typeahead.clear();
        self.push(Actor::World, Step::Note { text: format!("conference {room} ends") });
        Ok(())
    }

    async fn transfer(&mut self, target: String) -> CallResult<()> {
        self.live()?;
        self.push(Actor::Flow, Step::Transfer { target: target.clone() });
        let accept = self
            .scenario
            .transfer
            .iter()
            .find(|t| target.contains(t.target.as_str()))
            .is_none_or(|t| t.accept);
        if accept {
            self.push(
                Actor::World,
                Step::Note { text: "transfer accepted; call left Voxide".into() },
            );
            self.ended = Some(Ended::Transferred);
            Ok(())
        } else {
            self.push(Actor::World, Step::Note { text: "transfer refused".into() });
            Err(CallError::Failed("transfer refused by the target".into()))
        }
    }

    async fn send_dtmf(&mut self, digits: String) -> CallResult<()> {
        self.live()?;
        let ms = digits.len() as u64 * DTMF_GAP_MS;
        self.push(Actor::Flow, Step::SendDtmf { digits });
        self.prompt(ms, false).map(|_| ())
    }

    async fn pause(&mut self, ms: u32) -> CallResult<()> {
        self.live()?;
        self.push(Actor::Flow, Step::Pause { ms });
        self.prompt(u64::from(ms), false).map(|_| ())
    }

    fn set_var(&mut self, key: String, value: String) {
        self.push(Actor::Flow, Step::SetVar { key, value });
    }

    async fn hangup(&mut self) {
        if self.ended.is_none() {
            self.push(Actor::Flow, Step::Hangup { by: "flow".into() });
            self.ended = Some(Ended::ByFlow);
        }
    }

    async fn end(&mut self, _fault: bool) {
        if self.ended.is_none() {
            self.push(Actor::Host, Step::Hangup { by: "host: flow ended".into() });
            self.ended = Some(Ended::ByFlow);
        }
    }

    fn emit(&mut self, event: FlowEvent) {
        self.push(Actor::Flow, Step::Event { name: event.name, payload: event.payload });
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        let level = format!("{level:?}").to_lowercase();
        self.push(Actor::Flow, Step::Log { level, message: message.to_owned() });
    }

    fn caller_hung_up(&self) -> bool {
        self.ended == Some(Ended::ByCaller)
    }

    fn manifest(&self) -> &crate::manifest::Manifest {
        &self.manifest
    }
}

/// The result of running one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub passed: bool,
    pub outcome: String,
    pub virtual_ms: u64,
    pub transcript: Vec<Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Mismatch>,
}

/// The first expectation that did not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// 1-based index of the `[[expect]]` table.
    pub expectation: usize,
    pub expected: String,
    /// Transcript entries before the point where the expectation was looked for.
    pub matched_until: usize,
    /// Why it failed, in words.
    pub reason: String,
}

/// Runs `flow` (with no manifest) against `scenario` and checks its expectations.
pub async fn run_scenario(
    engine: &FlowEngine,
    flow: &Flow,
    scenario: &Scenario,
    seq: u32,
) -> ScenarioReport {
    run_scenario_with(engine, flow, &Arc::default(), scenario, seq).await
}

/// Runs `flow`, holding the capabilities of `manifest`, against `scenario`.
pub async fn run_scenario_with(
    engine: &FlowEngine,
    flow: &Flow,
    manifest: &Arc<crate::manifest::Manifest>,
    scenario: &Scenario,
    seq: u32,
) -> ScenarioReport {
    let scenario = Arc::new(scenario.clone());
    let transcript: Transcript = Arc::default();
    let call_id = format!("sim-{seq}");
    let mut sim = SimCall::new(scenario.clone(), call_id.clone(), transcript.clone());
    sim.manifest = match &scenario.capabilities {
        Some(granted) => Arc::new(crate::manifest::Manifest {
            capabilities: granted.clone(),
            ..manifest.as_ref().clone()
        }),
        None => manifest.clone(),
    };
    let info = CallInfo {
        id: CallId(call_id),
        from: scenario.call.from.clone(),
        to: scenario.call.to.clone(),
        direction: scenario.call.direction,
        headers: scenario.call.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        vars: scenario.call.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let kv = KvNamespace::isolated();
    for (k, v) in &scenario.kv {
        // Seeding can only fail on limits the scenario author chose; surface it as a note.
        if let Err(e) = kv.set(k.clone(), v.clone()) {
            transcript.lock().unwrap_or_else(|p| p.into_inner()).push(Entry {
                at_ms: 0,
                actor: Actor::Host,
                step: Step::Note { text: format!("kv seed {k:?} ignored: {e}") },
            });
        }
    }
    let report = engine.run(flow, info, Box::new(sim), kv).await;
    let mut entries = transcript.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let end = entries.last().map_or(0, |e| e.at_ms);
    entries.push(Entry {
        at_ms: end,
        actor: Actor::Host,
        step: Step::Outcome {
            outcome: report.outcome.kind().into(),
            detail: outcome_detail(&report.outcome),
        },
    });
    let failure = check(&scenario.expect, &entries);
    ScenarioReport {
        name: scenario.name.clone(),
        passed: failure.is_none(),
        outcome: report.outcome.to_string(),
        virtual_ms: end,
        transcript: entries,
        failure,
    }
}

fn outcome_detail(outcome: &FlowOutcome) -> String {
    match outcome {
        FlowOutcome::Completed | FlowOutcome::CallerHungUp => String::new(),
        other => {
            let full = other.to_string();
            full.split_once(": ").map_or(full.clone(), |(_, d)| d.to_owned())
        }
    }
}

/// Checks expectations in order against the transcript.
pub fn check(expect: &[Expectation], transcript: &[Entry]) -> Option<Mismatch> {
    let mut cursor = 0;
    for (i, e) in expect.iter().enumerate() {
        let found =
            transcript[cursor..].iter().position(|entry| matches(e, entry)).map(|p| p + cursor);
        let fail = |reason: String| {
            Some(Mismatch {
                expectation: i + 1,
                expected: e.to_string(),
                matched_until: cursor,
                reason,
            })
        };
        match (found, e.absent) {
            (Some(j), false) => cursor = j + 1,
            (None, true) => {}
            (Some(j), true) => {
                return fail(format!("it happened: {}", transcript[j]));
            }
            (None, false) => {
                let reason = if cursor == transcript.len() {
                    "the transcript ended before it".to_owned()
                } else {
                    format!(
                        "not found in the {} step(s) after this point",
                        transcript.len() - cursor
                    )
                };
                return fail(reason);
            }
        }
    }
    None
}

fn matches(e: &Expectation, entry: &Entry) -> bool {
    if e.at_ms.is_some_and(|at| at != entry.at_ms) {
        return false;
    }
    let contains = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
    match (&e.kind, &entry.step) {
        (ExpectKind::Answer, Step::Answer) | (ExpectKind::Gather, Step::GatherStart { .. }) => true,
        (ExpectKind::Record, Step::RecordStart) => true,
        (ExpectKind::Hangup, Step::Hangup { by }) => by == "flow",
        (ExpectKind::Reject(c), Step::Reject { code }) => c == code,
        (ExpectKind::Say(t), Step::Say { text, .. }) => contains(text, t),
        (ExpectKind::Play(m), Step::Play { media }) => contains(media, m),
        (ExpectKind::Gathered(d), Step::Gathered { digits, .. }) => d == digits,
        (ExpectKind::Dial(t), Step::Dial { targets }) => targets.iter().any(|x| contains(x, t)),
        (ExpectKind::DialResult(r), Step::DialResult { result, .. }) => r == result,
        (ExpectKind::Enqueue(q), Step::Enqueue { queue }) => q == queue,
        (ExpectKind::Conference(r), Step::Conference { room }) => r == room,
        (ExpectKind::Transfer(t), Step::Transfer { target }) => contains(target, t),
        (ExpectKind::SendDtmf(d), Step::SendDtmf { digits }) => d == digits,
        (ExpectKind::SetVar { key: k, value: v }, Step::SetVar { key, value }) => {
            k == key && v.as_ref().is_none_or(|v| v == value)
        }
        (ExpectKind::Event { name: n, fields }, Step::Event { name, payload }) => {
            n == name && fields.iter().all(|(k, v)| payload.get(k) == Some(v))
        }
        (ExpectKind::Log(t), Step::Log { message, .. }) => contains(message, t),
        (ExpectKind::Outcome { kind, detail: want }, Step::Outcome { outcome, detail }) => {
            kind == outcome && want.as_ref().is_none_or(|w| contains(detail, w))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
