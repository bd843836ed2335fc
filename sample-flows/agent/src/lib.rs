//! agent: the other end of a queue. An agent calls in, and is connected to the caller who has
//! waited longest in the queue (`call.enqueue` in ivr-menu's "press 2 for support").
//!
//! Route variables: `queue` (default `support`), `wait_ms` (how long to wait for a caller when
//! the queue is empty, default 20000).

use voxide_guest::prelude::*;

struct Agent;

impl Flow for Agent {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        let queue = call.var("queue").unwrap_or("support");
        let wait_ms = call.var("wait_ms").and_then(|ms| ms.parse().ok()).unwrap_or(20_000);
        call.say(format!("Connecting you to the next caller in the {queue} queue."))?;
        match call.dial(Dial::to(format!("queue:{queue}")).timeout_ms(wait_ms))? {
            DialOutcome::Answered { talk_ms } => {
                call.emit(
                    Event::new("queue.call_handled")
                        .str("queue", queue)
                        .num("talk_ms", i64::from(talk_ms)),
                )?;
                call.say("The caller has hung up. Goodbye.")?;
            }
            DialOutcome::NoAnswer | DialOutcome::Busy => {
                call.say("No callers are waiting. Goodbye.")?;
            }
            DialOutcome::Failed(why) => {
                voxide_guest::log::warn(&format!("taking a caller failed: {why}"));
                call.say("Sorry, something went wrong. Goodbye.")?;
            }
        }
        call.hangup();
        Ok(())
    }
}

voxide_guest::flow!(Agent);
