//! Concurrent media legs: how many calls one process carries with clean timing.
//!
//! For each N, the engine (this process) opens N legs; each plays a prompt to its caller and
//! records what the caller sends. The callers live in a child process (this binary again, with
//! `VOXIDE_BENCH_PEERS` set): one UDP socket per call sending 20 ms PCMU and timestamping the
//! packets it receives. Printed per N: engine CPU per call, the p99 deviation of our send
//! interval from 20 ms as the callers measured it, and packets lost or late (> 60 ms gap).
//! Then the relay mode: N/2 bridged pairs forwarding the callers' packets untouched. When
//! rtpengine is installed (Debian `rtpengine-daemon`), the same callers then stream through
//! rtpengine (userspace forwarding, `--table=-1`, set up over its ng control protocol), and the
//! CPU per leg of both relays is printed as a ratio.
//!
//!   cargo bench --profile release -p voxide-media --features net --bench legs
//!   LEGS="250 500 1000" SECONDS=10 cargo bench --profile release -p voxide-media --features net --bench legs
//!   MODES=relay LEGS="750" ...       # only the relay runs (MODES: calls relay rtpengine)
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
    let modes = std::env::var("MODES").unwrap_or_else(|_| "calls relay rtpengine".into());
    if modes.contains("calls") {
        println!(
            "media legs: prompt + recording per call, callers sending 20 ms PCMU, {seconds} s per run"
        );
        println!(
            "{:>6} {:>16} {:>16} {:>10} {:>10} {:>10}",
            "calls", "CPU/call", "send jitter p99", "received", "lost", "late"
        );
        for &n in &legs {
            runtime.block_on(run(n, seconds, Mode::Calls));
        }
    }
    let mut ours = Vec::new();
    if modes.contains("relay") {
        println!("\nrelay: bridged pairs forwarding the callers' packets untouched");
        println!(
            "{:>6} {:>16} {:>16} {:>10} {:>10} {:>10}",
            "legs", "CPU/leg", "relay jitter p99", "received", "lost", "late"
        );
        for &n in &legs {
            ours.push(runtime.block_on(run(n * 2, seconds, Mode::Relay)));
        }
    }
    if modes.contains("rtpengine") {
        if Command::new("rtpengine").arg("--version").output().is_err() {
            println!("\nrtpengine is not installed (Debian rtpengine-daemon): no comparison");
            return;
        }
        println!("\nrtpengine (userspace) relaying the same streams");
        println!(
            "{:>6} {:>16} {:>16} {:>10} {:>10} {:>10}",
            "legs", "CPU/leg", "relay jitter p99", "received", "lost", "late"
        );
        for (i, &n) in legs.iter().enumerate() {
            let theirs = runtime.block_on(run(n * 2, seconds, Mode::Rtpengine));
            if let (Some(Some(ours)), Some(theirs)) = (ours.get(i), theirs) {
                println!("{:>6} CPU per leg, voxide / rtpengine: {:.2}", "", ours / theirs);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each leg plays a prompt and records.
    Calls,
    /// Legs bridged in pairs.
    Relay,
    /// The callers stream through rtpengine instead of our legs.
    Rtpengine,
}

/// CPU time of a process (user + system; "self" for this one).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ = 100 on Linux
}

async fn run(n: usize, seconds: u64, mode: Mode) -> Option<f64> {
    // The callers: a child process with one socket per leg. It tells us its addresses, then
    // streams to the targets we give it.
    let exe = std::env::current_exe().unwrap();
    let talk = if mode == Mode::Calls { "call" } else { "relay" };
    let mut child = Command::new(exe)
        .env("VOXIDE_BENCH_PEERS", format!("{n} {seconds} {talk}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let peers: Vec<SocketAddr> =
        (0..n).map(|_| lines.next().unwrap().unwrap().parse().unwrap()).collect();
    let engine = MediaEngine::new(MediaConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        advertised_ip: "127.0.0.1".parse().unwrap(),
        port_min: 20_000,
        port_max: 60_000,
        rtp_timeout: Duration::from_secs(60),
    });
    let mut legs: Vec<Session> = Vec::with_capacity(n);
    let dir = tempfile::tempdir().unwrap();
    let mut recordings = Vec::new();
    let mut rtpengine = None;
    let targets: Vec<SocketAddr> = if mode == Mode::Rtpengine {
        match Rtpengine::relay(&peers).await {
            Ok((process, targets)) => {
                rtpengine = Some(process);
                targets
            }
            Err(e) => {
                println!("{n:>6} rtpengine: {e}");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    } else {
        for _ in 0..n {
            legs.push(engine.open().await.expect("open a leg"));
        }
        let prompt: Arc<[i16]> = (0..(seconds as usize + 5) * 8000)
            .map(|i| ((i as f64 * 0.39).sin() * 6000.0) as i16)
            .collect();
        for (i, (leg, peer)) in legs.iter().zip(&peers).enumerate() {
            leg.start(Negotiated {
                remote: Some(*peer),
                codec: Codec::Pcmu,
                pt: 0,
                telephone_event: Some(101),
                ptime_ms: 20,
                direction: Direction::SendRecv,
            });
            if mode == Mode::Calls {
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
        if mode == Mode::Relay {
            for pair in legs.chunks(2) {
                if let [a, b] = pair {
                    bridge(a, b);
                }
            }
        }
        legs.iter().map(Session::local_addr).collect()
    };
    for target in &targets {
        writeln!(stdin, "{target}").unwrap();
    }
    drop(stdin);
    // Measure the relay's CPU over the callers' run (they start once they have read all).
    let pid = rtpengine.as_ref().map_or_else(|| "self".to_owned(), |r| r.0.id().to_string());
    let start = (Instant::now(), cpu_time(&pid));
    let report = tokio::task::spawn_blocking(move || {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = child.wait();
        line
    })
    .await
    .unwrap();
    let (wall, cpu) = (start.0.elapsed(), cpu_time(&pid).saturating_sub(start.1));
    drop(rtpengine);
    drop(legs);
    // The legs' tasks close their sockets before the next run binds the same ports.
    while engine.legs_in_use() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fields: Vec<f64> = report.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let [received, lost, late, p99_us] = fields[..] else {
        println!("{n:>6} callers reported nothing: {report:?}");
        return None;
    };
    let per_leg = cpu.as_secs_f64() / wall.as_secs_f64() / n as f64 * 100.0;
    println!(
        "{n:>6} {:>13.3} %  {:>13.2} ms {received:>10} {lost:>10} {late:>10}",
        per_leg,
        p99_us / 1000.0
    );
    Some(per_leg)
}

/// An rtpengine daemon (userspace forwarding only), killed on drop.
struct Rtpengine(std::process::Child);

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Rtpengine {
    /// Starts rtpengine and sets up one call per pair of `peers` (2k talks to 2k+1) over the
    /// ng protocol; returns where each peer must send.
    async fn relay(peers: &[SocketAddr]) -> Result<(Rtpengine, Vec<SocketAddr>), String> {
        let ng_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=3",
                "--interface=127.0.0.1",
                "--table=-1",
                "--num-threads=2",
                "--port-min=20000",
                "--port-max=30000",
                &format!("--listen-ng=127.0.0.1:{ng_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start rtpengine: {e}"))?;
        let process = Rtpengine(child);
        let ng = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let to = SocketAddr::from(([127, 0, 0, 1], ng_port));
        let mut cookie = 0u64;
        let mut command = async |fields: &[(&str, &str)]| -> Result<String, String> {
            cookie += 1;
            let mut msg = format!("{cookie} d");
            for (k, v) in fields {
                msg.push_str(&format!("{}:{k}{}:{v}", k.len(), v.len()));
            }
            msg.push('e');
            let mut buf = vec![0u8; 65536];
            // Retried while it starts up (and in case a datagram is lost).
            for _ in 0..50 {
                let _ = ng.send_to(msg.as_bytes(), to).await;
                let got =
                    tokio::time::timeout(Duration::from_millis(200), ng.recv_from(&mut buf)).await;
                match got {
                    Ok(Ok((len, _))) => {
                        let reply = String::from_utf8_lossy(&buf[..len]).into_owned();
                        if reply.starts_with(&format!("{cookie} ")) {
                            return Ok(reply);
                        }
                    }
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(_) => {}
                }
            }
            Err("rtpengine does not answer on its ng port".into())
        };
        command(&[("command", "ping")]).await?;
        let sdp = |addr: SocketAddr| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
                 m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
                ip = addr.ip(),
                port = addr.port()
            )
        };
        // The port in the SDP rtpengine returns: where the other side must send.
        let port_of = |reply: &str| -> Result<SocketAddr, String> {
            let port = reply
                .split("m=audio ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| format!("unexpected rtpengine reply: {reply}"))?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        };
        let mut targets = vec![SocketAddr::from(([127, 0, 0, 1], 9)); peers.len()];
        for (i, pair) in peers.chunks(2).enumerate() {
            let [a, b] = pair else { continue };
            let call_id = format!("bench-{i}");
            let offer = command(&[
                ("call-id", &call_id),
                ("command", "offer"),
                ("from-tag", "a"),
                ("sdp", &sdp(*a)),
            ])
            .await?;
            let answer = command(&[
                ("call-id", &call_id),
                ("command", "answer"),
                ("from-tag", "a"),
                ("sdp", &sdp(*b)),
                ("to-tag", "b"),
            ])
            .await?;
            targets[2 * i + 1] = port_of(&offer)?;
            targets[2 * i] = port_of(&answer)?;
        }
        Ok((process, targets))
    }
}

/// The callers' process: one socket per leg; sends 20 ms PCMU for `seconds` and times
/// what comes back. In relay mode, leg 2k's caller talks and leg 2k+1's caller listens.
async fn peers(spec: String) {
    let mut parts = spec.split_whitespace();
    let n: usize = parts.next().unwrap().parse().unwrap();
    let seconds: u64 = parts.next().unwrap().parse().unwrap();
    let relay = parts.next() == Some("relay");
    let mut sockets = Vec::with_capacity(n);
    let mut out = std::io::stdout().lock();
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        writeln!(out, "{}", s.local_addr().unwrap()).unwrap();
        sockets.push(Arc::new(s));
    }
    out.flush().unwrap();
    drop(out);
    let stdin = std::io::stdin();
    let targets: Vec<SocketAddr> =
        stdin.lock().lines().take(n).map(|l| l.unwrap().parse().unwrap()).collect();
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
