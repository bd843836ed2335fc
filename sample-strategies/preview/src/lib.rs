//! Preview dialling: an agent sees each lead first and accepts it; only accepted leads are
//! dialled, one call per acceptance. Nothing is ever dialled ahead of an agent, so nothing
//! can be abandoned.

use voxide_strategy::prelude::*;

#[derive(Default)]
struct Preview;

impl Strategy for Preview {
    fn pace(&mut self, now: &Snapshot) -> Decision {
        let launch = now.previews_accepted;
        Decision::launch(launch).level(0.0).note(format!("{launch} previews accepted"))
    }
}

voxide_strategy::strategy!(Preview);
