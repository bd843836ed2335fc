//! The registrar as a phone sees it: REGISTERs in, replies out, on fake time (`Instant` plus
//! offsets for bindings and lockouts, Unix seconds for nonces).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::{self, Algorithm};
use crate::message::parse;
use crate::ua::Transport;

const REALM: &str = "voxide.test";
const UNIX: u64 = 1_700_000_000;
const SECRET: &[u8] = b"registrar test secret";

fn config() -> RegistrarConfig {
    RegistrarConfig { realm: REALM.into(), ..RegistrarConfig::default() }
}

fn registrar_with(config: RegistrarConfig) -> Registrar {
    let users = [("alice", "wonderland"), ("bob", "builder")];
    Registrar::new(config, users.map(|(u, p)| (u.to_owned(), p.to_owned())), SECRET)
}

fn registrar() -> Registrar {
    registrar_with(config())
}

fn peer(addr: &str) -> Peer {
    Peer { addr: addr.parse::<SocketAddr>().unwrap(), transport: Transport::Udp }
}

fn phone() -> Peer {
    peer("198.51.100.7:5070")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A SIP phone: builds REGISTERs and answers challenges.
struct Client {
    /// The AoR user (To/From).
    to: &'static str,
    /// Digest username and password.
    username: &'static str,
    password: &'static str,
    realm: &'static str,
    algorithm: Algorithm,
    qop: bool,
    call_id: String,
    cseq: u32,
    source: Peer,
}

impl Client {
    fn new(user: &'static str, password: &'static str) -> Client {
        Client {
            to: user,
            username: user,
            password,
            realm: REALM,
            algorithm: Algorithm::Sha256,
            qop: true,
            call_id: format!("reg-{user}@198.51.100.7"),
            cseq: 0,
            source: phone(),
        }
    }

    fn authorization(&self, nonce: &str) -> String {
        let uri = "sip:voxide.test";
        let (nc, cnonce) = ("00000001", "0a4f113b");
        let response = auth::response(
            self.algorithm,
            self.username,
            self.realm,
            self.password,
            "REGISTER",
            uri,
            nonce,
            self.qop.then_some((nc, cnonce)),
        );
        let algorithm = match self.algorithm {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        };
        let qop = if self.qop {
            format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\"")
        } else {
            String::new()
        };
        format!(
            "Authorization: Digest username=\"{}\", realm=\"{}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm={algorithm}{qop}\r\n",
            self.username, self.realm
        )
    }

    /// The next REGISTER (CSeq incremented) with `extra` header lines and, given a nonce,
    /// an Authorization header.
    fn request(&mut self, extra: &str, nonce: Option<&str>) -> Message {
        self.cseq += 1;
        let auth = nonce.map(|n| self.authorization(n)).unwrap_or_default();
        let (to, call_id, cseq) = (self.to, &self.call_id, self.cseq);
        let text = format!(
            "REGISTER sip:voxide.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-{cseq};rport\r\n\
             From: <sip:{to}@voxide.test>;tag=reg\r\n\
             To: <sip:{to}@voxide.test>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Max-Forwards: 70\r\n\
             {auth}{extra}Content-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Sends one REGISTER, with credentials for `nonce` if given.
    fn send(
        &mut self,
        reg: &mut Registrar,
        now: Instant,
        unix: u64,
        extra: &str,
        nonce: Option<&str>,
    ) -> Reply {
        let request = self.request(extra, nonce);
        reg.handle(now, unix, &request, self.source)
    }

    /// Like a real phone: sends, and on a 401 retries once with credentials.
    fn register(&mut self, reg: &mut Registrar, now: Instant, unix: u64, extra: &str) -> Reply {
        let first = self.send(reg, now, unix, extra, None);
        if first.code != 401 {
            return first;
        }
        let nonce = nonce_for(&first, self.algorithm);
        self.send(reg, now, unix, extra, Some(&nonce))
    }
}

/// The nonce of the challenge for `algorithm` in a 401.
fn nonce_for(reply: &Reply, algorithm: Algorithm) -> String {
    let name = match algorithm {
        Algorithm::Md5 => "algorithm=MD5,",
        Algorithm::Sha256 => "algorithm=SHA-256,",
    };
    let challenge = reply
        .values(&HeaderName::WwwAuthenticate)
        .find(|v| v.contains(name))
        .unwrap_or_else(|| panic!("no {name} challenge in {reply:?}"));
    let start = challenge.find("nonce=\"").unwrap() + "nonce=\"".len();
    let len = challenge[start..].find('"').unwrap();
    challenge[start..start + len].to_owned()
}

fn contacts(reply: &Reply) -> Vec<&str> {
    reply.values(&HeaderName::Contact).collect()
}

fn uris(bindings: &[Binding]) -> Vec<&str> {
    bindings.iter().map(|b| b.contact.as_str()).collect()
}

const CONTACT: &str = "Contact: <sip:alice@192.168.1.20:5060>\r\n";

#[test]
fn challenge_offers_sha256_first_then_md5() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let reply = Client::new("alice", "wonderland").send(&mut reg, t0, UNIX, CONTACT, None);
    assert_eq!((reply.code, reply.reason.as_str()), (401, "Unauthorized"));
    let challenges: Vec<&str> = reply.values(&HeaderName::WwwAuthenticate).collect();
    assert_eq!(challenges.len(), 2, "{reply:?}");
    assert_eq!(reply.headers.len(), 2);
    assert!(challenges[0].contains("algorithm=SHA-256,"), "{}", challenges[0]);
    assert!(challenges[1].contains("algorithm=MD5,"), "{}", challenges[1]);
    for c in &challenges {
        assert!(c.starts_with("Digest realm=\"voxide.test\", nonce=\""), "{c}");
        assert!(c.contains("qop=\"auth\""), "{c}");
        assert!(!c.contains("stale"), "{c}");
    }
    for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
        assert_eq!(reg.nonces.check(&nonce_for(&reply, algorithm), UNIX), NonceCheck::Fresh);
    }
    assert_eq!(reg.binding_count(), 0, "a challenge binds nothing");
}

#[test]
fn sha256_registration_with_qop_binds_the_contact_at_the_source() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let reply = alice.register(&mut reg, t0, UNIX, CONTACT);
    assert_eq!((reply.code, reply.reason.as_str()), (200, "OK"));
    assert_eq!(contacts(&reply), ["<sip:alice@192.168.1.20:5060>;expires=3600"]);
    let bindings = reg.lookup(t0, "alice");
    assert_eq!(
        bindings,
        [Binding {
            contact: "sip:alice@192.168.1.20:5060".into(),
            source: phone(),
            expires_at: t0 + secs(3600),
            refreshed_at: t0,
            q: 1.0,
            call_id: "reg-alice@198.51.100.7".into(),
            cseq: 2,
        }]
    );
    assert_eq!(reg.binding_count(), 1);
    assert!(reg.lookup(t0, "bob").is_empty());
}

#[test]
fn md5_registration_with_and_without_qop() {
    for qop in [true, false] {
        let mut reg = registrar();
        let t0 = Instant::now();
        let mut alice = Client::new("alice", "wonderland");
        alice.algorithm = Algorithm::Md5;
        alice.qop = qop;
        let reply = alice.register(&mut reg, t0, UNIX, CONTACT);
        assert_eq!(reply.code, 200, "qop={qop}: {reply:?}");
        assert_eq!(reg.lookup(t0, "alice").len(), 1);
    }
    // SHA-256 without qop too.
    let mut reg = registrar();
    let mut alice = Client::new("alice", "wonderland");
    alice.qop = false;
    assert_eq!(alice.register(&mut reg, Instant::now(), UNIX, CONTACT).code, 200);
}

#[test]
fn wrong_password_is_forbidden_and_binds_nothing() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let reply = Client::new("alice", "guess").register(&mut reg, t0, UNIX, CONTACT);
    assert_eq!((reply.code, reply.reason.as_str()), (403, "Forbidden"));
    assert!(reply.headers.is_empty());
    assert_eq!(reg.binding_count(), 0);
    assert_eq!(reg.failures[&phone().addr.ip()].count, 1);
}

#[test]
fn a_username_other_than_the_to_user_is_forbidden() {
    let mut reg = registrar();
    let t0 = Instant::now();
    // Bob's valid credentials cannot register Alice.
    let mut mallory = Client::new("alice", "builder");
    mallory.username = "bob";
    let reply = mallory.register(&mut reg, t0, UNIX, CONTACT);
    assert_eq!(
        (reply.code, reply.reason.as_str()),
        (403, "Forbidden (username does not match To)")
    );
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn stale_nonce_with_right_digest_is_rechallenged_with_stale_true_and_not_counted() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let nonce = nonce_for(&alice.send(&mut reg, t0, UNIX, CONTACT, None), Algorithm::Sha256);
    for i in 0..10 {
        let reply = alice.send(&mut reg, t0 + secs(i), UNIX + 301, CONTACT, Some(&nonce));
        assert_eq!(reply.code, 401, "{reply:?}");
        let challenges: Vec<&str> = reply.values(&HeaderName::WwwAuthenticate).collect();
        assert_eq!(challenges.len(), 2);
        assert!(challenges.iter().all(|c| c.ends_with(", stale=true")), "{challenges:?}");
    }
    assert!(reg.failures.is_empty(), "stale nonces are not failures");
    // The fresh nonce of the stale challenge works.
    let reply = alice.send(&mut reg, t0, UNIX + 302, CONTACT, None);
    let fresh = nonce_for(&reply, Algorithm::Sha256);
    assert_eq!(alice.send(&mut reg, t0, UNIX + 302, CONTACT, Some(&fresh)).code, 200);

    // A wrong digest over a stale nonce is a wrong password, not a hint to retry.
    let mut guesser = Client::new("alice", "guess");
    let reply = guesser.send(&mut reg, t0, UNIX + 301, CONTACT, Some(&nonce));
    assert_eq!((reply.code, reply.reason.as_str()), (403, "Forbidden"));
    assert_eq!(reg.failures[&phone().addr.ip()].count, 1);
}

#[test]
fn forged_nonce_gets_a_fresh_challenge_and_counts_as_a_failure() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let forged = Nonces::new(b"someone else's secret", 300).issue(UNIX);
    for nonce in [forged.as_str(), "not-a-nonce", "65f0.00"] {
        let reply =
            Client::new("alice", "wonderland").send(&mut reg, t0, UNIX, CONTACT, Some(nonce));
        assert_eq!(reply.code, 401, "{nonce}: {reply:?}");
        assert!(reply.values(&HeaderName::WwwAuthenticate).all(|c| !c.contains("stale")));
        assert_ne!(nonce_for(&reply, Algorithm::Sha256), nonce);
    }
    assert_eq!(reg.failures[&phone().addr.ip()].count, 3);
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn credentials_for_another_realm_are_rechallenged() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    alice.realm = "elsewhere.test";
    let reply = alice.register(&mut reg, t0, UNIX, CONTACT);
    assert_eq!(reply.code, 401);
    assert!(reg.failures.is_empty());
}

#[test]
fn malformed_authorization_is_a_400_saying_why() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let cases = [
        ("Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n", "not Digest"),
        ("Authorization: Digest username=\"alice\"\r\n", "lack realm"),
        (
            "Authorization: Digest username=\"alice\", realm=\"voxide.test\", nonce=\"n\", \
             uri=\"sip:voxide.test\", response=\"00\", algorithm=SHA-512\r\n",
            "SHA-512",
        ),
    ];
    for (header, why) in cases {
        let extra = format!("{header}{CONTACT}");
        let reply = Client::new("alice", "wonderland").send(&mut reg, t0, UNIX, &extra, None);
        assert_eq!(reply.code, 400, "{header}");
        assert!(reply.reason.starts_with("Invalid Authorization: "), "{}", reply.reason);
        assert!(reply.reason.contains(why), "{}", reply.reason);
    }
}

#[test]
fn a_source_failing_too_often_is_locked_out_then_let_back_in() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut guesser = Client::new("alice", "guess");
    for i in 0..6 {
        let reply = guesser.register(&mut reg, t0 + secs(i), UNIX, CONTACT);
        assert_eq!((reply.code, reply.reason.as_str()), (403, "Forbidden"), "attempt {i}");
    }
    // Six failures within a minute: locked, even with the right password, even unchallenged.
    let mut alice = Client::new("alice", "wonderland");
    let locked = alice.register(&mut reg, t0 + secs(10), UNIX, CONTACT);
    assert_eq!(
        (locked.code, locked.reason.as_str()),
        (403, "Forbidden (too many failed attempts)")
    );
    assert_eq!(reg.binding_count(), 0);

    // Another address is not affected.
    let mut elsewhere = Client::new("alice", "wonderland");
    elsewhere.source = peer("203.0.113.9:5060");
    assert_eq!(elsewhere.register(&mut reg, t0 + secs(10), UNIX, CONTACT).code, 200);

    // Still locked just before the lockout ends (measured from the locking failure at 5 s).
    let reply = alice.register(&mut reg, t0 + secs(5 + 299), UNIX + 299, CONTACT);
    assert_eq!(reply.code, 403);
    let reply = alice.register(&mut reg, t0 + secs(5 + 300), UNIX + 300, CONTACT);
    assert_eq!(reply.code, 200, "{reply:?}");
    assert!(reg.failures.is_empty());
}

#[test]
fn failures_are_counted_per_window_and_forgiven_by_a_success() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut guesser = Client::new("alice", "guess");
    let mut alice = Client::new("alice", "wonderland");
    // Five failures, a success, five more: never more than five in a row.
    for round in 0..2u64 {
        for i in 0..5 {
            let now = t0 + secs(round * 10 + i);
            assert_eq!(guesser.register(&mut reg, now, UNIX, CONTACT).code, 403);
        }
        assert_eq!(alice.register(&mut reg, t0 + secs(round * 10 + 6), UNIX, CONTACT).code, 200);
    }
    // Five failures, then the window passes: the count starts again.
    for i in 0..5 {
        assert_eq!(guesser.register(&mut reg, t0 + secs(30 + i), UNIX, CONTACT).code, 403);
    }
    for i in 0..5 {
        assert_eq!(guesser.register(&mut reg, t0 + secs(100 + i), UNIX, CONTACT).code, 403);
    }
    assert_eq!(alice.register(&mut reg, t0 + secs(105), UNIX, CONTACT).code, 200);
}

#[test]
fn failure_tracking_is_bounded_and_purged_by_expire() {
    let mut reg = registrar_with(RegistrarConfig { max_tracked_sources: 2, ..config() });
    let t0 = Instant::now();
    for (i, addr) in ["192.0.2.1:5060", "192.0.2.2:5060", "192.0.2.3:5060"].into_iter().enumerate()
    {
        let mut guesser = Client::new("alice", "guess");
        guesser.source = peer(addr);
        assert_eq!(guesser.register(&mut reg, t0 + secs(i as u64), UNIX, CONTACT).code, 403);
    }
    assert_eq!(reg.failures.len(), 2, "the third source is not tracked");
    assert_eq!(reg.expire(t0 + secs(60)), 0);
    assert_eq!(reg.failures.len(), 1, "the first source's window has passed");
    reg.expire(t0 + secs(61));
    assert!(reg.failures.is_empty());

    // A lockout survives `expire` until it ends.
    let mut guesser = Client::new("alice", "guess");
    for _ in 0..6 {
        guesser.register(&mut reg, t0, UNIX, CONTACT);
    }
    reg.expire(t0 + secs(299));
    assert_eq!(reg.failures.len(), 1);
    reg.expire(t0 + secs(300));
    assert!(reg.failures.is_empty());
}

#[test]
fn several_contacts_are_looked_up_best_q_first_then_most_recent() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let reply = alice.register(
        &mut reg,
        t0,
        UNIX,
        "Contact: <sip:desk@192.168.1.20>;q=0.5, <sip:mobile@10.0.0.9;transport=tcp>;q=0.9\r\n\
         Contact: \"Soft\" <sip:soft@192.168.1.30>;q=0.5\r\n",
    );
    assert_eq!(reply.code, 200);
    assert_eq!(
        contacts(&reply),
        [
            "<sip:mobile@10.0.0.9;transport=tcp>;expires=3600;q=0.9",
            "<sip:desk@192.168.1.20>;expires=3600;q=0.5",
            "<sip:soft@192.168.1.30>;expires=3600;q=0.5",
        ]
    );
    // Refreshing the soft phone later makes it the preferred one of the q=0.5 pair.
    let reply =
        alice.register(&mut reg, t0 + secs(10), UNIX, "Contact: <sip:soft@192.168.1.30>;q=0.5\r\n");
    assert_eq!(reply.code, 200);
    assert_eq!(
        uris(&reg.lookup(t0 + secs(10), "alice")),
        ["sip:mobile@10.0.0.9;transport=tcp", "sip:soft@192.168.1.30", "sip:desk@192.168.1.20"]
    );
    // A contact without q is q=1.0: best of all.
    alice.register(&mut reg, t0 + secs(20), UNIX, "Contact: <sip:tablet@192.168.1.40>\r\n");
    assert_eq!(reg.lookup(t0 + secs(20), "alice")[0].contact, "sip:tablet@192.168.1.40");
    assert_eq!(reg.binding_count(), 4);
}

#[test]
fn a_refresh_replaces_the_binding_and_extends_its_expiry() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    assert_eq!(alice.register(&mut reg, t0, UNIX, CONTACT).code, 200);
    let mut roaming = Client::new("alice", "wonderland");
    roaming.source = peer("203.0.113.50:40000");
    roaming.call_id = alice.call_id.clone();
    roaming.cseq = alice.cseq;
    let reply = roaming.register(&mut reg, t0 + secs(1800), UNIX + 1800, CONTACT);
    assert_eq!(contacts(&reply), ["<sip:alice@192.168.1.20:5060>;expires=3600"]);
    let bindings = reg.lookup(t0 + secs(1800), "alice");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].expires_at, t0 + secs(5400));
    assert_eq!(bindings[0].source, roaming.source, "calls follow the latest source");
    assert_eq!(bindings[0].cseq, 4);
    // Still there after the first registration would have expired.
    assert_eq!(reg.expire(t0 + secs(3601)), 0);
    assert_eq!(reg.lookup(t0 + secs(3601), "alice").len(), 1);
}

#[test]
fn expires_zero_removes_one_contact() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let two = "Contact: <sip:a@192.168.1.20>, <sip:b@192.168.1.21>\r\n";
    assert_eq!(alice.register(&mut reg, t0, UNIX, two).code, 200);
    let reply = alice.register(&mut reg, t0, UNIX, "Contact: <sip:a@192.168.1.20>;expires=0\r\n");
    assert_eq!(contacts(&reply), ["<sip:b@192.168.1.21>;expires=3600"]);
    // Via the Expires header too; the last one gone leaves nothing behind.
    let reply =
        alice.register(&mut reg, t0, UNIX, "Contact: <sip:b@192.168.1.21>\r\nExpires: 0\r\n");
    assert_eq!(reply.code, 200);
    assert!(contacts(&reply).is_empty());
    assert_eq!(reg.binding_count(), 0);
    assert!(reg.bindings.is_empty());
}

#[test]
fn wildcard_with_expires_zero_removes_all_and_anything_else_is_400() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let two = "Contact: <sip:a@192.168.1.20>, <sip:b@192.168.1.21>\r\n";
    assert_eq!(alice.register(&mut reg, t0, UNIX, two).code, 200);
    let bad = [
        "Contact: *\r\n",
        "Contact: *\r\nExpires: 60\r\n",
        "Contact: *\r\nContact: <sip:c@192.168.1.22>\r\nExpires: 0\r\n",
        "Contact: *\r\nContact: *\r\nExpires: 0\r\n",
    ];
    for extra in bad {
        let reply = alice.register(&mut reg, t0, UNIX, extra);
        assert_eq!(
            (reply.code, reply.reason.as_str()),
            (400, "Invalid wildcard Contact"),
            "{extra}"
        );
    }
    assert_eq!(reg.binding_count(), 2);
    let reply = alice.register(&mut reg, t0, UNIX, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(reply.code, 200);
    assert!(contacts(&reply).is_empty());
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn too_brief_an_interval_is_423_with_min_expires_and_changes_nothing() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    for extra in [
        "Contact: <sip:a@192.168.1.20>;expires=59\r\n",
        "Contact: <sip:a@192.168.1.20>\r\nExpires: 30\r\n",
        "Contact: <sip:ok@192.168.1.20>, <sip:a@192.168.1.20>;expires=1\r\n",
    ] {
        let reply = alice.register(&mut reg, t0, UNIX, extra);
        assert_eq!((reply.code, reply.reason.as_str()), (423, "Interval Too Brief"), "{extra}");
        assert_eq!(
            reply.values(&HeaderName::Other("Min-Expires".into())).collect::<Vec<_>>(),
            ["60"]
        );
        assert_eq!(reg.binding_count(), 0, "{extra}: all or nothing");
    }
    let reply = alice.register(&mut reg, t0, UNIX, "Contact: <sip:a@192.168.1.20>;expires=60\r\n");
    assert_eq!(contacts(&reply), ["<sip:a@192.168.1.20>;expires=60"]);
}

#[test]
fn expiry_sources_rank_param_then_header_then_default_and_are_clamped() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let reply = alice.register(
        &mut reg,
        t0,
        UNIX,
        "Contact: <sip:param@192.168.1.20>;expires=120, <sip:header@192.168.1.21>\r\n\
         Expires: 600\r\n",
    );
    assert_eq!(
        contacts(&reply),
        ["<sip:param@192.168.1.20>;expires=120", "<sip:header@192.168.1.21>;expires=600"]
    );
    let reply = alice.register(
        &mut reg,
        t0,
        UNIX,
        "Contact: <sip:huge@192.168.1.22>;expires=99999999999999999999\r\n\
         Contact: <sip:long@192.168.1.23>\r\nExpires: 7200\r\n",
    );
    let bindings = reg.lookup(t0, "alice");
    for uri in ["sip:huge@192.168.1.22", "sip:long@192.168.1.23"] {
        let b = bindings.iter().find(|b| b.contact == uri).unwrap();
        assert_eq!(b.remaining(t0), secs(3600), "{uri} clamped to max_expires");
    }
    assert_eq!(reply.code, 200);
}

#[test]
fn bindings_expire_with_time() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let extra = "Contact: <sip:short@192.168.1.20>;expires=60, <sip:long@192.168.1.21>\r\n";
    assert_eq!(alice.register(&mut reg, t0, UNIX, extra).code, 200);
    let mut bob = Client::new("bob", "builder");
    bob.register(&mut reg, t0, UNIX, "Contact: <sip:bob@192.168.1.30>;expires=60\r\n");
    assert_eq!(reg.binding_count(), 3);

    assert_eq!(uris(&reg.lookup(t0 + secs(59), "alice")).len(), 2);
    // At 60 s the short ones are gone from lookups even before `expire` runs.
    assert_eq!(uris(&reg.lookup(t0 + secs(60), "alice")), ["sip:long@192.168.1.21"]);
    assert!(reg.lookup(t0 + secs(60), "bob").is_empty());
    assert_eq!(reg.binding_count(), 3);
    assert_eq!(reg.expire(t0 + secs(60)), 2);
    assert_eq!(reg.binding_count(), 1);
    assert!(!reg.bindings.contains_key("bob"), "empty AoRs are dropped");
    // A query lists only live bindings, with the seconds they have left.
    let reply = alice.register(&mut reg, t0 + secs(1000), UNIX + 1000, "");
    assert_eq!(contacts(&reply), ["<sip:long@192.168.1.21>;expires=2600"]);
    assert_eq!(reg.expire(t0 + secs(3600)), 1);
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn an_out_of_order_cseq_for_the_same_call_id_is_500() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    assert_eq!(alice.register(&mut reg, t0, UNIX, CONTACT).code, 200);
    assert_eq!(reg.lookup(t0, "alice")[0].cseq, 2);
    // Replaying CSeq 2 (challenged as CSeq 1, then sent with credentials as 2).
    alice.cseq = 0;
    let reply = alice.register(
        &mut reg,
        t0 + secs(5),
        UNIX,
        "Contact: <sip:alice@192.168.1.20:5060>;expires=0\r\n",
    );
    assert_eq!((reply.code, reply.reason.as_str()), (500, "Out of order CSeq"));
    assert_eq!(reg.binding_count(), 1, "the removal was not applied");
    // The wildcard checks CSeq too.
    alice.cseq = 0;
    let reply = alice.register(&mut reg, t0 + secs(5), UNIX, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(reply.code, 500);
    assert_eq!(reg.binding_count(), 1);
    // In order again (CSeq 4 > 2): applied.
    let reply = alice.register(&mut reg, t0 + secs(5), UNIX, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(reply.code, 200);
    assert_eq!(reg.binding_count(), 0);
}

#[test]
fn another_call_id_may_use_any_cseq() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    alice.cseq = 100;
    assert_eq!(alice.register(&mut reg, t0, UNIX, CONTACT).code, 200);
    // The phone rebooted: new Call-ID, CSeq from 1 again.
    let mut rebooted = Client::new("alice", "wonderland");
    rebooted.call_id = "after-reboot@198.51.100.7".into();
    assert_eq!(rebooted.register(&mut reg, t0 + secs(1), UNIX, CONTACT).code, 200);
    let bindings = reg.lookup(t0 + secs(1), "alice");
    assert_eq!((bindings.len(), bindings[0].cseq), (1, 2));
    assert_eq!(bindings[0].call_id, "after-reboot@198.51.100.7");
}

#[test]
fn an_unknown_user_looks_exactly_like_a_wrong_password() {
    let t0 = Instant::now();
    let mut replies = Vec::new();
    for (user, password) in [("alice", "guess"), ("mallory", "guess"), ("mallory", "")] {
        let mut reg = registrar();
        let mut client = Client::new(user, password);
        let challenge = client.send(&mut reg, t0, UNIX, CONTACT, None);
        let nonce = nonce_for(&challenge, Algorithm::Sha256);
        let answer = client.send(&mut reg, t0, UNIX, CONTACT, Some(&nonce));
        let shape = |r: &Reply| (r.code, r.reason.clone(), r.headers.len());
        replies.push((shape(&challenge), shape(&answer)));
        assert_eq!(reg.binding_count(), 0);
        assert_eq!(reg.failures[&phone().addr.ip()].count, 1, "{user}");
    }
    assert_eq!(replies[0], ((401, "Unauthorized".into(), 2), (403, "Forbidden".into(), 0)));
    assert!(replies.iter().all(|r| *r == replies[0]), "{replies:?}");
    let reg = registrar();
    assert!(reg.has_user("alice") && !reg.has_user("mallory") && !reg.has_user("Alice"));
}

#[test]
fn a_register_without_contact_is_a_query() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let reply = alice.register(&mut reg, t0, UNIX, "");
    assert_eq!((reply.code, reply.headers.len()), (200, 0));
    alice.register(&mut reg, t0, UNIX, CONTACT);
    let reply = alice.register(&mut reg, t0 + secs(100), UNIX, "");
    assert_eq!(contacts(&reply), ["<sip:alice@192.168.1.20:5060>;expires=3500"]);
    assert_eq!(reg.lookup(t0 + secs(100), "alice")[0].expires_at, t0 + secs(3600), "unchanged");
    // Queries need credentials too.
    let reply = Client::new("alice", "wonderland").send(&mut reg, t0, UNIX, "", None);
    assert_eq!(reply.code, 401);
}

#[test]
fn too_many_contacts_is_403_and_changes_nothing() {
    let mut reg = registrar_with(RegistrarConfig { max_contacts: 2, ..config() });
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    let two = "Contact: <sip:a@192.168.1.20>, <sip:b@192.168.1.21>\r\n";
    assert_eq!(alice.register(&mut reg, t0, UNIX, two).code, 200);
    let reply = alice.register(&mut reg, t0, UNIX, "Contact: <sip:c@192.168.1.22>\r\n");
    assert_eq!((reply.code, reply.reason.as_str()), (403, "Forbidden (too many contacts)"));
    assert_eq!(uris(&reg.lookup(t0, "alice")).len(), 2);
    // Swapping one for another in one request fits.
    let swap = "Contact: <sip:a@192.168.1.20>;expires=0, <sip:c@192.168.1.22>\r\n";
    assert_eq!(alice.register(&mut reg, t0, UNIX, swap).code, 200);
    // Expired bindings do not count against the limit.
    let later = t0 + secs(3600);
    assert_eq!(
        alice.register(&mut reg, later, UNIX + 3600, "Contact: <sip:d@192.168.1.23>\r\n").code,
        200
    );
    assert!(reg.failures.is_empty(), "contact limits are not authentication failures");
}

#[test]
fn malformed_requests_are_400_or_405() {
    let mut reg = registrar();
    let t0 = Instant::now();
    let mut alice = Client::new("alice", "wonderland");
    for (extra, reason) in [
        ("Contact: <sip:a@192.168.1.20>;expires=soon\r\n", "Invalid expires parameter in Contact"),
        ("Contact: <sip:a@192.168.1.20>;expires\r\n", "Invalid expires parameter in Contact"),
        ("Contact: <sip:a@192.168.1.20>;q=1.5\r\n", "Invalid q parameter in Contact"),
        ("Contact: <sip:a@192.168.1.20>;q=0.1234\r\n", "Invalid q parameter in Contact"),
        ("Contact: <sip:a@192.168.1.20>\r\nExpires: -1\r\n", "Invalid Expires header"),
        (
            "Contact: <sip:a@192.168.1.20>\r\nExpires: 1\r\nExpires: 2\r\n",
            "More than one Expires header",
        ),
    ] {
        let reply = alice.register(&mut reg, t0, UNIX, extra);
        assert_eq!((reply.code, reply.reason.as_str()), (400, reason), "{extra}");
    }
    assert_eq!(reg.binding_count(), 0);

    for (to, reason) in [
        ("tel:+15550100", "To URI is not a SIP URI"),
        ("sip:voxide.test", "To URI has no user part"),
        ("sips:@voxide.test", "To URI has no user part"),
    ] {
        let text = format!(
            "REGISTER sip:voxide.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-x\r\n\
             From: <sip:alice@voxide.test>;tag=1\r\nTo: <{to}>\r\nCall-ID: x\r\n\
             CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        );
        let reply = reg.handle(t0, UNIX, &parse(text.as_bytes()).unwrap(), phone());
        assert_eq!((reply.code, reply.reason.as_str()), (400, reason), "{to}");
    }

    let options = "OPTIONS sip:voxide.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-o\r\n\
        From: <sip:alice@voxide.test>;tag=1\r\nTo: <sip:alice@voxide.test>\r\nCall-ID: o\r\n\
        CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let reply = reg.handle(t0, UNIX, &parse(options.as_bytes()).unwrap(), phone());
    assert_eq!(reply.code, 405);
    assert_eq!(reply.values(&HeaderName::Allow).collect::<Vec<_>>(), ["REGISTER"]);
}

#[test]
fn aor_user_and_value_parsers() {
    assert_eq!(aor_user("sip:alice@voxide.test"), Ok("alice"));
    assert_eq!(aor_user("SIPS:alice:secret@voxide.test:5061;transport=tls"), Ok("alice"));
    assert_eq!(aor_user("sip:+15550100;npdi@voxide.test"), Ok("+15550100;npdi"));
    assert_eq!(delta_seconds("0"), Some(0));
    assert_eq!(delta_seconds("0003600"), Some(3600));
    assert_eq!(delta_seconds("4294967296"), Some(u32::MAX));
    assert_eq!(delta_seconds(""), None);
    assert_eq!(delta_seconds("+5"), None);
    assert_eq!(qvalue("0"), Some(0.0));
    assert_eq!(qvalue("0.75"), Some(0.75));
    assert_eq!(qvalue("1.000"), Some(1.0));
    assert_eq!(qvalue("1.001"), None);
    assert_eq!(qvalue("NaN"), None);
    assert_eq!(qvalue(".5"), None);
}

#[test]
fn debug_output_keeps_passwords_out() {
    let text = format!("{:?}", registrar());
    assert!(text.contains("users: 2"), "{text}");
    assert!(!text.contains("wonderland") && !text.contains("registrar test secret"), "{text}");
}
