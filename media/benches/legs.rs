//! Concurrent media legs: how many calls one process carries with clean timing.
//!
//! For each N, the engine (this process) opens N legs; each plays a prompt to its caller and
//! records what the caller sends. The callers live in a child process (this binary again, with
//! `VOXIDE_BENCH_PEERS` set): one UDP socket per call sending 20 ms PCMU and timestamping the
//! packets it receives. Printed per N: engine CPU per call, the p99 deviation of our send
//! interval from 20 ms as the callers measured it, and packets lost or late (> 60 ms gap).
//! Then the relay mode: N/2 bridged pairs forwarding the callers' packets untouched.
//!
//!   cargo bench --profile release -p voxide-media --features net --bench legs
//!   LEGS="250 500 1000" SECONDS=10 cargo bench --profile release -p voxide-media --features net --bench legs
//!
//! Loopback only. Figures depend on the machine; compare runs on the same one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use voxide_media::rtp::{RtpHeader, RtpPacket, Seq, Ssrc, Timestamp};
use voxide_media::sdp::{Codec, Direction, Negotiated};
use voxide_media::session::{MediaConfig, MediaEngine, RecordSpec, Session, bridge};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Ok(spec) = std::env::var("VOXIDE_BENCH_PEERS") {
        runtime.block_on(peers(spec));
        return;
    }
    let legs: Vec<usize> = std::env::var("LEGS")
        .unwrap_or_else(|_| "100 250 500 1000".into())
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let seconds: u64 = std::env::var("SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    println!(
        "media legs: prompt + recording per call, callers sending 20 ms PCMU, {seconds} s per run"
    );
    println!(
        "{:>6} {:>16} {:>16} {:>10} {:>10} {:>10}",
        "calls", "CPU/call", "send jitter p99", "received", "lost", "late"
    );
    for &n in &legs {
        runtime.block_on(run(n, seconds, false));
    }
    println!("\nrelay: bridged pairs forwarding the callers' packets untouched");
    println!(
        "{:>6} {:>16} {:>16} {:>10} {:>10} {:>10}",
        "legs", "CPU/leg", "relay jitter p99", "received", "lost", "late"
    );
    for &n in &legs {
        runtime.block_on(run(n * 2, seconds, true));
    }
}

/// CPU time of this process (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ = 100 on Linux
}

async fn run(n: usize, seconds: u64, relay: bool) {
    let engine = MediaEngine::new(MediaConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        advertised_ip: "127.0.0.1".parse().unwrap(),
        port_min: 20_000,
        port_max: 60_000,
        rtp_timeout: Duration::from_secs(60),
    });
    let mut legs: Vec<Session> = Vec::with_capacity(n);
    for _ in 0..n {
        legs.push(engine.open().await.expect("open a leg"));
    }
    // The callers: a child process, told where each leg listens.
    let exe = std::env::current_exe().unwrap();
    let mode = if relay { "relay" } else { "call" };
    let mut child = Command::new(exe)
        .env("VOXIDE_BENCH_PEERS", format!("{n} {seconds} {mode}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for leg in &legs {
        writeln!(stdin, "{}", leg.local_addr()).unwrap();
    }
    drop(stdin);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let peers: Vec<SocketAddr> =
        (0..n).map(|_| lines.next().unwrap().unwrap().parse().unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let prompt: Arc<[i16]> = (0..(seconds as usize + 5) * 8000)
        .map(|i| ((i as f64 * 0.39).sin() * 6000.0) as i16)
        .collect();
    let mut recordings = Vec::new();
    for (i, (leg, peer)) in legs.iter().zip(&peers).enumerate() {
        leg.start(Negotiated {
            remote: Some(*peer),
            codec: Codec::Pcmu,
            pt: 0,
            telephone_event: Some(101),
            ptime_ms: 20,
            direction: Direction::SendRecv,
        });
        if !relay {
            drop(leg.play(prompt.clone()));
            recordings.push(leg.record(RecordSpec {
                path: dir.path().join(format!("{i}.wav")),
                max_duration: Duration::from_secs(seconds + 30),
                silence_timeout: Duration::ZERO,
                finish_keys: String::new(),
                stereo: false,
            }));
        }
    }
    if relay {
        for pair in legs.chunks(2) {
            if let [a, b] = pair {
                bridge(a, b);
            }
        }
    }
    // Measure the engine's CPU over the callers' run (they start once they have read all).
    let start = (Instant::now(), cpu_time());
    let report = tokio::task::spawn_blocking(move || {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = child.wait();
        line
    })
    .await
    .unwrap();
    let (wall, cpu) = (start.0.elapsed(), cpu_time().saturating_sub(start.1));
    drop(legs);
    // The legs' tasks close their sockets before the next run binds the same ports.
    while engine.legs_in_use() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fields: Vec<f64> = report.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let [received, lost, late, p99_us] = fields[..] else {
        println!("{n:>6} callers reported nothing: {report:?}");
        return;
    };
    let per_call = cpu.as_secs_f64() / wall.as_secs_f64() / n as f64 * 100.0;
    println!(
        "{n:>6} {:>13.3} %  {:>13.2} ms {received:>10} {lost:>10} {late:>10}",
        per_call,
        p99_us / 1000.0
    );
}

/// The callers' process: one socket per leg; sends 20 ms PCMU for `seconds` and times
/// what comes back. In relay mode, leg 2k's caller talks and leg 2k+1's caller listens.
async fn peers(spec: String) {
    let mut parts = spec.split_whitespace();
    let n: usize = parts.next().unwrap().parse().unwrap();
    let seconds: u64 = parts.next().unwrap().parse().unwrap();
    let relay = parts.next() == Some("relay");
    let stdin = std::io::stdin();
    let targets: Vec<SocketAddr> =
        stdin.lock().lines().take(n).map(|l| l.unwrap().parse().unwrap()).collect();
    let mut sockets = Vec::with_capacity(n);
    let mut out = std::io::stdout().lock();
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        writeln!(out, "{}", s.local_addr().unwrap()).unwrap();
        sockets.push(Arc::new(s));
    }
    out.flush().unwrap();
    drop(out);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, (socket, target)) in sockets.iter().zip(&targets).enumerate() {
        let talks = !relay || i % 2 == 0;
        let listens = !relay || i % 2 == 1;
        if talks {
            let (socket, target) = (socket.clone(), *target);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut seq = 0u16;
                while tokio::time::Instant::now() < end {
                    tick.tick().await;
                    let header =
                        RtpHeader::new(0, Seq(seq), Timestamp(u32::from(seq) * 160), Ssrc(42));
                    let _ = socket.send_to(&header.to_packet(&[0x55; 160]).unwrap(), target).await;
                    seq = seq.wrapping_add(1);
                }
            });
        }
        if listens {
            let socket = socket.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let (mut received, mut lost, mut late) = (0u64, 0u64, 0u64);
                let mut deviations = Vec::new();
                let mut last: Option<(tokio::time::Instant, u16)> = None;
                // Skip the first second: sockets and tasks are still warming up.
                let measure_from = tokio::time::Instant::now() + Duration::from_secs(1);
                while let Ok(Ok((len, _))) =
                    tokio::time::timeout_at(end, socket.recv_from(&mut buf)).await
                {
                    let now = tokio::time::Instant::now();
                    // Only the PCMU stream counts: our RTCP goes to the RTP port + 1, which on
                    // loopback is often another caller's socket.
                    let Ok(p) = RtpPacket::parse(&buf[..len]) else { continue };
                    if p.header.payload_type != 0 {
                        continue;
                    }
                    if let Some((at, seq)) = last
                        && now >= measure_from
                    {
                        received += 1;
                        let gap = p.header.seq.diff(Seq(seq));
                        if gap > 1 {
                            lost += u64::from(gap as u16 - 1);
                        }
                        let interval = now.duration_since(at).as_micros() as i64;
                        if gap == 1 {
                            deviations.push((interval - 20_000).unsigned_abs());
                        }
                        if interval > 60_000 {
                            late += 1;
                        }
                    }
                    last = Some((now, p.header.seq.0));
                }
                (received, lost, late, deviations)
            }));
        }
    }
    let (mut received, mut lost, mut late, mut deviations) = (0, 0, 0, Vec::new());
    for t in tasks {
        let (r, l, lt, d) = t.await.unwrap();
        received += r;
        lost += l;
        late += lt;
        deviations.extend(d);
    }
    deviations.sort_unstable();
    let p99 = deviations.get(deviations.len() * 99 / 100).copied().unwrap_or(0);
    println!("{received} {lost} {late} {p99}");
}
