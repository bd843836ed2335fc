//! ivr-menu: a company's main line.
//!
//! - Outside business hours (route variable `business_hours = "closed"`): say so and take a
//!   voicemail.
//! - Otherwise offer a menu: 1 → sales (dial; busy or no answer falls back to voicemail),
//!   2 → the support queue, 3 → voicemail. Invalid or missing input re-prompts twice, then the
//!   flow says goodbye.
//! - 0 (not announced) → blind transfer to the `operator` route variable, when set.
//!
//! Route variables: `company` (name in prompts), `sales` (dial target), `operator` (transfer
//! target), `sales_ring_ms` (how long sales rings before voicemail, default 20000),
//! `business_hours` (`open` or `closed`).

use voxide_guest::prelude::*;

const ATTEMPTS: u32 = 3;

struct IvrMenu;

impl Flow for IvrMenu {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        let company = call.var("company").unwrap_or("Acme");

        if call.var("business_hours") == Some("closed") {
            call.say(format!(
                "Thank you for calling {company}. Our office is closed. \
                 Our hours are nine to five, Monday to Friday."
            ))?;
            return voicemail(call);
        }

        let menu = format!(
            "Thank you for calling {company}. For sales, press 1. For support, press 2. \
             To leave a message, press 3."
        );
        for attempt in 1..=ATTEMPTS {
            let choice = call.gather(Gather::digits(1).timeout_ms(5000).prompt(menu.as_str()))?;
            call.set_var("menu_choice", &choice.digits);
            match choice.digits.as_str() {
                "1" => return sales(call),
                "2" => {
                    call.say("Please hold for the next available support agent.")?;
                    call.enqueue("support")?;
                    call.hangup();
                    return Ok(());
                }
                "3" => return voicemail(call),
                // Not announced: callers who know press 0 for the operator (when configured).
                "0" if call.var("operator").is_some() => {
                    let operator = call.var("operator").unwrap_or_default();
                    call.say("Transferring you to the operator.")?;
                    return call.transfer(operator);
                }
                "" if attempt < ATTEMPTS => {
                    call.say("Sorry, we did not receive your selection.")?
                }
                _ if attempt < ATTEMPTS => call.say("Sorry, that is not a valid option.")?,
                _ => {}
            }
        }
        call.say("We did not get a valid selection. Goodbye.")?;
        call.hangup();
        Ok(())
    }
}

fn sales(call: &Call) -> Result<()> {
    let target = call.var("sales").unwrap_or("sip:sales@pbx.example.com");
    let ring_ms = call.var("sales_ring_ms").and_then(|ms| ms.parse().ok()).unwrap_or(20_000);
    call.say("Connecting you to sales.")?;
    match call.dial(Dial::to(target).timeout_ms(ring_ms))? {
        DialOutcome::Answered { talk_ms } => {
            call.set_var("sales_talk_ms", &talk_ms.to_string());
            call.hangup();
            Ok(())
        }
        DialOutcome::Busy | DialOutcome::NoAnswer | DialOutcome::Failed(_) => {
            call.say("Our sales team is not available right now.")?;
            voicemail(call)
        }
    }
}

fn voicemail(call: &Call) -> Result<()> {
    call.say("Please leave a message after the tone. Press pound when you are finished.")?;
    let recording =
        call.record(Record::new().beep().finish_on_key('#').max_duration_ms(120_000))?;
    if recording.duration_ms == 0 {
        call.say("We did not record a message. Goodbye.")?;
        call.hangup();
        return Ok(());
    }
    call.emit(
        Event::new("voicemail.created")
            .str("recording_id", &recording.id)
            .num("duration_ms", i64::from(recording.duration_ms))
            .str("from", call.from())
            .str("to", call.to()),
    )?;
    call.say("Thank you. Goodbye.")?;
    call.hangup();
    Ok(())
}

voxide_guest::flow!(IvrMenu);
