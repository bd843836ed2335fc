//! The commands that drive a running `vox serve` over its control API: `login`, `deploy`,
//! `flows`, `versions`, `alias`, `routes` (calls, CDRs, events and webhooks: [`crate::live`]). Tables for people by default, `--json` for tools.
//!
//! Where the server and key come from: `--server`/`--key`, else `VOX_SERVER`/`VOX_KEY`, else
//! what `vox login` saved in `~/.config/voxide/config.toml` (mode 0600).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use voxide_runtime::builder::{self, BuildOptions};

/// Where to reach the control API, and as whom.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The server's base URL, e.g. http://127.0.0.1:8080 (default: VOX_SERVER or `vox login`).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// The API key (default: VOX_KEY or `vox login`).
    #[arg(long, global = true, value_name = "KEY")]
    pub key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    server: String,
    key: String,
}

fn config_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("voxide").join("config.toml"))
}

/// An authenticated client for one server.
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) server: String,
    pub(crate) key: String,
    pub(crate) json: bool,
}

impl Remote {
    pub fn client(&self) -> anyhow::Result<Client> {
        let saved: Option<Saved> = config_path()
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| toml::from_str(&t).ok());
        let server = self
            .server
            .clone()
            .or_else(|| std::env::var("VOX_SERVER").ok())
            .or_else(|| saved.as_ref().map(|s| s.server.clone()))
            .context("no server: run `vox login --server URL --key KEY` (or pass --server)")?;
        let key = self
            .key
            .clone()
            .or_else(|| std::env::var("VOX_KEY").ok())
            .or_else(|| saved.as_ref().map(|s| s.key.clone()))
            .context("no API key: run `vox login --server URL --key KEY` (or pass --key)")?;
        Ok(Client {
            http: reqwest::Client::new(),
            server: server.trim_end_matches('/').to_owned(),
            key,
            json: self.json,
        })
    }
}

impl Client {
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        let status = response.status();
        let body = response.bytes().await.context("reading the answer")?;
        let value: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
        };
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {message}");
        }
        Ok(value)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.server)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    pub(crate) async fn json_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.send(self.http.request(method, self.url(path)).json(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Prints `value` as JSON (`--json`) or as a table of `columns` (JSON pointer, heading).
    pub(crate) fn print(&self, value: &Value, columns: &[(&str, &str)]) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            return;
        }
        let rows: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| columns.iter().map(|(ptr, _)| cell(row.pointer(ptr))).collect())
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, h))| cells.iter().map(|r| r[i].len()).chain([h.len()]).max().unwrap_or(0))
            .collect();
        let line = |items: Vec<&str>| {
            items
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        println!("{}", line(columns.iter().map(|(_, h)| *h).collect()));
        for row in &cells {
            println!("{}", line(row.iter().map(String::as_str).collect()));
        }
        if cells.is_empty() {
            println!("(none)");
        }
    }
}

pub(crate) fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            items.iter().map(|i| cell(Some(i))).collect::<Vec<_>>().join(", ")
        }
        Some(other) => other.to_string(),
    }
}

/// `vox login`: checks the key against the server, then saves both.
pub async fn login(server: &str, key: &str) -> anyhow::Result<()> {
    let remote = Remote { server: Some(server.into()), key: Some(key.into()), json: false };
    let who = remote.client()?.get("/whoami").await?;
    let path = config_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text =
        toml::to_string(&Saved { server: server.trim_end_matches('/').into(), key: key.into() })?;
    write_private(&path, &text)?;
    println!(
        "logged in to {server} as tenant {} ({} key); saved in {}",
        cell(who.get("tenant_id")),
        cell(who.get("role")),
        path.display()
    );
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `vox deploy`: builds the flow, uploads it with its manifest, and moves `alias` to it.
pub async fn deploy(
    client: &Client,
    path: &Path,
    name: Option<String>,
    alias: Option<String>,
) -> anyhow::Result<()> {
    let name = match name {
        Some(n) => n,
        None => std::fs::canonicalize(path)
            .with_context(|| format!("{} does not exist", path.display()))?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("cannot name the flow after its directory: pass --name")?,
    };
    let manifest_path = path.join(voxide_runtime::manifest::FILE);
    let manifest = std::fs::read_to_string(&manifest_path).unwrap_or_default();
    voxide_runtime::manifest::Manifest::parse(&manifest)
        .with_context(|| format!("{}", manifest_path.display()))?;
    eprintln!("building {} ...", path.display());
    let wasm = builder::build_flow(path, &BuildOptions::default())?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    eprintln!("uploading {} ({} KiB) as {name} ...", wasm.display(), bytes.len() / 1024);
    let form = reqwest::multipart::Form::new()
        .part("manifest", reqwest::multipart::Part::text(manifest))
        .part(
            "component",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("flow.wasm")
                .mime_str("application/wasm")?,
        );
    let uploaded = client
        .send(client.http.post(client.url(&format!("/flows/{name}/versions"))).multipart(form))
        .await?;
    let version = uploaded["version"].as_i64().context("the server answered without a version")?;
    let mut moved = Value::Null;
    if let Some(alias) = &alias {
        moved = move_alias(client, &name, alias, version).await?;
    }
    if client.json {
        println!("{}", serde_json::json!({ "version": uploaded, "alias": moved }));
        return Ok(());
    }
    let new =
        if uploaded["created"].as_bool() == Some(true) { "new" } else { "unchanged, existing" };
    println!("deployed {name} v{version} ({new}) {}", cell(uploaded.get("digest")));
    if let Some(alias) = alias {
        println!("{name}@{alias} -> v{version}");
    }
    Ok(())
}

pub async fn flows(client: &Client) -> anyhow::Result<()> {
    let flows = client.get("/flows").await?;
    client.print(&flows, &[("/name", "FLOW"), ("/versions", "VERSIONS"), ("/latest", "LATEST")]);
    if !client.json
        && let Some(items) = flows.as_array()
    {
        for f in items {
            for a in f["aliases"].as_array().into_iter().flatten() {
                println!(
                    "  {}@{} -> v{}",
                    cell(f.get("name")),
                    cell(a.get("name")),
                    cell(a.get("version"))
                );
            }
        }
    }
    Ok(())
}

pub async fn versions(client: &Client, name: &str) -> anyhow::Result<()> {
    let versions = client.get(&format!("/flows/{name}/versions")).await?;
    client.print(
        &versions,
        &[
            ("/version", "VERSION"),
            ("/digest", "DIGEST"),
            ("/size", "BYTES"),
            ("/created_at", "CREATED (ms)"),
        ],
    );
    Ok(())
}

async fn move_alias(
    client: &Client,
    name: &str,
    alias: &str,
    version: i64,
) -> anyhow::Result<Value> {
    let body = serde_json::json!({ "version": version });
    client
        .json_request(reqwest::Method::PUT, &format!("/flows/{name}/aliases/{alias}"), &body)
        .await
}

pub async fn alias(client: &Client, name: &str, alias: &str, version: i64) -> anyhow::Result<()> {
    let moved = move_alias(client, name, alias, version).await?;
    if client.json {
        println!("{moved}");
    } else {
        println!("{name}@{alias} -> v{version}");
    }
    Ok(())
}

/// A route target written `flow@alias` or `flow@3`, with an optional `=weight`.
pub fn parse_target(text: &str) -> anyhow::Result<Value> {
    let (target, weight) = match text.rsplit_once('=') {
        Some((t, w)) => (
            t,
            w.parse::<u32>().with_context(|| format!("{text}: weight {w:?} is not a number"))?,
        ),
        None => (text, 100),
    };
    let (flow, which) = target.split_once('@').with_context(|| {
        format!("{text}: write FLOW@ALIAS or FLOW@VERSION (e.g. ivr-menu@live)")
    })?;
    Ok(match which.trim_start_matches('v').parse::<i64>() {
        Ok(version) => serde_json::json!({ "flow": flow, "version": version, "weight": weight }),
        Err(_) => serde_json::json!({ "flow": flow, "alias": which, "weight": weight }),
    })
}

pub async fn routes_add(
    client: &Client,
    pattern: &str,
    targets: &[String],
    priority: i64,
    vars: &[String],
) -> anyhow::Result<()> {
    let targets: Vec<Value> =
        targets.iter().map(|t| parse_target(t)).collect::<anyhow::Result<_>>()?;
    let mut var_map = serde_json::Map::new();
    for v in vars {
        let (k, val) =
            v.split_once('=').with_context(|| format!("--var {v:?}: write KEY=VALUE"))?;
        var_map.insert(k.into(), Value::String(val.into()));
    }
    let body = serde_json::json!({ "pattern": pattern, "priority": priority, "targets": targets, "vars": var_map });
    let route = client.json_request(reqwest::Method::POST, "/routes", &body).await?;
    client.print(&route, ROUTE_COLUMNS);
    Ok(())
}

const ROUTE_COLUMNS: &[(&str, &str)] =
    &[("/id", "ID"), ("/pattern", "PATTERN"), ("/priority", "PRIORITY"), ("/targets", "TARGETS")];

pub async fn routes_ls(client: &Client) -> anyhow::Result<()> {
    let mut routes = client.get("/routes").await?;
    if !client.json
        && let Some(items) = routes.as_array_mut()
    {
        // Targets as people write them: flow@alias=weight.
        for r in items.iter_mut() {
            let shown: Vec<Value> = r["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let which = t
                        .get("alias")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("v{}", cell(t.get("version"))), str::to_owned);
                    Value::String(format!(
                        "{}@{which}={}",
                        cell(t.get("flow")),
                        cell(t.get("weight"))
                    ))
                })
                .collect();
            r["targets"] = Value::Array(shown);
        }
    }
    client.print(&routes, ROUTE_COLUMNS);
    Ok(())
}

pub async fn routes_rm(client: &Client, id: &str) -> anyhow::Result<()> {
    client.delete(&format!("/routes/{id}")).await?;
    if !client.json {
        println!("removed route {id}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_written_flow_at_alias_or_version_with_a_weight() {
        assert_eq!(
            parse_target("ivr-menu@live").unwrap(),
            serde_json::json!({"flow": "ivr-menu", "alias": "live", "weight": 100})
        );
        assert_eq!(
            parse_target("ivr-menu@3=10").unwrap(),
            serde_json::json!({"flow": "ivr-menu", "version": 3, "weight": 10})
        );
        assert_eq!(
            parse_target("ivr-menu@v4=90").unwrap(),
            serde_json::json!({"flow": "ivr-menu", "version": 4, "weight": 90})
        );
        assert!(parse_target("ivr-menu").unwrap_err().to_string().contains("FLOW@ALIAS"));
        assert!(parse_target("a@live=x").is_err());
    }
}
