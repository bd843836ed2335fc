//! A flow's manifest: what it is and what it may do, declared by its author in `flow.toml`
//! beside the flow's `Cargo.toml` and enforced by the host on every call.
//!
//! ```toml
//! description = "Company main line: menu, sales, voicemail"
//!
//! [capabilities]
//! # URLs `play` may fetch: scheme://host[:port][/path]. Without a port, any port of that
//! # host; a path allows that path and everything below it.
//! http = ["https://assets.example.com/prompts/"]
//! # Who `dial` and `transfer` may reach: registered users, `queue:NAME`, SIP URIs, with `*`
//! # for any run of characters, matched against the canonical target (sip:user@host:port).
//! dial = ["sales", "queue:*", "sip:*@pbx.example.com:*"]
//! ```
//!
//! No manifest means no capabilities beyond the call itself — except `dial`: a manifest
//! without it may dial anyone (what flows could do before manifests knew `dial`); `dial = []`
//! dials no one. Unknown keys are errors, so a misspelt capability is caught when the flow is
//! loaded rather than silently ignored.
//!
//! The host checks these once, where a flow's call action enters it (`flows::host`), for
//! every implementation of the call: a real SIP call and `vox test`'s simulator refuse the
//! same actions with the same `not-allowed` error.

use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

/// The manifest file's name in a flow's directory.
pub const FILE: &str = "flow.toml";

/// What a flow declares about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// One line for listings.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// What the host lets the flow do beyond controlling its own call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// URL prefixes `play` may fetch audio from (http and https only).
    #[serde(default)]
    pub http: Vec<String>,
    /// Patterns of the targets `dial` and `transfer` may reach (`*` matches any run of
    /// characters); None: any target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial: Option<Vec<String>>,
}

/// A manifest that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {why}")]
    Read { path: String, why: String },
    #[error("manifest: {0}")]
    Invalid(String),
}

impl Manifest {
    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Invalid(e.message().to_owned()))?;
        for entry in &manifest.capabilities.http {
            allowed_prefix(entry).map_err(|why| {
                ManifestError::Invalid(format!("capabilities.http {entry:?}: {why}"))
            })?;
        }
        for entry in manifest.capabilities.dial.iter().flatten() {
            if entry.trim().is_empty() || entry.len() > 256 {
                return Err(ManifestError::Invalid(format!(
                    "capabilities.dial {entry:?}: a pattern is 1-256 characters"
                )));
            }
        }
        Ok(manifest)
    }

    /// The manifest of the flow in `dir` (`dir/flow.toml`); none there is an empty manifest.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Manifest::parse(&text).map_err(|e| ManifestError::Read {
                path: path.display().to_string(),
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => {
                Err(ManifestError::Read { path: path.display().to_string(), why: e.to_string() })
            }
        }
    }

    /// What `play(media)` refers to: `Ok(None)` for an asset name, `Ok(Some(url))` for a URL
    /// this flow may fetch, otherwise why not (the message the flow gets).
    pub fn check_play(&self, media: &str) -> Result<Option<Url>, String> {
        if !media.contains("://") {
            return Ok(None);
        }
        let url = Url::parse(media).map_err(|e| format!("play {media:?}: not a URL: {e}"))?;
        if self.allows_url(&url) {
            Ok(Some(url))
        } else {
            Err(format!(
                "play {media:?}: not allowed by the flow's manifest (declare a prefix of it in \
                 {FILE}: [capabilities] http = [...])"
            ))
        }
    }

    /// Whether `dial` or `transfer` may reach `target` (a registered user, `queue:NAME` or a
    /// SIP URI, matched in its canonical form); otherwise why not (the message the flow gets).
    pub fn check_dial(&self, action: &str, target: &str) -> Result<(), String> {
        let Some(allowed) = &self.capabilities.dial else { return Ok(()) };
        let canonical = match target.trim().strip_prefix("queue:") {
            Some(queue) => format!("queue:{queue}"),
            None => crate::admission::destination(target)?,
        };
        if allowed.iter().any(|pattern| crate::admission::glob(pattern, &canonical)) {
            Ok(())
        } else {
            Err(format!(
                "{action} {canonical}: not allowed by the flow's manifest (declare it in {FILE}: \
                 [capabilities] dial = [...])"
            ))
        }
    }

    /// Whether `play` may fetch `url`: it must fall under one of `capabilities.http`.
    pub fn allows_url(&self, url: &Url) -> bool {
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        self.capabilities.http.iter().filter_map(|e| allowed_prefix(e).ok()).any(
            |(prefix, any_port)| {
                prefix.scheme() == url.scheme()
                    && prefix.host_str() == url.host_str()
                    && (any_port || prefix.port_or_known_default() == url.port_or_known_default())
                    && under(prefix.path(), url.path())
            },
        )
    }
}

/// An allow-list entry as a URL, and whether it leaves the port open.
fn allowed_prefix(entry: &str) -> Result<(Url, bool), String> {
    let url = Url::parse(entry).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in a manifest".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a prefix has no query or fragment".into());
    }
    // `Url` drops a port that is the scheme's default, so look at what was written.
    let authority = entry.split_once("://").map_or("", |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    let any_port =
        !authority.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            || authority.ends_with(']');
    Ok((url, any_port))
}

/// Whether `path` is `prefix` or below it, on segment boundaries (`/a` covers `/a/b`, not
/// `/ab`).
fn under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], url: &str) -> bool {
        let manifest = Manifest {
            capabilities: Capabilities {
                http: entries.iter().map(|e| e.to_string()).collect(),
                dial: None,
            },
            ..Manifest::default()
        };
        manifest.allows_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn urls_must_fall_under_a_declared_prefix() {
        let list = ["https://assets.example.com/prompts/", "http://127.0.0.1"];
        assert!(allows(&list, "https://assets.example.com/prompts/hello.wav"));
        assert!(allows(&list, "https://ASSETS.example.com/prompts/a/b.wav"));
        assert!(allows(&list, "http://127.0.0.1:8123/anything.wav"), "no port: any port");
        // Wrong scheme, a look-alike host, outside the path, a sibling path, credentials.
        assert!(!allows(&list, "http://assets.example.com/prompts/hello.wav"));
        assert!(!allows(&list, "https://assets.example.com.evil.net/prompts/x.wav"));
        assert!(!allows(&list, "https://assets.example.com/private/x.wav"));
        assert!(!allows(&["https://a.example/p"], "https://a.example/public/x.wav"));
        assert!(!allows(&["https://a.example/p"], "https://a.example/pp.wav"));
        assert!(allows(&["https://a.example/p"], "https://a.example/p/x.wav"));
        assert!(!allows(&list, "https://user:pw@assets.example.com/prompts/x.wav"));
        assert!(!allows(&[], "https://assets.example.com/prompts/x.wav"), "nothing declared");
    }

    #[test]
    fn dial_targets_must_match_a_declared_pattern_in_canonical_form() {
        let manifest = Manifest::parse(
            "[capabilities]\ndial = [\"sales\", \"queue:*\", \"sip:*@pbx.example.com:*\"]",
        )
        .unwrap();
        let ok = |t: &str| manifest.check_dial("dial", t).is_ok();
        assert!(ok("sales") && ok("queue:support"));
        assert!(ok("sip:bob@pbx.example.com") && ok("SIP:Bob@PBX.example.com:5080;transport=tcp"));
        assert!(!ok("support") && !ok("sip:+1900555@premium.example.net"));
        // What is matched is what is dialled: no second @, no headers slipping past.
        assert!(!ok("sip:+1900@premium.example.net;x=@pbx.example.com"));
        assert!(!ok("sip:a@pbx.example.com.evil.net"));
        let why = manifest.check_dial("transfer", "sip:x@evil.example").unwrap_err();
        assert!(why.contains("transfer sip:x@evil.example:5060") && why.contains("flow.toml"));
        // No `dial` declared: anyone; `dial = []`: no one.
        assert!(Manifest::default().check_dial("dial", "sip:x@anywhere.example").is_ok());
        let none = Manifest::parse("[capabilities]\ndial = []").unwrap();
        assert!(none.check_dial("dial", "sales").is_err());
        assert!(Manifest::parse("[capabilities]\ndial = [\"\"]").is_err());
    }

    #[test]
    fn an_explicit_port_is_the_only_port() {
        let list = ["https://a.example:8443/", "https://b.example:443/"];
        assert!(allows(&list, "https://a.example:8443/x.wav"));
        assert!(!allows(&list, "https://a.example/x.wav"));
        assert!(allows(&list, "https://b.example/x.wav"), "443 is https's default");
        assert!(!allows(&list, "https://b.example:444/x.wav"));
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let err = |text: &str| Manifest::parse(text).unwrap_err().to_string();
        assert!(
            err("[capabilities]\nhttp = [\"ftp://x.example/\"]").contains("only http and https")
        );
        assert!(err("[capabilities]\nhttp = [\"not a url\"]").contains("capabilities.http"));
        assert!(err("[capabilities]\nhttp = [\"https://x.example/?a=1\"]").contains("query"));
        assert!(err("[capabilities]\nsmtp = true").contains("unknown field"));
        assert!(err("descriptin = \"typo\"").contains("unknown field"));
        let ok = Manifest::parse("description = \"menu\"\n[capabilities]\nhttp = []").unwrap();
        assert_eq!(ok.description, "menu");
    }

    #[test]
    fn a_flow_without_a_manifest_may_do_nothing_extra() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::default());
        std::fs::write(dir.path().join(FILE), "[capabilities]\nhttp = [\"https://x.example/\"]")
            .unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap().capabilities.http.len(), 1);
        std::fs::write(dir.path().join(FILE), "[capabilities\n").unwrap();
        assert!(Manifest::load(dir.path()).unwrap_err().to_string().contains("flow.toml"));
    }
}
