//! The RFC 4475 torture messages (tests/data/rfc4475, with INDEX.tsv), as a data-driven test
//! of the parser: valid messages parse, invalid requests are answered 400 (or 505), broken
//! responses are dropped. Semantic checks the RFC assigns to a UAS (416, 420, 483, …) belong
//! to the layers above the parser; here those messages must simply parse.

use std::path::{Path, PathBuf};

use voxide_sip::message::{HeaderName, StartLine};
use voxide_sip::{Frame, Reaction, StreamFramer, parse};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Parse,
    Reply(u16),
    Drop,
}

/// What the parser must do with each message, from the RFC's "expected" column. Where the RFC
/// allows a liberal acceptance, we take the strict option it names first.
const EXPECT: &[(&str, Want)] = &[
    ("wsinv", Want::Parse),
    ("intmeth", Want::Parse),
    ("esc01", Want::Parse),
    ("escnull", Want::Parse),
    ("esc02", Want::Parse),
    ("lwsdisp", Want::Parse),
    ("longreq", Want::Parse),
    ("dblreq", Want::Parse),
    ("semiuri", Want::Parse),
    ("transports", Want::Parse),
    ("mpart01", Want::Parse),
    ("unreason", Want::Parse),
    ("noreason", Want::Parse),
    ("badinv01", Want::Reply(400)),
    ("clerr", Want::Reply(400)),
    ("ncl", Want::Reply(400)),
    ("scalar02", Want::Reply(400)),
    ("scalarlg", Want::Drop),
    ("quotbal", Want::Reply(400)),
    ("ltgtruri", Want::Reply(400)),
    ("lwsruri", Want::Reply(400)),
    ("lwsstart", Want::Reply(400)),
    ("trws", Want::Reply(400)),
    ("escruri", Want::Reply(400)),
    // The Date header does not matter to Voxide: "otherwise ignore" applies.
    ("baddate", Want::Parse),
    ("regbadct", Want::Reply(400)),
    ("badaspec", Want::Reply(400)),
    ("baddn", Want::Reply(400)),
    ("badvers", Want::Reply(505)),
    ("mismatch01", Want::Reply(400)),
    // 501 preferred, 400 acceptable: the CSeq/method mismatch is caught by the parser.
    ("mismatch02", Want::Reply(400)),
    ("bigcode", Want::Drop),
    ("badbranch", Want::Parse),
    ("insuf", Want::Reply(400)),
    ("unkscm", Want::Parse),
    ("novelsc", Want::Parse),
    ("unksm2", Want::Parse),
    ("bext01", Want::Parse),
    ("invut", Want::Parse),
    ("regaut01", Want::Parse),
    ("multi01", Want::Reply(400)),
    ("mcl01", Want::Reply(400)),
    ("bcast", Want::Parse),
    ("zeromf", Want::Parse),
    ("cparam01", Want::Parse),
    ("cparam02", Want::Parse),
    ("regescrt", Want::Parse),
    ("sdp01", Want::Parse),
    ("inv2543", Want::Parse),
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475")
}

/// (name, file) for every row of INDEX.tsv.
fn index() -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string(data_dir().join("INDEX.tsv")).expect("INDEX.tsv");
    text.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[2].to_owned(), data_dir().join(cols[0]))
        })
        .collect()
}

fn want(name: &str) -> Want {
    EXPECT
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, w)| *w)
        .unwrap_or_else(|| panic!("no expectation for {name}"))
}

#[test]
fn every_torture_message_gets_the_rfc_reaction() {
    let rows = index();
    assert_eq!(rows.len(), 49, "RFC 4475 has 49 messages");
    assert_eq!(EXPECT.len(), 49);
    let mut wrong = Vec::new();
    for (name, file) in &rows {
        let bytes = std::fs::read(file).expect("read");
        let got = match parse(&bytes) {
            Ok(_) => Want::Parse,
            Err(e) => match e.reaction {
                Reaction::Reply(code) => Want::Reply(code),
                Reaction::Drop => Want::Drop,
            },
        };
        if got != want(name) {
            wrong.push(format!(
                "{name}: want {:?}, got {got:?} ({:?})",
                want(name),
                parse(&bytes).err()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn rejected_requests_get_a_reply_that_names_the_problem_and_echoes_the_transaction() {
    for (name, file) in index() {
        let Want::Reply(code) = want(&name) else { continue };
        let bytes = std::fs::read(&file).expect("read");
        let err = parse(&bytes).expect_err("rejected");
        assert!(!err.reason.is_empty(), "{name}: a reason phrase");
        let reply = err.reply().unwrap_or_else(|| panic!("{name}: no reply built"));
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with(&format!("SIP/2.0 {code} ")), "{name}: {text}");
        assert!(text.contains("\r\nVia: "), "{name}: Via is echoed: {text}");
        for h in &err.reply_headers {
            assert!(
                text.contains(&format!("{}: {}\r\n", h.name.as_str(), h.value)),
                "{name}: echoes {h:?}"
            );
        }
        // Where the fault is not in the echoed headers themselves, the reply is a well-formed
        // response a peer's parser accepts (RFC 3261 §8.2.6 copies those headers verbatim).
        let faults_elsewhere = [
            "clerr",
            "ncl",
            "ltgtruri",
            "lwsruri",
            "lwsstart",
            "trws",
            "escruri",
            "regbadct",
            "mcl01",
            "mismatch01",
            "mismatch02",
        ];
        if faults_elsewhere.contains(&name.as_str()) {
            let parsed = parse(&reply)
                .unwrap_or_else(|e| panic!("{name}: reply does not parse: {e}\n{text}"));
            assert_eq!(parsed.status(), Some(code));
        }
    }
}

#[test]
fn valid_messages_expose_their_routing_headers() {
    let wsinv = std::fs::read(data_dir().join("3.1.1.1-wsinv.sip")).unwrap();
    let m = parse(&wsinv).expect("wsinv parses");
    assert_eq!(m.call_id, "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(m.cseq.seq, 9);
    assert_eq!(m.max_forwards, Some(68));
    assert_eq!(m.via.len(), 3, "one Via header plus a folded compact v: with two values");
    assert_eq!(m.via[0].branch(), Some("390skdjuw"));
    assert_eq!(m.via[1].transport, "TCP");
    assert_eq!(m.via[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(m.from.tag(), Some("98asjd8"));
    assert_eq!(m.from.display.as_deref(), Some(r#"J Rosenberg \\\""#));
    assert_eq!(m.to.tag(), Some("1918181833n"));
    assert_eq!(m.contact[0].uri, "sip:jdrosen@example.com");
    assert_eq!(m.body.len(), 150);
    assert_eq!(
        m.header_values(&HeaderName::Other("NewFangledHeader".into())).next(),
        Some("newfangled value continued newfangled value")
    );

    let dblreq = std::fs::read(data_dir().join("3.1.1.8-dblreq.sip")).unwrap();
    let m = parse(&dblreq).expect("dblreq parses");
    assert!(matches!(&m.start, StartLine::Request { method, .. } if method.as_str() == "REGISTER"));
    assert!(m.body.is_empty(), "octets after Content-Length 0 are not the body");

    let intmeth = std::fs::read(data_dir().join("3.1.1.2-intmeth.sip")).unwrap();
    let m = parse(&intmeth).expect("intmeth parses");
    assert_eq!(m.method().map(|m| m.as_str()), Some("!interesting-Method0123456789_*+`.%indeed'~"));
}

#[test]
fn printed_messages_parse_back_the_same() {
    for (name, file) in index() {
        if want(&name) != Want::Parse {
            continue;
        }
        let m = parse(&std::fs::read(&file).unwrap()).unwrap();
        let again =
            parse(&m.to_bytes()).unwrap_or_else(|e| panic!("{name}: reprint does not parse: {e}"));
        assert_eq!(again.call_id, m.call_id, "{name}");
        assert_eq!(again.via, m.via, "{name}");
        assert_eq!(again.body, m.body, "{name}");
        assert_eq!(again.start, m.start, "{name}");
    }
}

#[test]
fn a_stream_of_every_framable_message_is_cut_correctly() {
    // Stream transports need Content-Length: send the valid messages, reprinted with one,
    // back to back with keep-alive CRLFs, in uneven chunks.
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (name, file) in index() {
        if want(&name) != Want::Parse {
            continue;
        }
        let m = parse(&std::fs::read(&file).unwrap()).unwrap();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(&m.to_bytes());
        expected.push(m.call_id);
    }
    let mut framer = StreamFramer::default();
    let mut got = Vec::new();
    for chunk in stream.chunks(977) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Message(Ok(m)) => got.push(m.call_id),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(framer.buffered(), 0);
}

#[test]
fn streams_without_usable_content_length_are_closed_with_a_400() {
    for (name, want_close) in [("inv2543", true), ("ncl", true), ("mcl01", true), ("clerr", false)]
    {
        let file = index().into_iter().find(|(n, _)| n == name).unwrap().1;
        let mut framer = StreamFramer::default();
        framer.push(&std::fs::read(file).unwrap());
        match framer.next_frame() {
            Some(Frame::Close(e)) if want_close => {
                assert_eq!(e.reaction, Reaction::Reply(400), "{name}");
                assert!(e.reply().is_some(), "{name}: can answer before closing");
            }
            // clerr: Content-Length 9999 on a stream means "wait for more".
            None if !want_close => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn arbitrary_prefixes_and_garbage_never_panic() {
    for (_, file) in index() {
        let bytes = std::fs::read(&file).unwrap();
        for cut in (0..bytes.len()).step_by(7) {
            let _ = parse(&bytes[..cut]);
            let mut framer = StreamFramer::default();
            framer.push(&bytes[..cut]);
            // Every frame, including a Close, consumes input: this loop must end.
            let mut frames = 0;
            while framer.next_frame().is_some() {
                frames += 1;
                assert!(frames <= cut + 1, "the framer made no progress");
            }
        }
        let mut flipped = bytes.clone();
        for i in (0..flipped.len()).step_by(13) {
            flipped[i] ^= 0xA5;
        }
        let _ = parse(&flipped);
    }
}
