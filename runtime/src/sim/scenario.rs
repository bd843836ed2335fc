//! Scenario files: a TOML script of what the caller does, how the world answers, and what the
//! flow is expected to do, in order. See `docs/scenarios.md` for the format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::call::Direction;

/// Outcome names accepted by `outcome = "…"` (see [`crate::flows::FlowOutcome::kind`]).
pub const OUTCOME_KINDS: &[&str] = &[
    "completed",
    "hung-up",
    "flow-error",
    "deadline-exceeded",
    "memory-exceeded",
    "duration-exceeded",
    "trapped",
    "instantiate-failed",
];

/// A parsed, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub call: CallSetup,
    pub caller: Vec<CallerAction>,
    pub dial: Vec<DialScript>,
    pub queue: Vec<QueueScript>,
    pub conference: Vec<ConferenceScript>,
    pub transfer: Vec<TransferScript>,
    pub media_ms: BTreeMap<String, u64>,
    pub kv: BTreeMap<String, String>,
    pub expect: Vec<Expectation>,
    pub max_duration_ms: u64,
    /// `[capabilities]`: what the flow is granted on this call instead of its own
    /// `flow.toml`'s (an operator's narrower grant, say).
    pub capabilities: Option<crate::manifest::Capabilities>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSetup {
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default = "default_to")]
    pub to: String,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for CallSetup {
    fn default() -> Self {
        CallSetup {
            from: default_from(),
            to: default_to(),
            direction: Direction::Inbound,
            vars: BTreeMap::new(),
            headers: BTreeMap::new(),
        }
    }
}

fn default_from() -> String {
    "+15551230001".into()
}
fn default_to() -> String {
    "+15550100".into()
}

/// One thing the caller does at a virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerAction {
    pub at_ms: u64,
    pub kind: CallerKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// Keys pressed one after another, [`DTMF_GAP_MS`] apart.
    Dtmf(String),
    /// The caller speaks for `duration_ms`.
    Speech {
        text: String,
        duration_ms: u64,
    },
    Hangup,
}

/// Gap between the keys of one `dtmf = "123"` action.
pub const DTMF_GAP_MS: u64 = 150;

/// How a dialled target behaves. `target` matches any dial target containing it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialScript {
    pub target: String,
    #[serde(default)]
    pub outcome: DialBehaviour,
    /// When the target answers (or reports busy/failure), after the dial starts.
    #[serde(default = "default_answer_after")]
    pub after_ms: u64,
    /// How long the answered party talks before hanging up.
    #[serde(default = "default_talk")]
    pub talk_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DialBehaviour {
    #[default]
    Answer,
    Busy,
    NoAnswer,
    Failed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueScript {
    pub name: String,
    #[serde(default)]
    pub outcome: QueueBehaviour,
    /// Wait until an agent answers (or until the queue times out).
    #[serde(default = "default_queue_wait")]
    pub wait_ms: u64,
    #[serde(default = "default_talk")]
    pub talk_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueBehaviour {
    #[default]
    Answer,
    Timeout,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConferenceScript {
    pub room: String,
    #[serde(default = "default_talk")]
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferScript {
    pub target: String,
    #[serde(default = "default_true")]
    pub accept: bool,
}

fn default_answer_after() -> u64 {
    3000
}
fn default_talk() -> u64 {
    30_000
}
fn default_queue_wait() -> u64 {
    5000
}
fn default_true() -> bool {
    true
}

/// One expected step. Matched in order against the transcript; `absent` inverts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub kind: ExpectKind,
    /// The step must NOT happen after the previous expectation's match.
    pub absent: bool,
    /// The step must happen at exactly this virtual time.
    pub at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpectKind {
    Answer,
    Reject(u16),
    /// Spoken text contains this (case-insensitive).
    Say(String),
    Play(String),
    /// A gather started.
    Gather,
    /// A gather returned exactly these digits.
    Gathered(String),
    /// A dial to a target containing this.
    Dial(String),
    /// A dial ended with this result (`answered`, `busy`, `no-answer`, `failed`).
    DialResult(String),
    Record,
    Enqueue(String),
    Conference(String),
    Transfer(String),
    SendDtmf(String),
    SetVar {
        key: String,
        value: Option<String>,
    },
    Hangup,
    Event {
        name: String,
        fields: serde_json::Map<String, serde_json::Value>,
    },
    Log(String),
    /// The flow's outcome kind, and text its detail contains.
    Outcome {
        kind: String,
        detail: Option<String>,
    },
}

impl std::fmt::Display for ExpectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectKind::Answer => write!(f, "the call is answered"),
            ExpectKind::Reject(code) => write!(f, "the call is rejected with {code}"),
            ExpectKind::Say(t) => write!(f, "say containing {t:?}"),
            ExpectKind::Play(m) => write!(f, "play of {m:?}"),
            ExpectKind::Gather => write!(f, "a gather starts"),
            ExpectKind::Gathered(d) => write!(f, "a gather returns digits {d:?}"),
            ExpectKind::Dial(t) => write!(f, "dial to a target containing {t:?}"),
            ExpectKind::DialResult(r) => write!(f, "dial result {r}"),
            ExpectKind::Record => write!(f, "a recording starts"),
            ExpectKind::Enqueue(q) => write!(f, "enqueue into {q:?}"),
            ExpectKind::Conference(r) => write!(f, "conference room {r:?}"),
            ExpectKind::Transfer(t) => write!(f, "transfer to a target containing {t:?}"),
            ExpectKind::SendDtmf(d) => write!(f, "send-dtmf {d:?}"),
            ExpectKind::SetVar { key, value: Some(v) } => write!(f, "set-var {key}={v:?}"),
            ExpectKind::SetVar { key, value: None } => write!(f, "set-var {key}"),
            ExpectKind::Hangup => write!(f, "the flow hangs up"),
            ExpectKind::Event { name, fields } if fields.is_empty() => write!(f, "event {name}"),
            ExpectKind::Event { name, fields } => {
                write!(f, "event {name} with {}", serde_json::Value::Object(fields.clone()))
            }
            ExpectKind::Log(t) => write!(f, "log containing {t:?}"),
            ExpectKind::Outcome { kind, detail: None } => write!(f, "outcome {kind}"),
            ExpectKind::Outcome { kind, detail: Some(d) } => {
                write!(f, "outcome {kind} with {d:?} in its detail")
            }
        }
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.absent {
            write!(f, "no ")?;
        }
        write!(f, "{}", self.kind)?;
        if let Some(at) = self.at_ms {
            write!(f, " at {at} ms")?;
        }
        Ok(())
    }
}

/// One file of a scenario directory: its path and the parsed scenario or why it is unusable.
pub type LoadedScenario = (PathBuf, Result<Scenario, ScenarioError>);

/// A scenario file that could not be used; the message names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScenarioError {
    pub path: PathBuf,
    pub message: String,
}

// --- raw TOML shape ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default)]
    call: CallSetup,
    #[serde(default)]
    caller: Vec<RawCaller>,
    #[serde(default)]
    dial: Vec<DialScript>,
    #[serde(default)]
    queue: Vec<QueueScript>,
    #[serde(default)]
    conference: Vec<ConferenceScript>,
    #[serde(default)]
    transfer: Vec<TransferScript>,
    #[serde(default)]
    media_ms: BTreeMap<String, u64>,
    #[serde(default)]
    kv: BTreeMap<String, String>,
    #[serde(default)]
    expect: Vec<RawExpect>,
    max_duration_ms: Option<u64>,
    capabilities: Option<crate::manifest::Capabilities>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    at_ms: u64,
    dtmf: Option<String>,
    say: Option<String>,
    duration_ms: Option<u64>,
    #[serde(default)]
    hangup: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    answer: Option<bool>,
    reject: Option<u16>,
    say: Option<String>,
    play: Option<String>,
    gather: Option<bool>,
    gathered: Option<String>,
    dial: Option<String>,
    dial_result: Option<String>,
    record: Option<bool>,
    enqueue: Option<String>,
    conference: Option<String>,
    transfer: Option<String>,
    send_dtmf: Option<String>,
    set_var: Option<String>,
    value: Option<String>,
    hangup: Option<bool>,
    event: Option<String>,
    fields: Option<toml::Table>,
    log: Option<String>,
    outcome: Option<String>,
    /// With `outcome`: text the outcome's detail contains.
    detail: Option<String>,
    #[serde(default)]
    absent: bool,
    at_ms: Option<u64>,
}

/// Speech length the simulator assumes for `say` text and caller utterances.
pub fn speech_ms(text: &str) -> u64 {
    (text.chars().count() as u64 * 60).max(500)
}

impl Scenario {
    /// Parses and validates scenario TOML. `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let err = |message: String| ScenarioError { path: path.to_owned(), message };
        let raw: RawScenario = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let mut caller = Vec::new();
        for (i, c) in raw.caller.into_iter().enumerate() {
            let kinds =
                [c.dtmf.is_some(), c.say.is_some(), c.hangup].iter().filter(|k| **k).count();
            if kinds != 1 {
                return Err(err(format!(
                    "[[caller]] #{} (at_ms = {}): give exactly one of dtmf, say, hangup",
                    i + 1,
                    c.at_ms
                )));
            }
            let kind = if let Some(d) = c.dtmf {
                if let Err(e) = crate::call::validate_dtmf(&d) {
                    return Err(err(format!("[[caller]] #{}: {e}", i + 1)));
                }
                CallerKind::Dtmf(d)
            } else if let Some(text) = c.say {
                let duration_ms = c.duration_ms.unwrap_or_else(|| speech_ms(&text));
                CallerKind::Speech { text, duration_ms }
            } else {
                CallerKind::Hangup
            };
            caller.push(CallerAction { at_ms: c.at_ms, kind });
        }
        caller.sort_by_key(|c| c.at_ms);

        let mut expect = Vec::new();
        for (i, e) in raw.expect.into_iter().enumerate() {
            expect.push(convert_expect(e).map_err(|m| err(format!("[[expect]] #{}: {m}", i + 1)))?);
        }
        let name = raw.name.unwrap_or_else(|| {
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        });
        Ok(Scenario {
            name,
            call: raw.call,
            caller,
            dial: raw.dial,
            queue: raw.queue,
            conference: raw.conference,
            transfer: raw.transfer,
            media_ms: raw.media_ms,
            kv: raw.kv,
            expect,
            max_duration_ms: raw.max_duration_ms.unwrap_or(3_600_000),
            capabilities: raw.capabilities,
        })
    }

    /// Loads every `*.toml` in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<LoadedScenario>, ScenarioError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ScenarioError {
            path: dir.to_owned(),
            message: format!("cannot read scenario directory: {e}"),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        Ok(paths
            .into_iter()
            .map(|p| {
                let parsed = std::fs::read_to_string(&p)
                    .map_err(|e| ScenarioError { path: p.clone(), message: e.to_string() })
                    .and_then(|text| Scenario::parse(&text, &p));
                (p, parsed)
            })
            .collect())
    }
}

fn convert_expect(e: RawExpect) -> Result<Expectation, String> {
    let mut kinds = Vec::new();
    let flag = |b: Option<bool>| b == Some(true);
    if flag(e.answer) {
        kinds.push(ExpectKind::Answer);
    }
    if let Some(c) = e.reject {
        kinds.push(ExpectKind::Reject(c));
    }
    if let Some(t) = e.say {
        kinds.push(ExpectKind::Say(t));
    }
    if let Some(m) = e.play {
        kinds.push(ExpectKind::Play(m));
    }
    if flag(e.gather) {
        kinds.push(ExpectKind::Gather);
    }
    if let Some(d) = e.gathered {
        kinds.push(ExpectKind::Gathered(d));
    }
    if let Some(t) = e.dial {
        kinds.push(ExpectKind::Dial(t));
    }
    if let Some(r) = e.dial_result {
        const RESULTS: &[&str] = &["answered", "busy", "no-answer", "failed"];
        if !RESULTS.contains(&r.as_str()) {
            return Err(format!("dial_result {r:?} is not one of {}", RESULTS.join(", ")));
        }
        kinds.push(ExpectKind::DialResult(r));
    }
    if flag(e.record) {
        kinds.push(ExpectKind::Record);
    }
    if let Some(q) = e.enqueue {
        kinds.push(ExpectKind::Enqueue(q));
    }
    if let Some(r) = e.conference {
        kinds.push(ExpectKind::Conference(r));
    }
    if let Some(t) = e.transfer {
        kinds.push(ExpectKind::Transfer(t));
    }
    if let Some(d) = e.send_dtmf {
        kinds.push(ExpectKind::SendDtmf(d));
    }
    if let Some(key) = e.set_var {
        kinds.push(ExpectKind::SetVar { key, value: e.value });
    } else if e.value.is_some() {
        return Err("`value` only goes with `set_var`".into());
    }
    if flag(e.hangup) {
        kinds.push(ExpectKind::Hangup);
    }
    if let Some(name) = e.event {
        let fields = match e.fields {
            None => serde_json::Map::new(),
            Some(t) => match serde_json::to_value(t) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => return Err("`fields` must be a table of values".into()),
            },
        };
        kinds.push(ExpectKind::Event { name, fields });
    } else if e.fields.is_some() {
        return Err("`fields` only goes with `event`".into());
    }
    if let Some(t) = e.log {
        kinds.push(ExpectKind::Log(t));
    }
    if let Some(o) = e.outcome {
        if !OUTCOME_KINDS.contains(&o.as_str()) {
            return Err(format!("outcome {o:?} is not one of {}", OUTCOME_KINDS.join(", ")));
        }
        kinds.push(ExpectKind::Outcome { kind: o, detail: e.detail });
    } else if e.detail.is_some() {
        return Err("`detail` only goes with `outcome`".into());
    }
    match kinds.len() {
        1 => Ok(Expectation { kind: kinds.remove(0), absent: e.absent, at_ms: e.at_ms }),
        0 => Err("say what to expect: one of answer, reject, say, play, gather, gathered, dial, \
                  dial_result, record, enqueue, conference, transfer, send_dtmf, set_var, hangup, \
                  event, log, outcome"
            .into()),
        _ => Err("give one expectation per [[expect]] table".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("t.toml"))
    }

    #[test]
    fn parses_a_full_scenario() {
        let s = parse(
            r#"
            name = "sales"
            [call]
            vars = { business_hours = "open" }
            [[caller]]
            at_ms = 4000
            dtmf = "1"
            [[caller]]
            at_ms = 9000
            hangup = true
            [[dial]]
            target = "sales"
            after_ms = 2000
            [[expect]]
            say = "press 1"
            [[expect]]
            event = "x.y"
            fields = { n = 3 }
            [[expect]]
            outcome = "completed"
            "#,
        )
        .unwrap();
        assert_eq!(s.name, "sales");
        assert_eq!(s.caller[0], CallerAction { at_ms: 4000, kind: CallerKind::Dtmf("1".into()) });
        assert_eq!(s.caller[1].kind, CallerKind::Hangup);
        assert_eq!(s.dial[0].outcome, DialBehaviour::Answer);
        assert_eq!(s.expect.len(), 3);
        assert!(matches!(&s.expect[1].kind, ExpectKind::Event { fields, .. } if fields["n"] == 3));
    }

    #[test]
    fn rejects_ambiguous_or_unknown_input_with_a_clear_message() {
        let cases = [
            (
                "[[caller]]\nat_ms = 1\ndtmf = \"1\"\nhangup = true",
                "exactly one of dtmf, say, hangup",
            ),
            ("[[caller]]\nat_ms = 1\ndtmf = \"x\"", "not a DTMF key"),
            ("[[expect]]\nsya = \"hi\"", "unknown field `sya`"),
            ("[[expect]]\nsay = \"a\"\nplay = \"b\"", "one expectation per"),
            ("[[expect]]\noutcome = \"done\"", "is not one of completed"),
            ("[[expect]]\nabsent = true", "say what to expect"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e:?} should contain {want:?}");
            assert!(e.starts_with("t.toml: "), "{e}");
        }
    }
}
