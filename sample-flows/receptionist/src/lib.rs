//! receptionist: a spoken front desk, the smallest voice agent.
//!
//! It greets the caller and then takes turns: `listen` for what the caller says (recognised
//! among the phrases below), answer, listen again. Every answer may be interrupted by the
//! caller speaking; what they say then is the next turn, and the answer is kept only as far
//! as the caller heard it (`heard_text`), which is what an agent would put in its history.
//!
//! Events: `speech.heard` for every turn (text, confidence, digits, start/end ms) and
//! `speech.spoken` for every answer (completed, heard_text, heard_ms, and the interruption's
//! start_ms if it was cut short). Three turns without input, or "goodbye", end the call.
//!
//! Route variables: `company` (name in the greeting).

use voxide_guest::prelude::*;

/// What the receptionist understands: digits, names, yes/no, departments, hours, goodbye.
const HINTS: &[&str] = &[
    "[my number is] <digits>",
    "[my name is] (alice | bob | carol | david | emma)",
    "yes",
    "no",
    "yes please",
    "no thank you",
    "[i want to talk to] (sales | support) [please]",
    "what are your [opening] hours",
    "stop",
    "goodbye",
];

const HOURS: &str = "We are open from nine in the morning until five in the afternoon, \
                     Monday to Friday, and from ten until two on Saturdays. On public holidays \
                     the office is closed, but you can always leave a message for the team.";

/// Turns without input before the receptionist gives up.
const SILENT_TURNS: u32 = 3;

struct Receptionist;

impl Flow for Receptionist {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        let company = call.var("company").unwrap_or("Acme");
        let mut next = answer(call, &format!("Hello, this is {company}. How can I help?"))?;
        let mut silent = 0;
        loop {
            let heard = match next.take() {
                Some(interruption) => Some(interruption),
                None => call.listen(listening().no_input_ms(6000))?,
            };
            let Some(heard) = heard else {
                silent += 1;
                if silent >= SILENT_TURNS {
                    call.say("I did not hear anything. Goodbye.")?;
                    call.hangup();
                    return Ok(());
                }
                next = answer(call, "Are you still there?")?;
                continue;
            };
            silent = 0;
            call.emit(
                Event::new("speech.heard")
                    .str("text", &heard.text)
                    .float("confidence", f64::from(heard.confidence))
                    .str("digits", &heard.digits)
                    .num("start_ms", i64::from(heard.start_ms))
                    .num("end_ms", i64::from(heard.end_ms)),
            )?;
            let text = heard.text.as_str();
            let reply = if text == "goodbye" {
                call.say("Thank you for calling. Goodbye.")?;
                call.hangup();
                return Ok(());
            } else if text.contains("hours") {
                HOURS.to_owned()
            } else if text.is_empty() && !heard.digits.is_empty() {
                format!("You pressed {}.", heard.digits)
            } else if text.is_empty() || text == "stop" {
                "OK.".to_owned()
            } else {
                format!("You said {text}.")
            };
            next = answer(call, &reply)?;
        }
    }
}

fn listening() -> Listen {
    Listen::hints(HINTS.iter().copied())
}

/// Speaks `text`, interruptible by speech or a key; reports what was heard of it and returns
/// the interruption, which is the caller's next turn.
fn answer(call: &Call, text: &str) -> Result<Option<Utterance>> {
    let spoken =
        call.speak(Speak::text(text).interruptible(Interruptible::Any).listen(listening()))?;
    let mut event = Event::new("speech.spoken")
        .str("text", text)
        .bool("completed", spoken.completed)
        .str("heard_text", &spoken.heard_text)
        .num("heard_ms", i64::from(spoken.heard_ms));
    if let Some(i) = &spoken.interruption {
        event = event.num("interrupted_at_ms", i64::from(i.start_ms));
    }
    call.emit(event)?;
    Ok(spoken.interruption)
}

voxide_guest::flow!(Receptionist);
