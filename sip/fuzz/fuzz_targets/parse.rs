//! Any bytes: the parser and the stream framer never panic, and a message that parses prints
//! back to bytes that parse to the same transaction-relevant fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxide_sip::{StreamFramer, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        let again = parse(&m.to_bytes()).expect("a printed message parses");
        assert_eq!(again.start, m.start);
        assert_eq!(again.call_id, m.call_id);
        assert_eq!(again.cseq, m.cseq);
        assert_eq!(again.via, m.via);
        assert_eq!(again.body, m.body);
    }
    let mut framer = StreamFramer::default();
    for chunk in data.chunks(97) {
        framer.push(chunk);
        while framer.next_frame().is_some() {}
    }
});
