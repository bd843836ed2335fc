//! agent: the other end of a queue. An agent calls in, and is connected to the caller who has
//! waited longest in the queue (`call.enqueue` in ivr-menu's "press 2 for support").
//!
//! Route variables: `queue` (default `support`), `wait_ms` (how long to wait for a caller when
//! the queue is empty, default 20000), `calls` (callers to take, one after another, before
//! hanging up; default 1 — a campaign's agents take many), `wrap_ms` (a pause after each
//! caller before waiting for the next, default 0).

use voxide_guest::prelude::*;

struct Agent;

impl Flow for Agent {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        let queue = call.var("queue").unwrap_or("support");
        let number = |name: &str, default: u32| {
            call.var(name).and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let (wait_ms, calls, wrap_ms) =
            (number("wait_ms", 20_000), number("calls", 1).max(1), number("wrap_ms", 0));
        call.say(format!("Connecting you to the next caller in the {queue} queue."))?;
        for taken in 1..=calls {
            match call.dial(Dial::to(format!("queue:{queue}")).timeout_ms(wait_ms))? {
                DialOutcome::Answered { talk_ms } => {
                    call.emit(
                        Event::new("queue.call_handled")
                            .str("queue", queue)
                            .num("talk_ms", i64::from(talk_ms)),
                    )?;
                    if taken == calls {
                        call.say("The caller has hung up. Goodbye.")?;
                    } else if wrap_ms > 0 {
                        call.pause(wrap_ms)?;
                    }
                }
                DialOutcome::NoAnswer | DialOutcome::Busy => {
                    call.say("No callers are waiting. Goodbye.")?;
                    break;
                }
                // The caller left just as it was taken (or was withdrawn): wait for the next.
                DialOutcome::Failed(why) if taken < calls => {
                    voxide_guest::log::warn(&format!("taking a caller failed: {why}"));
                }
                DialOutcome::Failed(why) => {
                    voxide_guest::log::warn(&format!("taking a caller failed: {why}"));
                    call.say("Sorry, something went wrong. Goodbye.")?;
                    break;
                }
            }
        }
        call.hangup();
        Ok(())
    }
}

voxide_guest::flow!(Agent);
