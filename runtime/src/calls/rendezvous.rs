//! Where calls meet: queues (a caller waits with hold music until an agent's `dial("queue:…")`
//! takes them) and conference rooms. Both are per tenant.

use super::*;

/// A caller waiting in a queue for an agent.
#[derive(Debug)]
pub(super) struct Waiting {
    leg: LegLink,
    /// Closes when the caller leaves the queue or the conversation (hangs up).
    caller_alive: tokio::sync::oneshot::Receiver<()>,
    matched: tokio::sync::oneshot::Sender<Matched>,
}

impl Waiting {
    /// Still waiting: a caller who hung up (or an offer withdrawn) has closed the channel.
    fn here(&mut self) -> bool {
        matches!(
            self.caller_alive.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        )
    }
}

/// What a queued caller learns when an agent takes the call.
#[derive(Debug)]
pub(super) struct Matched {
    /// Closes when the agent's side of the conversation ends.
    agent_alive: tokio::sync::oneshot::Receiver<()>,
    /// The agent: the user they called in as.
    agent: String,
}

/// An agent waiting in `dial("queue:…")` for a caller (a queue member, as a campaign sees it).
#[derive(Debug, Clone)]
pub struct QueueMember {
    pub call_id: String,
    /// The user the agent called in as.
    pub user: String,
    /// Since when the agent has waited.
    pub since: std::time::Instant,
}

/// A member's place in its queue's list, given up when dropped.
struct Membership<'a> {
    media: &'a MediaServices,
    queue: String,
    call_id: String,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let mut members = self.media.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = members.get_mut(&self.queue) {
            list.retain(|m| m.call_id != self.call_id);
            if list.is_empty() {
                members.remove(&self.queue);
            }
        }
    }
}

/// The longest a caller waits in a queue before `enqueue` returns `err(timeout)`.
const QUEUE_MAX_WAIT: Duration = Duration::from_secs(600);

impl MediaServices {
    pub(super) fn enqueue(&self, queue: &str, waiting: Waiting) {
        if let Ok(mut queues) = self.queues.lock() {
            queues.entry(queue.to_owned()).or_default().push_back(waiting);
        }
    }

    /// Like [`MediaServices::enqueue`], first in line (a campaign's call within its 2 s).
    fn enqueue_front(&self, queue: &str, waiting: Waiting) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let list = queues.entry(queue.to_owned()).or_default();
        // Callers who left (a withdrawn offer among them) go now rather than at the next take.
        list.retain_mut(Waiting::here);
        list.push_front(waiting);
    }

    /// The agents waiting for a caller in `queue` (tenant-scoped), longest-waiting first.
    pub fn queue_members(&self, tenant: &str, queue: &str) -> Vec<QueueMember> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .get(&format!("{tenant}/{queue}"))
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn join_members(&self, queue: &str, member: QueueMember) -> Membership<'_> {
        let call_id = member.call_id.clone();
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.entry(queue.to_owned()).or_default().push_back(member);
        Membership { media: self, queue: queue.to_owned(), call_id }
    }

    /// Whether `call_id` is the longest-waiting agent of `queue`: the one the next caller goes to.
    fn first_member(&self, queue: &str, call_id: &str) -> bool {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.get(queue).and_then(|l| l.front()).is_none_or(|m| m.call_id == call_id)
    }

    /// The longest-waiting caller still there, taken off `queue`.
    pub(super) fn next_caller(&self, queue: &str) -> Option<Waiting> {
        let mut queues = self.queues.lock().ok()?;
        let waiting = queues.get_mut(queue)?;
        while let Some(mut w) = waiting.pop_front() {
            if w.here() {
                return Some(w);
            }
        }
        None
    }

    /// The room called `name`, created on first use.
    pub(super) fn room(&self, name: &str) -> Room {
        let Ok(mut rooms) = self.rooms.lock() else { return Room::new() };
        if let Some(room) = rooms.get(name).and_then(WeakRoom::upgrade) {
            return room;
        }
        // Forget rooms that ended, so names do not pile up.
        rooms.retain(|_, r| r.upgrade().is_some());
        let room = Room::new();
        rooms.insert(name.to_owned(), room.downgrade());
        room
    }
}

impl SipCall {
    /// `dial("queue:NAME")`: an agent takes the longest-waiting caller of a queue (waiting up to
    /// `timeout_ms` for one) and talks to them until either hangs up.
    pub(super) async fn take_from_queue(
        &mut self,
        queue: &str,
        timeout_ms: u32,
    ) -> CallResult<DialOutcome> {
        let Some(media) = self.media.clone() else {
            return Err(Self::unavailable("dial(queue:…)"));
        };
        let key = self.scoped(queue);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        let me = QueueMember {
            call_id: self.call_id(),
            user: self.live.as_ref().map(|l| user_of(&l.from)).unwrap_or_default(),
            since: std::time::Instant::now(),
        };
        let membership = media.join_members(&key, me.clone());
        // The longest-waiting agent takes the next caller.
        let caller = loop {
            if media.first_member(&key, &me.call_id)
                && let Some(caller) = media.next_caller(&key)
            {
                break caller;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(DialOutcome::NoAnswer);
            }
            let poll = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
            self.wait_until(poll, false).await?;
        };
        drop(membership);
        self.answer().await?;
        let Some(agent_link) = self.session.as_ref().map(Session::link) else {
            return Err(Self::unavailable("dial(queue:…)"));
        };
        if !bridge_links(&agent_link, &caller.leg) {
            return Ok(DialOutcome::Failed("the caller left the queue".into()));
        }
        let (alive, agent_alive) = tokio::sync::oneshot::channel::<()>();
        if caller.matched.send(Matched { agent_alive, agent: me.user.clone() }).is_err() {
            unbridge_links(&agent_link, &caller.leg);
            return Ok(DialOutcome::Failed("the caller left the queue".into()));
        }
        tracing::info!(call = self.call.0, "took a caller from queue {queue}");
        let start = tokio::time::Instant::now();
        let mut caller_gone = caller.caller_alive;
        let result = loop {
            tokio::select! {
                _ = &mut caller_gone => {
                    let talk_ms = u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX);
                    break Ok(DialOutcome::Answered { talk_ms });
                }
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break Err(CallError::Hangup);
                    }
                }
            }
        };
        unbridge_links(&agent_link, &caller.leg);
        drop(alive);
        result
    }

    /// A campaign's answered lead, offered to the agents waiting in `queue` until `deadline`:
    /// `Ok(None)` when none took it by then (it is withdrawn: an agent reaching for it now
    /// finds it gone), else the agent who took it, once the conversation is over (whoever
    /// hung up; `bridged_at` says when it began).
    pub(super) async fn offer_to_queue(
        &mut self,
        queue: &str,
        deadline: tokio::time::Instant,
    ) -> CallResult<Option<String>> {
        self.live()?;
        let Some(media) = self.media.clone() else { return Err(Self::unavailable("queue")) };
        let Some(link) = self.session.as_ref().map(Session::link) else {
            return Err(Self::unavailable("queue"));
        };
        let key = self.scoped(queue);
        let mut session = self.session.take();
        // Offered again if a member took it but could not connect (its call failed): the
        // deadline, not the first member, decides.
        let (alive, outcome) = 'offer: loop {
            let (alive, caller_alive) = tokio::sync::oneshot::channel::<()>();
            let (matched, mut on_match) = tokio::sync::oneshot::channel();
            // Ahead of callers on hold: a lead has the law's 2 s, they have hold music.
            let waiting = Waiting { leg: link.clone(), caller_alive, matched };
            media.enqueue_front(&key, waiting);
            loop {
                tokio::select! {
                    m = &mut on_match => match m {
                        Ok(m) => break 'offer (alive, Some(m)),
                        Err(_) => continue 'offer,
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        // Closed first, so a match is either in or refused, never half made.
                        on_match.close();
                        break 'offer (alive, on_match.try_recv().ok());
                    }
                    wake = self.next_event(&mut session) => match wake {
                        Wake::Gone => {
                            self.session = session;
                            return Err(CallError::Hangup);
                        }
                        Wake::MediaLost => return Err(CallError::Hangup),
                        Wake::Digit | Wake::Signal => {}
                    },
                }
            }
        };
        self.session = session;
        let Some(Matched { agent_alive, agent }) = outcome else { return Ok(None) };
        self.bridged_at = Some(std::time::Instant::now());
        tracing::info!(call = self.call.0, agent, "queue member took the call");
        let mut agent_gone = agent_alive;
        loop {
            tokio::select! {
                _ = &mut agent_gone => break,
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break;
                    }
                }
            }
        }
        drop(alive);
        Ok(Some(agent))
    }

    /// `enqueue`: hold music until an agent takes the call, then talk until either hangs up.
    pub(super) async fn wait_in_queue(&mut self, queue: String) -> CallResult<()> {
        self.live()?;
        let Some(media) = self.media.clone() else { return Err(Self::unavailable("enqueue")) };
        if queue.is_empty() || queue.len() > 128 {
            return Err(CallError::InvalidArgument("queue names are 1-128 characters".into()));
        }
        self.answer().await?;
        let Some(link) = self.session.as_ref().map(Session::link) else {
            return Err(Self::unavailable("enqueue"));
        };
        let (alive, caller_alive) = tokio::sync::oneshot::channel::<()>();
        let (matched, mut on_match) = tokio::sync::oneshot::channel();
        media.enqueue(&self.scoped(&queue), Waiting { leg: link, caller_alive, matched });
        tracing::info!(call = self.call.0, "waiting in queue {queue}");
        // Hold music until an agent takes the call (or the wait is too long).
        let hold = match media.prompts.play("hold-music.wav").await {
            Ok(pcm) => pcm,
            Err(_) => prompts::hold_music(),
        };
        let deadline = tokio::time::Instant::now() + QUEUE_MAX_WAIT;
        let agent = loop {
            let Some(session) = self.session.take() else {
                return Err(Self::unavailable("enqueue"));
            };
            let mut done = session.play(hold.clone());
            let mut session = Some(session);
            let outcome = loop {
                tokio::select! {
                    _ = &mut done => break None,
                    m = &mut on_match => break Some(m.map_err(|_| CallError::Failed("the queue went away".into()))),
                    _ = tokio::time::sleep_until(deadline) => break Some(Err(CallError::Timeout)),
                    wake = self.next_event(&mut session) => match wake {
                        Wake::Gone => break Some(Err(CallError::Hangup)),
                        Wake::MediaLost => return Err(CallError::Hangup),
                        Wake::Digit | Wake::Signal => {}
                    },
                }
            };
            if let Some(s) = &session {
                s.stop_play();
            }
            self.session = session;
            match outcome {
                None => continue, // the hold music ended: play it again
                Some(result) => break result?,
            }
        };
        // Bridged by the agent's side; talk until either side hangs up.
        let mut agent_gone = agent.agent_alive;
        let result = loop {
            tokio::select! {
                _ = &mut agent_gone => break Ok(()),
                signal = self.signals.recv() => {
                    self.signal(signal.unwrap_or(Signal::CallerGone));
                    if self.hung_up {
                        break Err(CallError::Hangup);
                    }
                }
            }
        };
        drop(alive);
        result
    }

    /// `conference`: join the tenant's room of that name until the others have left.
    pub(super) async fn join_room(&mut self, room: String) -> CallResult<()> {
        self.live()?;
        let Some(media) = self.media.clone() else { return Err(Self::unavailable("conference")) };
        if room.is_empty() || room.len() > 128 {
            return Err(CallError::InvalidArgument("room names are 1-128 characters".into()));
        }
        self.answer().await?;
        let Some(session) = self.session.take() else {
            return Err(Self::unavailable("conference"));
        };
        // Rooms, like queues, are per tenant: another tenant's "support" is another room.
        let room = media.room(&self.scoped(&room));
        let mut done = room.join(&session);
        drop(room);
        tracing::info!(call = self.call.0, "joined conference");
        let mut session = Some(session);
        let result = loop {
            tokio::select! {
                // The others all left (or the room closed): the conference is over for us.
                _ = &mut done => break Ok(()),
                wake = self.next_event(&mut session) => match wake {
                    Wake::Gone => break Err(CallError::Hangup),
                    Wake::MediaLost => {
                        if let Some(s) = &self.session {
                            Room::leave(s);
                        }
                        return Err(CallError::Hangup);
                    }
                    Wake::Digit | Wake::Signal => {}
                },
            }
        };
        if let Some(s) = &session {
            Room::leave(s);
        }
        self.session = session;
        result
    }
}

impl CallHub {
    /// The agents waiting in the tenant's `queue` for a caller, longest-waiting first (none
    /// on a node without media).
    pub fn queue_members(&self, tenant: &str, queue: &str) -> Vec<QueueMember> {
        let media = self.sip.get().and_then(|o| o.media.as_ref());
        media.map(|m| m.queue_members(tenant, queue)).unwrap_or_default()
    }
}
