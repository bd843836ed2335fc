//! The commands about what happens on calls: `vox calls`, `vox call`, `vox cdrs`,
//! `vox events`, `vox webhooks` — over the control API, as tables or `--json`.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::remote::{Client, cell, parse_target};

const CALL_COLUMNS: &[(&str, &str)] = &[
    ("/id", "CALL"),
    ("/direction", "DIRECTION"),
    ("/from", "FROM"),
    ("/to", "TO"),
    ("/state", "STATE"),
    ("/label", "FLOW"),
    ("/started_at", "STARTED"),
];

const CDR_COLUMNS: &[(&str, &str)] = &[
    ("/id", "CALL"),
    ("/started_at", "STARTED"),
    ("/direction", "DIRECTION"),
    ("/from", "FROM"),
    ("/to", "TO"),
    ("/flow", "FLOW"),
    ("/version", "V"),
    ("/duration_ms", "MS"),
    ("/outcome", "OUTCOME"),
];

/// Unix-ms fields shown as UTC times in tables.
fn humanize(mut value: Value, fields: &[&str]) -> Value {
    let fix = |row: &mut Value| {
        for f in fields {
            if let Some(ms) = row.get(*f).and_then(Value::as_i64) {
                row[*f] = Value::String(utc(ms));
            }
        }
    };
    match &mut value {
        Value::Array(rows) => rows.iter_mut().for_each(fix),
        row => fix(row),
    }
    value
}

/// `2026-11-26 07:05:19` (UTC) for a Unix time in ms.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn print_table(client: &Client, value: Value, columns: &[(&str, &str)], times: &[&str]) {
    let shown = if client.json { value } else { humanize(value, times) };
    client.print(&shown, columns);
}

pub async fn calls_ls(client: &Client) -> anyhow::Result<()> {
    let calls = client.get("/calls").await?;
    if !client.json && calls.as_array().is_some_and(Vec::is_empty) {
        println!("no calls in progress");
        return Ok(());
    }
    print_table(client, calls, CALL_COLUMNS, &["started_at"]);
    Ok(())
}

pub async fn calls_show(client: &Client, id: &str) -> anyhow::Result<()> {
    let call = client.get(&format!("/calls/{id}")).await?;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&call)?);
        return Ok(());
    }
    let call = humanize(call, &["started_at", "answered_at"]);
    for field in
        ["id", "direction", "from", "to", "state", "label", "digest", "started_at", "answered_at"]
    {
        println!("{field:<12} {}", cell(call.get(field)));
    }
    for leg in call["legs"].as_array().into_iter().flatten() {
        println!(
            "leg          {} {} ({})",
            cell(leg.get("role")),
            cell(leg.get("party")),
            cell(leg.get("state"))
        );
    }
    Ok(())
}

/// `POST /calls/{id}/ACTION` with `body`; prints `done` unless `--json`.
pub async fn call_action(
    client: &Client,
    id: &str,
    action: &str,
    body: Value,
    done: &str,
) -> anyhow::Result<()> {
    let answer =
        client.json_request(reqwest::Method::POST, &format!("/calls/{id}/{action}"), &body).await?;
    if client.json {
        println!("{answer}");
    } else {
        println!("{done}");
    }
    Ok(())
}

/// A flow target written `flow`, `flow@alias` or `flow@3`, as the calls API takes it.
pub fn flow_target(text: &str) -> anyhow::Result<Value> {
    let mut target =
        if text.contains('@') { parse_target(text)? } else { serde_json::json!({ "flow": text }) };
    if let Some(t) = target.as_object_mut() {
        t.remove("weight");
    }
    Ok(target)
}

fn vars(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for v in pairs {
        let (k, val) =
            v.split_once('=').with_context(|| format!("--var {v:?}: write KEY=VALUE"))?;
        map.insert(k.into(), Value::String(val.into()));
    }
    Ok(Value::Object(map))
}

/// `vox call TO --flow NAME`: places the call and prints its id.
pub async fn originate(
    client: &Client,
    to: &str,
    flow: &str,
    from: Option<&str>,
    var_pairs: &[String],
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let mut body = flow_target(flow)?;
    body["to"] = Value::String(to.into());
    body["timeout_secs"] = Value::from(timeout_secs);
    body["vars"] = vars(var_pairs)?;
    if let Some(from) = from {
        body["from"] = Value::String(from.into());
    }
    let call = client.json_request(reqwest::Method::POST, "/calls", &body).await?;
    if client.json {
        println!("{call}");
    } else {
        println!("calling {to}: {} ({})", cell(call.get("id")), cell(call.get("label")));
    }
    Ok(())
}

pub async fn redirect(
    client: &Client,
    id: &str,
    flow: &str,
    var_pairs: &[String],
) -> anyhow::Result<()> {
    let mut body = flow_target(flow)?;
    body["vars"] = vars(var_pairs)?;
    call_action(client, id, "redirect", body, &format!("{id} now runs {flow}")).await
}

/// A time filter: Unix ms, or an age like `90s`, `15m`, `2h`, `7d` (that long ago).
pub fn since(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 =
        number.parse().with_context(|| format!("{text:?}: Unix ms, or like 15m, 2h, 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("{text:?}: Unix ms, or like 15m, 2h, 7d"),
    };
    Ok(voxide_runtime::hub::now_ms() - secs * 1000)
}

/// Filters of `vox cdrs`, as query parameters.
#[derive(Debug, Default)]
pub struct CdrQuery {
    pub since: Option<String>,
    pub until: Option<String>,
    pub number: Option<String>,
    pub flow: Option<String>,
    pub outcome: Option<String>,
    pub limit: u32,
}

pub async fn cdrs(client: &Client, q: &CdrQuery) -> anyhow::Result<()> {
    let mut params = vec![("limit".to_owned(), q.limit.to_string())];
    if let Some(s) = &q.since {
        params.push(("since".into(), since(s)?.to_string()));
    }
    if let Some(s) = &q.until {
        params.push(("until".into(), since(s)?.to_string()));
    }
    for (name, value) in [("number", &q.number), ("flow", &q.flow), ("outcome", &q.outcome)] {
        if let Some(v) = value {
            params.push((name.into(), v.clone()));
        }
    }
    let request = client.http.get(client.url("/cdrs")).query(&params);
    let cdrs = client.send(request).await?;
    print_table(client, cdrs, CDR_COLUMNS, &["started_at"]);
    Ok(())
}

/// One event as a line: time, type, call, data.
fn event_line(e: &Value) -> String {
    format!(
        "{:>6}  {}  {:<20} {:<34} {}",
        cell(e.get("seq")),
        e["created_at"].as_i64().map(utc).unwrap_or_default(),
        cell(e.get("type")),
        cell(e.get("call_id")),
        e.get("data").map(Value::to_string).unwrap_or_default()
    )
}

fn print_event(client: &Client, e: &Value) {
    if client.json {
        println!("{e}");
    } else {
        println!("{}", event_line(e));
    }
}

/// `vox events`: the stored events after `after` (`--json`: an array); with `follow`, the
/// live stream (`--json`: one event per line), reconnecting with `Last-Event-ID` when the
/// connection drops.
pub async fn events(
    client: &Client,
    after: Option<i64>,
    follow: bool,
    limit: u32,
) -> anyhow::Result<()> {
    if !follow {
        let request = client
            .http
            .get(client.url("/events/log"))
            .query(&[("after", after.unwrap_or(0).to_string()), ("limit", limit.to_string())]);
        let events = client.send(request).await?;
        if client.json {
            println!("{}", serde_json::to_string_pretty(&events)?);
        } else {
            events.as_array().into_iter().flatten().for_each(|e| println!("{}", event_line(e)));
        }
        return Ok(());
    }
    let mut last = after;
    let mut delay = Duration::from_millis(500);
    loop {
        match stream_events(client, &mut last).await {
            Ok(()) => delay = Duration::from_millis(500),
            Err(e) if e.to_string().starts_with("4") => return Err(e),
            Err(e) => {
                eprintln!("event stream: {e:#}; reconnecting in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Reads one SSE connection until it ends, printing events and remembering the last id.
async fn stream_events(client: &Client, last: &mut Option<i64>) -> anyhow::Result<()> {
    let mut request = client
        .http
        .get(client.url("/events"))
        .bearer_auth(&client.key)
        .header("accept", "text/event-stream");
    if let Some(seq) = last {
        request = request.header("last-event-id", seq.to_string());
    }
    let mut response =
        request.send().await.with_context(|| format!("cannot reach {}", client.server))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!("{status}: {}", body["error"]["message"].as_str().unwrap_or("refused"));
    }
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        // Events end with a blank line; keep-alive comments start with ':'.
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if data.is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            if let Some(seq) = event["seq"].as_i64() {
                *last = Some(seq);
            }
            print_event(client, &event);
        }
    }
    Ok(())
}

pub async fn webhooks_add(client: &Client, url: &str, secret: Option<&str>) -> anyhow::Result<()> {
    let body = serde_json::json!({ "url": url, "secret": secret });
    let hook = client.json_request(reqwest::Method::POST, "/webhooks", &body).await?;
    if client.json {
        println!("{hook}");
    } else {
        println!("webhook {} -> {}", cell(hook.get("id")), cell(hook.get("url")));
        println!("signing secret (shown once): {}", cell(hook.get("secret")));
    }
    Ok(())
}

pub async fn webhooks_ls(client: &Client) -> anyhow::Result<()> {
    let hooks = client.get("/webhooks").await?;
    print_table(
        client,
        hooks,
        &[("/id", "ID"), ("/url", "URL"), ("/secret_prefix", "SECRET"), ("/created_at", "CREATED")],
        &["created_at"],
    );
    Ok(())
}

pub async fn webhooks_rm(client: &Client, id: &str) -> anyhow::Result<()> {
    client.delete(&format!("/webhooks/{id}")).await?;
    if !client.json {
        println!("removed webhook {id}");
    }
    Ok(())
}

pub async fn deliveries(client: &Client, id: &str, status: Option<&str>) -> anyhow::Result<()> {
    let mut request = client.http.get(client.url(&format!("/webhooks/{id}/deliveries")));
    if let Some(status) = status {
        request = request.query(&[("status", status)]);
    }
    let found = client.send(request).await?;
    print_table(
        client,
        found,
        &[
            ("/event_seq", "SEQ"),
            ("/event_type", "EVENT"),
            ("/status", "STATUS"),
            ("/attempts", "ATTEMPTS"),
            ("/last_status", "HTTP"),
            ("/last_error", "ERROR"),
            ("/delivered_at", "DELIVERED"),
        ],
        &["delivered_at"],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_849_519_000), "2026-11-28 07:05:19");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn flow_targets_and_ages_parse() {
        assert_eq!(flow_target("hello").unwrap(), serde_json::json!({"flow": "hello"}));
        assert_eq!(
            flow_target("ivr@live").unwrap(),
            serde_json::json!({"flow": "ivr", "alias": "live"})
        );
        assert_eq!(flow_target("ivr@3").unwrap(), serde_json::json!({"flow": "ivr", "version": 3}));
        assert_eq!(since("1234").unwrap(), 1234);
        let hour_ago = since("1h").unwrap();
        assert!((voxide_runtime::hub::now_ms() - hour_ago - 3_600_000).abs() < 5_000);
        assert!(since("1y").is_err() && since("soon").is_err());
    }
}
