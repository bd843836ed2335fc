//! conference: a meeting line. Callers are greeted and join one room; when everyone else has
//! left, the last caller is told the meeting is over.
//!
//! Route variables: `room` (default: the called number, so each number is its own room),
//! `name` (the meeting's name in prompts).

use voxide_guest::prelude::*;

struct Conference;

impl Flow for Conference {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        let room = call.var("room").unwrap_or(call.to()).to_owned();
        let name = call.var("name").unwrap_or("the meeting");
        call.say(format!("Welcome. You are joining {name}."))?;
        call.emit(Event::new("conference.joined").str("room", &room).str("from", call.from()))?;
        call.conference(&room)?;
        call.say("Everyone else has left. The meeting is over. Goodbye.")?;
        call.hangup();
        Ok(())
    }
}

voxide_guest::flow!(Conference);
