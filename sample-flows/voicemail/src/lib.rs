//! voicemail: greet, record until silence or `#`, emit `voicemail.created`, thank, hang up.
//!
//! Route variables: `greeting` (what to say first), `mailbox` (included in the event).
//! A caller who hangs up while recording still leaves a message: the recording is kept and the
//! event is emitted before the flow ends.

use voxide_guest::prelude::*;

struct Voicemail;

impl Flow for Voicemail {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        let greeting = call.var("greeting").unwrap_or(
            "You have reached our voicemail. Please leave a message after the tone, \
             and press pound when you are finished.",
        );
        call.say(greeting)?;
        let recording = call.record(
            Record::new()
                .beep()
                .finish_on_key('#')
                .silence_timeout_ms(5000)
                .max_duration_ms(180_000),
        )?;
        if recording.duration_ms == 0 {
            call.say("We did not record a message. Goodbye.")?;
            call.hangup();
            return Ok(());
        }
        call.emit(
            Event::new("voicemail.created")
                .str("recording_id", &recording.id)
                .num("duration_ms", i64::from(recording.duration_ms))
                .str("mailbox", call.var("mailbox").unwrap_or("default"))
                .str("from", call.from()),
        )?;
        voxide_guest::log::info("voicemail stored");
        call.say("Thank you, your message has been saved. Goodbye.")?;
        call.hangup();
        Ok(())
    }
}

voxide_guest::flow!(Voicemail);
