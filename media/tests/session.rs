//! The media shell on real loopback sockets: a peer is a plain UDP socket speaking RTP.

#![cfg(feature = "net")]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use voxide_media::g711::Law;
use voxide_media::rtp::{RtpHeader, RtpPacket, Seq, Ssrc, Timestamp};
use voxide_media::sdp::{Codec, Direction, Negotiated};
use voxide_media::session::{
    MediaConfig, MediaEngine, MediaEvent, RecordSpec, Room, RoomEnd, Session, bridge, unbridge,
};

fn engine(rtp_timeout: Duration) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        advertised_ip: "127.0.0.1".parse().unwrap(),
        port_min: 30_000,
        port_max: 40_000,
        rtp_timeout,
    })
}

fn negotiated(peer: SocketAddr, codec: Codec) -> Negotiated {
    Negotiated {
        remote: Some(peer),
        codec,
        pt: codec.default_pt(),
        telephone_event: Some(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
    }
}

/// Two started legs and their peers: Alice's phone on leg `a` (`alice_codec`), Bob's on `b`.
async fn two_legs(
    engine: &MediaEngine,
    alice_codec: Codec,
    bob_codec: Codec,
) -> (UdpSocket, Session, UdpSocket, Session) {
    let (alice, bob) = (
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    );
    let a = engine.open().await.unwrap();
    let b = engine.open().await.unwrap();
    a.start(negotiated(alice.local_addr().unwrap(), alice_codec));
    b.start(negotiated(bob.local_addr().unwrap(), bob_codec));
    (alice, a, bob, b)
}

/// One started PCMU leg and its peer's socket.
async fn one_leg(engine: &MediaEngine) -> (UdpSocket, Session) {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let leg = engine.open().await.unwrap();
    leg.start(negotiated(peer.local_addr().unwrap(), Codec::Pcmu));
    (peer, leg)
}

fn packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    RtpHeader::new(pt, Seq(seq), Timestamp(u32::from(seq) * 160), Ssrc(7))
        .to_packet(payload)
        .unwrap()
}

/// An RFC 4733 packet of the event that started at RTP time `start` (all its packets share it).
fn event_packet(seq: u16, start: u32, payload: &[u8]) -> Vec<u8> {
    RtpHeader::new(101, Seq(seq), Timestamp(start), Ssrc(7)).to_packet(payload).unwrap()
}

/// Receives RTP packets until `n` arrived or the time is up.
async fn collect(socket: &UdpSocket, n: usize, within: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) => got.push(buf[..len].to_vec()),
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_plays_at_20_ms_and_reports_done() {
    let engine = engine(Duration::from_secs(60));
    let (peer, leg) = one_leg(&engine).await;
    // 200 ms of a square wave.
    let pcm: Arc<[i16]> = (0..1600).map(|i| if i % 20 < 10 { 8000 } else { -8000 }).collect();
    let done = leg.play(pcm.clone());
    let packets = collect(&peer, 10, Duration::from_secs(2)).await;
    assert!(done.await.unwrap(), "played to the end");
    assert_eq!(packets.len(), 10);
    let mut decoded = Vec::new();
    for p in &packets {
        let rtp = RtpPacket::parse(p).unwrap();
        assert_eq!(rtp.header.payload_type, 0);
        assert_eq!(rtp.payload.len(), 160, "20 ms of PCMU");
        Law::Mu.decode(rtp.payload, &mut decoded);
    }
    // The prompt is in there, in order (leading silence frames may precede it).
    let start = decoded.iter().position(|s| s.unsigned_abs() > 4000).unwrap();
    for (i, s) in decoded[start..start + 800].iter().enumerate() {
        assert_eq!(s.signum(), pcm[i].signum(), "sample {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_latching_drops_a_stranger_and_rfc4733_digits_arrive_once() {
    let engine = engine(Duration::from_secs(60));
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut leg = engine.open().await.unwrap();
    leg.start(negotiated(peer.local_addr().unwrap(), Codec::Pcmu));
    let to = leg.local_addr();
    // The peer's first packet latches the leg to its address.
    peer.send_to(&packet(0, 1, &[0xff; 160]), to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A stranger on the same IP sends a digit: dropped, not heard.
    let event = |end: bool| {
        let mut p = [5u8, 10, 0, 160];
        if end {
            p[1] |= 0x80;
        }
        p
    };
    for end in [false, true, true, true] {
        stranger.send_to(&event_packet(2, 320, &event(end)), to).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(leg.try_event(), None, "the stranger's digit got through");
    assert!(leg.stats().dropped_foreign.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    // The peer's digit (start, update, three end packets) is one '5'.
    for (seq, end) in [(3, false), (4, false), (5, true), (6, true), (7, true)] {
        peer.send_to(&event_packet(seq, 480, &event(end)), to).await.unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(2), leg.next_event()).await.unwrap();
    assert_eq!(got, Some(MediaEvent::Dtmf { digit: '5', duration_ms: 20 }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(leg.try_event(), None, "one digit, not one per packet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged_legs_relay_packets_intact_and_transcode_between_laws() {
    let engine = engine(Duration::from_secs(60));
    let (alice, a, bob, b) = two_legs(&engine, Codec::Pcmu, Codec::Pcmu).await;
    bridge(&a, &b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Both legs speak PCMU: Bob gets Alice's payloads byte for byte, and the other way round,
    // renumbered onto the leg's own stream (timestamps keep their spacing).
    let sent: Vec<Vec<u8>> = (0..20u16).map(|i| packet(0, 100 + i, &[i as u8; 160])).collect();
    for p in &sent {
        alice.send_to(p, a.local_addr()).await.unwrap();
        bob.send_to(p, b.local_addr()).await.unwrap();
    }
    for (who, socket) in [("bob", &bob), ("alice", &alice)] {
        let got = collect(socket, 20, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 20, "{who} got every packet");
        let first = RtpPacket::parse(&got[0]).unwrap().header;
        assert!(first.marker, "a new talkspurt for {who}");
        for (i, (got, sent)) in got.iter().zip(&sent).enumerate() {
            let (got, sent) = (RtpPacket::parse(got).unwrap(), RtpPacket::parse(sent).unwrap());
            assert_eq!((got.payload, got.header.payload_type), (sent.payload, 0), "{who} {i}");
            assert_eq!(got.header.ssrc, first.ssrc, "one stream at {who}");
            assert_ne!(got.header.ssrc, Ssrc(7), "the far end's SSRC is not passed on");
            assert_eq!(got.header.seq, first.seq.wrapping_add(i as u16), "{who} {i}");
            assert_eq!(got.header.timestamp, first.timestamp.wrapping_add(160 * i as u32));
        }
    }

    // A-law on one side: payloads are transcoded.
    let c = engine.open().await.unwrap();
    let carol = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.start(negotiated(carol.local_addr().unwrap(), Codec::Pcma));
    let d = engine.open().await.unwrap();
    let dave = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    d.start(negotiated(dave.local_addr().unwrap(), Codec::Pcmu));
    bridge(&c, &d);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tone: Vec<i16> = (0..160).map(|i| ((i as f64 / 8.0).sin() * 10_000.0) as i16).collect();
    let mut alaw = Vec::new();
    Law::A.encode(&tone, &mut alaw);
    carol.send_to(&packet(8, 9, &alaw), c.local_addr()).await.unwrap();
    let got = collect(&dave, 1, Duration::from_secs(2)).await;
    let rtp = RtpPacket::parse(&got[0]).unwrap();
    assert_eq!(rtp.header.payload_type, 0);
    let mut heard = Vec::new();
    Law::Mu.decode(rtp.payload, &mut heard);
    for (x, y) in tone.iter().zip(&heard) {
        assert!((i32::from(*x) - i32::from(*y)).abs() < 700, "{x} vs {y}");
    }
}

/// A phone hears our prompts, then the far end through the bridge, then us again: one SSRC
/// and one run of sequence numbers throughout, timestamps moving forward, a marker bit at each
/// switch (a receiver that resynchronises on a new SSRC would drop what follows as late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_continues_the_legs_own_stream_and_the_leg_resumes_after_it() {
    let engine = engine(Duration::from_secs(60));
    let (alice, a, bob, b) = two_legs(&engine, Codec::Pcmu, Codec::Pcmu).await;
    // Our own stream first (silence every 20 ms).
    let ours = collect(&alice, 5, Duration::from_secs(2)).await;
    bridge(&a, &b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Drain what we sent before the bridge took over.
    let mut before = ours;
    before.extend(collect(&alice, 100, Duration::from_millis(100)).await);
    // Bob's phone numbers its packets far from ours, with its own SSRC.
    for i in 0..10u16 {
        bob.send_to(&packet(0, 60_000 + i, &[0x55; 160]), b.local_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bob's side restarts its numbering without a new SSRC (a PBX switching source): the
    // jump is taken as a new talkspurt, still on Alice's one run of numbers.
    for i in 0..5u16 {
        bob.send_to(&packet(0, 10 + i, &[0x55; 160]), b.local_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relayed = collect(&alice, 15, Duration::from_secs(2)).await;
    unbridge(&a, &b);
    let after = collect(&alice, 5, Duration::from_secs(2)).await;
    let headers = |packets: &[Vec<u8>]| -> Vec<RtpHeader> {
        packets.iter().map(|p| RtpPacket::parse(p).unwrap().header).collect()
    };
    let (before, relayed, after) = (headers(&before), headers(&relayed), headers(&after));
    assert_eq!(relayed.len(), 15, "every relayed packet arrives");
    let all: Vec<&RtpHeader> = before.iter().chain(&relayed).chain(&after).collect();
    for pair in all.windows(2) {
        assert_eq!(pair[1].ssrc, pair[0].ssrc, "one SSRC throughout");
        assert_eq!(pair[1].seq, pair[0].seq.next(), "sequence numbers run on");
        assert!(pair[1].timestamp.is_after(pair[0].timestamp), "timestamps move forward");
    }
    assert!(relayed[0].marker && relayed[10].marker && after[0].marker, "a marker at each switch");
    let unmarked = relayed[1..10].iter().chain(&relayed[11..]).chain(&after[1..]);
    assert!(unmarked.into_iter().all(|h| !h.marker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_from_the_peer_ends_in_an_rtp_timeout() {
    let engine = engine(Duration::from_millis(300));
    let (_peer, mut leg) = one_leg(&engine).await;
    let event = tokio::time::timeout(Duration::from_secs(2), leg.next_event()).await.unwrap();
    assert_eq!(event, Some(MediaEvent::RtpTimeout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_short_by_the_end_of_the_leg_is_a_valid_wav() {
    let engine = engine(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let (peer, leg) = one_leg(&engine).await;
    let path = dir.path().join("cut.wav");
    let done = leg.record(RecordSpec {
        path: path.clone(),
        max_duration: Duration::from_secs(60),
        silence_timeout: Duration::ZERO,
        finish_keys: "#".into(),
        stereo: false,
    });
    let loud: Vec<i16> = (0..160).map(|i| if i % 16 < 8 { 6000 } else { -6000 }).collect();
    let mut payload = Vec::new();
    Law::Mu.encode(&loud, &mut payload);
    for seq in 0..25u16 {
        peer.send_to(&packet(0, seq, &payload), leg.local_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(leg); // the caller hangs up mid-message
    let recorded = done.await.unwrap().unwrap();
    let wav = voxide_media::wav::read_wav(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(wav.samples.len() as u64, recorded.duration_ms * 8);
    // 500 ms sent, plus up to 100 ms of pre-roll silence kept before the first word.
    assert!((440..=620).contains(&recorded.duration_ms), "{} ms", recorded.duration_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_come_back_to_the_pool() {
    let engine = MediaEngine::new(MediaConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        advertised_ip: "127.0.0.1".parse().unwrap(),
        port_min: 41_000,
        port_max: 41_006,
        rtp_timeout: Duration::from_secs(60),
    });
    let legs: Vec<_> = futures_join(&engine, 3).await;
    assert_eq!(engine.legs_in_use(), 3);
    assert!(engine.open().await.is_err(), "the range holds three pairs");
    drop(legs);
    // The legs' tasks close their sockets, then give the ports back.
    for _ in 0..100 {
        if engine.legs_in_use() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.legs_in_use(), 0);
    assert!(engine.open().await.is_ok());
}

async fn futures_join(engine: &MediaEngine, n: usize) -> Vec<voxide_media::session::Session> {
    let mut legs = Vec::new();
    for _ in 0..n {
        legs.push(engine.open().await.unwrap());
    }
    legs
}

/// Mean absolute amplitude of the PCMU packets in `packets`.
fn level(packets: &[Vec<u8>]) -> u64 {
    let mut pcm = Vec::new();
    for p in packets {
        if let Ok(rtp) = RtpPacket::parse(p) {
            Law::Mu.decode(rtp.payload, &mut pcm);
        }
    }
    pcm.iter().map(|s| u64::from(s.unsigned_abs())).sum::<u64>() / pcm.len().max(1) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conference_lets_each_hear_the_others_but_not_itself() {
    let engine = engine(Duration::from_secs(60));
    let room = Room::new();
    let mut peers = Vec::new();
    let mut legs = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..3 {
        let (peer, leg) = one_leg(&engine).await;
        ends.push(room.join(&leg));
        peers.push(peer);
        legs.push(leg);
    }
    // Let the join tones pass, then only the first caller speaks for a second.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let loud: Vec<i16> = (0..160).map(|i| if i % 16 < 8 { 8000 } else { -8000 }).collect();
    let mut payload = Vec::new();
    Law::Mu.encode(&loud, &mut payload);
    let mut heard: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
    let mut buf = vec![0u8; 2048];
    for seq in 0..50u16 {
        peers[0].send_to(&packet(0, seq, &payload), legs[0].local_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (i, peer) in peers.iter().enumerate() {
            while let Ok((n, _)) = peer.try_recv_from(&mut buf) {
                if seq > 10 {
                    heard[i].push(buf[..n].to_vec());
                }
            }
        }
    }
    let levels: Vec<u64> = heard.iter().map(|h| level(h)).collect();
    assert!(levels[1] > 2000 && levels[2] > 2000, "the others hear the speaker: {levels:?}");
    assert!(levels[0] < 200, "the speaker does not hear itself: {levels:?}");
    // Two leave: the last one is told the conference is over.
    drop(legs.remove(2));
    drop(legs.remove(1));
    let last = ends.remove(0);
    let end = tokio::time::timeout(Duration::from_secs(2), last).await.unwrap().unwrap();
    assert_eq!(end, RoomEnd::Alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_call_records_one_party_per_channel() {
    let engine = engine(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let (alice, a, bob, b) = two_legs(&engine, Codec::Pcmu, Codec::Pcmu).await;
    bridge(&a, &b);
    let path = dir.path().join("both.wav");
    let done = a.record(RecordSpec {
        path: path.clone(),
        max_duration: Duration::from_secs(60),
        silence_timeout: Duration::ZERO,
        finish_keys: String::new(),
        stereo: true,
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Alice speaks loudly, Bob softly (still above the speech threshold).
    let square = |amp: i16| -> Vec<u8> {
        let pcm: Vec<i16> = (0..160).map(|i| if i % 16 < 8 { amp } else { -amp }).collect();
        let mut out = Vec::new();
        Law::Mu.encode(&pcm, &mut out);
        out
    };
    for seq in 0..25u16 {
        alice.send_to(&packet(0, seq, &square(8000)), a.local_addr()).await.unwrap();
        bob.send_to(&packet(0, seq, &square(2000)), b.local_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stop_record();
    let recorded = done.await.unwrap().unwrap();
    assert!(recorded.duration_ms >= 400, "{} ms", recorded.duration_ms);
    // A 44-byte header, then interleaved left/right samples.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2, "two channels");
    let samples: Vec<i16> =
        bytes[44..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let mean = |ch: usize| {
        let v: Vec<u64> =
            samples.iter().skip(ch).step_by(2).map(|s| u64::from(s.unsigned_abs())).collect();
        v.iter().sum::<u64>() / v.len().max(1) as u64
    };
    let (left, right) = (mean(0), mean(1));
    assert!(left > 3 * right && right > 500, "left (Alice) {left}, right (Bob) {right}");
}

/// Share of a signal's energy at `hz` (a single DFT bin over the whole signal, 8 kHz).
#[cfg(feature = "opus")]
fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let (mut re, mut im, mut total) = (0.0, 0.0, 0.0);
    for (n, s) in samples.iter().enumerate() {
        let x = f64::from(*s);
        let w = 2.0 * std::f64::consts::PI * hz * n as f64 / 8000.0;
        re += x * w.cos();
        im += x * w.sin();
        total += x * x;
    }
    2.0 * (re * re + im * im) / samples.len() as f64 / total.max(1.0)
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_leg_bridged_to_a_pcmu_leg_is_transcoded_both_ways() {
    use voxide_media::opus;
    let engine = engine(Duration::from_secs(60));
    let (alice, a, bob, b) = two_legs(&engine, Codec::Opus, Codec::Pcmu).await;
    bridge(&a, &b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // One second each way, paced at 20 ms: Alice an Opus 500 Hz tone, Bob a PCMU 1 kHz tone.
    let mut encoder = opus::Encoder::new(24_000).unwrap();
    let sine = |hz: f64, n: usize| -> Vec<i16> {
        (0..n)
            .map(|i| ((2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin() * 8000.0) as i16)
            .collect()
    };
    let (alice_tone, bob_tone) = (sine(500.0, 8000), sine(1000.0, 8000));
    let (at_alice, at_bob) = {
        let send = async {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for (i, (x, y)) in alice_tone.chunks(160).zip(bob_tone.chunks(160)).enumerate() {
                tick.tick().await;
                let mut payload = Vec::new();
                encoder.encode(x, &mut payload).unwrap();
                let header = RtpHeader::new(111, Seq(i as u16), Timestamp(i as u32 * 960), Ssrc(1));
                alice.send_to(&header.to_packet(&payload).unwrap(), a.local_addr()).await.unwrap();
                let mut ulaw = Vec::new();
                Law::Mu.encode(y, &mut ulaw);
                bob.send_to(&packet(0, i as u16, &ulaw), b.local_addr()).await.unwrap();
            }
        };
        let (_, alice_got, bob_got) = tokio::join!(
            send,
            collect(&alice, 45, Duration::from_secs(3)),
            collect(&bob, 45, Duration::from_secs(3))
        );
        (alice_got, bob_got)
    };
    assert!(at_bob.len() >= 40 && at_alice.len() >= 40, "{} {}", at_bob.len(), at_alice.len());
    // Bob hears Alice's tone in PCMU on 20 ms timestamps.
    let mut heard = Vec::new();
    for p in &at_bob {
        let rtp = RtpPacket::parse(p).unwrap();
        assert_eq!(rtp.header.payload_type, 0);
        Law::Mu.decode(rtp.payload, &mut heard);
    }
    let share = tone_share(&heard[heard.len() / 2..], 500.0);
    assert!(share > 0.5, "Bob hears 500 Hz at {share:.2} of the energy");
    // Alice gets Opus (payload type 111, timestamps 960 apart) carrying Bob's tone.
    let mut decoder = opus::Decoder::new().unwrap();
    let mut heard = Vec::new();
    let mut stamps = Vec::new();
    for p in &at_alice {
        let rtp = RtpPacket::parse(p).unwrap();
        assert_eq!(rtp.header.payload_type, 111);
        stamps.push(rtp.header.timestamp.0);
        decoder.decode(rtp.payload, &mut heard).unwrap();
    }
    assert!(stamps.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 960), "{stamps:?}");
    let share = tone_share(&heard[heard.len() / 2..], 1000.0);
    assert!(share > 0.5, "Alice hears 1 kHz at {share:.2} of the energy");

    // A digit Alice presses reaches Bob as RFC 4733 events his leg sends anew: in its own
    // stream (its SSRC), on sequence numbers none of its audio packets used.
    let audio_ssrc = RtpPacket::parse(&at_bob[0]).unwrap().header.ssrc;
    for (seq, end) in [(200, false), (201, false), (202, true), (203, true), (204, true)] {
        let mut event = [5u8, 10, 0, 160];
        if end {
            event[1] |= 0x80;
        }
        alice.send_to(&event_packet(seq, 48_000, &event), a.local_addr()).await.unwrap();
        // A phone sends an event's packets over its duration, between its audio frames.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let got: Vec<RtpHeader> = collect(&bob, 40, Duration::from_millis(800))
        .await
        .iter()
        .map(|p| RtpPacket::parse(p).unwrap().header)
        .collect();
    let events = got.iter().filter(|h| h.payload_type == 101).count();
    assert!(events >= 3, "Bob got the digit's events: {got:?}");
    assert!(got.iter().all(|h| h.ssrc == audio_ssrc), "one stream");
    let mut seqs: Vec<u16> = got.iter().map(|h| h.seq.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), got.len(), "no sequence number used twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_hears_the_peer_and_a_stopped_prompt_says_how_much_was_sent() {
    let engine = engine(Duration::from_secs(60));
    let (peer, leg) = one_leg(&engine).await;
    let (tx, mut frames) = tokio::sync::mpsc::channel(64);
    leg.tap(Some(tx));
    // The peer speaks: ten packets of a loud square wave.
    let loud: Vec<u8> = (0..160)
        .map(|i| voxide_media::g711::ulaw_encode(if i % 20 < 10 { 8000 } else { -8000 }))
        .collect();
    let leg_addr = leg.local_addr();
    for seq in 0..10u16 {
        peer.send_to(&packet(0, seq, &loud), leg_addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut heard = false;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(2), frames.recv()).await {
        assert_eq!(frame.len(), 160, "20 ms at 8 kHz");
        if frame.iter().any(|s| s.unsigned_abs() > 4000) {
            heard = true;
            break;
        }
    }
    assert!(heard, "the tap carries what the peer sent, decoded");
    // A 2 s prompt stopped after about 200 ms: the samples sent are a prefix of it.
    let done = leg.play((0..16_000).map(|_| 1000i16).collect());
    let mut prompt_packets = 0;
    while prompt_packets < 10 {
        let got = collect(&peer, 1, Duration::from_secs(2)).await;
        let rtp = RtpPacket::parse(got.first().expect("the leg sends")).unwrap();
        let mut pcm = Vec::new();
        Law::Mu.decode(rtp.payload, &mut pcm);
        prompt_packets += usize::from(pcm.iter().all(|s| s.abs() > 500));
    }
    let at = leg.stop_play_at().await.unwrap().expect("it was playing");
    assert!(!done.await.unwrap(), "stopped, not played to the end");
    assert!((10 * 160..16_000).contains(&at), "{at} samples sent after 10 of the prompt's packets");
    // Nothing playing: nothing to report.
    assert_eq!(leg.stop_play_at().await.unwrap(), None);
    leg.tap(None);
}
