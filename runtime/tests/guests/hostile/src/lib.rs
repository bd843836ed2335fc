//! A flow that misbehaves in the way its call's `to` number asks, so one component covers
//! every sandbox test. Numbers that name no misbehaviour get a well-behaved menu.

use std::hint::black_box;

use voxide_guest::prelude::*;

struct Hostile;

impl Flow for Hostile {
    fn handle(call: &Call) -> Result<()> {
        call.answer()?;
        match call.to() {
            "loop" => loop {
                black_box(());
            },
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("flow bug: unexpected menu state"),
            "recursion" => {
                black_box(recurse(black_box(u64::MAX)));
                Ok(())
            }
            "error" => Err(Error::msg("no agent configured for this number")),
            // 8 stretches of ~100 ms of CPU, each followed by a call action: more CPU in
            // total than a 500 ms budget, but never that much between two actions.
            "spin-between-actions" => {
                for _ in 0..8 {
                    let started = std::time::Instant::now();
                    while started.elapsed() < std::time::Duration::from_millis(100) {
                        black_box(());
                    }
                    call.pause(10)?;
                }
                call.hangup();
                Ok(())
            }
            // Cheap calls that fail at once do not buy more CPU.
            "spin-on-failing-actions" => loop {
                let _ = black_box(call.pause(u32::MAX));
            },
            "loop-after-action" => {
                call.say("one moment")?;
                loop {
                    black_box(());
                }
            }
            _ => {
                let choice =
                    call.gather(Gather::digits(1).timeout_ms(5000).prompt("Press a key"))?;
                call.say(format!("You pressed {}", choice.digits))?;
                voxide_guest::kv::set("last", &choice.digits).map_err(Error::msg)?;
                call.hangup();
                Ok(())
            }
        }
    }
}

fn recurse(n: u64) -> u64 {
    if n == 0 { 0 } else { black_box(recurse(black_box(n - 1))).wrapping_add(n) }
}

voxide_guest::flow!(Hostile);
