//! The UA core as a peer sees it: datagrams in, datagrams and call events out, fake time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::message::parse;

fn ua() -> UserAgent {
    UserAgent::new(UaConfig {
        advertised: "192.0.2.1:5060".parse().unwrap(),
        timers: Timers::default(),
        product: "Voxide test".into(),
    })
}

fn peer() -> Peer {
    Peer { addr: "198.51.100.7:5070".parse::<SocketAddr>().unwrap(), transport: Transport::Udp }
}

fn invite(branch: &str) -> String {
    format!(
        "INVITE sip:hello@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK{branch};rport\r\n\
         From: <sip:sipp@198.51.100.7>;tag=caller\r\n\
         To: <sip:hello@192.0.2.1>\r\n\
         Call-ID: call-{branch}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:sipp@198.51.100.7:5070>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n"
    )
}

/// Everything the UA wants to do now: (sent messages, events).
fn drain(ua: &mut UserAgent) -> (Vec<Message>, Vec<Event>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    while let Some(o) = ua.poll_output() {
        match o {
            Output::Transmit { to, bytes } => {
                assert_eq!(to, peer());
                sent.push(
                    parse(&bytes).unwrap_or_else(|e| panic!("we sent an unparsable message: {e}")),
                );
            }
            Output::Event(e) => events.push(e),
        }
    }
    (sent, events)
}

fn codes(sent: &[Message]) -> Vec<u16> {
    sent.iter().filter_map(Message::status).collect()
}

fn incoming(ua: &mut UserAgent, t0: Instant, branch: &str) -> CallRef {
    ua.handle_input(t0, peer(), invite(branch).as_bytes());
    let (sent, events) = drain(ua);
    assert_eq!(codes(&sent), [100]);
    match events.as_slice() {
        [Event::Incoming { call, .. }] => *call,
        other => panic!("{other:?}"),
    }
}

fn in_dialog(method: &str, cseq: u32, to_tag: &str, branch: &str) -> String {
    format!(
        "{method} sip:hello@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK{branch}\r\n\
         From: <sip:sipp@198.51.100.7>;tag=caller\r\n\
         To: <sip:hello@192.0.2.1>;tag={to_tag}\r\n\
         Call-ID: call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn answered_call_retransmits_200_until_ack_and_ends_on_caller_bye() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    assert!(ua.answer(t0, call, b"v=0\r\n"));
    let (sent, _) = drain(&mut ua);
    let ok = &sent[0];
    assert_eq!(ok.status(), Some(200));
    let tag = ok.to.tag().expect("our To tag").to_owned();
    assert_eq!(ok.body, b"v=0\r\n");
    assert_eq!(
        ok.via[0].params.iter().find(|p| p.name == "rport").and_then(|p| p.value.as_deref()),
        Some("5070")
    );
    assert!(
        ok.via[0]
            .params
            .iter()
            .any(|p| p.name == "received" && p.value.as_deref() == Some("198.51.100.7"))
    );

    // No ACK yet: the 200 is retransmitted at T1.
    ua.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(codes(&drain(&mut ua).0), [200]);
    ua.handle_input(
        t0 + Duration::from_millis(600),
        peer(),
        in_dialog("ACK", 1, &tag, "ack").as_bytes(),
    );
    ua.handle_timeout(t0 + Duration::from_secs(2));
    assert!(drain(&mut ua).0.is_empty(), "ACK stops the retransmissions");

    ua.handle_input(
        t0 + Duration::from_secs(10),
        peer(),
        in_dialog("BYE", 2, &tag, "bye").as_bytes(),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(events, [Event::HungUp { call }]);
    // The BYE retransmitted: answered again from its transaction, no second event.
    ua.handle_input(
        t0 + Duration::from_secs(11),
        peer(),
        in_dialog("BYE", 2, &tag, "bye").as_bytes(),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!((codes(&sent), events.len()), (vec![200], 0));
    ua.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(ua.active_calls(), 0);
}

#[test]
fn our_hangup_sends_bye_in_the_dialog_and_ends_on_its_200() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    ua.answer(t0, call, b"v=0\r\n");
    let tag = drain(&mut ua).0[0].to.tag().unwrap().to_owned();
    ua.handle_input(t0, peer(), in_dialog("ACK", 1, &tag, "ack").as_bytes());
    ua.hangup(t0 + Duration::from_secs(3), call);
    let (sent, _) = drain(&mut ua);
    let bye = &sent[0];
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert!(
        matches!(&bye.start, StartLine::Request { uri, .. } if uri == "sip:sipp@198.51.100.7:5070")
    );
    assert_eq!(bye.from.tag(), Some(tag.as_str()));
    assert_eq!(bye.to.tag(), Some("caller"));
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: <sip:hello@192.0.2.1>;tag={tag}\r\nTo: <sip:sipp@198.51.100.7>;tag=caller\r\n\
         Call-ID: call-1\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n",
        bye.header_values(&HeaderName::Via).next().unwrap(),
        bye.cseq.seq
    );
    ua.handle_input(t0 + Duration::from_secs(3), peer(), ok.as_bytes());
    assert_eq!(drain(&mut ua).1, [Event::Ended { call }]);
    ua.hangup(t0 + Duration::from_secs(4), call);
    assert!(drain(&mut ua).0.is_empty(), "hangup is idempotent");
}

#[test]
fn bye_without_answer_is_retransmitted_then_the_call_ends_anyway() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    ua.answer(t0, call, b"v=0\r\n");
    let tag = drain(&mut ua).0[0].to.tag().unwrap().to_owned();
    ua.handle_input(t0, peer(), in_dialog("ACK", 1, &tag, "ack").as_bytes());
    ua.hangup(t0, call);
    let mut byes = 0;
    let mut ended = false;
    let mut now = t0;
    while let Some(at) = ua.poll_timeout() {
        now = at;
        ua.handle_timeout(now);
        let (sent, events) = drain(&mut ua);
        byes += sent.iter().filter(|m| m.method() == Some(&Method::Bye)).count();
        ended |= events.contains(&Event::Ended { call });
    }
    assert!(byes >= 10, "Timer E retransmissions: {byes}");
    assert!(ended, "Timer F ends the call");
    assert_eq!(now.duration_since(t0), Duration::from_secs(32));
}

#[test]
fn cancel_while_offered_gets_200_and_the_invite_487() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    ua.ring(t0, call, None);
    assert_eq!(codes(&drain(&mut ua).0), [180]);
    let cancel = invite("1")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    ua.handle_input(t0 + Duration::from_secs(2), peer(), cancel.as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200, 487]);
    assert_eq!(sent[0].cseq.method, Method::Cancel);
    assert_eq!(events, [Event::Cancelled { call }]);
    assert!(
        !ua.answer(t0 + Duration::from_secs(3), call, b""),
        "a cancelled call cannot be answered"
    );
    // The caller ACKs the 487 inside the INVITE transaction.
    let ack =
        invite("1").replace("INVITE sip:", "ACK sip:").replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    ua.handle_input(t0 + Duration::from_secs(3), peer(), ack.as_bytes());
    assert!(drain(&mut ua).0.is_empty());
}

#[test]
fn cancel_that_crosses_the_200_leaves_the_call_up() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    ua.answer(t0, call, b"v=0\r\n");
    drain(&mut ua);
    let cancel = invite("1")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    ua.handle_input(t0, peer(), cancel.as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200], "the CANCEL is answered, the INVITE is not touched");
    assert!(events.is_empty());
    assert_eq!(ua.active_calls(), 1);
}

#[test]
fn retransmitted_invite_is_absorbed_not_a_new_call() {
    let t0 = Instant::now();
    let mut ua = ua();
    incoming(&mut ua, t0, "1");
    ua.handle_input(t0 + Duration::from_millis(500), peer(), invite("1").as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [100]);
    assert!(events.is_empty());
}

#[test]
fn unanswered_2xx_gives_up_after_64_t1_with_a_bye() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    ua.answer(t0, call, b"v=0\r\n");
    drain(&mut ua);
    ua.handle_timeout(t0 + Duration::from_secs(32));
    let (sent, events) = drain(&mut ua);
    assert!(events.contains(&Event::NoAck { call }));
    assert!(sent.iter().any(|m| m.method() == Some(&Method::Bye)));
}

#[test]
fn uas_refusals_follow_rfc_3261() {
    let t0 = Instant::now();
    let cases: &[(&str, u16)] = &[
        ("INVITE nobodyKnowsThisScheme:opaque SIP/2.0", 416),
        ("Require: nobodyknowsthis\r\nINVITE", 420),
        ("Content-Type: application/unknownformat", 415),
        ("OPTIONS", 200),
        ("NEWMETHOD", 501),
        ("REGISTER", 405),
        ("BYE-unknown-dialog", 481),
    ];
    for (what, code) in cases {
        let mut ua = ua();
        let msg = match *what {
            "OPTIONS" | "NEWMETHOD" | "REGISTER" => invite("1")
                .replace("INVITE sip:", &format!("{what} sip:"))
                .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {what}")),
            "BYE-unknown-dialog" => in_dialog("BYE", 2, "nosuchtag", "x"),
            w if w.starts_with("INVITE ") => {
                invite("1").replace("INVITE sip:hello@192.0.2.1 SIP/2.0", w)
            }
            w if w.starts_with("Require") => invite("1").replace(
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\r\nRequire: nobodyknowsthis\r\n",
            ),
            w => invite("1").replace("Content-Type: application/sdp", w),
        };
        ua.handle_input(t0, peer(), msg.as_bytes());
        let (sent, events) = drain(&mut ua);
        assert!(events.is_empty(), "{what}: no call for the application");
        assert_eq!(sent.last().and_then(Message::status), Some(*code), "{what}");
        if *code == 420 {
            assert_eq!(
                sent.last().unwrap().header_values(&HeaderName::Other("Unsupported".into())).next(),
                Some("nobodyknowsthis")
            );
        }
    }
}

#[test]
fn malformed_requests_get_400_and_garbage_is_dropped_and_counted() {
    let t0 = Instant::now();
    let mut ua = ua();
    let bad = invite("1").replace("CSeq: 1 INVITE", "CSeq: 99999999999 INVITE");
    ua.handle_input(t0, peer(), bad.as_bytes());
    let sent: Vec<Output> = std::iter::from_fn(|| ua.poll_output()).collect();
    let [Output::Transmit { bytes, .. }] = sent.as_slice() else { panic!("{sent:?}") };
    assert!(String::from_utf8_lossy(bytes).starts_with("SIP/2.0 400 CSeq number"));
    ua.handle_input(t0, peer(), b"\x16\x03\x01\x02\x00 not sip at all");
    ua.handle_input(t0, peer(), b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKnotours\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: z\r\nCSeq: 1 BYE\r\n\r\n");
    assert!(ua.poll_output().is_none());
    assert_eq!(ua.stats(), Stats { dropped: 2, rejected: 1 });
    let badbranch = invite("1").replace("branch=z9hG4bK1", "branch=z9hG4bK");
    ua.handle_input(t0, peer(), badbranch.as_bytes());
    assert_eq!(codes(&drain(&mut ua).0), [400]);
}

#[test]
fn reject_sends_the_chosen_final_and_retransmits_it_until_ack() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    assert!(ua.reject(t0, call, 486, "Busy Here"));
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [486]);
    assert_eq!(events, [Event::Ended { call }]);
    ua.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(codes(&drain(&mut ua).0), [486], "Timer G");
}

#[test]
fn draining_refuses_new_calls_with_503_and_hangup_all_ends_the_rest() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    ua.answer(t0, call, b"v=0\r\n");
    drain(&mut ua);
    ua.drain();
    ua.handle_input(t0, peer(), invite("2").as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [503]);
    assert_eq!(sent[0].header_values(&HeaderName::Other("Retry-After".into())).next(), Some("30"));
    assert!(events.is_empty());
    assert_eq!(ua.active_calls(), 1, "the call in progress goes on");
    let tag = ua.calls.values().next().map(|c| c.local_tag.clone()).unwrap();
    ua.handle_input(t0, peer(), in_dialog("ACK", 1, &tag, "ack").as_bytes());
    ua.hangup_all(t0);
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent[0].method(), Some(&Method::Bye));
    assert_eq!(ua.active_calls(), 0);
}

#[test]
fn hangup_before_the_ack_waits_for_it() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    ua.answer(t0, call, b"v=0\r\n");
    let tag = drain(&mut ua).0[0].to.tag().unwrap().to_owned();
    ua.hangup(t0, call);
    assert!(drain(&mut ua).0.is_empty(), "no BYE before the ACK (RFC 3261 §15)");
    ua.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(codes(&drain(&mut ua).0), [200], "the 200 is still retransmitted");
    ua.handle_input(
        t0 + Duration::from_millis(700),
        peer(),
        in_dialog("ACK", 1, &tag, "ack").as_bytes(),
    );
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent.iter().filter_map(|m| m.method()).collect::<Vec<_>>(), [&Method::Bye]);
}

#[test]
fn responses_carry_record_route_and_never_a_crlf_from_a_reason() {
    let t0 = Instant::now();
    let mut ua = ua();
    let rr = invite("1")
        .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRecord-Route: <sip:sbc.test;lr>\r\n");
    ua.handle_input(t0, peer(), rr.as_bytes());
    let call = match drain(&mut ua).1.as_slice() {
        [Event::Incoming { call, .. }] => *call,
        other => panic!("{other:?}"),
    };
    ua.answer(t0, call, b"v=0\r\n");
    let ok = drain(&mut ua).0.remove(0);
    assert_eq!(
        ok.header_values(&HeaderName::RecordRoute).collect::<Vec<_>>(),
        ["<sip:sbc.test;lr>"]
    );

    let call = incoming(&mut ua, t0, "2");
    ua.reject(t0, call, 486, "Busy\r\nX-Injected: yes");
    let sent = drain(&mut ua).0;
    let busy = sent.iter().find(|m| m.status() == Some(486)).expect("486");
    assert!(busy.header_values(&HeaderName::Other("X-Injected".into())).next().is_none());
}

#[test]
fn finished_calls_are_forgotten_and_the_timer_heap_drains() {
    let t0 = Instant::now();
    let mut ua = ua();
    for n in 0..50 {
        let branch = format!("n{n}");
        let call = incoming(&mut ua, t0, &branch);
        ua.answer(t0, call, b"v=0\r\n");
        let tag = drain(&mut ua).0[0].to.tag().unwrap().to_owned();
        let ack = in_dialog("ACK", 1, &tag, &format!("a{n}"))
            .replace("call-1", &format!("call-{branch}"));
        ua.handle_input(t0, peer(), ack.as_bytes());
        let bye = in_dialog("BYE", 2, &tag, &format!("b{n}"))
            .replace("call-1", &format!("call-{branch}"));
        ua.handle_input(t0 + Duration::from_secs(40), peer(), bye.as_bytes());
        drain(&mut ua);
    }
    // Run every timer out.
    while let Some(at) = ua.poll_timeout() {
        ua.handle_timeout(at);
        drain(&mut ua);
    }
    assert_eq!(ua.active_calls(), 0);
    assert!(ua.calls.is_empty() && ua.dialogs.is_empty() && ua.invites.is_empty(), "nothing leaks");
    assert!(ua.server.is_empty() && ua.client.is_empty());
    assert!(ua.timer_refs.is_empty());
}

// --- outbound calls (UAC) ------------------------------------------------------------------

fn dial(ua: &mut UserAgent, t0: Instant) -> (CallRef, Message) {
    let out = Outbound {
        uri: "sip:sales@198.51.100.7:5070".into(),
        peer: peer(),
        from: "sip:+15550100@192.0.2.1".into(),
        to: "sip:sales@198.51.100.7".into(),
        sdp: b"v=0\r\n".to_vec(),
    };
    let call = ua.invite(t0, out).expect("a valid INVITE");
    let (sent, events) = drain(ua);
    assert!(events.is_empty());
    let [invite] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(invite.method(), Some(&Method::Invite));
    assert_eq!(invite.body, b"v=0\r\n");
    (call, invite.clone())
}

/// The callee's response to our `invite` (with its To tag unless 100).
fn reply(invite: &Message, code: u16, reason: &str, body: &str) -> Vec<u8> {
    let h = |n: HeaderName| invite.header_values(&n).next().unwrap().to_owned();
    let tag = if code > 100 { ";tag=callee" } else { "" };
    let cseq = h(HeaderName::CSeq);
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {}{tag}\r\nCall-ID: {}\r\n\
         CSeq: {cseq}\r\nContact: <sip:sales@198.51.100.7:5070>\r\nContent-Length: {}\r\n\r\n{body}",
        h(HeaderName::Via),
        h(HeaderName::From),
        h(HeaderName::To),
        invite.call_id,
        body.len()
    )
    .into_bytes()
}

#[test]
fn outbound_call_rings_is_answered_acked_and_hung_up() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, invite) = dial(&mut ua, t0);
    // Timer A: the INVITE is retransmitted after T1 until a provisional response.
    ua.handle_timeout(t0 + Duration::from_millis(500));
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent.len(), 1, "retransmitted INVITE");
    ua.handle_input(t0, peer(), &reply(&invite, 180, "Ringing", ""));
    let (sent, events) = drain(&mut ua);
    assert!(sent.is_empty());
    assert_eq!(events, [Event::Progress { call, code: 180, sdp: None }]);
    ua.handle_input(t0, peer(), &reply(&invite, 200, "OK", "v=1"));
    let (sent, events) = drain(&mut ua);
    let [ack] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq.seq, invite.cseq.seq, "the ACK of a 2xx keeps the INVITE's CSeq");
    assert_eq!(ack.to.tag(), Some("callee"));
    assert_eq!(events, [Event::Answered { call, sdp: b"v=1".to_vec() }]);
    // A retransmitted 200 (our ACK was lost) is ACKed again, without a second event.
    ua.handle_input(t0, peer(), &reply(&invite, 200, "OK", "v=1"));
    let (sent, events) = drain(&mut ua);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method(), Some(&Method::Ack));
    assert!(events.is_empty());
    // We hang up: BYE in the dialog, Ended once it is answered.
    ua.hangup(t0, call);
    let (sent, _) = drain(&mut ua);
    let [bye] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.to.tag(), Some("callee"));
    ua.handle_input(t0, peer(), &reply(bye, 200, "OK", ""));
    let (_, events) = drain(&mut ua);
    assert_eq!(events, [Event::Ended { call }]);
}

#[test]
fn outbound_call_ended_by_the_callee_bye() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, invite) = dial(&mut ua, t0);
    ua.handle_input(t0, peer(), &reply(&invite, 200, "OK", ""));
    drain(&mut ua);
    let from_tag = invite.from.tag().unwrap();
    let bye = format!(
        "BYE sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKcb\r\n\
         From: <sip:sales@198.51.100.7>;tag=callee\r\nTo: <sip:sales@198.51.100.7>;tag={from_tag}\r\n\
         Call-ID: {}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
        invite.call_id
    );
    ua.handle_input(t0, peer(), bye.as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(events, [Event::HungUp { call }]);
}

#[test]
fn outbound_call_busy_is_rejected_and_acked_by_the_transaction() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, invite) = dial(&mut ua, t0);
    ua.handle_input(t0, peer(), &reply(&invite, 486, "Busy Here", ""));
    let (sent, events) = drain(&mut ua);
    let [ack] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(events, [Event::Rejected { call, code: 486, reason: "Busy Here".into() }]);
}

#[test]
fn outbound_call_nobody_answers_timer_b_gives_408() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, _) = dial(&mut ua, t0);
    let mut t = t0;
    let mut events = Vec::new();
    while t < t0 + Duration::from_secs(40) {
        t += Duration::from_millis(100);
        ua.handle_timeout(t);
        events.extend(drain(&mut ua).1);
    }
    assert_eq!(events, [Event::Rejected { call, code: 408, reason: "Request Timeout".into() }]);
    assert_eq!(ua.active_calls(), 0);
}

#[test]
fn hangup_before_any_provisional_sends_cancel_once_one_arrives() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, invite) = dial(&mut ua, t0);
    ua.hangup(t0, call);
    assert!(drain(&mut ua).0.is_empty(), "no CANCEL before a provisional response (§9.1)");
    ua.handle_input(t0, peer(), &reply(&invite, 100, "Trying", ""));
    let (sent, events) = drain(&mut ua);
    let [cancel] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.via[0].branch(), invite.via[0].branch(), "same branch as the INVITE");
    assert_eq!(cancel.cseq.seq, invite.cseq.seq);
    assert!(events.is_empty());
    // 200 to the CANCEL, then 487 to the INVITE (ACKed by the transaction).
    ua.handle_input(t0, peer(), &reply(cancel, 200, "OK", ""));
    ua.handle_input(t0, peer(), &reply(&invite, 487, "Request Terminated", ""));
    let (sent, events) = drain(&mut ua);
    assert_eq!(sent.iter().filter(|m| m.method() == Some(&Method::Ack)).count(), 1);
    assert_eq!(events, [Event::Rejected { call, code: 487, reason: "Request Terminated".into() }]);
}

#[test]
fn an_answer_crossing_our_cancel_is_acked_and_hung_up() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, invite) = dial(&mut ua, t0);
    ua.handle_input(t0, peer(), &reply(&invite, 180, "Ringing", ""));
    drain(&mut ua);
    ua.hangup(t0, call);
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent[0].method(), Some(&Method::Cancel));
    ua.handle_input(t0, peer(), &reply(&invite, 200, "OK", ""));
    let (sent, events) = drain(&mut ua);
    let methods: Vec<_> = sent.iter().filter_map(|m| m.method().cloned()).collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    assert!(events.is_empty(), "the application gave the call up: no Answered");
}

#[test]
fn info_dtmf_relay_becomes_digits_and_other_bodies_are_refused() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = incoming(&mut ua, t0, "1");
    assert!(ua.answer(t0, call, b"v=0\r\n"));
    let (sent, _) = drain(&mut ua);
    let tag = sent[0].to.tag().unwrap().to_owned();
    let info = |cseq: u32, ct: &str, body: &str| {
        format!(
            "INFO sip:hello@192.0.2.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKinfo{cseq}\r\n\
             From: <sip:sipp@198.51.100.7>;tag=caller\r\nTo: <sip:hello@192.0.2.1>;tag={tag}\r\n\
             Call-ID: call-1\r\nCSeq: {cseq} INFO\r\nContent-Type: {ct}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut got = Vec::new();
    for (cseq, ct, body, code) in [
        (2, "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", 200),
        (3, "application/dtmf-relay", "Signal=11\r\n", 200),
        (4, "application/dtmf", "*", 200),
        (5, "application/dtmf-relay", "Signal=Z\r\n", 400),
        (6, "text/plain", "hello", 415),
    ] {
        ua.handle_input(t0, peer(), info(cseq, ct, body).as_bytes());
        let (sent, events) = drain(&mut ua);
        assert_eq!(codes(&sent), [code], "{body:?}");
        got.extend(events);
    }
    assert_eq!(
        got,
        [
            Event::Dtmf { call, digit: '5', duration_ms: 160 },
            Event::Dtmf { call, digit: '#', duration_ms: 0 },
            Event::Dtmf { call, digit: '*', duration_ms: 0 },
        ]
    );
}

#[test]
fn register_without_a_registrar_is_405_and_with_one_is_challenged() {
    let t0 = Instant::now();
    let register = "REGISTER sip:192.0.2.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKreg1\r\n\
        From: <sip:alice@192.0.2.1>;tag=a\r\nTo: <sip:alice@192.0.2.1>\r\n\
        Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@198.51.100.7:5070>\r\n\
        Content-Length: 0\r\n\r\n";
    let mut plain = ua();
    plain.handle_input(t0, peer(), register.as_bytes());
    assert_eq!(codes(&drain(&mut plain).0), [405]);
    let mut ua = ua();
    let users = [("alice".to_owned(), "wonderland".to_owned())];
    ua.set_registrar(Registrar::new(Default::default(), users, b"secret"));
    ua.handle_input(t0, peer(), register.as_bytes());
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [401]);
    assert_eq!(sent[0].header_values(&HeaderName::WwwAuthenticate).count(), 2);
    assert!(ua.lookup(t0, "alice").is_empty());
}

/// An answered inbound call: (call, our To tag).
fn answered(ua: &mut UserAgent, t0: Instant) -> (CallRef, String) {
    let call = incoming(ua, t0, "1");
    assert!(ua.answer(t0, call, b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"));
    let (sent, _) = drain(ua);
    let tag = sent[0].to.tag().unwrap().to_owned();
    ua.handle_input(t0, peer(), in_dialog("ACK", 1, &tag, "ack1").as_bytes());
    drain(ua);
    (call, tag)
}

#[test]
fn reinvite_hold_and_resume_get_the_mirrored_direction() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (_, tag) = answered(&mut ua, t0);
    let reinvite = |cseq: u32, direction: &str| {
        let body = format!("v=0\r\nm=audio 5000 RTP/AVP 0\r\na={direction}\r\n");
        format!(
            "INVITE sip:hello@192.0.2.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKre{cseq}\r\n\
             From: <sip:sipp@198.51.100.7>;tag=caller\r\nTo: <sip:hello@192.0.2.1>;tag={tag}\r\n\
             Call-ID: call-1\r\nCSeq: {cseq} INVITE\r\nContact: <sip:sipp@198.51.100.7:5070>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for (cseq, offered, answered) in
        [(2, "sendonly", "recvonly"), (3, "inactive", "inactive"), (4, "sendrecv", "sendrecv")]
    {
        ua.handle_input(t0, peer(), reinvite(cseq, offered).as_bytes());
        let (sent, _) = drain(&mut ua);
        assert_eq!(codes(&sent), [200], "{offered}");
        let body = String::from_utf8_lossy(&sent[0].body).into_owned();
        assert!(body.contains(&format!("a={answered}\r\n")), "{offered} → {body}");
        assert_eq!(body.matches("a=").count(), 1, "one direction attribute: {body}");
    }
}

#[test]
fn refer_is_sent_in_the_dialog_and_its_answer_reported() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered(&mut ua, t0);
    assert!(!ua.refer(t0, call, "sip:x@y>\r\nEvil: 1"), "header injection refused");
    assert!(ua.refer(t0, call, "sip:alice@192.0.2.1"));
    let (sent, _) = drain(&mut ua);
    let [refer] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(refer.method(), Some(&Method::Refer));
    assert_eq!(refer.from.tag(), Some(tag.as_str()));
    assert_eq!(
        refer.header_values(&HeaderName::Other("Refer-To".into())).next(),
        Some("<sip:alice@192.0.2.1>")
    );
    let h = |n: HeaderName| refer.header_values(&n).next().unwrap().to_owned();
    let accepted = format!(
        "SIP/2.0 202 Accepted\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: call-1\r\nCSeq: {}\r\n\
         Content-Length: 0\r\n\r\n",
        h(HeaderName::Via),
        h(HeaderName::From),
        h(HeaderName::To),
        h(HeaderName::CSeq)
    );
    ua.handle_input(t0, peer(), accepted.as_bytes());
    assert_eq!(drain(&mut ua).1, [Event::ReferAnswered { call, code: 202 }]);
    // The transfer's progress (NOTIFY with a sipfrag) is acknowledged.
    let notify = in_dialog("NOTIFY", 2, &tag, "n1");
    ua.handle_input(t0, peer(), notify.as_bytes());
    assert_eq!(codes(&drain(&mut ua).0), [200]);
}
