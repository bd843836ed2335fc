//! Limits on placing calls through the API, per tenant: which destinations, how many outbound
//! calls at once, how many per second. A leaked deploy key (or a runaway dialer script) can
//! then cost only what the operator allowed — toll fraud is the classic way a voice platform
//! loses money overnight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::hub::HubError;

/// What each tenant may originate. `vox serve` reads them from its config's `[originate]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginateLimits {
    /// Outbound calls ringing or connected at once (0: none may be placed).
    pub max_calls: usize,
    /// Calls placed per second, in bursts of up to one second's worth.
    pub per_second: f64,
    /// Destinations that may be called, as patterns where `*` matches any run of characters,
    /// matched against the [`destination`] the call goes to (`sip:*@trunk.example.com:5060`,
    /// `sip:+1*@*:*`, a registered user's name); empty: any destination.
    pub allow: Vec<String>,
}

impl Default for OriginateLimits {
    /// 100 calls at once, 10 per second, any destination.
    fn default() -> OriginateLimits {
        OriginateLimits { max_calls: 100, per_second: 10.0, allow: Vec::new() }
    }
}

/// The limits, and each tenant's rate budget and calls being placed.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: OriginateLimits,
    tenants: Mutex<HashMap<String, Budget>>,
}

#[derive(Debug)]
struct Budget {
    /// Calls that may be placed now; refills at `per_second`.
    tokens: f64,
    at: Instant,
    /// Admitted and not yet registered as live calls.
    pending: usize,
}

/// An admitted origination: counts against the tenant's concurrent calls until the call is
/// registered (or the attempt fails).
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    tenant: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(budget) = self.admission.tenants().get_mut(&self.tenant) {
            budget.pending = budget.pending.saturating_sub(1);
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: OriginateLimits) -> Arc<Admission> {
        Arc::new(Admission { limits, tenants: Mutex::default() })
    }

    fn tenants(&self) -> MutexGuard<'_, HashMap<String, Budget>> {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a call from `tenant` to `to`, given how many of its outbound calls are live
    /// (`live` is asked under this admission's lock, so concurrent requests cannot both take
    /// the last slot).
    pub(crate) fn admit(
        self: &Arc<Self>,
        tenant: &str,
        to: &str,
        live: impl FnOnce() -> usize,
    ) -> Result<Permit, HubError> {
        let limits = &self.limits;
        if limits.max_calls == 0 {
            return Err(HubError::Forbidden(
                "this server places no calls through its API (originate.max_calls = 0)".into(),
            ));
        }
        let dest = destination(to).map_err(HubError::Invalid)?;
        if !limits.allow.is_empty() && !limits.allow.iter().any(|p| glob(p, &dest)) {
            return Err(HubError::Forbidden(format!(
                "{dest}: not a destination this server lets you call (its originate.allow)"
            )));
        }
        let mut tenants = self.tenants();
        let now = Instant::now();
        let capacity = limits.per_second.max(1.0);
        let budget = tenants.entry(tenant.to_owned()).or_insert(Budget {
            tokens: capacity,
            at: now,
            pending: 0,
        });
        let in_progress = live() + budget.pending;
        if in_progress >= limits.max_calls {
            return Err(HubError::Limited {
                message: format!(
                    "{in_progress} outbound calls are ringing or connected, the most this server \
                     allows at once (its originate.max_calls); place more as these end"
                ),
                retry_after: Duration::from_secs(1),
            });
        }
        let refill = now.duration_since(budget.at).as_secs_f64() * limits.per_second;
        budget.tokens = (budget.tokens + refill).min(capacity);
        budget.at = now;
        if budget.tokens < 1.0 {
            let wait = (1.0 - budget.tokens) / limits.per_second;
            return Err(HubError::Limited {
                message: format!(
                    "more than {} calls per second (this server's originate.per_second); \
                     retry in {:.0} ms",
                    limits.per_second,
                    wait * 1000.0
                ),
                retry_after: Duration::from_secs_f64(wait),
            });
        }
        budget.tokens -= 1.0;
        budget.pending += 1;
        Ok(Permit { admission: self.clone(), tenant: tenant.to_owned() })
    }
}

/// The canonical form of a call target, which `originate.allow` is matched against and which
/// is exactly where the call goes: a registered user's name as given, or a SIP URI as
/// `sip:user@host:port` — lowercase, the port always written (5060 by default), parameters
/// dropped. A URI with more than one `@` or with headers (`?`) is refused: what a pattern
/// saw must be what is dialled.
pub fn destination(to: &str) -> Result<String, String> {
    let to = to.trim();
    if !to.contains(':') && !to.contains('@') {
        return if to.is_empty() { Err("no destination".into()) } else { Ok(to.to_owned()) };
    }
    let lower = to.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("sip:") else {
        return Err(format!("{to}: not a SIP URI (sip:user@host[:port]) or a registered user"));
    };
    let userhost = rest.split(';').next().unwrap_or_default();
    if userhost.contains('?') || userhost.matches('@').count() > 1 {
        return Err(format!("{to}: not a plain SIP URI (one @, no headers)"));
    }
    let (user, hostport) = match userhost.split_once('@') {
        Some((user, hostport)) => (Some(user), hostport),
        None => (None, userhost),
    };
    let hostport = match hostport.rsplit_once(':') {
        // An IPv6 reference without a port ends in `]`.
        Some((_, port)) if !hostport.ends_with(']') && port.parse::<u16>().is_ok() => {
            hostport.to_owned()
        }
        _ if hostport.is_empty() => return Err(format!("{to}: no host")),
        _ => format!("{hostport}:5060"),
    };
    Ok(match user {
        Some(user) => format!("sip:{user}@{hostport}"),
        None => format!("sip:{hostport}"),
    })
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and everything else for itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the `*` take one more character and try again after it.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_runs_and_literals() {
        for (pattern, text) in [
            ("*", ""),
            ("*", "sip:bob@10.0.0.1"),
            ("+1*", "+15550100"),
            ("sip:*@trunk.example.com", "sip:+15550100@trunk.example.com"),
            ("sip:*@*:5060", "sip:bob@10.0.0.1:5060"),
            ("alice", "alice"),
            ("a*b*c", "aXbYbZc"),
        ] {
            assert!(glob(pattern, text), "{pattern} ~ {text}");
        }
        for (pattern, text) in [
            ("+1*", "+4420"),
            ("sip:*@trunk.example.com", "sip:x@trunk.example.com.evil.net"),
            ("alice", "alice2"),
            ("a*b*c", "aXbYbZ"),
            ("", "x"),
        ] {
            assert!(!glob(pattern, text), "{pattern} !~ {text}");
        }
    }

    #[test]
    fn destinations_are_canonical_so_a_pattern_sees_where_the_call_goes() {
        for (to, canonical) in [
            ("alice", "alice"),
            ("sip:bob@10.0.0.1", "sip:bob@10.0.0.1:5060"),
            ("SIP:Bob@Trunk.Example.com:5080;transport=tcp", "sip:bob@trunk.example.com:5080"),
            ("sip:[::1]", "sip:[::1]:5060"),
            ("sip:bob@[::1]:5062", "sip:bob@[::1]:5062"),
            // A parameter that looks like a host is dropped: the call goes to evil.net.
            ("sip:a@evil.net;x=@trunk.example.com", "sip:a@evil.net:5060"),
        ] {
            assert_eq!(destination(to).as_deref(), Ok(canonical), "{to}");
        }
        for bad in ["sip:a@b@c", "sip:a@b?x=y", "tel:+1", ""] {
            assert!(destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations_outside_allow_are_forbidden() {
        let admission = Admission::new(OriginateLimits {
            allow: vec!["sip:*@trunk.example.com:*".into(), "alice".into()],
            ..OriginateLimits::default()
        });
        assert!(admission.admit("t", "sip:+15550100@trunk.example.com", || 0).is_ok());
        assert!(admission.admit("t", "sip:+15550100@TRUNK.example.com:5070", || 0).is_ok());
        assert!(admission.admit("t", "alice", || 0).is_ok());
        for evil in [
            "sip:+900123@premium.example.net",
            "sip:+900123@trunk.example.com.premium.example.net",
            "sip:+900123@premium.example.net;x=@trunk.example.com",
            "alice2",
        ] {
            match admission.admit("t", evil, || 0) {
                Err(HubError::Forbidden(m)) => assert!(m.contains("originate.allow"), "{m}"),
                other => panic!("{evil}: expected Forbidden, got {other:?}"),
            }
        }
        let none = Admission::new(OriginateLimits { max_calls: 0, ..OriginateLimits::default() });
        assert!(matches!(none.admit("t", "alice", || 0), Err(HubError::Forbidden(_))));
    }

    #[test]
    fn concurrent_calls_count_live_and_pending_per_tenant() {
        let admission = Admission::new(OriginateLimits {
            max_calls: 2,
            per_second: 1000.0,
            ..OriginateLimits::default()
        });
        let first = admission.admit("t", "bob", || 0).expect("first");
        let _second = admission.admit("t", "bob", || 0).expect("second");
        assert!(matches!(admission.admit("t", "bob", || 0), Err(HubError::Limited { .. })));
        // Another tenant has its own allowance.
        assert!(admission.admit("u", "bob", || 0).is_ok());
        // The first call is now live: it still counts, as a live call instead.
        drop(first);
        assert!(matches!(admission.admit("t", "bob", || 1), Err(HubError::Limited { .. })));
        assert!(admission.admit("t", "bob", || 0).is_ok(), "it ended: a slot is free");
    }

    #[test]
    fn the_rate_refills_and_says_when_to_retry() {
        let admission =
            Admission::new(OriginateLimits { per_second: 2.0, ..OriginateLimits::default() });
        // A burst of one second's worth, then refused with the wait.
        assert!(admission.admit("t", "bob", || 0).is_ok());
        assert!(admission.admit("t", "bob", || 0).is_ok());
        match admission.admit("t", "bob", || 0) {
            Err(HubError::Limited { retry_after, message }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500));
                assert!(message.contains("per_second"), "{message}");
            }
            other => panic!("expected Limited, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(550));
        assert!(admission.admit("t", "bob", || 0).is_ok(), "refilled");
    }
}
