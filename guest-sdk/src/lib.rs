//! Write Voxide call flows in plain Rust.
//!
//! A flow is a WebAssembly component that Voxide runs once per call. This crate hides the
//! generated WIT bindings (`voxide:flow@0.2.0`, which includes 0.1.0) behind a small, typed API: implement [`Flow`]
//! for a type, register it with [`flow!`], and drive the call through [`Call`] in straight-line
//! code. Every call action blocks the flow until it has finished, so an IVR reads top to bottom:
//!
//! ```no_run
//! use voxide_guest::prelude::*;
//!
//! struct Menu;
//!
//! impl Flow for Menu {
//!     fn handle(call: &Call) -> Result<()> {
//!         call.answer()?;
//!         let choice = call.gather(Gather::digits(1).timeout_ms(5000).prompt("Press 1 for sales"))?;
//!         if choice.digits == "1" {
//!             call.dial(Dial::to("sip:sales@pbx.example.com"))?;
//!         } else {
//!             call.say("Goodbye")?;
//!         }
//!         call.hangup();
//!         Ok(())
//!     }
//! }
//!
//! voxide_guest::flow!(Menu);
//! ```
//!
//! Build with `vox build` (or `cargo build --target wasm32-wasip2 --release`) and test offline
//! with `vox test`, which runs the scenarios in `tests/*.toml` against a simulated caller.
//!
//! Errors: every action returns [`Result`]. Once the caller hangs up, actions return
//! [`Error::Hangup`]; propagate it with `?` and Voxide records the call as hung up.

// Lets the generated bindings name this crate by its public path, as flow crates do.
extern crate self as voxide_guest;

use std::fmt;

#[doc(hidden)]
#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub mod bindings {
    // One bindgen site for the whole SDK; flow crates reach it only through `flow!`.
    wit_bindgen::generate!({
        path: "../wit/flow-0.2.0",
        world: "voxide:flow/flow@0.2.0",
        // The 0.1.0 interfaces the 0.2.0 world includes are generated here too.
        generate_all,
        pub_export_macro: true,
        default_bindings_module: "::voxide_guest::bindings",
        runtime_path: "::voxide_guest::__wit_bindgen_rt::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen_rt;

use bindings::voxide::flow0_1_0::{
    call as wit_call, events as wit_events, kv as wit_kv, log as wit_log, types as wit,
};
use bindings::voxide::flow0_2_0::speech as wit_speech;

/// Everything a flow usually needs: `use voxide_guest::prelude::*;`.
///
/// ```no_run
/// use voxide_guest::prelude::*;
///
/// fn greet(call: &Call) -> Result<()> {
///     call.answer()?;
///     call.say(Say::text("Welcome to Acme").interruptible())
/// }
/// ```
pub mod prelude {
    pub use crate::{
        Call, CallInfo, Dial, DialOutcome, Direction, Error, Event, Flow, Gather, GatherResult,
        Interruptible, Listen, Record, Recording, Result, Say, Speak, Spoken, Utterance,
    };
}

/// The entry point of a flow. Implement it and register the type with [`flow!`].
///
/// ```no_run
/// use voxide_guest::prelude::*;
///
/// struct Hello;
/// impl Flow for Hello {
///     fn handle(call: &Call) -> Result<()> {
///         call.answer()?;
///         call.say("Hello from Voxide")?;
///         call.hangup();
///         Ok(())
///     }
/// }
/// voxide_guest::flow!(Hello);
/// ```
pub trait Flow {
    /// Runs once per call. Return `Ok(())` when done; an `Err` ends the call with a flow error
    /// that is logged and recorded in the call's CDR (a hang-up is recorded as such).
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # struct Support;
    /// # impl Flow for Support {
    /// fn handle(call: &Call) -> Result<()> {
    ///     let queue = call.var("queue").ok_or_else(|| Error::msg("route sets no queue"))?;
    ///     call.answer()?;
    ///     call.enqueue(queue)
    /// }
    /// # }
    /// ```
    fn handle(call: &Call) -> Result<()>;
}

/// Registers a [`Flow`] implementation as the component's `voxide:flow/handler` export.
/// Use it exactly once per flow crate, at the top level of `lib.rs`.
///
/// ```no_run
/// # use voxide_guest::prelude::*;
/// struct MyFlow;
/// impl Flow for MyFlow {
///     fn handle(call: &Call) -> Result<()> { call.hangup(); Ok(()) }
/// }
/// voxide_guest::flow!(MyFlow);
/// ```
#[macro_export]
macro_rules! flow {
    ($flow:ty) => {
        const _: () = {
            struct __VoxideHandler;
            impl $crate::bindings::exports::voxide::flow0_1_0::handler::Guest for __VoxideHandler {
                fn handle(
                    info: $crate::bindings::voxide::flow0_1_0::types::CallInfo,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__run::<$flow>(info)
                }
            }
    $crate::bindings::export!(__VoxideHandler with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub fn __run<F: Flow>(info: wit::CallInfo) -> std::result::Result<(), String> {
    let call = Call { info: CallInfo::from(info) };
    F::handle(&call).map_err(|e| e.to_string())
}

/// Result of a call action.
///
/// ```
/// # use voxide_guest::{Error, Result};
/// fn check_pin(pin: &str) -> Result<()> {
///     if pin.len() != 4 {
///         return Err(Error::msg("PIN must have 4 digits"));
///     }
///     Ok(())
/// }
/// assert!(check_pin("1234").is_ok());
/// assert_eq!(check_pin("12"), Err(Error::msg("PIN must have 4 digits")));
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call action did not complete.
///
/// ```no_run
/// # use voxide_guest::prelude::*;
/// # fn f(call: &Call) -> Result<()> {
/// match call.enqueue("support") {
///     Err(Error::Timeout) => call.say("All agents are busy. Please call back later.")?,
///     other => other?,
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The caller has hung up; return from the flow (usually with `?`).
    Hangup,
    /// The flow's manifest does not allow this action or target.
    NotAllowed(String),
    /// The action timed out (e.g. waiting in a queue).
    Timeout,
    /// An argument was invalid.
    InvalidArgument(String),
    /// The action failed for another reason.
    Failed(String),
    /// An error raised by the flow's own logic; see [`Error::msg`].
    Flow(String),
}

impl Error {
    /// An error of the flow's own, ending the call with this message in its CDR.
    ///
    /// ```
    /// # use voxide_guest::Error;
    /// let e = Error::msg("no agent configured");
    /// assert_eq!(e.to_string(), "no agent configured");
    /// ```
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Flow(message.into())
    }

    /// True if the caller has gone: the flow should stop.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// match call.gather(Gather::digits(1).prompt("Rate our service from 1 to 5")) {
    ///     Ok(answer) => call.set_var("rating", &answer.digits),
    ///     Err(e) if e.is_hangup() => call.set_var("rating", "abandoned"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_hangup(&self) -> bool {
        matches!(self, Error::Hangup)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Hangup => f.write_str("caller hung up"),
            Error::NotAllowed(what) => write!(f, "not allowed: {what}"),
            Error::Timeout => f.write_str("timed out"),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::Failed(why) => write!(f, "failed: {why}"),
            Error::Flow(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::CallError> for Error {
    fn from(e: wit::CallError) -> Self {
        match e {
            wit::CallError::Hangup => Error::Hangup,
            wit::CallError::NotAllowed(s) => Error::NotAllowed(s),
            wit::CallError::Timeout => Error::Timeout,
            wit::CallError::InvalidArgument(s) => Error::InvalidArgument(s),
            wit::CallError::Failed(s) => Error::Failed(s),
        }
    }
}

/// Which side started the call.
///
/// ```no_run
/// # use voxide_guest::prelude::*;
/// # fn f(call: &Call) -> Result<()> {
/// match call.info().direction {
///     Direction::Inbound => call.say("Thank you for calling Acme Dental")?,
///     Direction::Outbound => call.say("This is Acme Dental with an appointment reminder")?,
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A caller dialled in.
    Inbound,
    /// Voxide placed the call.
    Outbound,
}

/// What the flow knows about its call. Reach it through [`Call::info`].
///
/// ```no_run
/// # use voxide_guest::prelude::*;
/// # fn f(call: &Call) -> Result<()> {
/// let info = call.info();
/// voxide_guest::log::info(&format!("call {} from {} to {}", info.id, info.from, info.to));
/// let campaign = info.vars.iter().find(|(k, _)| k == "campaign").map(|(_, v)| v.as_str());
/// call.set_var("campaign", campaign.unwrap_or("none"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// Voxide's call id (in logs, CDRs and events).
    pub id: String,
    /// Calling party (E.164 number or SIP URI).
    pub from: String,
    /// Called party as routed.
    pub to: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Selected SIP headers of the INVITE.
    pub headers: Vec<(String, String)>,
    /// Variables set by the route or API.
    pub vars: Vec<(String, String)>,
}

impl From<wit::CallInfo> for CallInfo {
    fn from(i: wit::CallInfo) -> Self {
        CallInfo {
            id: i.id,
            from: i.from,
            to: i.to,
            direction: match i.direction {
                wit::Direction::Inbound => Direction::Inbound,
                wit::Direction::Outbound => Direction::Outbound,
            },
            headers: i.headers,
            vars: i.vars,
        }
    }
}

/// The call this flow instance runs for. Every action blocks until it has finished.
///
/// ```no_run
/// # use voxide_guest::prelude::*;
/// # fn f(call: &Call) -> Result<()> {
/// call.answer()?;
/// call.say("Please leave a message after the tone")?;
/// let message = call.record(Record::new().beep())?;
/// call.set_var("voicemail", &message.id);
/// call.hangup();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Call {
    info: CallInfo,
}

impl Call {
    /// Everything known about the call at start.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// if call.info().direction == Direction::Outbound {
    ///     call.say("Hello, this is a reminder from Acme Dental")?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// The calling party.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// voxide_guest::log::info(&format!("inbound call from {}", call.from()));
    /// # Ok(()) }
    /// ```
    pub fn from(&self) -> &str {
        &self.info.from
    }

    /// The called party.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// let team = if call.to() == "+15550100" { "sales" } else { "support" };
    /// call.set_var("team", team);
    /// # Ok(()) }
    /// ```
    pub fn to(&self) -> &str {
        &self.info.to
    }

    /// A variable set by the route or API that started the call.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) {
    /// let open = call.var("business_hours") != Some("closed");
    /// # }
    /// ```
    pub fn var(&self, name: &str) -> Option<&str> {
        self.info.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first INVITE header with this name (case-insensitive).
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// let caller = call.header("P-Asserted-Identity").unwrap_or(call.from());
    /// call.set_var("caller", caller);
    /// # Ok(()) }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.info
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Answer the call. Actions before `answer` run as early media.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.answer()?;
    /// call.say("Thank you for calling Acme")?;
    /// # Ok(()) }
    /// ```
    pub fn answer(&self) -> Result<()> {
        Ok(wit_call::answer()?)
    }

    /// Refuse an unanswered call with a SIP final response, e.g. `486` (busy).
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.reject(486)?;
    /// # Ok(()) }
    /// ```
    pub fn reject(&self, code: u16) -> Result<()> {
        Ok(wit_call::reject(code, None)?)
    }

    /// Speak text; accepts a `&str` or a [`Say`] with options.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("Welcome to Acme")?;
    /// call.say(Say::text("Bienvenue").language("fr-FR").interruptible())?;
    /// # Ok(()) }
    /// ```
    pub fn say(&self, say: impl Into<Say>) -> Result<()> {
        let say = say.into();
        Ok(wit_call::say(&say.text, &say.options)?)
    }

    /// Play an audio asset (asset id or a URL the manifest allows).
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.play("welcome.wav")?;
    /// # Ok(()) }
    /// ```
    pub fn play(&self, media: &str) -> Result<()> {
        Ok(wit_call::play(media)?)
    }

    /// Collect DTMF digits, optionally after a prompt.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// let pin = call.gather(Gather::digits(4).finish_on_key('#').prompt("Enter your PIN"))?;
    /// if pin.timed_out && pin.digits.is_empty() { call.say("No input received")?; }
    /// # Ok(()) }
    /// ```
    pub fn gather(&self, gather: Gather) -> Result<GatherResult> {
        let r = wit_call::gather(&gather.0)?;
        Ok(GatherResult { digits: r.digits, speech: r.speech, timed_out: r.timed_out })
    }

    /// Wait for the caller to say something and recognise it; `Ok(None)` if nobody spoke or
    /// pressed a key in time. Needs flow 0.2.0 (this SDK) and a host with speech recognition.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("Would you like a callback?")?;
    /// match call.listen(Listen::hints(["yes", "no"]))? {
    ///     Some(u) if u.text == "yes" => call.say("We will call you back")?,
    ///     Some(_) => call.say("OK, goodbye")?,
    ///     None => call.say("I did not hear anything")?,
    /// }
    /// # Ok(()) }
    /// ```
    pub fn listen(&self, listen: Listen) -> Result<Option<Utterance>> {
        Ok(wit_speech::listen(&listen.0)?.map(Into::into))
    }

    /// Speak text, interruptibly as `speak` says, and learn what the caller heard of it.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// let spoken = call.speak(Speak::text("Here is a long answer").interruptible(Interruptible::Speech))?;
    /// if !spoken.completed {
    ///     call.set_var("heard", &spoken.heard_text);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn speak(&self, speak: impl Into<Speak>) -> Result<Spoken> {
        let speak = speak.into();
        let opts = wit_speech::SpeakOptions {
            voice: speak.voice,
            interruptible: match speak.interruptible {
                Interruptible::None => wit_speech::Interruptible::None,
                Interruptible::Dtmf => wit_speech::Interruptible::Dtmf,
                Interruptible::Speech => wit_speech::Interruptible::Speech,
                Interruptible::Any => wit_speech::Interruptible::Any,
            },
            listen: speak.listen.0,
        };
        let s = wit_speech::speak(&speak.text, &opts)?;
        Ok(Spoken {
            completed: s.completed,
            heard_text: s.heard_text,
            heard_ms: s.heard_ms,
            interruption: s.interruption.map(Into::into),
        })
    }

    /// Record the caller until max duration, silence, a finish key or hang-up.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// let rec = call.record(Record::new().beep().finish_on_key('#').silence_timeout_ms(5000))?;
    /// call.set_var("voicemail", &rec.id);
    /// # Ok(()) }
    /// ```
    pub fn record(&self, record: Record) -> Result<Recording> {
        let r = wit_call::record(&record.0)?;
        Ok(Recording { id: r.id, duration_ms: r.duration_ms })
    }

    /// Ring targets and bridge the caller to the first that answers.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// match call.dial(Dial::to("+15550199").timeout_ms(20_000))? {
    ///     DialOutcome::Answered { talk_ms } => call.set_var("talk_ms", &talk_ms.to_string()),
    ///     DialOutcome::Busy | DialOutcome::NoAnswer | DialOutcome::Failed(_) => {
    ///         call.say("Nobody is available")?
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn dial(&self, dial: Dial) -> Result<DialOutcome> {
        Ok(match wit_call::dial(&dial.targets, &dial.options)? {
            wit::DialOutcome::Answered(talk_ms) => DialOutcome::Answered { talk_ms },
            wit::DialOutcome::Busy => DialOutcome::Busy,
            wit::DialOutcome::NoAnswer => DialOutcome::NoAnswer,
            wit::DialOutcome::Failed(why) => DialOutcome::Failed(why),
        })
    }

    /// Wait in `queue` (with hold music) until an agent takes the call and finishes.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("Please hold for the next available support agent")?;
    /// call.enqueue("support")?;
    /// # Ok(()) }
    /// ```
    pub fn enqueue(&self, queue: &str) -> Result<()> {
        Ok(wit_call::enqueue(queue)?)
    }

    /// Join conference `room` until it ends for this caller.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("Joining the daily standup")?;
    /// call.conference("standup")?;
    /// # Ok(()) }
    /// ```
    pub fn conference(&self, room: &str) -> Result<()> {
        Ok(wit_call::conference(room)?)
    }

    /// Blind-transfer the caller (SIP REFER); the call then leaves this flow.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("Transferring you to the front desk")?;
    /// call.transfer("sip:front-desk@pbx.example.com")?;
    /// # Ok(()) }
    /// ```
    pub fn transfer(&self, target: &str) -> Result<()> {
        Ok(wit_call::transfer(target)?)
    }

    /// Send DTMF digits to the caller.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// // Outbound call into a partner's IVR: pick option 2, then the account number.
    /// call.send_dtmf("2")?;
    /// call.pause(1500)?;
    /// call.send_dtmf("48213#")?;
    /// # Ok(()) }
    /// ```
    pub fn send_dtmf(&self, digits: &str) -> Result<()> {
        Ok(wit_call::send_dtmf(digits)?)
    }

    /// Wait `ms` milliseconds.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("One moment while we look up your account")?;
    /// call.pause(2000)?;
    /// # Ok(()) }
    /// ```
    pub fn pause(&self, ms: u32) -> Result<()> {
        Ok(wit_call::pause(ms)?)
    }

    /// Set a call variable (kept in the CDR and events).
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.set_var("menu_choice", "sales");
    /// # Ok(()) }
    /// ```
    pub fn set_var(&self, key: &str, value: &str) {
        wit_call::set_var(key, value)
    }

    /// End the call. Safe to call more than once.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("Thank you for calling. Goodbye.")?;
    /// call.hangup();
    /// # Ok(()) }
    /// ```
    pub fn hangup(&self) {
        wit_call::hangup()
    }

    /// Emit an event for webhooks and the event stream.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.emit(Event::new("order.confirmed").str("order", "A-17").num("items", 3))?;
    /// # Ok(()) }
    /// ```
    pub fn emit(&self, event: Event) -> Result<()> {
        let payload = event.payload();
        wit_events::emit(&event.name, &payload).map_err(Error::InvalidArgument)
    }
}

/// Options for [`Call::listen`] (and how [`Speak`] hears an interruption). Zero fields mean
/// the host's defaults: 5 s for the caller to start, 700 ms of silence ends the turn, 15 s at
/// most, 200 ms of speech to count.
///
/// ```
/// # use voxide_guest::Listen;
/// let yes_no = Listen::hints(["yes", "no", "yes please", "no thank you"]).no_input_ms(4000);
/// let number = Listen::hints(["[my number is] <digits>"]).end_silence_ms(1200);
/// let anything = Listen::new();
/// ```
#[derive(Debug, Clone)]
pub struct Listen(wit_speech::ListenOptions);

impl Listen {
    /// Open vocabulary (weak on telephone audio: prefer [`Listen::hints`]).
    pub fn new() -> Self {
        Listen(wit_speech::ListenOptions {
            hints: Vec::new(),
            no_input_ms: 0,
            end_silence_ms: 0,
            max_ms: 0,
            min_speech_ms: 0,
        })
    }
    /// Recognise one of these phrases: words, `[optional words]`, `(one | other)`,
    /// `<digit>` and `<digits>`.
    pub fn hints<S: Into<String>>(hints: impl IntoIterator<Item = S>) -> Self {
        let mut listen = Listen::new();
        listen.0.hints = hints.into_iter().map(Into::into).collect();
        listen
    }
    /// Give up (`Ok(None)`) if nobody starts speaking within `ms`.
    pub fn no_input_ms(mut self, ms: u32) -> Self {
        self.0.no_input_ms = ms;
        self
    }
    /// The silence after speech that ends the caller's turn.
    pub fn end_silence_ms(mut self, ms: u32) -> Self {
        self.0.end_silence_ms = ms;
        self
    }
    /// Cut an utterance that goes on longer than `ms`.
    pub fn max_ms(mut self, ms: u32) -> Self {
        self.0.max_ms = ms;
        self
    }
    /// Speech shorter than `ms` (a cough, "mm") neither counts nor interrupts.
    pub fn min_speech_ms(mut self, ms: u32) -> Self {
        self.0.min_speech_ms = ms;
        self
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen::new()
    }
}

/// What the caller said (or pressed) in one turn.
///
/// ```
/// # use voxide_guest::Utterance;
/// fn agreed(u: &Utterance) -> bool {
///     u.digits == "1" || u.text.starts_with("yes")
/// }
/// let said = Utterance { text: "yes please".into(), confidence: 0.9, ..Utterance::default() };
/// assert!(agreed(&said));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Utterance {
    /// The words, lower case; empty if nothing matched the hints or keys ended the turn.
    pub text: String,
    /// 0.0–1.0.
    pub confidence: f32,
    /// When the speech began and ended, in ms since the action started.
    pub start_ms: u32,
    pub end_ms: u32,
    /// Each word with its (start, end) in ms since the action started.
    pub words: Vec<(String, u32, u32)>,
    /// Keys pressed (a key press ends the turn at once).
    pub digits: String,
}

impl From<wit_speech::Utterance> for Utterance {
    fn from(u: wit_speech::Utterance) -> Self {
        Utterance {
            text: u.text,
            confidence: u.confidence,
            start_ms: u.start_ms,
            end_ms: u.end_ms,
            words: u.words.into_iter().map(|w| (w.text, w.start_ms, w.end_ms)).collect(),
            digits: u.digits,
        }
    }
}

/// What may cut a [`Speak`] short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interruptible {
    /// Nothing: spoken to the end.
    #[default]
    None,
    /// A key press.
    Dtmf,
    /// The caller speaking.
    Speech,
    /// Either.
    Any,
}

/// Text to speak with [`Call::speak`], and what may interrupt it.
///
/// ```
/// # use voxide_guest::{Interruptible, Listen, Speak};
/// let answer = Speak::text("Our opening hours are nine to five, Monday to Friday.")
///     .interruptible(Interruptible::Any)
///     .listen(Listen::hints(["stop", "repeat that", "agent"]));
/// ```
#[derive(Debug, Clone)]
pub struct Speak {
    text: String,
    voice: Option<String>,
    interruptible: Interruptible,
    listen: Listen,
}

impl Speak {
    pub fn text(text: impl Into<String>) -> Self {
        Speak {
            text: text.into(),
            voice: None,
            interruptible: Interruptible::None,
            listen: Listen::new(),
        }
    }
    /// Use a specific TTS voice.
    pub fn voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }
    pub fn interruptible(mut self, by: Interruptible) -> Self {
        self.interruptible = by;
        self
    }
    /// How interrupting speech is detected (`min_speech_ms`) and recognised (`hints`).
    pub fn listen(mut self, listen: Listen) -> Self {
        self.listen = listen;
        self
    }
}

impl From<&str> for Speak {
    fn from(text: &str) -> Self {
        Speak::text(text)
    }
}

/// How a [`Call::speak`] went, from the audio actually sent to the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spoken {
    /// The whole text was played.
    pub completed: bool,
    /// The words the caller heard: keep only these in a conversation's history.
    pub heard_text: String,
    /// Audio sent, in ms.
    pub heard_ms: u32,
    /// What interrupted (the caller's utterance, or the key in `digits`).
    pub interruption: Option<Utterance>,
}

/// Text to speak, with options. `&str` converts into a plain, non-interruptible `Say`.
///
/// ```
/// # use voxide_guest::Say;
/// let menu = Say::text("Para español, oprima dos").language("es-US").interruptible();
/// let thanks: Say = "Thank you for calling".into();
/// ```
#[derive(Debug, Clone)]
pub struct Say {
    text: String,
    options: wit::SayOptions,
}

impl Say {
    /// Speak `text` with the default voice.
    ///
    /// ```
    /// # use voxide_guest::Say;
    /// let greeting = Say::text("Welcome to Acme");
    /// ```
    pub fn text(text: impl Into<String>) -> Self {
        Say {
            text: text.into(),
            options: wit::SayOptions { voice: None, language: None, interruptible: false },
        }
    }
    /// Use a specific TTS voice.
    ///
    /// ```
    /// # use voxide_guest::Say;
    /// let greeting = Say::text("Welcome to Acme").voice("en-US-female");
    /// ```
    pub fn voice(mut self, voice: impl Into<String>) -> Self {
        self.options.voice = Some(voice.into());
        self
    }
    /// Speak in this language (BCP 47, e.g. `en-GB`).
    ///
    /// ```
    /// # use voxide_guest::Say;
    /// let greeting = Say::text("Willkommen bei Acme").language("de-DE");
    /// ```
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.options.language = Some(language.into());
        self
    }
    /// Let a key press cut the prompt short (the key is kept for the next gather).
    ///
    /// ```
    /// # use voxide_guest::Say;
    /// let menu = Say::text("For sales press 1, for support press 2").interruptible();
    /// ```
    pub fn interruptible(mut self) -> Self {
        self.options.interruptible = true;
        self
    }
}

impl From<&str> for Say {
    fn from(text: &str) -> Self {
        Say::text(text)
    }
}

impl From<String> for Say {
    fn from(text: String) -> Self {
        Say::text(text)
    }
}

/// Options for [`Call::gather`]. Defaults: 5 s for the first digit, 3 s between digits.
///
/// ```
/// # use voxide_guest::Gather;
/// let g = Gather::digits(4).finish_on_key('#').timeout_ms(8000).prompt("Enter your PIN");
/// ```
#[derive(Debug, Clone)]
pub struct Gather(wit::GatherOptions);

impl Gather {
    /// Collect up to `max` digits (clamped to 1..=64).
    ///
    /// ```
    /// # use voxide_guest::Gather;
    /// let choice = Gather::digits(1).prompt("For sales press 1, for support press 2");
    /// ```
    pub fn digits(max: u32) -> Self {
        Gather(wit::GatherOptions {
            max_digits: max.clamp(1, 64),
            finish_on_key: None,
            timeout_ms: 5000,
            inter_digit_timeout_ms: 3000,
            speech: false,
            prompt: None,
        })
    }
    /// End input early on this key (not included in the digits).
    ///
    /// ```
    /// # use voxide_guest::Gather;
    /// let account = Gather::digits(10).finish_on_key('#');
    /// ```
    pub fn finish_on_key(mut self, key: char) -> Self {
        self.0.finish_on_key = Some(key.to_string());
        self
    }
    /// Wait this long for the first digit after the prompt.
    ///
    /// ```
    /// # use voxide_guest::Gather;
    /// let choice = Gather::digits(1).timeout_ms(8000);
    /// ```
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.0.timeout_ms = ms;
        self
    }
    /// Wait this long for each further digit.
    ///
    /// ```
    /// # use voxide_guest::Gather;
    /// let card = Gather::digits(16).inter_digit_timeout_ms(5000);
    /// ```
    pub fn inter_digit_timeout_ms(mut self, ms: u32) -> Self {
        self.0.inter_digit_timeout_ms = ms;
        self
    }
    /// Speak this prompt first; a key press interrupts it.
    ///
    /// ```
    /// # use voxide_guest::Gather;
    /// let pin = Gather::digits(4).prompt("Please enter your four digit PIN");
    /// ```
    pub fn prompt(mut self, text: impl Into<String>) -> Self {
        self.0.prompt = Some(text.into());
        self
    }
    /// Also accept speech (reserved: needs a speech-recognition engine on the host).
    ///
    /// ```
    /// # use voxide_guest::Gather;
    /// let choice = Gather::digits(1).speech().prompt("Say or press 1 for billing");
    /// ```
    pub fn speech(mut self) -> Self {
        self.0.speech = true;
        self
    }
}

/// What [`Call::gather`] collected.
///
/// ```
/// # use voxide_guest::GatherResult;
/// fn department(choice: &GatherResult) -> Option<&'static str> {
///     match choice.digits.as_str() {
///         "1" => Some("sales"),
///         "2" => Some("support"),
///         _ => None,
///     }
/// }
/// let pressed = GatherResult { digits: "2".into(), speech: None, timed_out: false };
/// assert_eq!(department(&pressed), Some("support"));
/// let silent = GatherResult { digits: String::new(), speech: None, timed_out: true };
/// assert_eq!(department(&silent), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherResult {
    /// Digits pressed, without the finish key.
    pub digits: String,
    /// Recognised speech, if speech input was requested.
    pub speech: Option<String>,
    /// True if a timer ended the input.
    pub timed_out: bool,
}

/// Options for [`Call::record`]. Defaults: 2 minutes max, 5 s silence timeout, no beep.
///
/// ```
/// # use voxide_guest::Record;
/// let r = Record::new().beep().finish_on_key('#').max_duration_ms(60_000);
/// ```
#[derive(Debug, Clone)]
pub struct Record(wit::RecordOptions);

impl Record {
    /// Default recording options.
    ///
    /// ```
    /// # use voxide_guest::Record;
    /// let voicemail = Record::new();
    /// ```
    pub fn new() -> Self {
        Record(wit::RecordOptions {
            max_duration_ms: 120_000,
            silence_timeout_ms: 5000,
            beep: false,
            finish_on_key: None,
        })
    }
    /// Hard limit on length.
    ///
    /// ```
    /// # use voxide_guest::Record;
    /// let voicemail = Record::new().max_duration_ms(180_000);
    /// ```
    pub fn max_duration_ms(mut self, ms: u32) -> Self {
        self.0.max_duration_ms = ms;
        self
    }
    /// Stop after this much silence (0 = never).
    ///
    /// ```
    /// # use voxide_guest::Record;
    /// let voicemail = Record::new().silence_timeout_ms(3000);
    /// ```
    pub fn silence_timeout_ms(mut self, ms: u32) -> Self {
        self.0.silence_timeout_ms = ms;
        self
    }
    /// Beep before recording.
    ///
    /// ```
    /// # use voxide_guest::Record;
    /// let voicemail = Record::new().beep();
    /// ```
    pub fn beep(mut self) -> Self {
        self.0.beep = true;
        self
    }
    /// Stop when this key is pressed.
    ///
    /// ```
    /// # use voxide_guest::Record;
    /// let voicemail = Record::new().finish_on_key('#');
    /// ```
    pub fn finish_on_key(mut self, key: char) -> Self {
        self.0.finish_on_key = Some(key.to_string());
        self
    }
}

impl Default for Record {
    fn default() -> Self {
        Record::new()
    }
}

/// A finished recording.
///
/// ```no_run
/// # use voxide_guest::prelude::*;
/// # fn f(call: &Call) -> Result<()> {
/// let message = call.record(Record::new().beep().finish_on_key('#'))?;
/// if message.duration_ms < 1000 {
///     call.say("Your message was too short")?;
/// } else {
///     call.emit(
///         Event::new("voicemail.created")
///             .str("recording_id", &message.id)
///             .num("duration_ms", i64::from(message.duration_ms)),
///     )?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// Id to fetch it from the control API.
    pub id: String,
    /// Length in milliseconds.
    pub duration_ms: u32,
}

/// Targets and options for [`Call::dial`]. Default ring timeout: 30 s.
///
/// ```
/// # use voxide_guest::Dial;
/// let d = Dial::to("sip:alice@example.com").also("+15550199").timeout_ms(20_000).record();
/// ```
#[derive(Debug, Clone)]
pub struct Dial {
    targets: Vec<String>,
    options: wit::DialOptions,
}

impl Dial {
    /// Dial one target (E.164 number, registered user or SIP URI).
    ///
    /// ```
    /// # use voxide_guest::Dial;
    /// let sales = Dial::to("sip:sales@pbx.example.com");
    /// ```
    pub fn to(target: impl Into<String>) -> Self {
        Dial {
            targets: vec![target.into()],
            options: wit::DialOptions { timeout_ms: 30_000, caller_id: None, record: false },
        }
    }
    /// Ring another target at the same time; the first to answer wins.
    ///
    /// ```
    /// # use voxide_guest::Dial;
    /// let on_call = Dial::to("sip:alice@pbx.example.com").also("+15550199");
    /// ```
    pub fn also(mut self, target: impl Into<String>) -> Self {
        self.targets.push(target.into());
        self
    }
    /// Ring for at most this long.
    ///
    /// ```
    /// # use voxide_guest::Dial;
    /// let sales = Dial::to("sip:sales@pbx.example.com").timeout_ms(20_000);
    /// ```
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.options.timeout_ms = ms;
        self
    }
    /// Present this calling number.
    ///
    /// ```
    /// # use voxide_guest::Dial;
    /// let callback = Dial::to("+15550123").caller_id("+15550100");
    /// ```
    pub fn caller_id(mut self, id: impl Into<String>) -> Self {
        self.options.caller_id = Some(id.into());
        self
    }
    /// Record the bridged conversation.
    ///
    /// ```
    /// # use voxide_guest::Dial;
    /// let support = Dial::to("sip:support@pbx.example.com").record();
    /// ```
    pub fn record(mut self) -> Self {
        self.options.record = true;
        self
    }
}

/// How a [`Call::dial`] ended.
///
/// ```
/// # use voxide_guest::DialOutcome;
/// fn needs_voicemail(outcome: &DialOutcome) -> bool {
///     !matches!(outcome, DialOutcome::Answered { .. })
/// }
/// assert!(!needs_voicemail(&DialOutcome::Answered { talk_ms: 95_000 }));
/// assert!(needs_voicemail(&DialOutcome::Busy));
/// assert!(needs_voicemail(&DialOutcome::Failed("no route to sales".into())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialOutcome {
    /// Bridged; returned after the dialled party hung up.
    Answered {
        /// Conversation length in ms.
        talk_ms: u32,
    },
    /// Every target was busy.
    Busy,
    /// Nobody answered in time.
    NoAnswer,
    /// The call could not be placed.
    Failed(String),
}

/// An event for webhooks and the event stream, built field by field as a JSON object.
///
/// ```
/// # use voxide_guest::Event;
/// let e = Event::new("voicemail.created").str("recording_id", "rec-1").num("duration_ms", 4200);
/// assert_eq!(e.payload(), r#"{"recording_id":"rec-1","duration_ms":4200}"#);
/// ```
#[derive(Debug, Clone)]
pub struct Event {
    name: String,
    fields: Vec<(String, String)>,
}

impl Event {
    /// A new event named e.g. `voicemail.created`.
    ///
    /// ```
    /// # use voxide_guest::Event;
    /// let e = Event::new("call.abandoned");
    /// assert_eq!(e.payload(), "{}");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Event { name: name.into(), fields: Vec::new() }
    }
    /// Add a string field.
    ///
    /// ```
    /// # use voxide_guest::Event;
    /// let e = Event::new("menu.selected").str("department", "sales");
    /// assert_eq!(e.payload(), r#"{"department":"sales"}"#);
    /// ```
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.fields.push((key.to_owned(), json_string(value)));
        self
    }
    /// Add a numeric field.
    ///
    /// ```
    /// # use voxide_guest::Event;
    /// let e = Event::new("queue.left").num("wait_ms", 42_000);
    /// assert_eq!(e.payload(), r#"{"wait_ms":42000}"#);
    /// ```
    pub fn num(mut self, key: &str, value: i64) -> Self {
        self.fields.push((key.to_owned(), value.to_string()));
        self
    }
    /// Add a fractional number (non-finite values are written as `null`).
    ///
    /// ```
    /// # use voxide_guest::Event;
    /// let e = Event::new("speech.heard").float("confidence", 0.5);
    /// assert_eq!(e.payload(), r#"{"confidence":0.5}"#);
    /// ```
    pub fn float(mut self, key: &str, value: f64) -> Self {
        let value = if value.is_finite() { value.to_string() } else { "null".into() };
        self.fields.push((key.to_owned(), value));
        self
    }
    /// Add a boolean field.
    ///
    /// ```
    /// # use voxide_guest::Event;
    /// let e = Event::new("survey.completed").bool("satisfied", true);
    /// assert_eq!(e.payload(), r#"{"satisfied":true}"#);
    /// ```
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.fields.push((key.to_owned(), value.to_string()));
        self
    }
    /// The JSON object sent as the payload.
    ///
    /// ```
    /// # use voxide_guest::Event;
    /// let e = Event::new("callback.requested").str("number", "+15550123").bool("urgent", false);
    /// assert_eq!(e.payload(), r#"{"number":"+15550123","urgent":false}"#);
    /// ```
    pub fn payload(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_string(k));
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        out
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Per-flow key-value state shared by all calls of the flow (per tenant).
///
/// ```no_run
/// let n: u64 = voxide_guest::kv::get("calls").and_then(|v| v.parse().ok()).unwrap_or(0);
/// voxide_guest::kv::set("calls", &(n + 1).to_string()).ok();
/// ```
pub mod kv {
    use super::wit_kv;

    /// The value under `key`, if any.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// if let Some(notice) = voxide_guest::kv::get("holiday_notice") {
    ///     call.say(notice)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn get(key: &str) -> Option<String> {
        wit_kv::get(key)
    }
    /// Store `value` under `key`; errors if a size limit would be exceeded.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// voxide_guest::kv::set("last_caller", call.from()).map_err(Error::msg)?;
    /// # Ok(()) }
    /// ```
    pub fn set(key: &str, value: &str) -> Result<(), String> {
        wit_kv::set(key, value)
    }
    /// Remove `key`.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// call.say("Your callback request has been cancelled")?;
    /// voxide_guest::kv::delete(&format!("callback:{}", call.from()));
    /// # Ok(()) }
    /// ```
    pub fn delete(key: &str) {
        wit_kv::delete(key)
    }
}

/// Logging into the host's log, tagged with the call id.
///
/// ```no_run
/// voxide_guest::log::info("caller chose sales");
/// ```
pub mod log {
    use super::wit_log::{self, Level};

    /// Debug-level message.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// voxide_guest::log::debug(&format!("route vars: {:?}", call.info().vars));
    /// # Ok(()) }
    /// ```
    pub fn debug(message: &str) {
        wit_log::log(Level::Debug, message)
    }
    /// Info-level message.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// voxide_guest::log::info(&format!("caller {} chose sales", call.from()));
    /// # Ok(()) }
    /// ```
    pub fn info(message: &str) {
        wit_log::log(Level::Info, message)
    }
    /// Warning.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// if call.var("sales").is_none() {
    ///     voxide_guest::log::warn("route sets no sales target; using the default");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn warn(message: &str) {
        wit_log::log(Level::Warn, message)
    }
    /// Error.
    ///
    /// ```no_run
    /// # use voxide_guest::prelude::*;
    /// # fn f(call: &Call) -> Result<()> {
    /// if let DialOutcome::Failed(why) = call.dial(Dial::to("sip:sales@pbx.example.com"))? {
    ///     voxide_guest::log::error(&format!("dialling sales failed: {why}"));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn error(message: &str) {
        wit_log::log(Level::Error, message)
    }
}
