//! A campaign's call to a lead: placed like any outbound call (admitted, listed, CDR), and
//! once a human answers, bridged by the host to an agent within the compliance window —
//! else the campaign's information message is played and the call ends, abandoned. No flow
//! runs before the agent: the law's 2 s cannot wait for guest code. (A flow campaign, with
//! no agents, hands the answered call to its flow instead; so may a machine's policy.)
//!
//! With answering-machine detection on, the callee's first words are classified first
//! ([`voxide_media::amd`]): a machine is hung up on or left the campaign's message after its
//! greeting, and for a person the 2 s run from the end of the greeting (Ofcom's reading)
//! rather than from the answer.

use std::time::Instant;

use voxide_media::amd::{AmdSpec, Verdict};

use super::originate::{Handoff, place};
use super::*;
use crate::dialer::leads::Outcome;

/// Picks the agent for an answered call (the longest-idle ready one) and marks it talking;
/// `None` when no agent is ready now.
pub type AgentPicker = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// One attempt to reach a lead.
pub struct LeadCall {
    pub tenant: String,
    /// Shown in the call list (`campaign spring`).
    pub label: String,
    /// The SIP URI the trunk gives for the lead's number.
    pub to: String,
    /// Caller ID presented.
    pub from: Option<String>,
    /// How long to ring (the compliance rules' minimum already applied).
    pub ring_timeout: Duration,
    /// The answered call is abandoned unless an agent is connected within this.
    pub agent_within: Duration,
    /// Said to an answered call no agent took, before hanging up.
    pub message: String,
    pub agents: AgentPicker,
    /// Agents are the members of this queue (their flows wait in `dial("queue:NAME")`) rather
    /// than registered users: the call is offered to the queue and its longest-waiting member
    /// takes it. `agents` then only claims a slot on the campaign's board.
    pub queue: Option<String>,
    /// The answered person runs this flow instead of meeting an agent.
    pub flow: Option<Route>,
    /// The lead's columns, the flow's vars (after the route's own).
    pub vars: Vec<(String, String)>,
    /// Answering-machine detection, when the campaign asks for it.
    pub amd: Option<MachinePlan>,
}

/// How a campaign treats answering machines.
#[derive(Debug, Clone)]
pub struct MachinePlan {
    pub spec: AmdSpec,
    /// Said after a machine's greeting ends; `None`: hang up on machines (unless `flow`).
    pub message: Option<String>,
    /// Run on a machine once its greeting ended.
    pub flow: Option<Route>,
}

/// Longest wait for a machine's greeting (and its beep) to end before leaving a message.
const MACHINE_GREETING_MAX: Duration = Duration::from_secs(20);
/// Silence after which a machine's greeting counts as over.
const MACHINE_GREETING_SILENCE: Duration = Duration::from_millis(1000);

impl std::fmt::Debug for LeadCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeadCall").field("to", &self.to).field("label", &self.label).finish()
    }
}

/// How an attempt ended, for the lead state machine and the audit row.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadCallEnd {
    pub call_id: String,
    pub outcome: Outcome,
    /// INVITE to answer (or to the final response).
    pub ring_ms: u64,
    /// Answer to the agent's answer, when one was connected.
    pub answer_to_agent_ms: Option<u64>,
    /// Agent talk time, when one was connected.
    pub talk_ms: Option<u64>,
    /// The agent picked (connected or not).
    pub agent: Option<String>,
    /// What the caller heard instead of an agent.
    pub played: Option<String>,
    /// The machine detector's verdict and why (`human: after-greeting-silence, 1 word…`).
    pub amd: Option<String>,
    /// The queue member the board set talking for this call (it may not be who took it).
    pub claimed: Option<String>,
    pub detail: String,
}

impl LeadCallEnd {
    /// An attempt that ended without a connection (yet): `failed`, nothing measured.
    pub fn failed(call_id: String, detail: String) -> LeadCallEnd {
        LeadCallEnd {
            call_id,
            outcome: Outcome::Failed,
            ring_ms: 0,
            answer_to_agent_ms: None,
            talk_ms: None,
            agent: None,
            played: None,
            amd: None,
            claimed: None,
            detail,
        }
    }
}

/// Places `req`. The attempt's end arrives on the returned channel; the call's CDR is
/// written like any other call's.
pub async fn place_lead_call(
    hub: &Arc<CallHub>,
    req: LeadCall,
) -> Result<tokio::sync::oneshot::Receiver<LeadCallEnd>, HubError> {
    let started = Instant::now();
    let ringing = place(hub, &req.tenant, &req.to, req.from.as_deref(), |from, to| {
        hub.start_unrouted(&req.tenant, from, to, req.label.clone())
    })
    .await?;
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let hub = hub.clone();
    let (engine, kv, from) =
        (ringing.ctx.engine.clone(), ringing.ctx.kv.clone(), ringing.from.clone());
    tokio::spawn(async move {
        let live = ringing.live.clone();
        let ms = |since: Instant| since.elapsed().as_millis() as u64;
        let mut end = LeadCallEnd::failed(live.id.clone(), String::new());
        let mut call = match ringing.answered(req.ring_timeout).await {
            Ok(call) => call,
            Err((cdr_outcome, detail)) => {
                end.ring_ms = ms(started);
                end.outcome = match cdr_outcome {
                    "busy" => Outcome::Busy,
                    "no-answer" => Outcome::NoAnswer,
                    _ => Outcome::Failed,
                };
                end.detail = detail.clone();
                hub.finish(&live, live.record(cdr_outcome, detail, 0));
                let _ = done_tx.send(end);
                return;
            }
        };
        end.ring_ms = ms(started);
        let answered = Instant::now();
        let next = match (classify(&mut call, &req, answered, &mut end).await, &req.flow) {
            (Next::Agent(_), Some(flow)) => Next::Flow(flow.clone()),
            (next, _) => next,
        };
        let (outcome, detail) = match next {
            Next::Agent(clock) => {
                let (outcome, detail) =
                    connect_agent(&mut call, &req, answered, clock, &mut end).await;
                match &end.amd {
                    Some(amd) => (outcome, format!("{detail}; machine detection: {amd}")),
                    None => (outcome, detail),
                }
            }
            Next::End(outcome, detail) => (outcome, detail),
            Next::Flow(mut route) => {
                // The flow owns the call from here, and writes its CDR when it ends.
                if end.outcome != Outcome::Machine {
                    end.outcome = Outcome::Human;
                }
                end.played = Some(format!("flow {}", route.label));
                route.vars.extend(req.vars.iter().cloned());
                live.set_flow(&route);
                let label = route.label.clone();
                let handoff = Handoff { engine: &engine, kv: &kv, hub: &hub, live: &live };
                let ended = handoff.run(route, call, from, req.to.clone()).await;
                end.detail = match &end.amd {
                    Some(amd) => format!("flow {label}: {ended}; machine detection: {amd}"),
                    None => format!("flow {label}: {ended}"),
                };
                let _ = done_tx.send(end);
                return;
            }
        };
        call.hangup().await;
        end.detail = detail.clone();
        hub.finish(&live, live.record(outcome, detail, 1));
        let _ = done_tx.send(end);
    });
    Ok(done)
}

/// What happens to an answered call after machine detection.
enum Next {
    /// A person: an agent, within the compliance window counted from this instant (the end
    /// of the greeting, else the answer).
    Agent(Instant),
    /// Hand the call to a flow (a machine's, after its greeting).
    Flow(Route),
    /// The call ends here: the CDR's outcome and detail.
    End(&'static str, String),
}

/// With detection on, classifies the answered callee and says what comes next.
async fn classify(
    call: &mut SipCall,
    req: &LeadCall,
    answered: Instant,
    end: &mut LeadCallEnd,
) -> Next {
    let Some(plan) = &req.amd else { return Next::Agent(answered) };
    let Ok(d) = call.detect_machine(plan.spec.clone()).await else {
        end.outcome = Outcome::Abandoned;
        return Next::End("hung-up", "the lead hung up during machine detection".into());
    };
    let verdict = format!(
        "{}: {}, {} word(s), {} ms of voice, decided {} ms after the answer",
        d.verdict.as_str(),
        d.reason,
        d.words,
        d.voiced_ms,
        d.decided_ms
    );
    end.amd = Some(verdict.clone());
    match d.verdict {
        // The clock runs from the end of the greeting when there was one.
        Verdict::Human | Verdict::NotSure => Next::Agent(
            d.greeting_end_ms
                .and_then(|ms| answered.checked_add(Duration::from_millis(ms)))
                .unwrap_or(answered),
        ),
        Verdict::Silent => Next::Agent(answered),
        Verdict::Machine => {
            end.outcome = Outcome::Machine;
            if plan.message.is_none() && plan.flow.is_none() {
                return Next::End("completed", format!("answering machine ({verdict}): hung up"));
            }
            let spec = AmdSpec::end_of_greeting(MACHINE_GREETING_SILENCE, MACHINE_GREETING_MAX);
            if call.detect_machine(spec).await.is_err() {
                return Next::End(
                    "completed",
                    format!("answering machine ({verdict}): it hung up"),
                );
            }
            if let Some(flow) = &plan.flow {
                return Next::Flow(flow.clone());
            }
            let message = plan.message.clone().unwrap_or_default();
            end.played = Some(message.clone());
            let _ = call.say(message, SayOptions::default()).await;
            Next::End("completed", format!("answering machine ({verdict}): message left"))
        }
    }
}

/// Bridges the answered call to an agent within `agent_within` of `clock` (the answer, or
/// the end of the greeting), or plays the message: returns the CDR's outcome and detail,
/// and fills in the attempt's.
async fn connect_agent(
    call: &mut SipCall,
    req: &LeadCall,
    answered: Instant,
    clock: Instant,
    end: &mut LeadCallEnd,
) -> (&'static str, String) {
    let left = |d: Duration| d.saturating_sub(clock.elapsed());
    if let Some(queue) = &req.queue {
        // The board's guess at who takes it (the longest-waiting member, as the queue picks).
        end.claimed = (req.agents)();
        let deadline = tokio::time::Instant::from_std(clock + req.agent_within);
        match call.offer_to_queue(queue, deadline).await {
            Ok(Some(agent)) => {
                let bridged = call.bridged_at.unwrap_or(answered);
                return connected(end, agent, answered, bridged);
            }
            Ok(None) => return abandon(call, req, end).await,
            Err(CallError::Hangup) => {
                end.outcome = Outcome::Abandoned;
                return ("hung-up", "the lead hung up before an agent took the call".into());
            }
            Err(e) => {
                tracing::warn!(queue, "offering the call to the queue: {e}");
                return abandon(call, req, end).await;
            }
        }
    }
    // An agent may come free during the window: look again every 100 ms.
    let agent = loop {
        if let Some(agent) = (req.agents)() {
            break Some(agent);
        }
        if left(req.agent_within).is_zero() {
            break None;
        }
        match call.wait(100.min(left(req.agent_within).as_millis() as u64).max(1)).await {
            Ok(()) => {}
            Err(_) => {
                end.outcome = Outcome::Abandoned;
                return ("hung-up", "the lead hung up before an agent was free".into());
            }
        }
    };
    if let Some(agent) = agent {
        end.agent = Some(agent.clone());
        let timeout = left(req.agent_within);
        let opts = DialOptions {
            timeout_ms: timeout.as_millis().max(1) as u32,
            caller_id: None,
            record: false,
        };
        let dialled = Instant::now();
        let result = call.dial(vec![agent.clone()], opts).await;
        // Connected when the bridge began, whoever hung up first.
        if let Some(bridged) = call.bridged_at.filter(|at| *at >= dialled) {
            return connected(end, agent, answered, bridged);
        }
        match result {
            Ok(DialOutcome::Answered { .. }) => {}
            Err(CallError::Hangup) => {
                end.outcome = Outcome::Abandoned;
                return ("hung-up", format!("the lead hung up while agent {agent} rang"));
            }
            Ok(other) => tracing::warn!(agent, "agent did not take the call: {other:?}"),
            Err(e) => tracing::warn!(agent, "agent did not take the call: {e}"),
        }
    }
    abandon(call, req, end).await
}

/// Connected to `agent` at `bridged`: the attempt's figures, the CDR's outcome and detail.
fn connected(
    end: &mut LeadCallEnd,
    agent: String,
    answered: Instant,
    bridged: Instant,
) -> (&'static str, String) {
    let to_agent = bridged.saturating_duration_since(answered).as_millis() as u64;
    let talk_ms = bridged.elapsed().as_millis() as u64;
    end.answer_to_agent_ms = Some(to_agent);
    end.talk_ms = Some(talk_ms);
    end.outcome = Outcome::Human;
    let detail = format!("bridged to agent {agent} after {to_agent} ms, {talk_ms} ms talk");
    end.agent = Some(agent);
    ("completed", detail)
}

/// No agent in time: the law wants the caller told who called and how to call back.
async fn abandon(
    call: &mut SipCall,
    req: &LeadCall,
    end: &mut LeadCallEnd,
) -> (&'static str, String) {
    end.outcome = Outcome::Abandoned;
    end.played = Some(req.message.clone());
    let _ = call.say(req.message.clone(), SayOptions::default()).await;
    let within = req.agent_within.as_millis();
    ("completed", format!("abandoned: no agent within {within} ms; the message was played"))
}
