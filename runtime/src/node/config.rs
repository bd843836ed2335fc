//! A node's configuration: the `voxide.toml` file `vox serve` reads (README, "Calling it over
//! SIP"), with the defaults of a fresh machine. Unknown keys are errors.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::admission::OriginateLimits;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub media: MediaSection,
    #[serde(default)]
    pub originate: OriginateSection,
    pub data_dir: Option<PathBuf>,
    pub drain_timeout_secs: Option<u64>,
    /// HTTP listen address of the control API (default 0.0.0.0:8080; "off" for none).
    pub http: Option<String>,
    /// The store's URL (default sqlite://<data_dir>/voxide.db).
    pub database_url: Option<String>,
    /// Most calls running a flow at once (sandbox slots reserved up front). Default 10,000.
    pub max_calls: Option<u32>,
    /// A compiled flow that no route or call holds is freed this long after it was last
    /// loaded or looked up.
    pub keep_unused_flows_secs: Option<u64>,
    /// The store tenant (by name) that owns the config file's routes and the calls to its
    /// registered users — their CDRs, events and recordings. Default "default" (the tenant
    /// the first start creates); created, with an admin key, if missing.
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub advertise: Option<IpAddr>,
    #[serde(default = "default_true")]
    pub udp: bool,
    #[serde(default = "default_true")]
    pub tcp: bool,
    /// Digest realm of the registrar (default "voxide").
    pub realm: Option<String>,
    /// Users that may REGISTER (digest auth, MD5 or SHA-256). None: REGISTER gets 405.
    #[serde(default)]
    pub users: Vec<SipUser>,
    /// Digest algorithms offered, in order (default ["SHA-256", "MD5"]; clients that only
    /// read the first challenge, like sipp, need "MD5" first).
    pub digest_algorithms: Option<Vec<String>>,
}

/// A SIP account: `[[sip.users]] user = "alice" password = "…"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipUser {
    pub user: String,
    pub password: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: default_listen(),
            advertise: None,
            udp: true,
            tcp: true,
            realm: None,
            users: Vec::new(),
            digest_algorithms: None,
        }
    }
}

/// `[originate]`: what each tenant may place through `POST /api/v1/calls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginateSection {
    /// Outbound calls ringing or connected at once, per tenant. Default 100.
    pub max_calls: Option<usize>,
    /// Calls placed per second, per tenant. Default 10.
    pub per_second: Option<f64>,
    /// Destinations that may be called (`*` matches any run of characters). Default: any.
    pub allow: Option<Vec<String>>,
}

impl OriginateSection {
    pub fn limits(&self) -> anyhow::Result<OriginateLimits> {
        let default = OriginateLimits::default();
        let per_second = self.per_second.unwrap_or(default.per_second);
        if !(per_second.is_finite() && per_second > 0.0) {
            anyhow::bail!("[originate] per_second = {per_second}: must be more than 0");
        }
        if self.allow.as_ref().is_some_and(Vec::is_empty) {
            anyhow::bail!(
                "[originate] allow = []: leave it out to allow any destination, or set \
                 max_calls = 0 to place no calls"
            );
        }
        Ok(OriginateLimits {
            max_calls: self.max_calls.unwrap_or(default.max_calls),
            per_second,
            allow: self.allow.clone().unwrap_or(default.allow),
        })
    }
}

/// `[media]`: RTP ports, the inactivity timeout, prompt assets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// RTP port range, "MIN-MAX" (even ports RTP, odd RTCP). Default 10000-20000.
    #[serde(default = "default_rtp_ports")]
    pub rtp_ports: String,
    /// A call whose peer sends no RTP for this long is hung up. Default 60.
    #[serde(default = "default_rtp_timeout")]
    pub rtp_timeout_secs: u64,
    /// Where `play("name.wav")` finds WAV files (default: <data_dir>/assets).
    pub assets: Option<PathBuf>,
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            rtp_ports: default_rtp_ports(),
            rtp_timeout_secs: default_rtp_timeout(),
            assets: None,
        }
    }
}

fn default_rtp_ports() -> String {
    "10000-20000".into()
}
fn default_rtp_timeout() -> u64 {
    60
}

pub fn parse_ports(spec: &str) -> anyhow::Result<(u16, u16)> {
    let parsed = spec
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((min, max)) if min >= 1024 && max > min + 1 => Ok((min, max)),
        _ => bail!("media.rtp_ports {spec:?}: expected \"MIN-MAX\" with 1024 <= MIN < MAX"),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5060))
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Called user: exact, a prefix ending in `*`, or `*`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// A flow crate directory (built on start) or a `.wasm` component.
    pub flow: PathBuf,
    /// The flow's manifest; default `flow.toml` in the flow's directory (none: no
    /// capabilities).
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

impl NodeConfig {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> anyhow::Result<NodeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))
    }
}
