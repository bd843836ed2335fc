//! `vox campaigns`, `vox leads` and `vox dnc`: the dialer's control API from the command line.
//! Tables for people by default, `--json` for tools; `vox campaigns show NAME --follow` prints
//! a progress line from the live figures until the campaign finishes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::remote::{Client, cell};

#[derive(Subcommand, Debug)]
pub enum CampaignsAction {
    /// Create a campaign (draft) from a settings file (TOML or JSON: agents, trunks, …).
    Create {
        name: String,
        #[arg(long, value_name = "FILE")]
        settings: PathBuf,
        /// progressive, predictive, adapt-average, or NAME@VERSION of one uploaded with
        /// `vox deploy` (VERSION: a number or an alias, pinned to its number now).
        #[arg(long, default_value = "progressive")]
        strategy: String,
        /// Most abandoned over live-answered calls (at most 0.03).
        #[arg(long, default_value_t = 0.03)]
        abandon_target: f64,
    },
    /// List the campaigns.
    Ls,
    /// A campaign's state and counts; `--follow` prints its live figures until it finishes.
    Show {
        name: String,
        #[arg(long)]
        follow: bool,
    },
    /// Start (or resume) dialling.
    Start { name: String },
    /// Stop new dials at once (calls in progress end normally).
    Pause { name: String },
    /// Finish the campaign for good.
    Stop { name: String },
    /// The audit: one row per attempt, newest first.
    Attempts {
        name: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeadsAction {
    /// Import a CSV lead list (a `number` column; `tz`, `state`, `postcode`; other columns
    /// become call variables). Bad rows are listed with their line; good rows are kept.
    Import {
        file: PathBuf,
        #[arg(long)]
        campaign: String,
    },
    /// List a campaign's leads and where they stand.
    Ls {
        #[arg(long)]
        campaign: String,
        /// new, dialing, retry or done.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum DncAction {
    /// Add numbers to the tenant's do-not-call list (or a campaign's).
    Add {
        #[arg(required = true)]
        numbers: Vec<String>,
        #[arg(long)]
        campaign: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Add the numbers in a file: one per line, or a CSV whose first column is the number.
    Import {
        file: PathBuf,
        #[arg(long)]
        campaign: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the tenant's do-not-call numbers (or a campaign's).
    Ls {
        #[arg(long)]
        campaign: Option<String>,
    },
    /// Remove a number.
    Rm {
        number: String,
        #[arg(long)]
        campaign: Option<String>,
    },
}

const CAMPAIGN_COLUMNS: &[(&str, &str)] = &[
    ("/name", "NAME"),
    ("/state", "STATE"),
    ("/strategy", "STRATEGY"),
    ("/abandon_target", "ABANDON TARGET"),
];

fn settings_file(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).with_context(|| format!("{}", path.display()));
    }
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::to_value(value)?)
}

pub async fn campaigns(client: &Client, action: CampaignsAction) -> anyhow::Result<()> {
    use reqwest::Method;
    let post =
        |path: String| async move { client.json_request(Method::POST, &path, &Value::Null).await };
    match action {
        CampaignsAction::Create { name, settings, strategy, abandon_target } => {
            let body = json!({
                "name": name, "strategy": strategy, "abandon_target": abandon_target,
                "settings": settings_file(&settings)?,
            });
            let c = client.json_request(Method::POST, "/campaigns", &body).await?;
            if client.json {
                println!("{c}");
            } else {
                println!(
                    "campaign {} created ({}); start it with `vox campaigns start {}`",
                    name,
                    cell(c.get("state")),
                    name
                );
            }
        }
        CampaignsAction::Ls => client.print(&client.get("/campaigns").await?, CAMPAIGN_COLUMNS),
        CampaignsAction::Show { name, follow } => {
            let c = client.get(&format!("/campaigns/{name}")).await?;
            if client.json && !follow {
                println!("{}", serde_json::to_string_pretty(&c)?);
                return Ok(());
            }
            if !client.json {
                client.print(&c, CAMPAIGN_COLUMNS);
                for (what, key) in
                    [("leads", "leads"), ("dispositions", "dispositions"), ("attempts", "attempts")]
                {
                    let counts = c["counts"][key].as_object().cloned().unwrap_or_default();
                    let shown: Vec<String> =
                        counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    println!(
                        "{what}: {}",
                        if shown.is_empty() { "-".into() } else { shown.join(", ") }
                    );
                }
            }
            if follow {
                follow_stats(client, &name).await?;
            }
        }
        CampaignsAction::Start { name } => {
            state_line(client, post(format!("/campaigns/{name}/start")).await?)
        }
        CampaignsAction::Pause { name } => {
            state_line(client, post(format!("/campaigns/{name}/pause")).await?)
        }
        CampaignsAction::Stop { name } => {
            state_line(client, post(format!("/campaigns/{name}/stop")).await?)
        }
        CampaignsAction::Attempts { name, limit } => {
            let rows = client.get(&format!("/campaigns/{name}/attempts?limit={limit}")).await?;
            client.print(
                &rows,
                &[
                    ("/number", "NUMBER"),
                    ("/outcome", "OUTCOME"),
                    ("/local_time", "LOCAL TIME"),
                    ("/ring_ms", "RING MS"),
                    ("/answer_to_agent_ms", "TO AGENT MS"),
                    ("/agent", "AGENT"),
                    ("/call_id", "CALL"),
                ],
            );
        }
    }
    Ok(())
}

fn state_line(client: &Client, c: Value) {
    if client.json {
        println!("{c}");
    } else {
        println!("campaign {} is {}", cell(c.get("name")), cell(c.get("state")));
    }
}

/// One progress line per second from the stats stream, until the campaign is finished.
async fn follow_stats(client: &Client, name: &str) -> anyhow::Result<()> {
    let mut response = client
        .http
        .get(client.url(&format!("/campaigns/{name}/stats/stream")))
        .bearer_auth(&client.key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("cannot reach {}", client.server))?;
    if !response.status().is_success() {
        bail!("{}: the stats stream was refused", response.status());
    }
    let mut buffer = String::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else { continue };
            let s: Value = serde_json::from_str(data.trim_start()).unwrap_or(Value::Null);
            if client.json {
                println!("{s}");
            } else {
                let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
                let line = format!(
                    "{:<8} dialled {}  answered {}  abandoned {:.1} %  agents {} (talking {})  \
                     utilisation {:.1} %  leads open {}",
                    cell(s.get("state")),
                    f("dialled"),
                    f("answered"),
                    f("abandon_rate"),
                    f("agents_logged_in"),
                    f("agents_talking"),
                    f("utilisation"),
                    f("leads_open"),
                );
                print!("\r{line:<110}");
                out.flush()?;
            }
            if s["state"] == "finished" {
                if !client.json {
                    println!();
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

pub async fn leads(client: &Client, action: LeadsAction) -> anyhow::Result<()> {
    match action {
        LeadsAction::Import { file, campaign } => {
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let request = client
                .http
                .post(client.url(&format!("/campaigns/{campaign}/leads")))
                .header("content-type", "text/csv")
                .body(body);
            let report = client.send(request).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!(
                "{} leads added, {} rejected",
                cell(report.get("added")),
                cell(report.get("rejected_total"))
            );
            for r in report["rejected"].as_array().into_iter().flatten() {
                println!("  line {}: {}", cell(r.get("line")), cell(r.get("reason")));
            }
        }
        LeadsAction::Ls { campaign, status, limit } => {
            let mut path = format!("/campaigns/{campaign}/leads?limit={limit}");
            if let Some(status) = status {
                path += &format!("&status={status}");
            }
            client.print(
                &client.get(&path).await?,
                &[
                    ("/number", "NUMBER"),
                    ("/status", "STATUS"),
                    ("/attempts", "ATTEMPTS"),
                    ("/disposition", "DISPOSITION"),
                    ("/note", "NOTE"),
                ],
            );
        }
    }
    Ok(())
}

/// Numbers in a file: the first field of each line; a header line that is not a number is
/// skipped.
fn numbers_in(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(',').next().unwrap_or_default().trim().trim_matches('"').to_owned())
        .filter(|n| !n.is_empty())
        .enumerate()
        .filter(|(i, n)| *i != 0 || n.chars().any(|c| c.is_ascii_digit()))
        .map(|(_, n)| n)
        .collect()
}

pub async fn dnc(client: &Client, action: DncAction) -> anyhow::Result<()> {
    let add = |numbers: Vec<String>, campaign: Option<String>, reason: String| async move {
        let body = json!({ "numbers": numbers, "campaign": campaign, "reason": reason });
        let report = client.json_request(reqwest::Method::POST, "/dnc", &body).await?;
        if client.json {
            println!("{report}");
        } else {
            println!("{} numbers added", cell(report.get("added")));
            for r in report["rejected"].as_array().into_iter().flatten() {
                println!("  number {}: {}", cell(r.get("line")), cell(r.get("reason")));
            }
        }
        anyhow::Ok(())
    };
    match action {
        DncAction::Add { numbers, campaign, reason } => add(numbers, campaign, reason).await?,
        DncAction::Import { file, campaign, reason } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            add(numbers_in(&text), campaign, reason).await?;
        }
        DncAction::Ls { campaign } => {
            let path = match campaign {
                Some(c) => format!("/dnc?campaign={c}"),
                None => "/dnc".into(),
            };
            client.print(
                &client.get(&path).await?,
                &[("/number", "NUMBER"), ("/campaign", "CAMPAIGN"), ("/reason", "REASON")],
            );
        }
        DncAction::Rm { number, campaign } => {
            let mut path = format!("/dnc/{}", number.replace('+', "%2B"));
            if let Some(c) = campaign {
                path += &format!("?campaign={c}");
            }
            client.delete(&path).await?;
            if !client.json {
                println!("removed {number}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnc_files_are_one_number_per_line_or_a_csv_with_a_header() {
        assert_eq!(
            numbers_in("number,name\n+12125550100,Ann\n\n212-555-0101\n"),
            ["+12125550100", "212-555-0101"]
        );
        assert_eq!(numbers_in("+12125550100\n"), ["+12125550100"]);
    }
}
