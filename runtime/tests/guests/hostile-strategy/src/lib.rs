//! A pacing strategy that misbehaves as the snapshot's `ready` count (or the campaign's
//! abandon target) asks, so one component covers the pacer's sandbox tests and a live one. Other counts get a well-behaved answer that shows the
//! instance's state: the note is how many calls this instance has answered.

use std::hint::black_box;

use voxide_strategy::prelude::*;

#[derive(Default)]
struct Hostile {
    calls: u64,
}

impl Strategy for Hostile {
    fn pace(&mut self, now: &Snapshot) -> Decision {
        self.calls += 1;
        // A live campaign with abandon target 1.23 % (the end-to-end compliance test): ask
        // for a thousand calls every tick, and spin forever on every fifth.
        if (now.abandon_target - 0.0123).abs() < 1e-9 {
            if self.calls % 5 == 0 {
                loop {
                    black_box(());
                }
            }
            return Decision::launch(1000).level(100.0).note("a thousand, please");
        }
        // A campaign of 104 agents: always ask for every lead there is.
        if now.agents.len() == 104 {
            return Decision::launch(u32::MAX).level(100.0).note("everything");
        }
        match now.ready {
            101 => loop {
                black_box(());
            },
            102 => panic!("strategy bug: no agents in the snapshot"),
            103 => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            // Unclean output the host must sanitize.
            104 => Decision::launch(u32::MAX)
                .level(f64::INFINITY)
                .prefer([9_999, 1, 1, 2])
                .note("x".repeat(10_000)),
            // Reads the clocks it should not have: frozen at zero.
            105 => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(u128::MAX);
                Decision::hold().note(format!("wall {wall}"))
            }
            _ => Decision::launch(1).level(1.0).note(self.calls.to_string()),
        }
    }
}

voxide_strategy::strategy!(Hostile);
