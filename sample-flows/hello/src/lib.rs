//! hello: answer, greet, hang up — the smallest useful flow.
//!
//! Route variable `greeting` overrides what is said.

use voxide_guest::prelude::*;

struct Hello;

impl Flow for Hello {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        let greeting = call.var("greeting").unwrap_or("Hello from Voxide. Goodbye!");
        call.say(greeting)?;
        call.hangup();
        Ok(())
    }
}

voxide_guest::flow!(Hello);
