//! Progressive dialling: one call per idle agent not already covered by a call ringing or
//! an answered call waiting. An agent is always free when a call is answered, unless two
//! calls meet one agent, so abandons are rare.

use voxide_strategy::prelude::*;

#[derive(Default)]
struct Progressive;

impl Strategy for Progressive {
    fn pace(&mut self, now: &Snapshot) -> Decision {
        let launch = now.uncovered_agents();
        Decision::launch(launch)
            .level(1.0)
            .note(format!("{} ready, {} ringing, {} waiting", now.ready, now.ringing, now.waiting))
    }
}

voxide_strategy::strategy!(Progressive);
