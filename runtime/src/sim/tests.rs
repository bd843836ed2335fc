//! The simulator's timing rules, driven directly (no Wasm): these are the semantics flow
//! authors rely on when they write scenarios.

use std::path::Path;

use super::*;

fn sim(toml: &str) -> SimCall {
    let scenario = Scenario::parse(toml, Path::new("t.toml")).expect("valid scenario");
    SimCall::new(Arc::new(scenario), "t".into(), Arc::default())
}

fn gather(max: u32) -> GatherOptions {
    GatherOptions {
        max_digits: max,
        finish_on_key: Some("#".into()),
        timeout_ms: 5000,
        inter_digit_timeout_ms: 3000,
        speech: false,
        prompt: None,
    }
}

fn record() -> RecordOptions {
    RecordOptions {
        max_duration_ms: 60_000,
        silence_timeout_ms: 5000,
        beep: false,
        finish_on_key: Some("#".into()),
    }
}

#[tokio::test]
async fn gather_times_out_in_virtual_time() {
    let mut s = sim("");
    let r = s.gather(gather(4)).await.unwrap();
    assert_eq!(r, GatherResult { digits: String::new(), speech: None, timed_out: true });
    assert_eq!(s.now, 5000);
}

#[tokio::test]
async fn gather_collects_until_finish_key_and_keeps_typeahead_from_interrupted_prompt() {
    // Keys arrive during an interruptible prompt: the prompt stops at the first key.
    let mut s = sim("[[caller]]\nat_ms = 1000\ndtmf = \"12#\"");
    let mut opts = gather(4);
    opts.prompt = Some("Enter your PIN, then press pound".into());
    let r = s.gather(opts).await.unwrap();
    assert_eq!(r.digits, "12");
    assert!(!r.timed_out);
    assert_eq!(s.now, 1000 + 2 * DTMF_GAP_MS);
    assert!(matches!(s.transcript()[0].step, Step::Say { interrupted: true, .. }));
}

#[tokio::test]
async fn inter_digit_timeout_ends_a_partial_entry() {
    let mut s = sim("[[caller]]\nat_ms = 100\ndtmf = \"7\"");
    let r = s.gather(gather(4)).await.unwrap();
    assert_eq!((r.digits.as_str(), r.timed_out), ("7", true));
    assert_eq!(s.now, 100 + 3000);
}

#[tokio::test]
async fn non_interruptible_say_buffers_keys_for_the_next_gather() {
    let mut s = sim("[[caller]]\nat_ms = 200\ndtmf = \"3\"");
    s.say("Welcome to Acme Corporation".into(), SayOptions::default()).await.unwrap();
    assert_eq!(s.now, speech_ms("Welcome to Acme Corporation"));
    let r = s.gather(gather(1)).await.unwrap();
    assert_eq!(r.digits, "3");
    assert_eq!(s.now, speech_ms("Welcome to Acme Corporation"), "buffered key returns at once");
}

#[tokio::test]
async fn hangup_ends_actions_and_is_reported_as_caller_hangup() {
    let mut s = sim("[[caller]]\nat_ms = 2000\nhangup = true");
    assert_eq!(s.pause(10_000).await, Err(CallError::Hangup));
    assert_eq!(s.now, 2000);
    assert!(s.caller_hung_up());
    assert_eq!(s.say("x".into(), SayOptions::default()).await, Err(CallError::Hangup));
}

#[tokio::test]
async fn record_ends_on_silence_with_trailing_silence_trimmed() {
    let mut s = sim("[[caller]]\nat_ms = 1000\nsay = \"hi it's me\"\nduration_ms = 4000");
    let r = s.record(record()).await.unwrap();
    assert_eq!(r.duration_ms, 5000, "from record start to the end of speech");
    assert_eq!(s.now, 5000 + 5000, "returns once the silence timeout elapsed");
}

#[tokio::test]
async fn record_ends_on_finish_key_and_survives_caller_hangup() {
    let mut s = sim("[[caller]]\nat_ms = 3000\ndtmf = \"#\"");
    assert_eq!(s.record(record()).await.unwrap().duration_ms, 3000);

    let mut s = sim(
        "[[caller]]\nat_ms = 500\nsay = \"long message\"\nduration_ms = 9000\n[[caller]]\nat_ms = 7000\nhangup = true",
    );
    let r = s.record(record()).await.expect("a recording in progress is kept on hang-up");
    assert_eq!(r.duration_ms, 7000);
    assert_eq!(s.play("x".into()).await, Err(CallError::Hangup));
}

#[tokio::test]
async fn dial_outcomes_follow_the_script() {
    let opts = DialOptions { timeout_ms: 20_000, ..DialOptions::default() };
    let mut s = sim("[[dial]]\ntarget = \"sales\"\nafter_ms = 2000\ntalk_ms = 10000");
    let r = s.dial(vec!["sip:sales@pbx".into()], opts.clone()).await.unwrap();
    assert_eq!(r, DialOutcome::Answered { talk_ms: 10_000 });
    assert_eq!(s.now, 12_000);

    let mut s = sim("[[dial]]\ntarget = \"sales\"\noutcome = \"busy\"\nafter_ms = 800");
    assert_eq!(
        s.dial(vec!["sip:sales@pbx".into()], opts.clone()).await.unwrap(),
        DialOutcome::Busy
    );
    assert_eq!(s.now, 800);

    let mut s = sim("");
    assert_eq!(
        s.dial(vec!["+15550199".into()], opts.clone()).await.unwrap(),
        DialOutcome::NoAnswer
    );
    assert_eq!(s.now, 20_000);

    // One target busy, one answering: the answer wins.
    let mut s = sim(
        "[[dial]]\ntarget = \"a\"\noutcome = \"busy\"\n[[dial]]\ntarget = \"b\"\nafter_ms = 5000",
    );
    let r = s.dial(vec!["a".into(), "b".into()], opts.clone()).await.unwrap();
    assert!(matches!(r, DialOutcome::Answered { .. }));

    // The caller hangs up while the target rings.
    let mut s =
        sim("[[caller]]\nat_ms = 1000\nhangup = true\n[[dial]]\ntarget = \"b\"\nafter_ms = 5000");
    assert_eq!(s.dial(vec!["b".into()], opts).await, Err(CallError::Hangup));
}

#[tokio::test]
async fn scenario_time_limit_hangs_up_the_caller() {
    let mut s = sim("max_duration_ms = 10000");
    assert_eq!(s.pause(60_000).await, Err(CallError::Hangup));
    assert_eq!(s.now, 10_000);
    assert!(s.caller_hung_up());
    let last = s.transcript().pop().expect("steps");
    assert_eq!(
        (last.at_ms, last.actor, last.step),
        (10_000, Actor::Caller, Step::Hangup { by: "caller".into() })
    );
}

#[test]
fn expectations_match_in_order_and_absent_ones_fail_when_present() {
    let t = |at_ms, step| Entry { at_ms, actor: Actor::Flow, step };
    let transcript = vec![
        t(0, Step::Answer),
        t(0, Step::Say { text: "Welcome to Acme".into(), interrupted: false }),
        t(6000, Step::Dial { targets: vec!["sip:sales@pbx".into()] }),
        t(9000, Step::Hangup { by: "flow".into() }),
    ];
    let exp = |toml: &str| Scenario::parse(toml, Path::new("t.toml")).unwrap().expect;
    assert!(check(&exp("[[expect]]\nsay = \"welcome\"\n[[expect]]\ndial = \"sales\"\n[[expect]]\nhangup = true"), &transcript).is_none());
    // Out of order: the say comes before the dial, so expecting it after fails.
    let m = check(&exp("[[expect]]\ndial = \"sales\"\n[[expect]]\nsay = \"welcome\""), &transcript)
        .unwrap();
    assert_eq!(m.expectation, 2);
    assert_eq!(m.matched_until, 3);
    let m = check(&exp("[[expect]]\ndial = \"sales\"\nabsent = true"), &transcript).unwrap();
    assert!(m.reason.contains("it happened"), "{}", m.reason);
    assert!(check(&exp("[[expect]]\ndial = \"sales\"\nat_ms = 6000"), &transcript).is_none());
    assert!(check(&exp("[[expect]]\ndial = \"sales\"\nat_ms = 5000"), &transcript).is_some());
}

#[tokio::test]
async fn a_flow_acting_without_letting_time_pass_is_hung_up_on() {
    let mut s = sim("");
    let mut n = 0;
    while s.pause(0).await.is_ok() {
        n += 1;
        assert!(n <= MAX_STEPS, "never stopped");
    }
    assert!(s.caller_hung_up());
    assert!(s.transcript().len() <= MAX_STEPS + 8);
}

#[tokio::test]
async fn busy_after_the_ring_timeout_is_no_answer() {
    let mut s = sim("[[dial]]\ntarget = \"sales\"\noutcome = \"busy\"\nafter_ms = 30000");
    let opts = DialOptions { timeout_ms: 20_000, ..DialOptions::default() };
    assert_eq!(s.dial(vec!["sales".into()], opts).await.unwrap(), DialOutcome::NoAnswer);
    assert_eq!(s.now, 20_000);
}
