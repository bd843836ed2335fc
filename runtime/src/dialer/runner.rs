//! Campaigns running on a node: one task per running campaign, ticking about once a second.
//!
//! A tick: calls that ended update their leads (the state machine), the abandon ledgers and
//! their agents; the agents' board is refreshed from the registrar (an agent is logged in
//! while registered); the strategy paces (a fault: the progressive rule this tick, a
//! `campaign.strategy-fault` event); the decision is clamped by the law; due leads are taken
//! in order, each checked against DNC, calling hours and its number's history, and the ones
//! cleared are dialled with at least the minimum ring. An answered human goes to the
//! longest-idle ready agent ([`crate::calls::place_lead_call`]).
//!
//! Pausing is exact: [`Store::begin_attempt`] starts an attempt only while its campaign is
//! `running`, in the same statement, so no dial begins after a pause has committed. Calls in
//! flight finish and are recorded; the task ends once none are left. When every lead is
//! done the campaign is `finished`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use voxide_store::{AttemptEnd, Campaign, Lead, LeadProgress, NewAttempt, NewEvent, Store};

use super::campaign::{self, Settings};
use super::compliance::{Floor, LeadFacts, Ledger, Refusal, Rules};
use super::leads::{self, Outcome};
use super::pacer::{Agent, AgentState, PacerEngine, Pacing, Snapshot, Strategy};
use super::sim::PRIOR_ANSWER_RATE;
use super::zones::Place;
use crate::builder::{self, BuildOptions};
use crate::calls::{LeadCall, LeadCallEnd, place_lead_call};
use crate::hub::CallHub;
use crate::node::routes::flow_route;
use crate::node::{EventBus, outbox};
use crate::routing::Route;

/// A campaign's live figures: what `vox campaigns show --follow` and the stats stream show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub campaign: String,
    pub state: String,
    /// Calls placed since this node started running the campaign.
    pub dialled: u64,
    /// Live answers and abandoned calls in the ledger's window (30 days or 24 h).
    pub answered: u64,
    pub abandoned: u64,
    /// `abandoned / answered`, in percent.
    pub abandon_rate: f64,
    pub ringing: u32,
    pub agents_logged_in: u32,
    pub agents_ready: u32,
    pub agents_talking: u32,
    pub agents_wrap_up: u32,
    /// Agents' talk time over their logged-in time, in percent.
    pub utilisation: f64,
    pub leads_due: i64,
    pub leads_open: i64,
    pub dial_level: f64,
    /// The strategy's note, or why the host launched fewer calls than it asked.
    pub note: String,
    /// Ticks the strategy failed (and the progressive rule paced instead).
    pub strategy_faults: u64,
}

/// Finds and loads pacing strategies by name: the samples, built from `dir` on first use
/// (`sample-strategies/`, cached by cargo) and kept loaded.
#[derive(Debug)]
pub struct Strategies {
    dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Strategy>>,
}

impl Strategies {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Strategies { dir, loaded: Mutex::default() }
    }

    async fn get(
        &self,
        store: &Store,
        tenant: &str,
        name: &str,
        engine: &PacerEngine,
    ) -> Result<Strategy, String> {
        // Uploaded versions are cached per tenant: names are the tenant's own.
        let (key, uploaded) = match campaign::StrategyRef::parse(name)? {
            campaign::StrategyRef::Sample(sample) => (sample.to_owned(), None),
            r => {
                let pinned = r
                    .pinned()
                    .ok_or_else(|| format!("strategy {name:?}: not pinned to a version"))?;
                (format!("{tenant}/{name}"), Some(pinned))
            }
        };
        if let Some(s) = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(s.clone());
        }
        let bytes = match uploaded {
            Some((flow, version)) => {
                let v = store.version(tenant, flow, version).await.map_err(|e| e.to_string())?;
                store.component(&v.digest).await.map_err(|e| e.to_string())?
            }
            None => self.build_sample(&key).await?,
        };
        let strategy = engine.load(&bytes).map_err(|e| format!("strategy {name}: {e}"))?;
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(key, strategy.clone());
        Ok(strategy)
    }

    /// Builds the sample strategy crate `name` (cargo caches it) and reads the component.
    async fn build_sample(&self, name: &str) -> Result<Vec<u8>, String> {
        let Some(dir) = &self.dir else {
            return Err("this node has no sample strategies directory".into());
        };
        let crate_dir = dir.join(name);
        if !crate_dir.exists() {
            return Err(format!("no strategy {name:?} in {}", dir.display()));
        }
        let wasm = tokio::task::spawn_blocking(move || {
            builder::build_flow(&crate_dir, &BuildOptions { target_dir: None, quiet: true })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("building strategy {name}: {e}"))?;
        std::fs::read(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))
    }
}

/// The node's dialer: runs the store's running campaigns.
#[derive(Debug, Clone)]
pub struct Dialer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hub: Arc<CallHub>,
    bus: EventBus,
    pacer: PacerEngine,
    strategies: Strategies,
    /// Running campaigns' figures, by campaign id.
    stats: Mutex<HashMap<String, watch::Sender<Stats>>>,
    wake: Notify,
    tick: Duration,
}

impl Dialer {
    /// Starts the supervisor: every second (or when [`Dialer::wake`]d) it starts a task for
    /// each running campaign that has none.
    pub fn spawn(
        store: Store,
        hub: Arc<CallHub>,
        bus: EventBus,
        pacer: PacerEngine,
        strategies: Strategies,
    ) -> Dialer {
        let inner = Arc::new(Inner {
            store,
            hub,
            bus,
            pacer,
            strategies,
            stats: Mutex::default(),
            wake: Notify::new(),
            tick: Duration::from_secs(1),
        });
        tokio::spawn(supervise(inner.clone()));
        Dialer { inner }
    }

    /// A campaign changed state: look now rather than at the next second.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The figures of a campaign running on this node.
    pub fn stats(&self, campaign_id: &str) -> Option<watch::Receiver<Stats>> {
        self.inner.stats().get(campaign_id).map(watch::Sender::subscribe)
    }
}

impl Inner {
    fn stats(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Stats>>> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn event(&self, tenant: &str, kind: &str, data: serde_json::Value) {
        let event =
            NewEvent { tenant_id: tenant.to_owned(), kind: kind.to_owned(), call_id: None, data };
        outbox::emit(&self.store, &self.bus, event).await;
    }
}

async fn supervise(inner: Arc<Inner>) {
    loop {
        match inner.store.running_campaigns().await {
            Ok(campaigns) => {
                for c in campaigns {
                    let mut stats = inner.stats();
                    if stats.contains_key(&c.id) {
                        continue;
                    }
                    let (tx, _) = watch::channel(Stats {
                        campaign: c.name.clone(),
                        state: c.state.clone(),
                        ..Stats::default()
                    });
                    stats.insert(c.id.clone(), tx);
                    drop(stats);
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        let id = c.id.clone();
                        run(&inner, c).await;
                        inner.stats().remove(&id);
                    });
                }
            }
            Err(e) => tracing::warn!("listing running campaigns: {e}"),
        }
        let _ = tokio::time::timeout(inner.tick, inner.wake.notified()).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Not registered: not logged in.
    Away,
    Ready,
    Talking,
    Wrap,
}

#[derive(Debug)]
struct Slot {
    name: String,
    state: Busy,
    since: Instant,
    until: Instant,
}

/// The campaign's agents, shared with its calls (which pick one when answered).
#[derive(Debug, Default)]
struct Board {
    agents: Vec<Slot>,
}

impl Board {
    fn count(&self, s: Busy) -> u32 {
        self.agents.iter().filter(|a| a.state == s).count() as u32
    }

    /// The longest-idle ready agent, now talking.
    fn pick(&mut self) -> Option<String> {
        let slot =
            self.agents.iter_mut().filter(|a| a.state == Busy::Ready).min_by_key(|a| a.since)?;
        (slot.state, slot.since) = (Busy::Talking, Instant::now());
        Some(slot.name.clone())
    }

    fn release(&mut self, name: &str, wrap: Duration) {
        if let Some(slot) = self.agents.iter_mut().find(|a| a.name == name) {
            let now = Instant::now();
            (slot.state, slot.since, slot.until) = (Busy::Wrap, now, now + wrap);
        }
    }
}

/// A queue's members onto the board: one waiting is ready (since it joined: the longest
/// waiting is picked first, as the queue gives it the call); one not waiting is talking if the
/// board has it talking, else away (its wrap-up is its flow's, before it waits again).
fn refresh_members(board: &mut Board, members: &[crate::calls::QueueMember]) {
    let now = Instant::now();
    for slot in &mut board.agents {
        let waiting = members.iter().find(|m| m.user == slot.name);
        match (waiting, slot.state) {
            (Some(m), _) => (slot.state, slot.since) = (Busy::Ready, m.since),
            (None, Busy::Talking | Busy::Away) => {}
            (None, _) => (slot.state, slot.since) = (Busy::Away, now),
        }
    }
    for m in members {
        if !board.agents.iter().any(|s| s.name == m.user) {
            board.agents.push(Slot {
                name: m.user.clone(),
                state: Busy::Ready,
                since: m.since,
                until: now,
            });
        }
    }
}

/// The campaign's flows (pinned when it was created), loaded for its calls.
async fn load_flows(
    inner: &Inner,
    campaign: &Campaign,
    settings: &Settings,
) -> Result<(Option<Route>, Option<Route>), String> {
    let specs = [settings.flow.as_deref(), settings.answering_machine.machine_flow.as_deref()];
    if specs.iter().all(Option::is_none) {
        return Ok((None, None));
    }
    let engine = inner.hub.flow_engine().ok_or("this node runs no calls (SIP is off)")?;
    let load = |spec: Option<&str>| {
        let engine = engine.clone();
        let tenant = campaign.tenant_id.clone();
        let spec = spec.map(str::to_owned);
        async move {
            match spec {
                Some(spec) => flow_route(&inner.store, &engine, &tenant, &spec).await.map(Some),
                None => Ok(None),
            }
        }
    };
    Ok((load(specs[0]).await?, load(specs[1]).await?))
}

/// A call in flight and the attempt it belongs to.
struct Ended {
    lead: Lead,
    attempt: String,
    end: LeadCallEnd,
}

struct Run<'a> {
    inner: &'a Inner,
    campaign: Campaign,
    settings: Settings,
    rules: Rules,
    ledger: Ledger,
    minute: Ledger,
    board: Arc<Mutex<Board>>,
    /// The flows answered persons and machines are handed to, when the campaign names them.
    flow: Option<Route>,
    machine_flow: Option<Route>,
    /// Machine verdicts' estimated false positives not yet whole enough to record.
    amd_debt: f64,
    /// Resolved dials of the last 15 minutes: when, and how they ended.
    recent: VecDeque<(Instant, Outcome)>,
    ring: (f64, u64),
    handle: (f64, u64),
    in_flight: u32,
    stats: Stats,
    started: Instant,
    talk_secs: f64,
    logged_in_secs: f64,
}

fn now_ts() -> Timestamp {
    Timestamp::now()
}

/// Runs one campaign until it is no longer running and its calls have ended.
async fn run(inner: &Inner, campaign: Campaign) {
    let tenant = campaign.tenant_id.clone();
    let settings: Settings = match serde_json::from_value(campaign.settings.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(campaign = %campaign.name, "stored settings unreadable: {e}");
            return;
        }
    };
    // A flow campaign has no agents to pace for: it loads no strategy.
    let strategy = if settings.flow.is_some() {
        None
    } else {
        Some(
            match inner
                .strategies
                .get(&inner.store, &campaign.tenant_id, &campaign.strategy, &inner.pacer)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    // Nothing can pace it: pause it, and say why.
                    tracing::error!(campaign = %campaign.name, "{e}");
                    let _ = inner.store.set_campaign_state(&tenant, &campaign.name, "paused").await;
                    inner
                        .event(
                            &tenant,
                            "campaign.paused",
                            serde_json::json!({"campaign": campaign.name, "reason": e}),
                        )
                        .await;
                    return;
                }
            },
        )
    };
    let (flow, machine_flow) = match load_flows(inner, &campaign, &settings).await {
        Ok(flows) => flows,
        Err(e) => {
            tracing::error!(campaign = %campaign.name, "{e}");
            let _ = inner.store.set_campaign_state(&tenant, &campaign.name, "paused").await;
            let data = serde_json::json!({"campaign": campaign.name, "reason": e});
            inner.event(&tenant, "campaign.paused", data).await;
            return;
        }
    };
    let rules = settings.rules(campaign.abandon_target);
    // Attempts a crash interrupted count as failed; their leads go on by the plan.
    let plan = settings.retry.clone();
    let after_abandon = rules.after_abandon;
    let recovered = inner
        .store
        .recover_attempts(&campaign.id, |lead| {
            let p = campaign::progress_of(&lead.progress);
            let (next, why) =
                leads::after_attempt(&p, Outcome::Failed, now_ts(), &plan, after_abandon);
            campaign::stored(&next, format!("interrupted by a restart; {why}"))
        })
        .await;
    match recovered {
        Ok(n) if n > 0 => {
            tracing::warn!(campaign = %campaign.name, "{n} interrupted attempts closed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(campaign = %campaign.name, "recovering attempts: {e}"),
    }
    let window = rules.jurisdiction.ledger_window();
    let mut ledger = Ledger::new(window);
    let since = now_ts().as_millisecond() - window.as_millis() as i64;
    let mut amd_debt = 0.0;
    if let Ok(rows) = inner.store.answered_since(&campaign.id, since).await {
        for (at, outcome) in rows {
            let Ok(at) = Timestamp::from_millisecond(at) else { continue };
            if outcome != "machine" {
                ledger.record(at, outcome == "abandoned");
                continue;
            }
            if !settings.answering_machine.detect {
                continue;
            }
            // Machine verdicts' estimated false positives, as `ended` adds them.
            amd_debt += settings.answering_machine.false_positive_estimate;
            if amd_debt >= 1.0 {
                amd_debt -= 1.0;
                ledger.record(at, true);
            }
        }
    }
    let started = Instant::now();
    let board = Board {
        agents: settings
            .agents
            .iter()
            .map(|name| Slot {
                name: name.clone(),
                state: Busy::Away,
                since: started,
                until: started,
            })
            .collect(),
    };
    tracing::info!(campaign = %campaign.name, strategy = %campaign.strategy, "campaign running");
    let mut run = Run {
        inner,
        stats: Stats { campaign: campaign.name.clone(), ..Stats::default() },
        campaign,
        settings,
        rules,
        ledger,
        minute: Ledger::new(Duration::from_secs(60)),
        board: Arc::new(Mutex::new(board)),
        flow,
        machine_flow,
        amd_debt,
        recent: VecDeque::new(),
        ring: (0.0, 0),
        handle: (0.0, 0),
        in_flight: 0,
        started,
        talk_secs: 0.0,
        logged_in_secs: 0.0,
    };
    let mut pacing = strategy.as_ref().map(|s| Pacing::new(&inner.pacer, s));
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let mut ticker = tokio::time::interval(inner.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(ended) = ended_rx.recv() => {
                run.ended(ended).await;
                continue;
            }
        }
        let elapsed = last.elapsed().as_secs_f64();
        last = Instant::now();
        let state = match inner.store.campaign_state(&run.campaign.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(campaign = %run.campaign.name, "reading the campaign: {e}");
                continue;
            }
        };
        run.stats.state = state.clone();
        run.refresh_agents(elapsed).await;
        if state != "running" {
            run.publish().await;
            if run.in_flight == 0 {
                tracing::info!(campaign = %run.campaign.name, "campaign {state}");
                return;
            }
            continue;
        }
        let snapshot = run.snapshot().await;
        if run.flow.is_some() {
            // No agents to pace for: keep `lines` calls up, each lead still cleared by the
            // per-lead rules; with no agent to connect, nothing is abandoned.
            let room = run.settings.lines.saturating_sub(run.in_flight);
            let launch = room.min(snapshot.leads_available).min(run.rules.max_launch_per_tick);
            run.stats.note =
                format!("flow campaign: {} of {} lines up", run.in_flight, run.settings.lines);
            run.launch(launch, &ended_tx).await;
            run.publish().await;
            run.finish_if_done().await;
            continue;
        }
        let Some(pacing) = pacing.as_mut() else { continue };
        let paced = pacing.tick(&snapshot).await;
        run.stats.dial_level = paced.decision.dial_level;
        run.stats.note = paced.decision.note.clone();
        if let Some(fault) = &paced.fault {
            run.stats.strategy_faults += 1;
            tracing::warn!(campaign = %run.campaign.name, "strategy fault: {fault}");
            let data = serde_json::json!({
                "campaign": run.campaign.name, "strategy": run.campaign.strategy,
                "fault": fault.to_string(), "fallback": "progressive",
            });
            inner.event(&tenant, "campaign.strategy-fault", data).await;
        }
        let floor = Floor {
            staffed: snapshot.ready + snapshot.talking + snapshot.wrap_up,
            ready: snapshot.ready,
            talking: snapshot.talking,
            ringing: snapshot.ringing,
            waiting: 0,
            leads: snapshot.leads_available,
            answer_rate: snapshot.answer_rate,
        };
        let clamp = run.rules.clamp(paced.decision.launch, &floor, &run.ledger, &run.minute);
        if let Some(limit) = clamp.limit {
            run.stats.note = format!("host limit: {}", limit.as_str());
        }
        run.launch(clamp.launch, &ended_tx).await;
        run.publish().await;
        run.finish_if_done().await;
    }
}

impl Run<'_> {
    /// Every lead done and no call up: the campaign is `finished` (the next tick ends the
    /// task).
    async fn finish_if_done(&mut self) {
        if self.in_flight > 0 || self.stats.leads_open > 0 {
            return;
        }
        let (tenant, name) = (self.campaign.tenant_id.clone(), self.campaign.name.clone());
        if self.inner.store.set_campaign_state(&tenant, &name, "finished").await.is_ok() {
            tracing::info!(campaign = %name, "every lead is done: campaign finished");
            let data = serde_json::json!({"campaign": name});
            self.inner.event(&tenant, "campaign.finished", data).await;
        }
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logged in = registered (or, for a queue's members, waiting in it); wrap-ups that are
    /// over make agents ready.
    async fn refresh_agents(&mut self, elapsed: f64) {
        if let Some(queue) = &self.settings.agent_queue {
            let members = self.inner.hub.queue_members(&self.campaign.tenant_id, queue);
            let (talking, logged) = {
                let mut board = self.board();
                refresh_members(&mut board, &members);
                let away = board.count(Busy::Away);
                (board.count(Busy::Talking), board.agents.len() as u32 - away)
            };
            self.talk_secs += f64::from(talking) * elapsed;
            self.logged_in_secs += f64::from(logged) * elapsed;
            return;
        }
        let Some(sip) = self.inner.hub.sip.get().map(|o| o.sip().clone()) else { return };
        let mut registered = Vec::with_capacity(self.settings.agents.len());
        for agent in &self.settings.agents {
            registered.push(!sip.lookup(agent).await.is_empty());
        }
        let now = Instant::now();
        let mut board = self.board();
        let (mut talking, mut logged) = (0u32, 0u32);
        for (slot, registered) in board.agents.iter_mut().zip(registered) {
            match slot.state {
                Busy::Away if registered => (slot.state, slot.since) = (Busy::Ready, now),
                Busy::Ready if !registered => (slot.state, slot.since) = (Busy::Away, now),
                Busy::Wrap if slot.until <= now => (slot.state, slot.since) = (Busy::Ready, now),
                _ => {}
            }
            talking += u32::from(slot.state == Busy::Talking);
            logged += u32::from(slot.state != Busy::Away);
        }
        drop(board);
        self.talk_secs += f64::from(talking) * elapsed;
        self.logged_in_secs += f64::from(logged) * elapsed;
    }

    async fn snapshot(&mut self) -> Snapshot {
        let now = now_ts();
        self.ledger.expire(now);
        self.minute.expire(now);
        while self.recent.front().is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(900)) {
            self.recent.pop_front();
        }
        let store = &self.inner.store;
        let due = store.due_count(&self.campaign.id, now.as_millisecond()).await.unwrap_or(0);
        self.stats.leads_due = due;
        self.stats.leads_open = store.open_leads(&self.campaign.id).await.unwrap_or(0);
        let board = self.board();
        let at = Instant::now();
        let agents = board
            .agents
            .iter()
            .filter(|a| a.state != Busy::Away)
            .map(|a| Agent {
                state: match a.state {
                    Busy::Ready | Busy::Away => AgentState::Ready,
                    Busy::Talking => AgentState::Talking,
                    Busy::Wrap => AgentState::WrapUp,
                },
                in_state_ms: (at - a.since).as_millis() as u64,
            })
            .collect();
        let (ready, talking, wrap_up) =
            (board.count(Busy::Ready), board.count(Busy::Talking), board.count(Busy::Wrap));
        drop(board);
        let answer_rate = if self.recent.len() < 50 {
            PRIOR_ANSWER_RATE
        } else {
            let humans = self.recent.iter().filter(|(_, o)| is_human(*o)).count();
            humans as f64 / self.recent.len() as f64
        };
        let machines = self.recent.iter().filter(|(_, o)| *o == Outcome::Machine).count();
        let answers = machines + self.recent.iter().filter(|(_, o)| is_human(*o)).count();
        let machine_rate = if answers == 0 { 0.0 } else { machines as f64 / answers as f64 };
        let mean =
            |(sum, n): (f64, u64), prior: u32| if n == 0 { prior } else { (sum / n as f64) as u32 };
        let target = self.rules.abandon_limit;
        Snapshot {
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            agents,
            ready,
            talking,
            wrap_up,
            ringing: self.in_flight.saturating_sub(talking),
            waiting: 0,
            leads_available: due.clamp(0, i64::from(u32::MAX)) as u32,
            next_leads: Vec::new(),
            previews_accepted: 0,
            answer_rate,
            machine_rate,
            mean_ring_ms: mean(self.ring, 8000),
            mean_handle_ms: mean(self.handle, 180_000),
            mean_wrap_ms: (self.settings.wrap_secs * 1000) as u32,
            dialled: self.stats.dialled,
            answered: self.ledger.answered,
            abandoned: self.ledger.abandoned,
            abandon_target: target,
            abandon_budget: self.ledger.budget(target).min(u64::from(u32::MAX)) as u32,
        }
    }

    /// Dials up to `launch` due leads that the rules clear.
    async fn launch(&mut self, launch: u32, ended: &mpsc::UnboundedSender<Ended>) {
        let store = &self.inner.store;
        let mut launched = 0;
        // Refused leads leave the due list (rescheduled or done), so each pass makes progress.
        for _ in 0..10 {
            if launched >= launch {
                return;
            }
            let now = now_ts();
            let want = i64::from(launch - launched) + 20;
            let due = match store.due_leads(&self.campaign.id, now.as_millisecond(), want).await {
                Ok(due) if !due.is_empty() => due,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(campaign = %self.campaign.name, "reading due leads: {e}");
                    return;
                }
            };
            for lead in due {
                if launched >= launch {
                    return;
                }
                let cleared = match self.clear(&lead, now).await {
                    Ok(cleared) => cleared,
                    Err(e) => {
                        // Without the DNC list or the number's history the rules cannot be
                        // checked: dial no one until the store answers again.
                        tracing::warn!(campaign = %self.campaign.name, "checking a lead: {e}");
                        return;
                    }
                };
                match cleared {
                    Ok(local) => {
                        if self.dial(lead, local, ended).await {
                            launched += 1;
                        } else if store.campaign_state(&self.campaign.id).await.ok().as_deref()
                            != Some("running")
                        {
                            return; // Paused meanwhile: not one more dial.
                        }
                    }
                    Err(progress) => {
                        if let Err(e) = store.update_lead(&lead.id, &progress).await {
                            tracing::warn!(lead = %lead.id, "recording a refusal: {e}");
                        }
                    }
                }
            }
        }
    }

    /// The lead's local time when the rules let it be dialled now; else its new progress.
    async fn clear(
        &self,
        lead: &Lead,
        now: Timestamp,
    ) -> Result<Result<String, LeadProgress>, voxide_store::StoreError> {
        let store = &self.inner.store;
        let tenant = &self.campaign.tenant_id;
        let on_dnc = store.on_dnc(tenant, &self.campaign.id, &lead.number).await?;
        let day_ago = now.as_millisecond() - 86_400_000;
        let history = store.number_history(tenant, &lead.number, day_ago).await?;
        let ts = |ms: Option<i64>| ms.and_then(|m| Timestamp::from_millisecond(m).ok());
        let facts = LeadFacts {
            place: Place {
                number: &lead.number,
                tz: lead.tz.as_deref(),
                state: lead.region.as_deref(),
            },
            on_dnc,
            dials_24h: history.dials,
            oldest_dial_24h: ts(history.oldest),
            last_abandoned: ts(history.last_abandoned),
        };
        let refused = match self.rules.may_dial(&facts, now) {
            Ok(cleared) => return Ok(Ok(cleared.local)),
            Err(refused) => refused,
        };
        let mut p = lead.progress.clone();
        p.note = format!("not dialled: {}", refused.refusal);
        match (&refused.refusal, refused.retry_at) {
            (Refusal::Dnc | Refusal::NoZone(_), _) | (_, None) => {
                p.status = "done".into();
                p.disposition = Some(refused.refusal.rule().into());
                p.next_attempt_at = None;
            }
            (_, Some(at)) => {
                // A new lead waits too: `retry` with no attempts yet.
                p.status = "retry".into();
                p.next_attempt_at = Some(at.as_millisecond());
            }
        }
        Ok(Err(p))
    }

    /// Places one call; false when the lead could not be started (paused, taken, refused
    /// by the node's originate limits).
    async fn dial(
        &mut self,
        lead: Lead,
        local: String,
        ended: &mpsc::UnboundedSender<Ended>,
    ) -> bool {
        let store = &self.inner.store;
        let Some(to) = self.settings.uri_for(&lead.number) else {
            let mut p = lead.progress.clone();
            (p.status, p.disposition, p.next_attempt_at) =
                ("done".into(), Some("no-trunk".into()), None);
            p.note = format!("no trunk for {}", lead.number);
            let _ = store.update_lead(&lead.id, &p).await;
            return false;
        };
        let ring = self.settings.ring_timeout(&self.rules);
        let audit = NewAttempt {
            local_time: local,
            rules: format!(
                "dnc clear; window {}–{}; {} per number per 24 h; ring {} s",
                self.settings.window_start,
                self.settings.window_end,
                self.rules.max_per_number_24h,
                ring.as_secs()
            ),
        };
        let attempt = match store.begin_attempt(&lead, audit).await {
            Ok(Some(id)) => id,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(lead = %lead.id, "starting an attempt: {e}");
                return false;
            }
        };
        let board = self.board.clone();
        let req = LeadCall {
            tenant: self.campaign.tenant_id.clone(),
            label: format!("campaign {}", self.campaign.name),
            to,
            from: self.settings.caller_id.clone(),
            ring_timeout: ring,
            agent_within: self.rules.agent_within,
            message: self.settings.message.clone(),
            agents: Arc::new(move || board.lock().unwrap_or_else(|e| e.into_inner()).pick()),
            queue: self.settings.agent_queue.clone(),
            flow: self.flow.clone(),
            vars: lead.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            amd: self.settings.answering_machine.plan().map(|mut plan| {
                plan.flow = self.machine_flow.clone();
                plan
            }),
        };
        self.stats.dialled += 1;
        self.in_flight += 1;
        let ended = ended.clone();
        match place_lead_call(&self.inner.hub, req).await {
            Ok(done) => {
                tokio::spawn(async move {
                    let end = done.await.unwrap_or_else(|_| {
                        let why = "the call task ended without a result".into();
                        LeadCallEnd::failed(String::new(), why)
                    });
                    let _ = ended.send(Ended { lead, attempt, end });
                });
            }
            Err(e) => {
                let end = LeadCallEnd::failed(String::new(), format!("not placed: {e}"));
                let _ = ended.send(Ended { lead, attempt, end });
            }
        }
        true
    }

    /// An attempt ended: the lead moves on by the plan, the ledgers and the agent follow.
    async fn ended(&mut self, Ended { lead, attempt, end }: Ended) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let now = now_ts();
        let human = is_human(end.outcome);
        self.recent.push_back((Instant::now(), end.outcome));
        if end.outcome == Outcome::Machine && self.settings.answering_machine.detect {
            // Some "machines" were people the detector misjudged, hung up on: abandoned.
            self.amd_debt += self.settings.answering_machine.false_positive_estimate;
            while self.amd_debt >= 1.0 {
                self.amd_debt -= 1.0;
                self.ledger.record(now, true);
                self.minute.record(now, true);
            }
        }
        if human {
            let abandoned = end.outcome == Outcome::Abandoned;
            self.ledger.record(now, abandoned);
            self.minute.record(now, abandoned);
            self.ring.0 += end.ring_ms as f64;
            self.ring.1 += 1;
        }
        if let Some(talk) = end.talk_ms {
            self.handle.0 += talk as f64;
            self.handle.1 += 1;
        }
        if let Some(agent) = &end.agent {
            let wrap = Duration::from_secs(self.settings.wrap_secs);
            self.board().release(agent, wrap);
        }
        // A queue member claimed for this call who did not take it: free again (ready once
        // the queue shows it waiting).
        if let Some(claimed) = end.claimed.as_ref().filter(|c| end.agent.as_ref() != Some(*c)) {
            self.board().release(claimed, Duration::ZERO);
        }
        let p = campaign::progress_of(&lead.progress);
        let (next, why) = leads::after_attempt(
            &p,
            end.outcome,
            now,
            &self.settings.retry,
            self.rules.after_abandon,
        );
        let row = AttemptEnd {
            call_id: (!end.call_id.is_empty()).then(|| end.call_id.clone()),
            outcome: end.outcome.as_str().into(),
            ring_ms: Some(end.ring_ms as i64),
            answer_to_agent_ms: end.answer_to_agent_ms.map(|m| m as i64),
            agent: end.agent.clone(),
            played: end.played.clone(),
            detail: end.detail.clone(),
        };
        if let Err(e) = self
            .inner
            .store
            .end_attempt(&attempt, &row, &lead.id, &campaign::stored(&next, why))
            .await
        {
            tracing::error!(lead = %lead.id, attempt, "recording the attempt's end: {e}");
        }
    }

    async fn publish(&mut self) {
        let shared = self.board.clone();
        let board = shared.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut self.stats;
        s.agents_ready = board.count(Busy::Ready);
        s.agents_talking = board.count(Busy::Talking);
        s.agents_wrap_up = board.count(Busy::Wrap);
        s.agents_logged_in = s.agents_ready + s.agents_talking + s.agents_wrap_up;
        drop(board);
        s.answered = self.ledger.answered;
        s.abandoned = self.ledger.abandoned;
        s.abandon_rate = self.ledger.rate() * 100.0;
        s.ringing = self.in_flight.saturating_sub(s.agents_talking);
        s.utilisation = if self.logged_in_secs > 0.0 {
            self.talk_secs / self.logged_in_secs * 100.0
        } else {
            0.0
        };
        if let Some(tx) = self.inner.stats().get(&self.campaign.id) {
            tx.send_replace(s.clone());
        }
    }
}

/// Answered by a person (connected to an agent or abandoned): what the abandon ledger counts.
fn is_human(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Human | Outcome::Abandoned)
}
