//! A sans-IO SIP registrar (RFC 3261 §10.3): digest-authenticated REGISTER handling
//! (RFC 8760 / RFC 7616: SHA-256 and MD5), the location service of bindings per
//! address-of-record, and a lockout of sources that keep failing authentication.
//!
//! Pure like the rest of the crate: the caller passes `now` (binding expiry, failure windows)
//! and `unix_now` (nonce issue and age, seconds since the Unix epoch), and sends the returned
//! [`Reply`] itself.
//!
//! Choices the RFCs leave open:
//! - The AoR is the user part of the To URI, compared exactly (user parts are case-sensitive,
//!   RFC 3261 §19.1.4); the host is not checked: one registrar serves one domain, its realm.
//! - Usernames cannot be enumerated: an unknown user is challenged like a known one, and any
//!   credentials for it get the same `403 Forbidden` a wrong password gets, after computing a
//!   digest just the same, so neither the answer nor its timing differ.
//! - The digest username must equal the AoR user: no third-party registration.
//! - A stale nonce gets `stale=true` only when the digest is right (RFC 7616 §3.3); a wrong
//!   digest over a stale nonce is a wrong password, so the stale path is no guessing oracle.
//! - More contacts than `max_contacts` is `403` (retrying later would not help, unlike `503`).
//! - Contact URIs are matched as exact strings, not by RFC 3261 §19.1.4 URI equivalence.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::auth::{Algorithm, Credentials, NonceCheck, Nonces};
use crate::message::{HeaderName, Message, Method, NameAddr};
use crate::ua::Peer;

/// Registrar policy: expiry bounds, contact limits, the failed-authentication lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Digest realm of challenges; credentials for another realm are re-challenged.
    pub realm: String,
    /// Shorter non-zero expiries get `423 Interval Too Brief` (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Longer expiries are shortened to this.
    pub max_expires: u32,
    /// Expiry when neither the contact nor an Expires header gives one.
    pub default_expires: u32,
    /// Bindings per AoR.
    pub max_contacts: usize,
    /// Failed authentications a source IP may have within `failure_window`; one more locks
    /// it out.
    pub max_failures: u32,
    pub failure_window: Duration,
    /// How long a locked-out source gets `403` for every REGISTER.
    pub lockout: Duration,
    /// Age after which a nonce is stale (re-challenged with `stale=true`).
    pub nonce_max_age_secs: u64,
    /// Source IPs whose failures are tracked at most; past it new sources go untracked
    /// (keeps memory bounded under a spoofed flood; [`Registrar::expire`] purges old ones).
    pub max_tracked_sources: usize,
    /// Digest algorithms offered, one challenge each in this order (RFC 8760 §2.4: a client
    /// uses the first it supports; some, like sipp, only read the first, so put MD5 first
    /// for them). Credentials with an algorithm not listed are re-challenged.
    pub algorithms: Vec<Algorithm>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            realm: "voxide".into(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            nonce_max_age_secs: 300,
            max_tracked_sources: 100_000,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }
}

/// One registered contact of an AoR.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact URI, without `<>`.
    pub contact: String,
    /// Where the REGISTER came from: requests for the AoR go there (the contact may be a
    /// private address behind NAT).
    pub source: Peer,
    pub expires_at: Instant,
    /// When it was last registered or refreshed (ties in [`Registrar::lookup`] order).
    pub refreshed_at: Instant,
    /// Preference, 0.0-1.0 (Contact `q` parameter, default 1.0).
    pub q: f32,
    pub call_id: String,
    pub cseq: u32,
}

impl Binding {
    /// Time left until the binding expires at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }
}

/// The response the UA must send: status, reason phrase, extra headers in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(HeaderName, String)>,
}

impl Reply {
    fn new(code: u16, reason: impl Into<String>) -> Reply {
        Reply { code, reason: reason.into(), headers: Vec::new() }
    }

    fn with(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Values of the extra headers named `name`, in order.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Failed authentications of one source IP.
#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start: Instant,
    count: u32,
    locked_at: Option<Instant>,
}

/// The registrar: users and passwords, the bindings, the failure bookkeeping.
pub struct Registrar {
    config: RegistrarConfig,
    users: HashMap<String, String>,
    bindings: HashMap<String, Vec<Binding>>,
    nonces: Nonces,
    failures: HashMap<IpAddr, Failures>,
}

impl std::fmt::Debug for Registrar {
    // Passwords stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("config", &self.config)
            .field("users", &self.users.len())
            .field("bindings", &self.binding_count())
            .field("tracked_sources", &self.failures.len())
            .finish_non_exhaustive()
    }
}

impl Registrar {
    /// A registrar for `users` (`(user, password)` pairs) signing nonces with `secret`.
    pub fn new(
        config: RegistrarConfig,
        users: impl IntoIterator<Item = (String, String)>,
        secret: &[u8],
    ) -> Self {
        let nonces = Nonces::new(secret, config.nonce_max_age_secs);
        Registrar {
            config,
            users: users.into_iter().collect(),
            bindings: HashMap::new(),
            nonces,
            failures: HashMap::new(),
        }
    }

    /// Whether `user` may register (has a password).
    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Handles a REGISTER that arrived from `source` (RFC 3261 §10.3): authenticates it,
    /// then adds, refreshes or removes bindings, or just lists them if it has no Contact.
    pub fn handle(
        &mut self,
        now: Instant,
        unix_now: u64,
        request: &Message,
        source: Peer,
    ) -> Reply {
        if request.method() != Some(&Method::Register) {
            return Reply::new(405, "Method Not Allowed").with(HeaderName::Allow, "REGISTER");
        }
        let ip = source.addr.ip();
        if self.locked_out(now, ip) {
            return Reply::new(403, "Forbidden (too many failed attempts)");
        }
        let user = match aor_user(&request.to.uri) {
            Ok(user) => user,
            Err(reason) => return Reply::new(400, reason),
        };
        if let Err(reply) = self.authenticate(now, unix_now, request, user, ip) {
            return reply;
        }
        // Not locked out (checked above), so a success forgives earlier failures.
        self.failures.remove(&ip);
        self.update(now, request, user, source)
    }

    /// Live bindings of `user`, best first (highest q, then most recently refreshed).
    pub fn lookup(&self, now: Instant, user: &str) -> Vec<Binding> {
        let mut live: Vec<Binding> = self
            .bindings
            .get(user)
            .map(|list| list.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default();
        live.sort_by(|a, b| b.q.total_cmp(&a.q).then(b.refreshed_at.cmp(&a.refreshed_at)));
        live
    }

    /// Drops expired bindings and forgotten failures (call from time to time); returns how
    /// many bindings were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        self.bindings.retain(|_, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            dropped += before - list.len();
            !list.is_empty()
        });
        let (window, lockout) = (self.config.failure_window, self.config.lockout);
        self.failures.retain(|_, f| match f.locked_at {
            Some(at) => now.saturating_duration_since(at) < lockout,
            None => now.saturating_duration_since(f.window_start) < window,
        });
        dropped
    }

    /// Bindings held, expired ones not yet dropped by [`Registrar::expire`] included.
    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Whether `ip` is locked out at `now`; forgets a lockout that has run out.
    fn locked_out(&mut self, now: Instant, ip: IpAddr) -> bool {
        let Some(at) = self.failures.get(&ip).and_then(|f| f.locked_at) else { return false };
        if now.saturating_duration_since(at) < self.config.lockout {
            return true;
        }
        self.failures.remove(&ip);
        false
    }

    /// Records a failed authentication from `ip`, locking it out past `max_failures`.
    fn fail(&mut self, now: Instant, ip: IpAddr) {
        if !self.failures.contains_key(&ip)
            && self.failures.len() >= self.config.max_tracked_sources
        {
            return;
        }
        let f = self.failures.entry(ip).or_insert(Failures {
            window_start: now,
            count: 0,
            locked_at: None,
        });
        if now.saturating_duration_since(f.window_start) >= self.config.failure_window {
            *f = Failures { window_start: now, count: 0, locked_at: None };
        }
        f.count = f.count.saturating_add(1);
        if f.count > self.config.max_failures && f.locked_at.is_none() {
            f.locked_at = Some(now);
            tracing::warn!(
                source = %ip,
                failures = f.count,
                lockout_secs = self.config.lockout.as_secs(),
                "SIP registrar: too many failed REGISTER authentications; locking the source out"
            );
        }
    }

    /// `401` offering SHA-256 first, then MD5 (RFC 8760 §2.4: most preferred first).
    fn challenge(&self, unix_now: u64, stale: bool) -> Reply {
        let realm = &self.config.realm;
        let mut reply = Reply::new(401, "Unauthorized");
        for algorithm in &self.config.algorithms {
            let challenge = self.nonces.challenge(realm, *algorithm, unix_now, stale);
            reply = reply.with(HeaderName::WwwAuthenticate, challenge);
        }
        reply
    }

    /// `Ok` if the request carries a right digest for `user`, else the reply to send.
    fn authenticate(
        &mut self,
        now: Instant,
        unix_now: u64,
        request: &Message,
        user: &str,
        ip: IpAddr,
    ) -> Result<(), Reply> {
        // Of several Authorization headers, the one for our realm counts (RFC 3261 §22.4).
        let (mut ours, mut error) = (None, None);
        for value in request.header_values(&HeaderName::Authorization) {
            match Credentials::parse(value) {
                Ok(c) if c.realm == self.config.realm => {
                    ours = Some(c);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let Some(creds) = ours else {
            // No credentials, or only for other realms: challenge for ours.
            return Err(match error {
                Some(e) => Reply::new(400, format!("Invalid Authorization: {e}")),
                None => self.challenge(unix_now, false),
            });
        };
        if !self.config.algorithms.contains(&creds.algorithm) {
            return Err(self.challenge(unix_now, false));
        }
        if creds.username != user {
            self.fail(now, ip);
            return Err(Reply::new(403, "Forbidden (username does not match To)"));
        }
        let nonce = self.nonces.check(&creds.nonce, unix_now);
        if nonce == NonceCheck::Invalid {
            self.fail(now, ip);
            return Err(self.challenge(unix_now, false));
        }
        // An unknown user's digest is checked against a dummy password and then refused
        // whatever it says, so it takes as long and answers the same as a wrong password.
        let password = self.users.get(user);
        let right =
            creds.verify("REGISTER", password.map_or("", String::as_str)) && password.is_some();
        if !right {
            self.fail(now, ip);
            return Err(Reply::new(403, "Forbidden"));
        }
        if nonce == NonceCheck::Stale {
            return Err(self.challenge(unix_now, true));
        }
        Ok(())
    }

    /// Applies the Contact headers of an authenticated REGISTER (RFC 3261 §10.3 steps 6-8):
    /// all or nothing, then `200` listing the bindings.
    fn update(&mut self, now: Instant, request: &Message, user: &str, source: Peer) -> Reply {
        let expires_values: Vec<&str> = request.header_values(&HeaderName::Expires).collect();
        let expires_header = match expires_values[..] {
            [] => None,
            [v] => match delta_seconds(v) {
                Some(n) => Some(n),
                None => return Reply::new(400, "Invalid Expires header"),
            },
            _ => return Reply::new(400, "More than one Expires header"),
        };
        let current = self.lookup(now, user);
        let out_of_order = |b: &Binding| b.call_id == request.call_id && request.cseq.seq <= b.cseq;
        let wildcard = request.header_values(&HeaderName::Contact).any(|v| v.trim() == "*");
        if wildcard {
            let contact_headers = request.header_values(&HeaderName::Contact).count();
            if contact_headers != 1 || !request.contact.is_empty() || expires_header != Some(0) {
                return Reply::new(400, "Invalid wildcard Contact");
            }
            if current.iter().any(out_of_order) {
                return Reply::new(500, "Out of order CSeq");
            }
            self.bindings.remove(user);
            return self.ok(now, user);
        }
        let mut next = current.clone();
        for contact in &request.contact {
            let expires = match contact_param(contact, "expires") {
                Some(v) => match v.and_then(delta_seconds) {
                    Some(n) => n,
                    None => return Reply::new(400, "Invalid expires parameter in Contact"),
                },
                None => expires_header.unwrap_or(self.config.default_expires),
            };
            let q = match contact_param(contact, "q") {
                Some(v) => match v.and_then(qvalue) {
                    Some(q) => q,
                    None => return Reply::new(400, "Invalid q parameter in Contact"),
                },
                None => 1.0,
            };
            if expires != 0 && expires < self.config.min_expires {
                return Reply::new(423, "Interval Too Brief").with(
                    HeaderName::Other("Min-Expires".into()),
                    self.config.min_expires.to_string(),
                );
            }
            if current.iter().any(|b| b.contact == contact.uri && out_of_order(b)) {
                return Reply::new(500, "Out of order CSeq");
            }
            next.retain(|b| b.contact != contact.uri);
            if expires > 0 {
                let secs = Duration::from_secs(u64::from(expires.min(self.config.max_expires)));
                next.push(Binding {
                    contact: contact.uri.clone(),
                    source,
                    expires_at: now.checked_add(secs).unwrap_or(now),
                    refreshed_at: now,
                    q,
                    call_id: request.call_id.clone(),
                    cseq: request.cseq.seq,
                });
            }
        }
        if next.len() > self.config.max_contacts {
            return Reply::new(403, "Forbidden (too many contacts)");
        }
        if !request.contact.is_empty() {
            // A phone coming or going is worth an operator's log; its refreshes are not.
            match (current.is_empty(), next.is_empty()) {
                (true, false) => tracing::info!(user, source = %source.addr, "SIP user registered"),
                (false, true) => {
                    tracing::info!(user, source = %source.addr, "SIP user unregistered")
                }
                _ => {
                    tracing::debug!(user, source = %source.addr, bindings = next.len(), "SIP REGISTER")
                }
            }
        }
        if next.is_empty() {
            self.bindings.remove(user);
        } else {
            self.bindings.insert(user.to_owned(), next);
        }
        self.ok(now, user)
    }

    /// `200 OK` with a `Contact: <uri>;expires=N` for every live binding of `user`.
    fn ok(&self, now: Instant, user: &str) -> Reply {
        let mut reply = Reply::new(200, "OK");
        for b in self.lookup(now, user) {
            let q = if b.q < 1.0 { format!(";q={}", b.q) } else { String::new() };
            let value = format!("<{}>;expires={}{q}", b.contact, b.remaining(now).as_secs());
            reply = reply.with(HeaderName::Contact, value);
        }
        reply
    }
}

/// The user part of a `sip:`/`sips:` URI: `sip:alice:pw@host;p` → `alice`.
fn aor_user(uri: &str) -> Result<&str, &'static str> {
    let scheme_end = uri.find(':').ok_or("To URI has no scheme")?;
    let scheme = &uri[..scheme_end];
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return Err("To URI is not a SIP URI");
    }
    let rest = &uri[scheme_end + 1..];
    let userinfo = rest.split_once('@').map(|(u, _)| u).ok_or("To URI has no user part")?;
    let user = userinfo.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return Err("To URI has no user part");
    }
    Ok(user)
}

/// A Contact header parameter: `None` if absent, `Some(None)` if it has no value.
fn contact_param<'a>(contact: &'a NameAddr, name: &str) -> Option<Option<&'a str>> {
    contact.params.iter().find(|p| p.name.eq_ignore_ascii_case(name)).map(|p| p.value.as_deref())
}

/// `delta-seconds`, saturating at 2³²-1 (RFC 3261 §20.19: larger values mean that).
fn delta_seconds(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = v.trim_start_matches('0');
    if digits.len() > 10 {
        return Some(u32::MAX);
    }
    Some(digits.parse::<u64>().map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
}

/// `qvalue` = `0[.ddd]` / `1[.000]` (RFC 3261 §20.10).
fn qvalue(v: &str) -> Option<f32> {
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let shape = matches!(int, "0" | "1")
        && frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || frac.bytes().all(|b| b == b'0'));
    if !shape {
        return None;
    }
    v.parse::<f32>().ok()
}

#[cfg(test)]
mod tests;
