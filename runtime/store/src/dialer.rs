//! The outbound dialer's rows: campaigns, leads, do-not-call lists and the attempt audit.
//!
//! The store keeps what the runtime decided; it does not decide. A campaign's settings are
//! JSON the runtime validated (`voxide_runtime::dialer::campaign::Settings`), a lead's
//! progress is the lead state machine's, written back whole. Invariants:
//! - A lead is dialled at most once at a time: [`Store::begin_attempt`] moves it to
//!   `dialing` only from `new`/`retry`, in the transaction that writes its attempt row.
//! - Every attempt that started has a row, and [`Store::end_attempt`] completes it with the
//!   lead's next state in one transaction; attempts a crash interrupted are closed by
//!   [`Store::recover_attempts`] on the next start, so none stays open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};

use super::{Millis, Result, Store, StoreError, is_unique_violation, json, now, random_hex};

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Campaign {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub name: String,
    /// `draft`, `running`, `paused` or `finished`.
    pub state: String,
    /// The pacing strategy: a sample's name (`progressive`, `predictive`, …).
    pub strategy: String,
    /// Most abandoned calls over live-answered ones (the law's 3 % by default).
    pub abandon_target: f64,
    /// Agents, trunks, caller id, calling window, retry plan, wrap-up, information message.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What creating a campaign brings (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub strategy: String,
    pub abandon_target: f64,
    pub settings: serde_json::Value,
}

/// A lead to add to a campaign (the number already in E.164).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewLead {
    pub number: String,
    pub tz: Option<String>,
    pub region: Option<String>,
    pub postcode: Option<String>,
    pub vars: BTreeMap<String, String>,
}

/// A stored lead and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lead {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    #[serde(skip)]
    pub campaign_id: String,
    /// Import order within the campaign.
    pub position: i64,
    pub number: String,
    pub tz: Option<String>,
    /// US state or Canadian province.
    pub region: Option<String>,
    pub postcode: Option<String>,
    pub vars: BTreeMap<String, String>,
    #[serde(flatten)]
    pub progress: LeadProgress,
}

/// A lead's dialling state as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeadProgress {
    /// `new`, `dialing`, `retry` or `done`.
    pub status: String,
    pub attempts: i64,
    /// Attempts by outcome, `[["busy", 2]]`.
    #[schema(value_type = Object)]
    pub outcomes: serde_json::Value,
    /// Why it is done: `contacted`, an outcome, `max-attempts`, `dnc`, `unknown-zone`.
    pub disposition: Option<String>,
    pub next_attempt_at: Option<Millis>,
    /// The last rule that decided (`busy: retry in 10 min`, `outside calling hours: …`).
    pub note: String,
    pub updated_at: Millis,
}

/// What an attempt row starts with.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub local_time: String,
    /// The rules checked and the ring timeout used.
    pub rules: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, Default)]
pub struct AttemptEnd {
    pub call_id: Option<String>,
    pub outcome: String,
    pub ring_ms: Option<i64>,
    pub answer_to_agent_ms: Option<i64>,
    pub agent: Option<String>,
    pub played: Option<String>,
    pub detail: String,
}

/// One attempt's audit row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: String,
    pub lead_id: String,
    pub number: String,
    pub call_id: Option<String>,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    /// `human`, `machine`, `busy`, `no-answer`, `failed`, `abandoned`; none while dialling.
    pub outcome: Option<String>,
    /// The called party's local time when dialled (`America/Chicago 14:05`).
    pub local_time: String,
    pub rules: String,
    pub ring_ms: Option<i64>,
    pub answer_to_agent_ms: Option<i64>,
    pub agent: Option<String>,
    /// The information message played to an abandoned call.
    pub played: Option<String>,
    pub detail: String,
}

/// What compliance needs to know about a number's recent calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NumberHistory {
    /// Attempts since the time asked about.
    pub dials: u32,
    /// The oldest of those.
    pub oldest: Option<Millis>,
    /// The last abandoned call to the number, ever.
    pub last_abandoned: Option<Millis>,
}

/// A campaign's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignCounts {
    /// Leads by status.
    pub leads: BTreeMap<String, i64>,
    /// Done leads by disposition.
    pub dispositions: BTreeMap<String, i64>,
    /// Attempts by outcome (`dialing` for those in progress).
    pub attempts: BTreeMap<String, i64>,
}

/// A do-not-call entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DncEntry {
    pub number: String,
    /// The campaign it applies to; none for the whole tenant.
    pub campaign: Option<String>,
    pub reason: String,
    pub created_at: Millis,
}

const CAMPAIGN_COLUMNS: &str =
    "id, tenant_id, name, state, strategy, abandon_target, settings, created_at, updated_at";
const LEAD_COLUMNS: &str = "id, tenant_id, campaign_id, position, number, tz, region, postcode, \
     vars, status, attempts, outcomes, disposition, next_attempt_at, note, updated_at";
const ATTEMPT_COLUMNS: &str = "id, lead_id, number, call_id, started_at, ended_at, outcome, \
     local_time, rules, ring_ms, answer_to_agent_ms, agent, played, detail";

/// Which state changes a campaign may make: `finished` is final.
fn may_move(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("draft" | "paused", "running")
            | ("running", "paused")
            | ("draft" | "running" | "paused", "finished")
    )
}

impl Store {
    pub async fn create_campaign(&self, tenant_id: &str, new: NewCampaign) -> Result<Campaign> {
        if !super::valid_name(&new.name) {
            return Err(StoreError::Invalid(format!(
                "campaign name {:?}: use 1-64 of a-z 0-9 - _ .",
                new.name
            )));
        }
        let at = now();
        let campaign = Campaign {
            id: format!("cp_{}", random_hex(8)),
            tenant_id: tenant_id.to_owned(),
            name: new.name,
            state: "draft".into(),
            strategy: new.strategy,
            abandon_target: new.abandon_target,
            settings: new.settings,
            created_at: at,
            updated_at: at,
        };
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO campaigns ({CAMPAIGN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .bind(&campaign.id)
        .bind(tenant_id)
        .bind(&campaign.name)
        .bind(&campaign.state)
        .bind(&campaign.strategy)
        .bind(campaign.abandon_target)
        .bind(json(&campaign.settings))
        .bind(at)
        .bind(at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(campaign),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("campaign {:?} exists", campaign.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn campaigns(&self, tenant_id: &str) -> Result<Vec<Campaign>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant_id = $1 ORDER BY name"
        )))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(campaign_row).collect()
    }

    pub async fn campaign(&self, tenant_id: &str, name: &str) -> Result<Campaign> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant_id = $1 AND name = $2"
        )))
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(campaign_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("campaign {name}")))
    }

    /// Every tenant's running campaigns: what a node's dialer works on.
    pub async fn running_campaigns(&self) -> Result<Vec<Campaign>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE state = 'running' ORDER BY created_at"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(campaign_row).collect()
    }

    /// Moves a campaign to `state` (`running`, `paused`, `finished`); a move the life cycle
    /// does not allow (restarting a finished campaign) is a conflict.
    pub async fn set_campaign_state(
        &self,
        tenant_id: &str,
        name: &str,
        state: &str,
    ) -> Result<Campaign> {
        let mut campaign = self.campaign(tenant_id, name).await?;
        if campaign.state == state {
            return Ok(campaign);
        }
        if !may_move(&campaign.state, state) {
            return Err(StoreError::Conflict(format!(
                "campaign {name} is {}: it cannot become {state}",
                campaign.state
            )));
        }
        let at = now();
        let moved = sqlx::query(
            "UPDATE campaigns SET state = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND state = $5",
        )
        .bind(state)
        .bind(at)
        .bind(tenant_id)
        .bind(&campaign.id)
        .bind(&campaign.state)
        .execute(&self.pool)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("campaign {name} changed meanwhile: retry")));
        }
        (campaign.state, campaign.updated_at) = (state.to_owned(), at);
        Ok(campaign)
    }

    /// The campaign's state now (what a runner checks before each dial).
    pub async fn campaign_state(&self, campaign_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT state FROM campaigns WHERE id = $1")
            .bind(campaign_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("campaign {campaign_id}")))
    }

    // ---- leads ----

    /// Adds leads to a campaign in one transaction, in order; returns how many were added and
    /// the indexes (into `leads`) of those whose number the campaign already has.
    pub async fn add_leads(
        &self,
        tenant_id: &str,
        campaign_id: &str,
        leads: &[NewLead],
    ) -> Result<(usize, Vec<usize>)> {
        let mut tx = self.pool.begin().await?;
        let owned = sqlx::query("SELECT 1 FROM campaigns WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(campaign_id)
            .fetch_optional(&mut *tx)
            .await?;
        if owned.is_none() {
            return Err(StoreError::NotFound(format!("campaign {campaign_id}")));
        }
        let position: i64 =
            sqlx::query("SELECT COALESCE(MAX(position), 0) FROM leads WHERE campaign_id = $1")
                .bind(campaign_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let (mut added, mut duplicates) = (0, Vec::new());
        let at = now();
        for (i, lead) in leads.iter().enumerate() {
            let done = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO leads ({LEAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 'new', 0, '[]', NULL, NULL, '', $10) ON CONFLICT (campaign_id, number) DO NOTHING"
            )))
            .bind(format!("ld_{}", random_hex(8)))
            .bind(tenant_id)
            .bind(campaign_id)
            .bind(position + 1 + i as i64)
            .bind(&lead.number)
            .bind(lead.tz.as_deref())
            .bind(lead.region.as_deref())
            .bind(lead.postcode.as_deref())
            .bind(json(&lead.vars))
            .bind(at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                duplicates.push(i);
            } else {
                added += 1;
            }
        }
        tx.commit().await?;
        Ok((added, duplicates))
    }

    /// The campaign's leads in import order, `offset` after the first.
    pub async fn leads(
        &self,
        tenant_id: &str,
        campaign_id: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Lead>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LEAD_COLUMNS} FROM leads WHERE tenant_id = $1 AND campaign_id = $2 \
             AND ($3 = '' OR status = $3) ORDER BY position LIMIT $4 OFFSET $5"
        )))
        .bind(tenant_id)
        .bind(campaign_id)
        .bind(status.unwrap_or_default())
        .bind(limit.clamp(1, 10_000))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lead_row).collect()
    }

    /// Leads due at `at`: retries whose time has come first (oldest first), then new ones in
    /// import order.
    pub async fn due_leads(&self, campaign_id: &str, at: Millis, limit: i64) -> Result<Vec<Lead>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LEAD_COLUMNS} FROM leads WHERE campaign_id = $1 \
             AND (status = 'new' OR (status = 'retry' AND next_attempt_at <= $2)) \
             ORDER BY CASE WHEN status = 'retry' THEN 0 ELSE 1 END, next_attempt_at, position \
             LIMIT $3"
        )))
        .bind(campaign_id)
        .bind(at)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lead_row).collect()
    }

    /// How many leads are due at `at`.
    pub async fn due_count(&self, campaign_id: &str, at: Millis) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) FROM leads WHERE campaign_id = $1 \
             AND (status = 'new' OR (status = 'retry' AND next_attempt_at <= $2))",
        )
        .bind(campaign_id)
        .bind(at)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?)
    }

    /// Leads not done (new, dialling or waiting for a retry).
    pub async fn open_leads(&self, campaign_id: &str) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM leads WHERE campaign_id = $1 AND status <> 'done'")
            .bind(campaign_id)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Writes a lead's progress without an attempt (a refusal: DNC, calling hours).
    pub async fn update_lead(&self, lead_id: &str, progress: &LeadProgress) -> Result<()> {
        write_progress(&mut *self.pool.acquire().await?, lead_id, progress, None).await?;
        Ok(())
    }

    /// Starts an attempt: the lead goes to `dialing` and its audit row is written, together.
    /// `None` when the lead is no longer due (another node took it, or it was changed) or
    /// its campaign is not running: once a pause commits, no attempt begins.
    pub async fn begin_attempt(&self, lead: &Lead, new: NewAttempt) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let at = now();
        let moved = sqlx::query(
            "UPDATE leads SET status = 'dialing', updated_at = $1 \
             WHERE id = $2 AND status IN ('new', 'retry') AND EXISTS \
             (SELECT 1 FROM campaigns c WHERE c.id = leads.campaign_id AND c.state = 'running')",
        )
        .bind(at)
        .bind(&lead.id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(None);
        }
        let id = format!("at_{}", random_hex(8));
        sqlx::query(
            "INSERT INTO attempts (id, tenant_id, campaign_id, lead_id, number, started_at, \
             local_time, rules, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '')",
        )
        .bind(&id)
        .bind(&lead.tenant_id)
        .bind(&lead.campaign_id)
        .bind(&lead.id)
        .bind(&lead.number)
        .bind(at)
        .bind(&new.local_time)
        .bind(&new.rules)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Completes an attempt's row and writes the lead's next state, together.
    pub async fn end_attempt(
        &self,
        attempt_id: &str,
        end: &AttemptEnd,
        lead_id: &str,
        progress: &LeadProgress,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE attempts SET ended_at = $1, call_id = $2, outcome = $3, ring_ms = $4, \
             answer_to_agent_ms = $5, agent = $6, played = $7, detail = $8 WHERE id = $9",
        )
        .bind(now())
        .bind(end.call_id.as_deref())
        .bind(&end.outcome)
        .bind(end.ring_ms)
        .bind(end.answer_to_agent_ms)
        .bind(end.agent.as_deref())
        .bind(end.played.as_deref())
        .bind(&end.detail)
        .bind(attempt_id)
        .execute(&mut *tx)
        .await?;
        write_progress(&mut tx, lead_id, progress, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// After a crash: attempts still open in `campaign_id` are closed as `failed` and their
    /// leads put back to retry at once (`after_crash` decides their progress). Returns how
    /// many were recovered.
    pub async fn recover_attempts(
        &self,
        campaign_id: &str,
        after_crash: impl Fn(&Lead) -> LeadProgress,
    ) -> Result<usize> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LEAD_COLUMNS} FROM leads WHERE campaign_id = $1 AND status = 'dialing'"
        )))
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        let leads: Vec<Lead> = rows.iter().map(lead_row).collect::<Result<_>>()?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE attempts SET ended_at = $1, outcome = 'failed', \
             detail = 'interrupted: the node stopped during the call' \
             WHERE campaign_id = $2 AND ended_at IS NULL",
        )
        .bind(now())
        .bind(campaign_id)
        .execute(&mut *tx)
        .await?;
        for lead in &leads {
            write_progress(&mut tx, &lead.id, &after_crash(lead), Some("dialing")).await?;
        }
        tx.commit().await?;
        Ok(leads.len())
    }

    /// The campaign's attempts, newest first.
    pub async fn attempts(
        &self,
        tenant_id: &str,
        campaign_id: &str,
        limit: i64,
    ) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE tenant_id = $1 AND campaign_id = $2 \
             ORDER BY started_at DESC, id LIMIT $3"
        )))
        .bind(tenant_id)
        .bind(campaign_id)
        .bind(limit.clamp(1, 100_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(attempt_row).collect()
    }

    /// A number's attempts (any campaign of the tenant) since `since`, and its last abandon.
    pub async fn number_history(
        &self,
        tenant_id: &str,
        number: &str,
        since: Millis,
    ) -> Result<NumberHistory> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(started_at) FROM attempts \
             WHERE tenant_id = $1 AND number = $2 AND started_at >= $3",
        )
        .bind(tenant_id)
        .bind(number)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        let dials: i64 = row.try_get(0)?;
        let oldest: Option<i64> = row.try_get(1)?;
        let last_abandoned: Option<i64> = sqlx::query(
            "SELECT MAX(ended_at) FROM attempts \
             WHERE tenant_id = $1 AND number = $2 AND outcome = 'abandoned'",
        )
        .bind(tenant_id)
        .bind(number)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(NumberHistory {
            dials: dials.clamp(0, i64::from(u32::MAX)) as u32,
            oldest,
            last_abandoned,
        })
    }

    /// The campaign's answered and abandoned attempts since `since`: the abandon ledger a
    /// runner starts from.
    /// Attempts answered since `since`, oldest first: when each ended, and its outcome
    /// (`human`, `abandoned` or `machine`) — what rebuilds a campaign's abandon ledger.
    pub async fn answered_since(
        &self,
        campaign_id: &str,
        since: Millis,
    ) -> Result<Vec<(Millis, String)>> {
        let rows = sqlx::query(
            "SELECT ended_at, outcome FROM attempts WHERE campaign_id = $1 AND ended_at >= $2 \
             AND outcome IN ('human', 'abandoned', 'machine') ORDER BY ended_at",
        )
        .bind(campaign_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn campaign_counts(
        &self,
        tenant_id: &str,
        campaign_id: &str,
    ) -> Result<CampaignCounts> {
        let mut counts = CampaignCounts::default();
        let rows = sqlx::query(
            "SELECT status, COALESCE(disposition, ''), COUNT(*) FROM leads \
             WHERE tenant_id = $1 AND campaign_id = $2 GROUP BY status, disposition",
        )
        .bind(tenant_id)
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let (status, disposition, n): (String, String, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            *counts.leads.entry(status).or_default() += n;
            if !disposition.is_empty() {
                *counts.dispositions.entry(disposition).or_default() += n;
            }
        }
        let rows = sqlx::query(
            "SELECT COALESCE(outcome, 'dialing'), COUNT(*) FROM attempts \
             WHERE tenant_id = $1 AND campaign_id = $2 GROUP BY outcome",
        )
        .bind(tenant_id)
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            counts.attempts.insert(row.try_get(0)?, row.try_get(1)?);
        }
        Ok(counts)
    }

    // ---- do-not-call ----

    /// Adds numbers to the tenant's list (`campaign_id` None) or a campaign's; returns how
    /// many were new.
    pub async fn add_dnc(
        &self,
        tenant_id: &str,
        campaign_id: Option<&str>,
        numbers: &[String],
        reason: &str,
    ) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        let at = now();
        for number in numbers {
            let done = sqlx::query(
                "INSERT INTO dnc (tenant_id, campaign_id, number, reason, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, campaign_id, number) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(campaign_id.unwrap_or_default())
            .bind(number)
            .bind(reason)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            added += done.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// The tenant's list, or a campaign's (`campaign_id`), newest first.
    pub async fn dnc(
        &self,
        tenant_id: &str,
        campaign_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DncEntry>> {
        let rows = sqlx::query(
            "SELECT d.number, c.name, d.reason, d.created_at FROM dnc d \
             LEFT JOIN campaigns c ON c.id = d.campaign_id AND c.tenant_id = d.tenant_id \
             WHERE d.tenant_id = $1 AND d.campaign_id = $2 ORDER BY d.created_at DESC, d.number \
             LIMIT $3",
        )
        .bind(tenant_id)
        .bind(campaign_id.unwrap_or_default())
        .bind(limit.clamp(1, 100_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DncEntry {
                    number: r.try_get(0)?,
                    campaign: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub async fn remove_dnc(
        &self,
        tenant_id: &str,
        campaign_id: Option<&str>,
        number: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM dnc WHERE tenant_id = $1 AND campaign_id = $2 AND number = $3",
        )
        .bind(tenant_id)
        .bind(campaign_id.unwrap_or_default())
        .bind(number)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("{number} on the do-not-call list")));
        }
        Ok(())
    }

    /// Whether `number` is on the tenant's list or `campaign_id`'s.
    pub async fn on_dnc(&self, tenant_id: &str, campaign_id: &str, number: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM dnc WHERE tenant_id = $1 AND number = $2 \
             AND (campaign_id = '' OR campaign_id = $3)",
        )
        .bind(tenant_id)
        .bind(number)
        .bind(campaign_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

async fn write_progress(
    conn: &mut sqlx::AnyConnection,
    lead_id: &str,
    p: &LeadProgress,
    only_if: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE leads SET status = $1, attempts = $2, outcomes = $3, disposition = $4, \
         next_attempt_at = $5, note = $6, updated_at = $7 WHERE id = $8 AND ($9 = '' OR status = $9)",
    )
    .bind(&p.status)
    .bind(p.attempts)
    .bind(json(&p.outcomes))
    .bind(p.disposition.as_deref())
    .bind(p.next_attempt_at)
    .bind(&p.note)
    .bind(now())
    .bind(lead_id)
    .bind(only_if.unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(())
}

fn bad(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Invalid(format!("stored {what}: {e}"))
}

fn campaign_row(row: &sqlx::any::AnyRow) -> Result<Campaign> {
    let settings: String = row.try_get("settings")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        state: row.try_get("state")?,
        strategy: row.try_get("strategy")?,
        abandon_target: row.try_get("abandon_target")?,
        settings: serde_json::from_str(&settings).map_err(|e| bad("campaign settings", e))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn lead_row(row: &sqlx::any::AnyRow) -> Result<Lead> {
    let vars: String = row.try_get("vars")?;
    let outcomes: String = row.try_get("outcomes")?;
    Ok(Lead {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        campaign_id: row.try_get("campaign_id")?,
        position: row.try_get("position")?,
        number: row.try_get("number")?,
        tz: row.try_get("tz")?,
        region: row.try_get("region")?,
        postcode: row.try_get("postcode")?,
        vars: serde_json::from_str(&vars).map_err(|e| bad("lead vars", e))?,
        progress: LeadProgress {
            status: row.try_get("status")?,
            attempts: row.try_get("attempts")?,
            outcomes: serde_json::from_str(&outcomes).map_err(|e| bad("lead outcomes", e))?,
            disposition: row.try_get("disposition")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            note: row.try_get("note")?,
            updated_at: row.try_get("updated_at")?,
        },
    })
}

fn attempt_row(row: &sqlx::any::AnyRow) -> Result<Attempt> {
    Ok(Attempt {
        id: row.try_get("id")?,
        lead_id: row.try_get("lead_id")?,
        number: row.try_get("number")?,
        call_id: row.try_get("call_id")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        outcome: row.try_get("outcome")?,
        local_time: row.try_get("local_time")?,
        rules: row.try_get("rules")?,
        ring_ms: row.try_get("ring_ms")?,
        answer_to_agent_ms: row.try_get("answer_to_agent_ms")?,
        agent: row.try_get("agent")?,
        played: row.try_get("played")?,
        detail: row.try_get("detail")?,
    })
}
