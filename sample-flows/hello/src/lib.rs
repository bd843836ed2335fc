//! hello: answer, greet, hang up — the smallest useful flow.
//!
//! Route variables: `greeting` overrides what is said; `greeting_url` plays a recorded WAV
//! instead (the URL must be allowed by the flow's manifest: `[capabilities] http`).

use voxide_guest::prelude::*;

struct Hello;

impl Flow for Hello {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        match call.var("greeting_url") {
            Some(url) => call.play(url)?,
            None => call.say(call.var("greeting").unwrap_or("Hello from Voxide. Goodbye!"))?,
        }
        call.hangup();
        Ok(())
    }
}

voxide_guest::flow!(Hello);
