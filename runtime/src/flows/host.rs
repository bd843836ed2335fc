//! Host side of the `voxide:flow` imports (0.1.0, and 0.2.0's `speech`): the bindgen sites,
//! and the glue from each WIT function to the call's [`CallControl`], the tenant's KV
//! namespace and the log.
//!
//! Host functions return `wasmtime::Result<Result<T, CallError>>`: the outer error traps the
//! guest (host bug or broken invariant), the inner one is an ordinary error the flow handles.
//! Arguments are validated here once, so every `CallControl` implementation gets clean input,
//! and so are the flow's capabilities: a `play` URL, `dial` and `transfer` targets outside
//! its manifest are `not-allowed` before any implementation (a SIP call, the simulator)
//! sees them.

use tracing::{Level, event};

use super::FlowState;
use crate::call::{self, CallError, CallResult, LogLevel};

#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/flow",
        world: "voxide:flow/flow@0.1.0",
        imports: {
            "voxide:flow/call.set-var": trappable,
            "voxide:flow/events": trappable,
            "voxide:flow/kv": trappable,
            "voxide:flow/log": trappable,
            default: async | trappable,
        },
        exports: { default: async },
    });
}

/// `voxide:flow@0.2.0`: the 0.1.0 world plus `speech`. Its 0.1.0 interfaces are the ones
/// generated above (`with`), so one host implementation serves both versions, and its
/// `FlowPre` instantiates flows of either version (they export the same 0.1.0 handler).
#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub(crate) mod bindings_v2 {
    wasmtime::component::bindgen!({
        path: "../wit/flow-0.2.0",
        world: "voxide:flow/flow@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "voxide:flow/types@0.1.0": super::bindings::voxide::flow::types,
            "voxide:flow/call@0.1.0": super::bindings::voxide::flow::call,
            "voxide:flow/events@0.1.0": super::bindings::voxide::flow::events,
            "voxide:flow/kv@0.1.0": super::bindings::voxide::flow::kv,
            "voxide:flow/log@0.1.0": super::bindings::voxide::flow::log,
            "voxide:flow/handler@0.1.0": super::bindings::exports::voxide::flow::handler,
        },
    });
}

use bindings::voxide::flow::{call as wit_call, events, kv, log, types as wit};
use bindings_v2::voxide::flow0_2_0::speech as wit_speech;

/// The export every flow must provide; named in load errors.
pub const HANDLER_EXPORT: &str = voxide_store::FLOW_WORLD;

const MAX_TEXT: usize = 4096;
const MAX_TARGETS: usize = 16;
const MAX_TARGET_LEN: usize = 256;
const MAX_VAR_LEN: usize = 1024;
const MAX_EVENT_NAME: usize = 128;
const MAX_EVENT_PAYLOAD: usize = 64 * 1024;
const MAX_LOG_LINE: usize = 4096;
const MAX_PAUSE_MS: u32 = 3_600_000;
const MAX_DTMF: usize = 64;

type HostResult<T> = wasmtime::Result<Result<T, wit::CallError>>;

impl FlowState {
    /// Bookkeeping after every call action: count it, and reset the guest's CPU budget — the
    /// budget is per stretch of guest code between two actions, so a flow waiting 30 s for
    /// digits is not charged for the wait. Only an action that reached a live call resets it:
    /// a flow spinning on actions that fail at once (bad arguments, or `err(hangup)` after the
    /// call is over) still runs into its budget.
    fn finish<T>(&mut self, dispatched: bool, result: CallResult<T>) -> Result<T, wit::CallError> {
        self.actions += 1;
        if dispatched && !self.call_over {
            self.guest.reset_cpu();
        }
        if matches!(result, Err(CallError::Hangup)) {
            self.call_over = true;
        }
        result.map_err(Into::into)
    }
}

/// Runs a call action if its arguments passed validation, then [`FlowState::finish`]es it.
macro_rules! act {
    ($self:ident, $checked:expr, $action:expr) => {{
        match $checked {
            Ok(()) => {
                let result = $action.await;
                Ok($self.finish(true, result))
            }
            Err(e) => Ok($self.finish(false, Err(e))),
        }
    }};
}

fn check(ok: bool, why: impl FnOnce() -> String) -> CallResult<()> {
    if ok { Ok(()) } else { Err(CallError::InvalidArgument(why())) }
}

fn check_text(what: &str, text: &str) -> CallResult<()> {
    check(text.len() <= MAX_TEXT, || {
        format!("{what} is {} bytes; the limit is {MAX_TEXT}", text.len())
    })
}

fn check_keys(keys: &Option<String>) -> CallResult<()> {
    match keys {
        Some(k) if k.is_empty() || !k.chars().all(call::is_dtmf) => {
            Err(CallError::InvalidArgument(format!(
                "finish-on-key {k:?} must be one or more of 0-9, *, #, A-D"
            )))
        }
        _ => Ok(()),
    }
}

impl wit::Host for FlowState {}

impl wit_call::Host for FlowState {
    async fn answer(&mut self) -> HostResult<()> {
        act!(self, Ok(()), self.call.answer())
    }

    async fn reject(&mut self, code: u16, reason: Option<String>) -> HostResult<()> {
        let checked = check((400..=699).contains(&code), || {
            format!("reject code {code} is not a SIP final error response (400-699)")
        })
        .and(check_text("reason", reason.as_deref().unwrap_or_default()));
        act!(self, checked, self.call.reject(code, reason))
    }

    async fn say(&mut self, text: String, opts: wit::SayOptions) -> HostResult<()> {
        let checked = check_text("say text", &text);
        act!(self, checked, self.call.say(text, opts.into()))
    }

    async fn play(&mut self, media: String) -> HostResult<()> {
        let checked = check(!media.is_empty() && media.len() <= MAX_TARGET_LEN, || {
            format!("media reference must be 1-{MAX_TARGET_LEN} bytes")
        })
        .and_then(|()| {
            self.call.manifest().check_play(&media).map(drop).map_err(CallError::NotAllowed)
        });
        act!(self, checked, self.call.play(media))
    }

    async fn gather(&mut self, opts: wit::GatherOptions) -> HostResult<wit::GatherResult> {
        let checked = check((1..=64).contains(&opts.max_digits), || {
            format!("max-digits is {}; use 1-64", opts.max_digits)
        })
        .and(check_keys(&opts.finish_on_key))
        .and(check_text("gather prompt", opts.prompt.as_deref().unwrap_or_default()));
        act!(self, checked, self.call.gather(opts.into())).map(|r| r.map(Into::into))
    }

    async fn record(&mut self, opts: wit::RecordOptions) -> HostResult<wit::Recording> {
        let checked = check(opts.max_duration_ms > 0, || "max-duration-ms must be above 0".into())
            .and(check_keys(&opts.finish_on_key));
        act!(self, checked, self.call.record(opts.into()))
            .map(|r| r.map(|r| wit::Recording { id: r.id, duration_ms: r.duration_ms }))
    }

    async fn dial(
        &mut self,
        targets: Vec<String>,
        opts: wit::DialOptions,
    ) -> HostResult<wit::DialOutcome> {
        let checked = check(!targets.is_empty(), || "dial needs at least one target".into())
            .and(check(targets.len() <= MAX_TARGETS, || {
                format!("{} dial targets; the limit is {MAX_TARGETS}", targets.len())
            }))
            .and(match targets.iter().find(|t| t.is_empty() || t.len() > MAX_TARGET_LEN) {
                Some(t) => Err(CallError::InvalidArgument(format!(
                    "dial target {t:?} must be 1-{MAX_TARGET_LEN} bytes"
                ))),
                None => Ok(()),
            })
            .and_then(|()| {
                let manifest = self.call.manifest();
                targets
                    .iter()
                    .try_for_each(|t| manifest.check_dial("dial", t).map_err(CallError::NotAllowed))
            });
        act!(self, checked, self.call.dial(targets, opts.into())).map(|r| r.map(Into::into))
    }

    async fn enqueue(&mut self, queue: String) -> HostResult<()> {
        let checked = check(!queue.is_empty() && queue.len() <= MAX_TARGET_LEN, || {
            format!("queue name must be 1-{MAX_TARGET_LEN} bytes")
        });
        act!(self, checked, self.call.enqueue(queue))
    }

    async fn conference(&mut self, room: String) -> HostResult<()> {
        let checked = check(!room.is_empty() && room.len() <= MAX_TARGET_LEN, || {
            format!("room name must be 1-{MAX_TARGET_LEN} bytes")
        });
        act!(self, checked, self.call.conference(room))
    }

    async fn transfer(&mut self, target: String) -> HostResult<()> {
        let checked = check(!target.is_empty() && target.len() <= MAX_TARGET_LEN, || {
            format!("transfer target must be 1-{MAX_TARGET_LEN} bytes")
        })
        .and_then(|()| {
            self.call.manifest().check_dial("transfer", &target).map_err(CallError::NotAllowed)
        });
        act!(self, checked, self.call.transfer(target))
    }

    async fn send_dtmf(&mut self, digits: String) -> HostResult<()> {
        let checked = call::validate_dtmf(&digits).and(check(digits.len() <= MAX_DTMF, || {
            format!("{} DTMF digits; the limit is {MAX_DTMF}", digits.len())
        }));
        act!(self, checked, self.call.send_dtmf(digits))
    }

    async fn pause(&mut self, ms: u32) -> HostResult<()> {
        let checked = check(ms <= MAX_PAUSE_MS, || format!("pause of {ms} ms is over one hour"));
        act!(self, checked, self.call.pause(ms))
    }

    fn set_var(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        // Oversized variables are truncated rather than failing: set-var cannot report errors.
        let key = truncate(key, MAX_VAR_LEN);
        let value = truncate(value, MAX_VAR_LEN);
        self.call.set_var(key, value);
        Ok(())
    }

    async fn hangup(&mut self) -> wasmtime::Result<()> {
        self.actions += 1;
        if !self.call_over {
            self.call.hangup().await;
            self.guest.reset_cpu();
            self.call_over = true;
        }
        Ok(())
    }
}

const MAX_HINTS: usize = 256;
const MAX_HINT_LEN: usize = 512;
const MAX_LISTEN_MS: u32 = 60_000;

/// `listen-options` with defaults for zero fields, checked: hints parse, times in range.
fn listen_options(o: wit_speech::ListenOptions) -> CallResult<call::ListenOptions> {
    let defaults = call::ListenOptions::default();
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    let opts = call::ListenOptions {
        no_input_ms: or(o.no_input_ms, defaults.no_input_ms),
        end_silence_ms: or(o.end_silence_ms, defaults.end_silence_ms),
        max_ms: or(o.max_ms, defaults.max_ms),
        min_speech_ms: or(o.min_speech_ms, defaults.min_speech_ms),
        hints: o.hints,
    };
    check(opts.hints.len() <= MAX_HINTS, || {
        format!("{} hints; the limit is {MAX_HINTS}", opts.hints.len())
    })?;
    if let Some(h) = opts.hints.iter().find(|h| h.len() > MAX_HINT_LEN) {
        return Err(CallError::InvalidArgument(format!(
            "hint {:?}… is over {MAX_HINT_LEN} bytes",
            truncate(h.clone(), 40)
        )));
    }
    if !opts.hints.is_empty() {
        voxide_speech::Grammar::from_hints(&opts.hints)
            .map_err(|e| CallError::InvalidArgument(format!("hints: {e}")))?;
    }
    for (name, v, range) in [
        ("no-input-ms", opts.no_input_ms, 100..=MAX_LISTEN_MS),
        ("end-silence-ms", opts.end_silence_ms, 100..=10_000),
        ("max-ms", opts.max_ms, 500..=MAX_LISTEN_MS),
        ("min-speech-ms", opts.min_speech_ms, 40..=5_000),
    ] {
        check(range.contains(&v), || {
            format!("{name} is {v}; use {}-{} (0 = default)", range.start(), range.end())
        })?;
    }
    Ok(opts)
}

impl wit_speech::Host for FlowState {
    async fn listen(
        &mut self,
        opts: wit_speech::ListenOptions,
    ) -> HostResult<Option<wit_speech::Utterance>> {
        match listen_options(opts) {
            Ok(opts) => {
                let result = self.call.listen(opts).await;
                Ok(self.finish(true, result).map(|u| u.map(Into::into)))
            }
            Err(e) => Ok(self.finish(false, Err(e))),
        }
    }

    async fn speak(
        &mut self,
        text: String,
        opts: wit_speech::SpeakOptions,
    ) -> HostResult<wit_speech::Spoken> {
        let checked = check_text("speak text", &text).and_then(|()| {
            Ok(call::SpeakOptions {
                voice: opts.voice,
                interruptible: match opts.interruptible {
                    wit_speech::Interruptible::None => call::Interruptible::None,
                    wit_speech::Interruptible::Dtmf => call::Interruptible::Dtmf,
                    wit_speech::Interruptible::Speech => call::Interruptible::Speech,
                    wit_speech::Interruptible::Any => call::Interruptible::Any,
                },
                listen: listen_options(opts.listen)?,
            })
        });
        match checked {
            Ok(opts) => {
                let result = self.call.speak(text, opts).await;
                Ok(self.finish(true, result).map(|s| wit_speech::Spoken {
                    completed: s.completed,
                    heard_text: s.heard_text,
                    heard_ms: s.heard_ms,
                    interruption: s.interruption.map(Into::into),
                }))
            }
            Err(e) => Ok(self.finish(false, Err(e))),
        }
    }
}

impl From<call::Utterance> for wit_speech::Utterance {
    fn from(u: call::Utterance) -> Self {
        wit_speech::Utterance {
            text: u.text,
            confidence: u.confidence,
            start_ms: u.start_ms,
            end_ms: u.end_ms,
            words: u
                .words
                .into_iter()
                .map(|w| wit_speech::Word { text: w.text, start_ms: w.start_ms, end_ms: w.end_ms })
                .collect(),
            digits: u.digits,
        }
    }
}

impl events::Host for FlowState {
    fn emit(&mut self, name: String, payload: String) -> wasmtime::Result<Result<(), String>> {
        let valid_name = !name.is_empty()
            && name.len() <= MAX_EVENT_NAME
            && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !valid_name {
            return Ok(Err(format!(
                "event name {name:?} must be 1-{MAX_EVENT_NAME} bytes of a-z, 0-9, '.', '_', '-'"
            )));
        }
        if payload.len() > MAX_EVENT_PAYLOAD {
            return Ok(Err(format!(
                "event payload is {} bytes; the limit is {MAX_EVENT_PAYLOAD}",
                payload.len()
            )));
        }
        let payload: serde_json::Value = match serde_json::from_str(&payload) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => return Ok(Err("event payload must be a JSON object".into())),
            Err(e) => return Ok(Err(format!("event payload is not valid JSON: {e}"))),
        };
        self.call.emit(call::FlowEvent { name, payload });
        Ok(Ok(()))
    }
}

impl kv::Host for FlowState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.kv.get(&key))
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.kv.set(key, value).map_err(|e| e.to_string()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.kv.delete(&key);
        Ok(())
    }
}

impl log::Host for FlowState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let message = truncate(message, MAX_LOG_LINE);
        let call_id = &self.call_id.0;
        // `event!` needs a constant level, hence one arm per level.
        match level {
            log::Level::Trace => event!(Level::TRACE, call = %call_id, "flow: {message}"),
            log::Level::Debug => event!(Level::DEBUG, call = %call_id, "flow: {message}"),
            log::Level::Info => event!(Level::INFO, call = %call_id, "flow: {message}"),
            log::Level::Warn => event!(Level::WARN, call = %call_id, "flow: {message}"),
            log::Level::Error => event!(Level::ERROR, call = %call_id, "flow: {message}"),
        }
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.call.log(level, &message);
        Ok(())
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

// Conversions between generated WIT types and the runtime's own call types.

impl From<CallError> for wit::CallError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Hangup => wit::CallError::Hangup,
            CallError::NotAllowed(s) => wit::CallError::NotAllowed(s),
            CallError::Timeout => wit::CallError::Timeout,
            CallError::InvalidArgument(s) => wit::CallError::InvalidArgument(s),
            CallError::Failed(s) => wit::CallError::Failed(s),
        }
    }
}

impl From<wit::SayOptions> for call::SayOptions {
    fn from(o: wit::SayOptions) -> Self {
        call::SayOptions { voice: o.voice, language: o.language, interruptible: o.interruptible }
    }
}

impl From<wit::GatherOptions> for call::GatherOptions {
    fn from(o: wit::GatherOptions) -> Self {
        call::GatherOptions {
            max_digits: o.max_digits,
            finish_on_key: o.finish_on_key,
            timeout_ms: o.timeout_ms,
            inter_digit_timeout_ms: o.inter_digit_timeout_ms,
            speech: o.speech,
            prompt: o.prompt,
        }
    }
}

impl From<call::GatherResult> for wit::GatherResult {
    fn from(r: call::GatherResult) -> Self {
        wit::GatherResult { digits: r.digits, speech: r.speech, timed_out: r.timed_out }
    }
}

impl From<wit::RecordOptions> for call::RecordOptions {
    fn from(o: wit::RecordOptions) -> Self {
        call::RecordOptions {
            max_duration_ms: o.max_duration_ms,
            silence_timeout_ms: o.silence_timeout_ms,
            beep: o.beep,
            finish_on_key: o.finish_on_key,
        }
    }
}

impl From<wit::DialOptions> for call::DialOptions {
    fn from(o: wit::DialOptions) -> Self {
        call::DialOptions { timeout_ms: o.timeout_ms, caller_id: o.caller_id, record: o.record }
    }
}

impl From<call::DialOutcome> for wit::DialOutcome {
    fn from(o: call::DialOutcome) -> Self {
        match o {
            call::DialOutcome::Answered { talk_ms } => wit::DialOutcome::Answered(talk_ms),
            call::DialOutcome::Busy => wit::DialOutcome::Busy,
            call::DialOutcome::NoAnswer => wit::DialOutcome::NoAnswer,
            call::DialOutcome::Failed(s) => wit::DialOutcome::Failed(s),
        }
    }
}

impl From<&call::CallInfo> for wit::CallInfo {
    fn from(i: &call::CallInfo) -> Self {
        wit::CallInfo {
            id: i.id.0.clone(),
            from: i.from.clone(),
            to: i.to.clone(),
            direction: match i.direction {
                call::Direction::Inbound => wit::Direction::Inbound,
                call::Direction::Outbound => wit::Direction::Outbound,
            },
            headers: i.headers.clone(),
            vars: i.vars.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(hints: &[&str]) -> wit_speech::ListenOptions {
        wit_speech::ListenOptions {
            hints: hints.iter().map(|h| (*h).to_owned()).collect(),
            no_input_ms: 0,
            end_silence_ms: 0,
            max_ms: 0,
            min_speech_ms: 0,
        }
    }

    fn invalid(o: wit_speech::ListenOptions) -> String {
        match listen_options(o) {
            Err(CallError::InvalidArgument(why)) => why,
            other => panic!("expected invalid-argument, got {other:?}"),
        }
    }

    #[test]
    fn listen_options_take_defaults_for_zeros_and_refuse_what_cannot_work() {
        let o = listen_options(opts(&["yes", "no"])).unwrap();
        assert_eq!(
            o,
            call::ListenOptions { hints: vec!["yes".into(), "no".into()], ..Default::default() }
        );
        assert!(invalid(opts(&["(yes | no"])).contains("(yes | no"));
        assert!(
            invalid(wit_speech::ListenOptions { end_silence_ms: 20, ..opts(&[]) })
                .contains("end-silence-ms is 20")
        );
        assert!(
            invalid(wit_speech::ListenOptions { max_ms: 600_000, ..opts(&[]) }).contains("max-ms")
        );
        assert!(invalid(opts(&["x"; MAX_HINTS + 1])).contains("hints; the limit"));
        let long = "a ".repeat(MAX_HINT_LEN);
        assert!(invalid(opts(&[long.as_str()])).contains("bytes"));
    }
}
