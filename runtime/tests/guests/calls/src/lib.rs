//! Benchmark guest: makes `n` host calls of the kind the called number names, so the bench
//! can time one guest→host round trip as (time(n) - time(0)) / n.

use voxide_guest::prelude::*;

struct Calls;

impl Flow for Calls {
    fn handle(call: &Call) -> Result<()> {
        let n: u32 = call.var("n").and_then(|n| n.parse().ok()).unwrap_or(0);
        match call.to() {
            // A synchronous import: strings in, nothing out.
            "sync" => (0..n).for_each(|_| call.set_var("k", "v")),
            // An async call action that completes at once.
            "async" => {
                for _ in 0..n {
                    call.pause(0)?;
                }
            }
            other => return Err(Error::msg(format!("unknown mode {other}"))),
        }
        Ok(())
    }
}

voxide_guest::flow!(Calls);
