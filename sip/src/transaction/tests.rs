//! Every transaction state machine driven on fake time: retransmission schedules, timeouts,
//! absorption of retransmissions, ACK handling and CANCEL races. Time is an `Instant` plus
//! offsets, so Timer B's 32 s pass in microseconds.

use std::time::{Duration, Instant};

use super::*;
use crate::message::parse;

const INVITE: &str = "INVITE sip:hello@voxide.test SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-abc\r\n\
    Route: <sip:proxy.test;lr>\r\n\
    From: <sip:alice@a.test>;tag=fa\r\n\
    To: <sip:hello@voxide.test>\r\n\
    Call-ID: call-1\r\n\
    CSeq: 7 INVITE\r\n\
    Max-Forwards: 70\r\n\
    Content-Length: 0\r\n\r\n";

const OPTIONS: &str = "OPTIONS sip:hello@voxide.test SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-opt\r\n\
    From: <sip:alice@a.test>;tag=fa\r\n\
    To: <sip:hello@voxide.test>\r\n\
    Call-ID: call-2\r\n\
    CSeq: 1 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

fn response(code: u16, cseq: &str) -> Message {
    parse(
        format!(
            "SIP/2.0 {code} Whatever\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-abc\r\n\
             From: <sip:alice@a.test>;tag=fa\r\n\
             To: <sip:hello@voxide.test>;tag=tb\r\n\
             Call-ID: call-1\r\n\
             CSeq: {cseq}\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("valid response")
}

fn invite() -> Message {
    parse(INVITE.as_bytes()).expect("valid INVITE")
}

/// Drives a transaction through its timers until `end`, recording (offset, output).
macro_rules! run_until {
    ($tx:expr, $t0:expr, $end:expr) => {{
        let mut log: Vec<(Duration, Output)> = Vec::new();
        while let Some(o) = $tx.poll_output() {
            log.push((Duration::ZERO, o));
        }
        while let Some(at) = $tx.poll_timeout() {
            if at > $t0 + $end {
                break;
            }
            $tx.handle_timeout(at);
            while let Some(o) = $tx.poll_output() {
                log.push((at - $t0, o));
            }
        }
        log
    }};
}

fn transmits(log: &[(Duration, Output)]) -> Vec<u64> {
    log.iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(_)))
        .map(|(t, _)| t.as_millis() as u64)
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn client_invite_retransmits_with_doubling_timer_a_then_times_out_at_timer_b() {
    let t0 = Instant::now();
    let mut tx = ClientInvite::new(t0, invite(), Reliability::Unreliable, Timers::default());
    let log = run_until!(tx, t0, Duration::from_secs(60));
    assert_eq!(transmits(&log), [0, 500, 1500, 3500, 7500, 15500, 31500]);
    let tail: Vec<_> = log.iter().rev().take(2).map(|(t, o)| (t.as_millis(), o.clone())).collect();
    assert_eq!(tail, [(32_000, Output::Terminated), (32_000, Output::Timeout)]);
    assert_eq!(tx.state(), ClientInviteState::Terminated);
}

#[test]
fn client_invite_over_tcp_never_retransmits() {
    let t0 = Instant::now();
    let mut tx = ClientInvite::new(t0, invite(), Reliability::Reliable, Timers::default());
    let log = run_until!(tx, t0, Duration::from_secs(60));
    assert_eq!(transmits(&log), [0]);
    assert!(log.iter().any(|(t, o)| *o == Output::Timeout && *t == Duration::from_secs(32)));
}

#[test]
fn client_invite_acks_a_non_2xx_final_and_again_on_its_retransmission() {
    let t0 = Instant::now();
    let mut tx = ClientInvite::new(t0, invite(), Reliability::Unreliable, Timers::default());
    tx.poll_output();
    tx.handle_response(t0 + ms(100), &response(180, "7 INVITE"));
    assert_eq!(tx.state(), ClientInviteState::Proceeding);
    assert_eq!(tx.poll_output(), Some(Output::Response(180)));
    // Proceeding: no more INVITE retransmissions, and no Timer B.
    assert_eq!(tx.poll_timeout(), None);

    tx.handle_response(t0 + ms(900), &response(486, "7 INVITE"));
    assert_eq!(tx.poll_output(), Some(Output::Response(486)));
    let Some(Output::Transmit(ack)) = tx.poll_output() else { panic!("ACK expected") };
    let ack = parse(&ack).expect("ACK parses");
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq.seq, 7);
    assert_eq!(ack.via[0].branch(), Some("z9hG4bK-abc"), "same branch as the INVITE");
    assert_eq!(ack.to.tag(), Some("tb"), "To from the response");
    assert_eq!(ack.header_values(&HeaderName::Route).next(), Some("<sip:proxy.test;lr>"));

    // The 486 is retransmitted (our ACK was lost): ACK again, but the TU hears it once.
    tx.handle_response(t0 + ms(1400), &response(486, "7 INVITE"));
    assert!(matches!(tx.poll_output(), Some(Output::Transmit(_))));
    assert_eq!(tx.poll_output(), None);
    // Timer D (32 s over UDP) then ends it.
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(900) + Duration::from_secs(32)));
    tx.handle_timeout(t0 + ms(900) + Duration::from_secs(32));
    assert_eq!(tx.poll_output(), Some(Output::Terminated));
}

#[test]
fn client_invite_2xx_enters_accepted_and_passes_retransmissions_to_the_tu() {
    let t0 = Instant::now();
    let mut tx = ClientInvite::new(t0, invite(), Reliability::Unreliable, Timers::default());
    tx.poll_output();
    tx.handle_response(t0 + ms(50), &response(200, "7 INVITE"));
    assert_eq!(tx.state(), ClientInviteState::Accepted);
    assert_eq!(tx.poll_output(), Some(Output::Response(200)));
    tx.handle_response(t0 + ms(600), &response(200, "7 INVITE"));
    assert_eq!(tx.poll_output(), Some(Output::Response(200)), "the TU re-ACKs a retransmitted 2xx");
    tx.handle_timeout(t0 + ms(50) + Duration::from_secs(32));
    assert_eq!(tx.poll_output(), Some(Output::Terminated));
}

#[test]
fn client_non_invite_caps_timer_e_at_t2_and_times_out_at_timer_f() {
    let t0 = Instant::now();
    let options = parse(OPTIONS.as_bytes()).unwrap();
    let mut tx = ClientNonInvite::new(t0, &options, Reliability::Unreliable, Timers::default());
    let log = run_until!(tx, t0, Duration::from_secs(60));
    assert_eq!(
        transmits(&log),
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500],
        "doubling to T2 = 4 s, then every 4 s"
    );
    assert!(log.iter().any(|(t, o)| *o == Output::Timeout && *t == Duration::from_secs(32)));
}

#[test]
fn client_non_invite_retransmits_every_t2_once_proceeding_and_lingers_for_timer_k() {
    let t0 = Instant::now();
    let options = parse(OPTIONS.as_bytes()).unwrap();
    let mut tx = ClientNonInvite::new(t0, &options, Reliability::Unreliable, Timers::default());
    tx.poll_output();
    tx.handle_response(t0 + ms(200), &response(100, "1 OPTIONS"));
    assert_eq!(tx.state(), ClientNonInviteState::Proceeding);
    // Timer E was armed for 500 ms; after it fires in Proceeding the interval is T2.
    tx.handle_timeout(t0 + ms(500));
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(4500)));
    tx.handle_response(t0 + ms(1000), &response(200, "1 OPTIONS"));
    assert_eq!(tx.state(), ClientNonInviteState::Completed);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(1000) + Duration::from_secs(5)), "Timer K = T4");
    tx.handle_response(t0 + ms(1200), &response(200, "1 OPTIONS"));
    let outputs: Vec<Output> = std::iter::from_fn(|| tx.poll_output()).collect();
    assert_eq!(
        outputs.iter().filter(|o| **o == Output::Response(200)).count(),
        1,
        "retransmission absorbed"
    );
}

#[test]
fn server_invite_answers_retransmitted_invites_and_retransmits_its_final_until_the_ack() {
    let t0 = Instant::now();
    let mut tx =
        ServerInvite::new(Reliability::Unreliable, Timers::default(), Some(b"100".to_vec()));
    assert_eq!(tx.poll_output(), Some(Output::Transmit(b"100".to_vec())));
    tx.handle_request(t0 + ms(500), &Method::Invite);
    assert_eq!(
        tx.poll_output(),
        Some(Output::Transmit(b"100".to_vec())),
        "retransmitted INVITE gets the last response"
    );
    tx.send_response(t0 + ms(1000), 486, b"486".to_vec());
    assert!(!tx.is_cancellable());
    let log = run_until!(tx, t0 + ms(1000), Duration::from_secs(10));
    // Timer G: 0.5, 1, 2, then capped at T2 = 4 s.
    assert_eq!(transmits(&log), [0, 500, 1500, 3500, 7500]);
    tx.handle_request(t0 + ms(9000), &Method::Ack);
    assert_eq!(tx.state(), ServerInviteState::Confirmed);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(9000) + Duration::from_secs(5)), "Timer I = T4");
    tx.handle_timeout(t0 + ms(14_000));
    assert_eq!(tx.poll_output(), Some(Output::Terminated));
}

#[test]
fn server_invite_without_ack_times_out_at_timer_h() {
    let t0 = Instant::now();
    let mut tx = ServerInvite::new(Reliability::Reliable, Timers::default(), Some(b"100".to_vec()));
    tx.poll_output();
    tx.send_response(t0, 480, b"480".to_vec());
    let log = run_until!(tx, t0, Duration::from_secs(60));
    assert_eq!(transmits(&log), [0], "no Timer G over TCP");
    assert!(log.iter().any(|(t, o)| *o == Output::Timeout && *t == Duration::from_secs(32)));
}

#[test]
fn server_invite_2xx_absorbs_retransmitted_invites_until_timer_l() {
    let t0 = Instant::now();
    let mut tx =
        ServerInvite::new(Reliability::Unreliable, Timers::default(), Some(b"100".to_vec()));
    tx.poll_output();
    tx.send_response(t0, 200, b"200".to_vec());
    tx.poll_output();
    assert_eq!(tx.state(), ServerInviteState::Accepted);
    tx.handle_request(t0 + ms(500), &Method::Invite);
    assert_eq!(tx.poll_output(), None, "the UAS core, not the transaction, resends a 2xx");
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert_eq!(tx.poll_output(), Some(Output::Terminated));
}

#[test]
fn cancel_races_resolve_by_transaction_state() {
    let t0 = Instant::now();
    // CANCEL before the final response: the INVITE can still be cancelled (UAS sends 487).
    let mut ringing =
        ServerInvite::new(Reliability::Unreliable, Timers::default(), Some(b"100".to_vec()));
    assert!(ringing.is_cancellable());
    ringing.send_response(t0, 487, b"487".to_vec());
    assert_eq!(ringing.state(), ServerInviteState::Completed);
    // CANCEL that crosses our 200 OK: too late, the call stands (CANCEL still gets its 200).
    let mut answered =
        ServerInvite::new(Reliability::Unreliable, Timers::default(), Some(b"100".to_vec()));
    answered.send_response(t0, 200, b"200".to_vec());
    assert!(!answered.is_cancellable());
    // A response after the final one is ignored.
    answered.send_response(t0, 487, b"487".to_vec());
    assert_eq!(answered.state(), ServerInviteState::Accepted);

    // A CANCEL is matched to its INVITE by branch and sent-by.
    let cancel = parse(
        INVITE
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("CSeq: 7 INVITE", "CSeq: 7 CANCEL")
            .as_bytes(),
    )
    .unwrap();
    let key = Key::of(&cancel).expect("key");
    assert_eq!(key.method, Method::Cancel);
    assert_eq!(key.cancelled_invite(), Key::of(&invite()).unwrap());
}

#[test]
fn server_non_invite_absorbs_retransmissions_and_lingers_for_timer_j() {
    let t0 = Instant::now();
    let mut tx = ServerNonInvite::new(Reliability::Unreliable, Timers::default());
    tx.handle_request();
    assert_eq!(tx.poll_output(), None, "Trying: a retransmission is absorbed silently");
    tx.send_response(t0, 200, b"200".to_vec());
    assert_eq!(tx.poll_output(), Some(Output::Transmit(b"200".to_vec())));
    tx.handle_request();
    assert_eq!(
        tx.poll_output(),
        Some(Output::Transmit(b"200".to_vec())),
        "Completed: resend the final"
    );
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert_eq!(tx.poll_output(), Some(Output::Terminated));
    assert_eq!(tx.state(), ServerNonInviteState::Terminated);
}

#[test]
fn ack_matches_the_invite_transaction_and_bad_branches_have_no_key() {
    let ack = parse(
        INVITE
            .replace("INVITE sip:", "ACK sip:")
            .replace("CSeq: 7 INVITE", "CSeq: 7 ACK")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(Key::of(&ack), Key::of(&invite()));
    let bad = parse(INVITE.replace("z9hG4bK-abc", "z9hG4bK").as_bytes()).unwrap();
    assert_eq!(Key::of(&bad), None, "RFC 4475 badbranch: the cookie alone is no branch");
}

#[test]
fn configurable_t1_scales_every_timer() {
    let t0 = Instant::now();
    let timers = Timers { t1: ms(100), t2: ms(400), t4: ms(500) };
    let mut tx = ClientInvite::new(t0, invite(), Reliability::Unreliable, timers);
    let log = run_until!(tx, t0, Duration::from_secs(60));
    assert_eq!(transmits(&log), [0, 100, 300, 700, 1500, 3100, 6300]);
    assert!(log.iter().any(|(t, o)| *o == Output::Timeout && *t == ms(6400)), "B = 64·T1");
}
