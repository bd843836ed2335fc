//! `vox serve` on loopback, driven by sipp (Debian `sip-tester`; scripts/test.sh installs it)
//! and by raw sockets replaying the RFC 4475 torture messages.

// Test support code: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running `vox serve`; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// With `--http`: where it listens.
    http: Option<SocketAddr>,
    /// Its data directory (store, keys, recordings, log); taken by [`Server::kill_9`].
    data: Option<tempfile::TempDir>,
}

impl Server {
    fn data(&self) -> &Path {
        self.data.as_ref().expect("the server's data directory").path()
    }

    /// SIGKILL, as a crash would: nothing is flushed or shut down. Returns the data directory
    /// for a restart.
    fn kill_9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.take().expect("the server's data directory")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Server {
    serve_with(&[])
}

fn serve_with(extra: &[&str]) -> Server {
    serve_config("", extra)
}

/// `vox serve` with routes `hello` and `ivr*` plus `more` config (TOML appended).
fn serve_config(more: &str, extra: &[&str]) -> Server {
    serve_on("127.0.0.1:0", more, extra)
}

/// `vox serve` listening on `listen`.
fn serve_on(listen: &str, more: &str, extra: &[&str]) -> Server {
    serve_in(tempfile::tempdir().unwrap(), listen, more, extra, &[])
}

/// `vox serve` with its data (store, keys, recordings) in `data`, and `env` set.
fn serve_in(
    data: tempfile::TempDir,
    listen: &str,
    more: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let config = data.path().join("voxide.toml");
    let flows = repo().join("sample-flows");
    std::fs::write(
        &config,
        format!(
            "[[routes]]\nmatch = \"hello\"\nflow = {:?}\n\n[[routes]]\nmatch = \"ivr*\"\nflow = {:?}\n\n{more}",
            flows.join("hello"),
            flows.join("ivr-menu")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vox"))
        .args(["serve", "--sip", listen, "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data.path())
        .args(extra)
        // The control API on a free port unless the test picks one (the default, 8080, would
        // collide between tests running at once).
        .args(if extra.contains(&"--http") { &[][..] } else { &["--http", "127.0.0.1:0"][..] })
        .stdout(Stdio::piped())
        // Its log (info) goes to a file in the data directory, for tests that read it.
        .env("VOX_LOG", "info")
        .envs(env.iter().copied())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data.path().join("vox.log"))
                .unwrap(),
        )
        .spawn()
        .expect("start vox serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // The SIP and HTTP addresses come before the RTP line, the last one at start.
    let (mut addr, mut http) = (None, None);
    loop {
        let Some(line) = lines.next() else {
            let log = std::fs::read_to_string(data.path().join("vox.log")).unwrap_or_default();
            panic!("vox serve exited before listening; its log:\n{log}");
        };
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("SIP listening on udp ") {
            addr = Some(a.parse().unwrap());
        } else if let Some(a) = line.strip_prefix("HTTP listening on ") {
            http = Some(a.split(' ').next().unwrap().parse().unwrap());
        } else if line.starts_with("RTP ports ") {
            break;
        }
    }
    let addr = addr.expect("vox serve printed no SIP address");
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr, http, data: Some(data) }
}

#[test]
fn sigterm_drains_new_calls_get_503_and_calls_in_progress_are_hung_up() {
    let mut server = serve_with(&["--drain-timeout", "2"]);
    // ivr-menu talks for ~40 s before it would hang up by itself.
    let scenario = repo().join("cli/tests/sipp/uac-flow-hangs-up.xml");
    let long = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args(["-s", "ivr-menu", "-m", "1", "-l", "1", "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .args(["-timeout", "20", "-timeout_error", "-nostdin"])
        .arg(server.addr.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("sipp is not installed: run scripts/test.sh, which installs Debian's sip-tester");
    std::thread::sleep(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let status =
        Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = sipp(&server, "uac-expect-503.xml", "hello", &[]);
    assert!(ok, "a new call while draining gets 503:\n{out}");
    // The call in progress receives our BYE once the 2 s drain deadline passes.
    let long = long.wait_with_output().unwrap();
    assert!(long.status.success(), "the call in progress was hung up cleanly");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "vox serve exits cleanly: {exit:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "shutdown took {:?}", started.elapsed());
}

/// A port free for both UDP and TCP now (sipp's TCP mode binds the number given for UDP).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs one sipp call with `scenario` to `service`; returns sipp's exit status and output.
fn sipp(server: &Server, scenario: &str, service: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["-s", service];
    args.extend_from_slice(extra);
    run_sipp(scenario, free_port(), Some(server.addr), 20, &args)
}

/// Runs sipp with `scenario` from local UDP `port` for one call, as a client of `target` or,
/// without one, as the server side (a phone waiting for Voxide's INVITE). Gives up after
/// `timeout_s`. Returns whether the scenario passed, and sipp's output with its error log.
fn run_sipp(
    scenario: &str,
    port: u16,
    target: Option<SocketAddr>,
    timeout_s: u32,
    extra: &[&str],
) -> (bool, String) {
    let logs = tempfile::tempdir().unwrap();
    run_sipp_in(logs.path(), scenario, port, target, timeout_s, extra)
}

/// [`run_sipp`] in `dir` (where sipp writes its logs and finds files a scenario names).
fn run_sipp_in(
    dir: &Path,
    scenario: &str,
    port: u16,
    target: Option<SocketAddr>,
    timeout_s: u32,
    extra: &[&str],
) -> (bool, String) {
    let scenario = repo().join("cli/tests/sipp").join(scenario);
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(&scenario)
        .args(["-m", "1", "-l", "1", "-p", &port.to_string()])
        .args(["-i", if target.is_some_and(|t| t.is_ipv6()) { "::1" } else { "127.0.0.1" }])
        .args(["-timeout", &timeout_s.to_string(), "-timeout_error", "-nostdin", "-trace_err"])
        .args(extra);
    if let Some(target) = target {
        cmd.arg(target.to_string());
    }
    let out = cmd
        .output()
        .expect("sipp is not installed: run scripts/test.sh, which installs Debian's sip-tester");
    let mut text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            text += &std::fs::read_to_string(entry.path()).unwrap_or_default();
        }
    }
    (out.status.success(), text)
}

/// A phone (sipp) on `port` playing `scenario`, and a caller (sipp) calling `service` with
/// `caller` scenario once the phone listens; both must pass.
fn call_phone(
    server: &Server,
    phone: &str,
    port: u16,
    caller: &str,
    service: &str,
    caller_extra: &[&str],
) {
    let phone = phone.to_owned();
    let answering = std::thread::spawn(move || run_sipp(&phone, port, None, 60, &[]));
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec!["-s", service];
    args.extend_from_slice(caller_extra);
    let (ok, out) = run_sipp(caller, free_port(), Some(server.addr), 60, &args);
    let (phone_ok, phone_out) = answering.join().unwrap();
    assert!(ok, "caller ({caller} to {service}) failed:\n{out}\nphone:\n{phone_out}");
    assert!(phone_ok, "phone failed:\n{phone_out}");
}

#[test]
fn sipp_calls_hello_over_udp_and_tcp_and_the_flow_hangs_up() {
    let server = serve();
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "hello", &[]);
    assert!(ok, "UDP call failed:\n{out}");
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "hello", &["-t", "t1"]);
    assert!(ok, "TCP call failed:\n{out}");
    // Routed by the config file, the calls are the config tenant's ("default", whose key the
    // first start wrote): each has a CDR and its events.
    let cdrs = vox_until(&server, &["cdrs", "--number", "hello"], 15, |c| len(c) == 2);
    for cdr in cdrs.as_array().unwrap() {
        assert_eq!(
            (cdr["flow"].as_str(), cdr["outcome"].as_str(), cdr["direction"].as_str()),
            (Some("hello"), Some("completed"), Some("inbound")),
            "{cdr}"
        );
        assert_eq!(
            call_events(&server, cdr["id"].as_str().unwrap()),
            ["call.ringing", "call.answered", "call.completed"]
        );
    }
}

/// The kinds of the stored events of call `id`, oldest first.
fn call_events(server: &Server, id: &str) -> Vec<String> {
    let events = vox_json(server, &["events", "--limit", "1000"]);
    let mut events: Vec<&serde_json::Value> =
        events.as_array().unwrap().iter().filter(|e| e["call_id"] == id).collect();
    events.sort_by_key(|e| e["seq"].as_i64());
    events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn ipv6_calls_over_udp_and_tcp() {
    let server = serve_on("[::1]:0", "", &[]);
    assert!(server.addr.is_ipv6());
    for transport in [&["-t", "u1"][..], &["-t", "t1"]] {
        let mut args = vec!["-s", "hello"];
        args.extend_from_slice(transport);
        let (ok, out) =
            run_sipp("uac-flow-hangs-up.xml", free_port(), Some(server.addr), 20, &args);
        assert!(ok, "IPv6 {transport:?}:\n{out}");
    }
}

#[test]
fn caller_hangs_up_while_the_flow_is_talking() {
    let server = serve();
    // ivr-menu's greeting lasts ~6 s; the caller hangs up after 1 s and gets 200 to its BYE.
    let (ok, out) = sipp(&server, "uac-caller-hangs-up.xml", "ivr-menu", &[]);
    assert!(ok, "{out}");
}

#[test]
fn unknown_numbers_get_404() {
    let server = serve();
    let (ok, out) = sipp(&server, "uac-expect-404.xml", "nobody", &[]);
    assert!(ok, "{out}");
}

/// (name, file, reply status the RFC asks for or None for no reply) from INDEX.tsv, limited to
/// what `vox serve` answers at the transport: malformed requests, OPTIONS and unknown URIs.
fn torture() -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("sip/tests/data/rfc4475");
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    index
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[2].to_owned(), std::fs::read(dir.join(cols[0])).unwrap())
        })
        .collect()
}

/// The replies a torture message gets: every reply until the line goes quiet for 250 ms.
fn replies(recv: &mut dyn FnMut(&mut [u8]) -> std::io::Result<usize>) -> Vec<u16> {
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 65_535];
    while let Ok(n) = recv(&mut buf) {
        if n == 0 {
            break;
        }
        // A TCP read may hold several responses back to back.
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        codes
            .extend(text.split("SIP/2.0 ").skip(1).filter_map(|r| r.get(..3)?.parse::<u16>().ok()));
    }
    codes
}

/// The RFC's named answers, as the first reply each message gets from `vox serve`.
const WANT: &[(&str, u16)] = &[
    ("intmeth", 501),
    ("esc02", 501),
    ("badinv01", 400),
    ("ncl", 400),
    ("scalar02", 400),
    ("quotbal", 400),
    ("ltgtruri", 400),
    ("lwsruri", 400),
    ("lwsstart", 400),
    ("trws", 400),
    ("escruri", 400),
    ("regbadct", 400),
    ("badaspec", 400),
    ("badvers", 505),
    ("mismatch01", 400),
    ("mismatch02", 400),
    ("badbranch", 400),
    ("insuf", 400),
    ("unkscm", 416),
    ("novelsc", 416),
    ("bext01", 420),
    ("invut", 415),
    ("multi01", 400),
    ("mcl01", 400),
    ("zeromf", 200),
];

/// Valid messages must be processed, not refused as malformed (their answer depends on the
/// method and route: 100 then 404 for an INVITE to an unknown user, 481 for a stray
/// re-INVITE, 405 for REGISTER …).
const VALID: &[&str] = &[
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
];

/// Over UDP, a message that reuses the Via branch and sent-by of an earlier one (RFC 4475's
/// files share `z9hG4bKkdjuw`) is, correctly, a retransmission of that transaction while it
/// lingers (Timer J), and its answer goes to the earlier sender; those are not checked there.
const SHARED_BRANCH: &[&str] = &["novelsc", "cparam02", "regescrt"];

fn check(transport: &str, answered: &[(String, Vec<u16>)]) {
    let first =
        |name: &str| answered.iter().find(|(n, _)| n == name).and_then(|(_, c)| c.first().copied());
    for (name, code) in WANT {
        if transport == "UDP" && SHARED_BRANCH.contains(name) {
            continue;
        }
        assert_eq!(first(name), Some(*code), "{name} over {transport}: {answered:?}");
    }
    for name in VALID {
        let got = first(name);
        assert!(got.is_some_and(|c| c != 400 && c != 505), "{name} over {transport}: {got:?}");
    }
    // Broken or unsolicited responses are dropped, never answered.
    for name in ["unreason", "noreason", "scalarlg", "bigcode", "bcast"] {
        assert_eq!(first(name), None, "{name} over {transport}");
    }
}

#[test]
fn torture_messages_over_udp_get_the_rfc_answers_and_the_server_keeps_serving() {
    let server = serve();
    let mut answered = Vec::new();
    for (name, bytes) in torture() {
        // A socket per message, so late replies (a 404 after a 100) cannot be mixed up.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
        udp.send_to(&bytes, server.addr).unwrap();
        // Replies go to the source address (rport-style symmetric response routing).
        answered.push((name, replies(&mut |b| udp.recv_from(b).map(|(n, _)| n))));
    }
    check("UDP", &answered);
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "hello", &[]);
    assert!(ok, "server stopped serving after the torture messages:\n{out}");
}

#[test]
fn torture_messages_over_tcp_get_the_rfc_answers_and_the_server_keeps_serving() {
    let server = serve();
    let mut answered = Vec::new();
    for (name, bytes) in torture() {
        let mut conn = TcpStream::connect(server.addr).expect("TCP connect");
        conn.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
        conn.write_all(&bytes).unwrap();
        answered.push((name, replies(&mut |b| conn.read(b))));
    }
    check("TCP", &answered);
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "hello", &["-t", "t1"]);
    assert!(ok, "server stopped serving TCP after the torture messages:\n{out}");
}

#[test]
fn ivr_menu_dial_branch_reaches_the_sales_phone_answered_busy_and_no_answer() {
    // One sales phone per case; the caller presses 1 (SIP INFO) to reach sales.
    let cases = [
        ("uas-answer-then-bye.xml", "answered"),
        ("uas-busy.xml", "busy"),
        ("uas-ring-until-cancel.xml", "no-answer"),
    ];
    let ports: Vec<u16> = cases.iter().map(|_| free_port()).collect();
    let mut config = String::new();
    for ((_, name), port) in cases.iter().zip(&ports) {
        config += &format!(
            "[[routes]]\nmatch = \"sales-{name}\"\nflow = {:?}\n\
             vars = {{ sales = \"sip:sales@127.0.0.1:{port}\", sales_ring_ms = \"2000\" }}\n\n",
            repo().join("sample-flows/ivr-menu")
        );
    }
    let server = serve_config(&config, &[]);
    std::thread::scope(|scope| {
        for ((phone, name), port) in cases.iter().zip(&ports) {
            let server = &server;
            scope.spawn(move || {
                // answered: bridged until the phone hangs up, then the flow hangs up the
                // caller; busy (486, ACKed) and no answer (CANCEL after 2 s, 487 ACKed): the
                // flow falls back to voicemail and ends the call.
                let service = format!("sales-{name}");
                call_phone(
                    server,
                    phone,
                    *port,
                    "uac-press-digit.xml",
                    &service,
                    &["-key", "digit", "1"],
                );
            });
        }
    });
}

const ALICE: &str = "[sip]\n\
    digest_algorithms = [\"MD5\", \"SHA-256\"]  # sipp reads only the first challenge\n\
    [[sip.users]]\nuser = \"alice\"\npassword = \"wonderland\"\n";

#[test]
fn register_with_digest_then_calls_to_the_registered_user_ring_her_phone() {
    let server = serve_config(ALICE, &[]);
    let phone = free_port();
    // A wrong password is refused (the scenario expects 200, so sipp fails) …
    let (ok, _) = run_sipp(
        "uac-register.xml",
        phone,
        Some(server.addr),
        10,
        &["-s", "alice", "-au", "alice", "-ap", "wrong"],
    );
    assert!(!ok, "a wrong password registered");
    // … the right one registers the phone's address.
    let (ok, out) = run_sipp(
        "uac-register.xml",
        phone,
        Some(server.addr),
        10,
        &["-s", "alice", "-au", "alice", "-ap", "wonderland"],
    );
    assert!(ok, "REGISTER with digest auth failed:\n{out}");
    // A call to alice rings her phone, is bridged, and ends when she hangs up.
    call_phone(&server, "uas-answer-then-bye.xml", phone, "uac-flow-hangs-up.xml", "alice", &[]);
    // The caller gives up while her phone rings: the CANCEL reaches her phone too.
    call_phone(
        &server,
        "uas-ring-until-cancel.xml",
        phone,
        "uac-cancel-while-ringing.xml",
        "alice",
        &[],
    );
    // No flow ran, yet both calls are the config tenant's, with CDRs and events.
    let cdrs = vox_until(&server, &["cdrs", "--number", "alice"], 15, |c| len(c) == 2);
    let mut outcomes: Vec<&str> =
        cdrs.as_array().unwrap().iter().map(|c| c["outcome"].as_str().unwrap()).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["completed", "hung-up"], "{cdrs}");
    for cdr in cdrs.as_array().unwrap() {
        let kinds = call_events(&server, cdr["id"].as_str().unwrap());
        let expected: &[&str] = if cdr["outcome"] == "completed" {
            &["call.ringing", "call.answered", "call.completed"]
        } else {
            &["call.ringing", "call.completed"]
        };
        assert_eq!(kinds, expected, "{cdr}");
    }
}

#[test]
fn calls_complete_over_udp_with_ten_percent_packet_loss() {
    let server = serve();
    let logs = tempfile::tempdir().unwrap();
    let scenario = repo().join("cli/tests/sipp/uac-flow-hangs-up.xml");
    // sipp drops 10% of the messages it sends and receives: both sides must retransmit.
    let status = Command::new("sipp")
        .current_dir(logs.path())
        .arg("-sf")
        .arg(&scenario)
        .args(["-s", "hello", "-m", "30", "-l", "10", "-r", "10", "-lost", "10"])
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-timeout", "120", "-timeout_error", "-nostdin", "-trace_stat", "-stf", "stat.csv"])
        .arg(server.addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let stats = std::fs::read_to_string(logs.path().join("stat.csv")).unwrap();
    let rows: Vec<Vec<&str>> = stats.lines().map(|l| l.split(';').collect()).collect();
    let get = |name: &str| -> u64 {
        let col = rows[0].iter().position(|h| *h == name).unwrap();
        rows.last().unwrap()[col].parse().unwrap()
    };
    assert_eq!(get("SuccessfulCall(C)"), 30, "{stats}");
    assert_eq!(get("FailedCall(C)"), 0);
    assert!(get("Retransmissions(C)") > 0, "no message was lost: the test proved nothing");
    assert!(status.success());
}

#[test]
fn ivr_menu_operator_option_blind_transfers_the_caller_with_refer() {
    let config = format!(
        "[[routes]]\nmatch = \"main\"\nflow = {:?}\nvars = {{ operator = \"sip:operator@pbx.test\" }}\n",
        repo().join("sample-flows/ivr-menu")
    );
    let server = serve_config(&config, &[]);
    // Press 0: the flow transfers; the caller gets a REFER to the operator, accepts it, and
    // Voxide leaves the call with a BYE.
    let (ok, out) = run_sipp(
        "uac-press-digit-accept-transfer.xml",
        free_port(),
        Some(server.addr),
        30,
        &["-s", "main", "-key", "digit", "0", "-key", "refer_to", "sip:operator@pbx.test"],
    );
    assert!(ok, "{out}");
}

#[test]
fn rfc4733_digit_over_rtp_takes_ivr_menu_to_sales() {
    // The caller presses 1 as RFC 4733 telephone-events (sipp's bundled pcap, PT 101) instead
    // of SIP INFO: the media leg decodes it and the flow dials the sales phone, which answers.
    let sales = free_port();
    let config = format!(
        "[[routes]]\nmatch = \"main\"\nflow = {:?}\nvars = {{ sales = \"sip:sales@127.0.0.1:{sales}\" }}\n",
        repo().join("sample-flows/ivr-menu")
    );
    let server = serve_config(&config, &[]);
    let pcap = "/usr/share/sip-tester/dtmf_2833_1.pcap";
    assert!(Path::new(pcap).is_file(), "{pcap} comes with Debian's sip-tester");
    call_phone(
        &server,
        "uas-answer-then-bye.xml",
        sales,
        "uac-rtp-dtmf.xml",
        "main",
        &["-key", "dtmf_pcap", pcap, "-mp", &free_port().to_string()],
    );
}

/// `seconds` of a test signal: a chirp from 300 Hz to 3 kHz with a slow tremolo, loud enough
/// to count as speech, distinctive enough to correlate.
fn chirp(seconds: f64) -> Vec<i16> {
    let n = (8000.0 * seconds) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f = 300.0 + 2700.0 * t / seconds;
            phase += 2.0 * std::f64::consts::PI * f / 8000.0;
            let tremolo = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            (9000.0 * tremolo * phase.sin()) as i16
        })
        .collect()
}

/// A µ-law WAV file (format 7), what sipp's rtp_stream plays as PCMU.
fn ulaw_wav(samples: &[i16]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().map(|s| voxide_media::g711::ulaw_encode(*s)).collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(4 + 26 + 8 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&18u32.to_le_bytes());
    // format 7 (µ-law), mono, 8000 Hz, 8000 B/s, block 1, 8 bits, cbSize 0
    for v in [7u16, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&8000u32.to_le_bytes());
    for v in [1u16, 8, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// The best normalised cross-correlation of `b` against `a` over lags up to `max_lag`.
fn correlation(a: &[i16], b: &[i16], max_lag: usize) -> f64 {
    let energy = |x: &[i16]| x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>().sqrt();
    (0..=max_lag)
        .flat_map(|lag| [(lag, 0), (0, lag)])
        .map(|(la, lb)| {
            let (x, y) = (&a[la.min(a.len())..], &b[lb.min(b.len())..]);
            let n = x.len().min(y.len());
            let dot: f64 =
                x[..n].iter().zip(&y[..n]).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum();
            dot / (energy(&x[..n]) * energy(&y[..n])).max(1.0)
        })
        .fold(0.0, f64::max)
}

#[test]
fn voicemail_records_what_the_caller_sends_to_a_wav_that_matches_it() {
    let config = format!(
        "[[routes]]\nmatch = \"vm\"\nflow = {:?}\nvars = {{ greeting = \"Leave a message.\" }}\n",
        repo().join("sample-flows/voicemail")
    );
    let server = serve_config(&config, &[]);
    let sent = chirp(3.0);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("audio.wav"), ulaw_wav(&sent)).unwrap();
    // The greeting and the beep take under 3 s; then 3 s of signal, then 5 s of silence end
    // the recording and the flow says goodbye.
    let media_port = free_port().to_string();
    let (ok, out) = run_sipp_in(
        work.path(),
        "uac-send-audio.xml",
        free_port(),
        Some(server.addr),
        60,
        &["-s", "vm", "-mp", &media_port],
    );
    assert!(ok, "{out}");
    let dir = server.data().join("recordings");
    let wavs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    assert_eq!(wavs.len(), 1, "one recording in {}", dir.display());
    let recorded = voxide_media::wav::read_wav(&std::fs::read(&wavs[0]).unwrap()).unwrap();
    assert_eq!(recorded.sample_rate, 8000);
    let ms = recorded.samples.len() as u64 / 8;
    assert!((2800..=3300).contains(&ms), "recorded {ms} ms of a 3000 ms message");
    let r = correlation(&sent, &recorded.samples, 1600);
    eprintln!("recorded {ms} ms of a 3000 ms message; correlation with what was sent {r:.3}");
    assert!(r > 0.9, "the recording does not match what was sent (correlation {r:.3})");
    // The sidecar indexes it with its duration.
    let sidecar = std::fs::read_to_string(wavs[0].with_extension("json")).unwrap();
    assert!(sidecar.contains(&format!("\"duration_ms\":{ms}")), "{sidecar}");
}

/// A baresip configuration directory for `user` (password "wonderland") registering with
/// `server`, sending a sine of `hz` with `codec` ("g711" or "opus") and dumping what it decodes
/// to `*-dec.wav` files there.
fn baresip_phone(
    server: SocketAddr,
    user: &str,
    hz: u32,
    codec: &str,
    extra_account: &str,
) -> tempfile::TempDir {
    let phone = tempfile::tempdir().unwrap();
    let dir = phone.path();
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:0\nnet_interface 127.0.0.1\n\
             audio_player aubridge,speaker\naudio_source ausine,{hz}\naudio_alert aubridge,speaker\n\
             ausrc_srate 48000\nausrc_channels 2\nmodule_path /usr/lib/baresip/modules\n\
             module stdio.so\nmodule {codec}.so\nmodule ausine.so\nmodule aubridge.so\n\
             module sndfile.so\nmodule rtcpsummary.so\nmodule_app account.so\nmodule_app menu.so\n\
             snd_path {}\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:{user}@{server}>;auth_pass=wonderland;regint=60{extra_account}\n"),
    )
    .unwrap();
    phone
}

/// Runs baresip with `dir` for `seconds`, executing `commands`; returns its output.
fn baresip(dir: &Path, commands: &[&str], seconds: u32) -> String {
    let mut cmd = Command::new("baresip");
    cmd.arg("-f").arg(dir);
    for c in commands {
        cmd.args(["-e", c]);
    }
    let out = cmd
        .args(["-t", &seconds.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("baresip is not installed: run scripts/test.sh (Debian baresip-core)");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The decoded audio baresip dumped in `dir`, and its sample rate.
fn baresip_heard(dir: &Path) -> (Vec<i16>, u32) {
    let decoded = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip's sndfile dump of the decoded audio");
    let wav = voxide_media::wav::read_wav(&std::fs::read(decoded).unwrap()).unwrap();
    (wav.samples, wav.sample_rate)
}

/// (packets received, packets lost "local,remote") from baresip's rtcpsummary line.
fn rtcp_summary(text: &str) -> (u64, String) {
    let summary = text.lines().find(|l| l.contains("EX=BareSip")).unwrap_or_default();
    let field = |name: &str| {
        summary.split(';').find_map(|f| f.strip_prefix(&format!("{name}="))).unwrap_or_default()
    };
    (field("PR").parse().unwrap_or(0), field("PL").to_owned())
}

/// baresip 1.0's digest code gives up on a challenge list that contains SHA-256 (ENOSYS), so
/// servers it registers with offer MD5 only.
const BARESIP_USERS: &str = "[sip]\ndigest_algorithms = [\"MD5\"]\n\
    [[sip.users]]\nuser = \"alice\"\npassword = \"wonderland\"\n\
    [[sip.users]]\nuser = \"bob\"\npassword = \"wonderland\"\n";

#[test]
fn baresip_registers_calls_hello_and_hears_it() {
    let server = serve_config(BARESIP_USERS, &[]);
    let phone = baresip_phone(server.addr, "alice", 440, "g711", "");
    let text = baresip(phone.path(), &[&format!("/dial sip:hello@{}", server.addr)], 6);
    assert!(text.contains("200 OK (Voxide"), "baresip did not register:\n{text}");
    assert!(text.contains("Call established"), "{text}");
    // rtcpsummary: packets received (PR) > 0, none lost (PL=0,0).
    let (received, lost) = rtcp_summary(&text);
    assert!(received > 0, "no RTP reached baresip:\n{text}");
    assert_eq!(lost, "0,0", "packets lost");
    // What baresip decoded is the greeting: speech, not silence.
    let (audio, _) = baresip_heard(phone.path());
    let loud = audio.iter().filter(|s| s.unsigned_abs() > 2000).count();
    eprintln!("baresip: {received} packets, decoded {} samples, {loud} loud", audio.len());
    assert!(audio.len() > 8000, "under a second of audio decoded");
    assert!(loud > audio.len() / 50, "baresip heard silence");
}

/// The frequency of a steady tone, from its zero crossings (the loud part only).
fn tone_hz((samples, rate): (Vec<i16>, u32)) -> f64 {
    let loud: Vec<i16> = samples.iter().copied().filter(|s| s.unsigned_abs() > 500).collect();
    let crossings = loud.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (loud.len() as f64 / f64::from(rate))
}

#[test]
fn two_baresip_phones_bridged_through_voxide_hear_each_other() {
    bridged_baresip_phones("g711", "g711");
}

/// Alice speaks Opus only, Bob G.711 only: the bridge decodes and re-encodes each way.
#[test]
fn an_opus_phone_and_a_g711_phone_bridged_through_voxide_hear_each_other() {
    bridged_baresip_phones("opus", "g711");
}

/// Both speak Opus: the dialled leg is offered the caller's codec first, and takes it.
#[test]
fn two_opus_phones_bridged_through_voxide_hear_each_other() {
    bridged_baresip_phones("opus", "opus");
}

fn bridged_baresip_phones(alice_codec: &str, bob_codec: &str) {
    let server = serve_config(BARESIP_USERS, &[]);
    // Bob registers and answers automatically, sending 880 Hz; Alice calls him, sending 440 Hz.
    // Bob's phone stops (hangs up) first, so Alice gets the BYE and prints her RTCP summary.
    let bob = baresip_phone(server.addr, "bob", 880, bob_codec, ";answermode=auto");
    let bob_dir = bob.path().to_owned();
    let bob_run = std::thread::spawn(move || baresip(&bob_dir, &[], 8));
    let registered = ["SIP user registered", "bob"];
    if let Err(log) = log_line_within(&server, &registered, Duration::from_secs(6)) {
        panic!("bob never registered; bob:\n{}\nserver log:\n{log}", bob_run.join().unwrap());
    }
    let alice = baresip_phone(server.addr, "alice", 440, alice_codec, "");
    let alice_text = baresip(alice.path(), &[&format!("/dial sip:bob@{}", server.addr)], 10);
    let bob_text = bob_run.join().unwrap();
    assert!(alice_text.contains("Call established"), "alice:\n{alice_text}");
    assert!(bob_text.contains("incoming rtp for 'audio' established"), "bob:\n{bob_text}");
    assert!(alice_text.contains("incoming rtp for 'audio' established"), "alice:\n{alice_text}");
    // Alice's RTCP summary counts the packets she got and lost, from our reports and hers
    // (each leg reports on its own hop; relayed packets are renumbered onto her leg's stream).
    let (received, lost) = rtcp_summary(&alice_text);
    assert!(received > 100, "alice's RTCP summary: {received} packets:\n{alice_text}");
    assert_eq!(lost, "0,0", "alice lost packets");
    // Each hears the other's tone, intact (relayed packet for packet when the codecs match).
    let (at_alice, at_bob) =
        (tone_hz(baresip_heard(alice.path())), tone_hz(baresip_heard(bob.path())));
    eprintln!(
        "{alice_codec}/{bob_codec}: alice hears {at_alice:.0} Hz, bob hears {at_bob:.0} Hz; alice's RTCP: {received} packets, lost {lost}"
    );
    // (baresip's 48 kHz sine comes out ~2% sharp after its own resampling, on both sides.)
    assert!(
        (at_alice / 880.0 - 1.0).abs() < 0.05,
        "alice hears {at_alice} Hz, not bob's 880 Hz:\n{alice_text}\nbob:\n{bob_text}"
    );
    assert!(
        (at_bob / 440.0 - 1.0).abs() < 0.05,
        "bob hears {at_bob} Hz, not alice's 440 Hz:\n{bob_text}\nalice:\n{alice_text}"
    );
}

#[test]
fn conference_callers_meet_and_the_last_one_is_told_it_is_over() {
    let config = format!(
        "[[routes]]\nmatch = \"meet\"\nflow = {:?}\n",
        repo().join("sample-flows/conference")
    );
    let server = serve_config(&config, &[]);
    // The first caller stays 6 s (greeting, then the room) and hangs up; the second, in the
    // room with them, is then alone: the flow says the meeting is over and hangs up on them.
    let first = {
        let addr = server.addr;
        std::thread::spawn(move || {
            run_sipp(
                "uac-stay-then-hang-up.xml",
                free_port(),
                Some(addr),
                30,
                &["-s", "meet", "-d", "6000"],
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) =
        run_sipp("uac-flow-hangs-up.xml", free_port(), Some(server.addr), 30, &["-s", "meet"]);
    let (first_ok, first_out) = first.join().unwrap();
    assert!(first_ok, "first caller:\n{first_out}");
    assert!(ok, "the second caller was not told the meeting is over:\n{out}");
}

#[test]
fn support_queue_caller_is_taken_by_an_agent_and_both_calls_end_cleanly() {
    let config = format!(
        "[[routes]]\nmatch = \"main\"\nflow = {:?}\n\n[[routes]]\nmatch = \"agent\"\nflow = {:?}\n",
        repo().join("sample-flows/ivr-menu"),
        repo().join("sample-flows/agent")
    );
    let server = serve_config(&config, &[]);
    // A caller presses 2 and waits in the support queue with hold music…
    let started = std::time::Instant::now();
    let caller = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let args = ["-s", "main", "-key", "digit", "2"];
            let result = run_sipp("uac-press-digit.xml", free_port(), Some(addr), 60, &args);
            (result, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    // … an agent calls in, is bridged to them, talks 3 s and hangs up; the caller's flow then
    // ends the call (the caller gets a BYE).
    let (ok, out) = run_sipp(
        "uac-stay-then-hang-up.xml",
        free_port(),
        Some(server.addr),
        30,
        &["-s", "agent", "-d", "6000"],
    );
    assert!(ok, "agent:\n{out}");
    let ((caller_ok, caller_out), lasted) = caller.join().unwrap();
    assert!(caller_ok, "the queued caller's call did not end cleanly:\n{caller_out}");
    // The caller's call ended after the agent hung up (4 s + 6 s), not when it was queued.
    assert!(lasted >= Duration::from_secs(9), "the caller was hung up after {lasted:?}");
}

/// One HTTP/1.1 request to `addr`; the raw response.
fn http_get(addr: SocketAddr, request: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

#[test]
fn http_health_and_metrics_for_operators() {
    let server = serve_with(&["--http", "127.0.0.1:0"]);
    let http = server.http.expect("--http prints its address");
    let health = http_get(http, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("ok\n"), "{health}");
    // A call raises nothing permanent; the counters are there and parse.
    let (ok, out) = sipp(&server, "uac-expect-404.xml", "nobody", &[]);
    assert!(ok, "{out}");
    let metrics = http_get(http, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    for name in [
        "voxide_sip_active_calls",
        "voxide_sip_rejected_total",
        "voxide_media_legs",
        "voxide_flows_loaded",
        "voxide_dtmf_shed_total",
    ] {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_default();
        assert!(
            line.split(' ').nth(1).is_some_and(|v| v.parse::<u64>().is_ok()),
            "{name}: {metrics}"
        );
    }
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("voxide_sip_rejected_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rejected >= 1, "the 404 counts as refused: {metrics}");
    let loaded = metrics.lines().find_map(|l| l.strip_prefix("voxide_flows_loaded "));
    assert!(loaded.is_some_and(|n| n != "0"), "the routed sample flows are loaded: {metrics}");
    assert!(http_get(http, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http_get(http, "POST /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(http_get(http, "garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
}

/// UDP datagrams in a pcap file (tcpdump -w on loopback): (capture time in µs, source port,
/// destination port, payload), in capture order. IPv4 only.
fn pcap_udp_timed(file: &[u8]) -> Vec<(u64, u16, u16, Vec<u8>)> {
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    assert!(file.len() >= 24 && u32_at(file, 0) == 0xa1b2_c3d4, "not a little-endian pcap");
    // Link layer header length: Ethernet (Linux loopback), Linux cooked v1/v2, raw IP.
    let link = match u32_at(file, 20) {
        1 => 14,
        113 => 16,
        276 => 20,
        101 => 0,
        other => panic!("unexpected pcap link type {other}"),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let micros = u64::from(u32_at(file, at)) * 1_000_000 + u64::from(u32_at(file, at + 4));
        let len = u32_at(file, at + 8) as usize;
        let frame = &file[at + 16..(at + 16 + len).min(file.len())];
        at += 16 + len;
        let Some(ip) = frame.get(link..) else { continue };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let port = |i: usize| u16::from_be_bytes([udp[i], udp[i + 1]]);
        out.push((micros, port(0), port(2), udp[8..].to_vec()));
    }
    out
}

/// tcpdump capturing UDP on loopback to a file until dropped.
struct Capture {
    child: std::process::Child,
    file: PathBuf,
}

impl Capture {
    fn start(dir: &Path, filter: &str) -> Capture {
        let file = dir.join("capture.pcap");
        let child = Command::new("tcpdump")
            // Immediate mode: packets reach the file as they come, not in blocks that a stop
            // could leave unwritten.
            .args(["-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump is not installed: run scripts/test.sh (Debian tcpdump)");
        // Wait until it listens (it says so on stderr).
        std::thread::sleep(Duration::from_millis(700));
        Capture { child, file }
    }

    /// Stops the capture and returns its UDP datagrams.
    fn finish(self) -> Vec<(u16, u16, Vec<u8>)> {
        self.finish_timed().into_iter().map(|(_, src, dst, payload)| (src, dst, payload)).collect()
    }

    /// Stops the capture and returns its UDP datagrams with their capture times (µs).
    fn finish_timed(mut self) -> Vec<(u64, u16, u16, Vec<u8>)> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(self.file.is_file(), "tcpdump wrote no capture ({status}): {err}");
        pcap_udp_timed(&std::fs::read(&self.file).unwrap())
    }
}

#[test]
fn two_sipp_legs_bridged_through_ivr_menu_get_each_others_rtp_intact() {
    // Caller (sipp UAC) → ivr-menu, presses 1 → sales phone (sipp UAS) answers: both stream a
    // different 3 s µ-law WAV once the bridge is up. A loopback capture shows what each sipp's
    // media port received: every packet the other sent, byte for byte, none lost.
    let (sales, caller_media, phone_media) = (free_port(), free_port(), free_port());
    let config = format!(
        "[[routes]]\nmatch = \"main\"\nflow = {:?}\nvars = {{ sales = \"sip:sales@127.0.0.1:{sales}\" }}\n",
        repo().join("sample-flows/ivr-menu")
    );
    let server = serve_config(&config, &[]);
    let (caller_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(caller_dir.path().join("talk.wav"), ulaw_wav(&chirp(3.0))).unwrap();
    let mut reverse = chirp(3.0);
    reverse.reverse();
    std::fs::write(phone_dir.path().join("talk.wav"), ulaw_wav(&reverse)).unwrap();
    let capture = Capture::start(
        caller_dir.path(),
        &format!("udp and (port {caller_media} or port {phone_media})"),
    );
    let phone = {
        let dir = phone_dir.path().to_owned();
        let mp = phone_media.to_string();
        std::thread::spawn(move || {
            run_sipp_in(&dir, "uas-answer-and-talk.xml", sales, None, 60, &["-mp", &mp])
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mp = caller_media.to_string();
    let (ok, out) = run_sipp_in(
        caller_dir.path(),
        "uac-press-digit-talk.xml",
        free_port(),
        Some(server.addr),
        60,
        &["-s", "main", "-key", "digit", "1", "-mp", &mp],
    );
    let (phone_ok, phone_out) = phone.join().unwrap();
    let datagrams = capture.finish();
    assert!(ok, "caller failed:\n{out}\nphone:\n{phone_out}");
    assert!(phone_ok, "phone failed:\n{phone_out}");
    // RTP only (RTCP goes to the +1 ports, which the filter leaves out).
    let sent_by = |port: u16| -> Vec<Vec<u8>> {
        datagrams.iter().filter(|(s, _, _)| *s == port).map(|(_, _, p)| p.clone()).collect()
    };
    let received_by = |port: u16| -> Vec<Vec<u8>> {
        datagrams.iter().filter(|(_, d, _)| *d == port).map(|(_, _, p)| p.clone()).collect()
    };
    for (from, to, who) in [
        (caller_media, phone_media, "caller → phone"),
        (phone_media, caller_media, "phone → caller"),
    ] {
        let sent = sent_by(from);
        let received = received_by(to);
        assert!(sent.len() >= 140, "{who}: sipp sent only {} packets", sent.len());
        // The relayed packets carry the sent payloads, untouched and in order; the receiver
        // may also have had the flow's own prompt packets before the bridge.
        let payload = |p: &[u8]| p[12 + 4 * usize::from(p[0] & 0x0f)..].to_vec();
        let sent: Vec<Vec<u8>> = sent.iter().map(|p| payload(p)).collect();
        let relayed: Vec<Vec<u8>> =
            received.iter().map(|p| payload(p)).filter(|p| sent.contains(p)).collect();
        eprintln!(
            "{who}: {} sent, {} relayed intact of {} received",
            sent.len(),
            relayed.len(),
            received.len()
        );
        assert_eq!(relayed.len(), sent.len(), "{who}: packets lost or altered on the way");
        assert!(relayed.iter().zip(&sent).all(|(a, b)| a == b), "{who}: reordered");
        // And the receiver sees one stream: the prompts, then the relayed packets renumbered
        // onto it (one SSRC, sequence numbers running on).
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        let ssrc = |p: &[u8]| p[8..12].to_vec();
        for pair in received.windows(2) {
            assert_eq!(ssrc(&pair[1]), ssrc(&pair[0]), "{who}: the SSRC changed");
            assert_eq!(seq(&pair[1]), seq(&pair[0]).wrapping_add(1), "{who}: a sequence gap");
        }
    }
}

/// A WAV file of 16-bit mono samples at `rate`.
fn pcm_wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let data_len = samples.len() as u32 * 2;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A one-file HTTP server on loopback: `GET path` (with any query) gets `body`, anything else
/// 404. Returns its address and the number of requests for `path` so far.
fn http_file(path: &'static str, body: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = &stream;
            if request.starts_with(&format!("GET {path} "))
                || request.starts_with(&format!("GET {path}?"))
            {
                counter.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (addr, hits)
}

/// Share of a signal's energy at `hz` (one DFT bin over the whole 8 kHz signal).
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

#[test]
fn play_fetches_a_url_the_manifest_allows_and_refuses_one_it_does_not() {
    // hello plays `greeting_url` instead of speaking. The WAV is 16 kHz (resampled on fetch).
    let tone: Vec<i16> = (0..24_000)
        .map(|i| {
            ((2.0 * std::f64::consts::PI * 600.0 * f64::from(i) / 16_000.0).sin() * 8000.0) as i16
        })
        .collect();
    let (http, hits) = http_file("/greeting.wav", pcm_wav(&tone, 16_000));
    let dir = tempfile::tempdir().unwrap();
    let grant = dir.path().join("grant.toml");
    std::fs::write(&grant, "[capabilities]\nhttp = [\"http://127.0.0.1/\"]\n").unwrap();
    let hello = repo().join("sample-flows/hello");
    let url = format!("http://{http}/greeting.wav");
    let config = format!(
        "[[routes]]\nmatch = \"granted\"\nflow = {hello:?}\nmanifest = {grant:?}\n\
         vars = {{ greeting_url = \"{url}\" }}\n\n\
         [[routes]]\nmatch = \"not-granted\"\nflow = {hello:?}\nvars = {{ greeting_url = \"{url}\" }}\n"
    );
    let server = serve_config(&config, &[]);
    // Not granted (hello's own manifest declares no http): nothing is fetched, the call ends.
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "not-granted", &[]);
    assert!(ok, "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "fetched a URL the manifest does not allow");
    // Granted: fetched once (cached after), and the caller hears the 600 Hz tone.
    let media = free_port();
    let capture = Capture::start(dir.path(), &format!("udp and dst port {media}"));
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "granted", &["-mp", &media.to_string()]);
    let datagrams = capture.finish();
    assert!(ok, "{out}");
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "granted", &[]);
    assert!(ok, "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, then from the cache");
    let mut heard = Vec::new();
    for (_, _, packet) in &datagrams {
        if let Ok(rtp) = voxide_media::RtpPacket::parse(packet)
            && rtp.header.payload_type == 0
        {
            voxide_media::g711::Law::Mu.decode(rtp.payload, &mut heard);
        }
    }
    // The tone is what was played between the first and the last loud sample.
    let first = heard.iter().position(|s| s.unsigned_abs() > 1000).unwrap_or(0);
    let last = heard.iter().rposition(|s| s.unsigned_abs() > 1000).unwrap_or(0);
    let tone_ms = (last.saturating_sub(first)) / 8;
    let share = tone_share(&heard[first..=last], 600.0);
    eprintln!(
        "heard {} ms of audio: {tone_ms} ms of tone from {first}, 600 Hz share {share:.2}",
        heard.len() / 8
    );
    assert!(tone_ms > 1400, "heard {tone_ms} ms of a 1,500 ms tone");
    assert!(share > 0.8, "the caller did not hear the fetched tone (share {share:.2})");
}

/// A route `denied` to ivr-menu whose `sales` is `target`, granted dialling pbx.example.com only.
fn denied_sales(dir: &Path, target: &str) -> String {
    let grant = dir.join("grant.toml");
    std::fs::write(&grant, "[capabilities]\ndial = [\"sip:*@pbx.example.com:*\"]\n").unwrap();
    let ivr = repo().join("sample-flows/ivr-menu");
    format!(
        "[[routes]]\nmatch = \"denied\"\nflow = {ivr:?}\nmanifest = {grant:?}\n\
         vars = {{ sales = \"{target}\" }}\n"
    )
}

#[test]
fn a_key_press_during_a_prompt_leaves_no_gap_in_the_rtp_stream() {
    // ivr-menu's greeting plays; the caller presses 1 half a second in; the flow renders and
    // speaks "Connecting you to sales." (its first render on this fresh node), then ends the
    // call (the dial is not allowed). Our RTP to the caller must run on without a hole across
    // the prompt change: silence fills whatever the next prompt takes to be ready.
    let dir = tempfile::tempdir().unwrap();
    let server = serve_config(&denied_sales(dir.path(), "sip:sales@192.0.2.1"), &[]);
    let media = free_port();
    let capture = Capture::start(dir.path(), &format!("udp and dst port {media}"));
    let (ok, out) = sipp(
        &server,
        "uac-press-digit.xml",
        "denied",
        &["-key", "digit", "1", "-mp", &media.to_string()],
    );
    let packets = capture.finish_timed();
    assert!(ok, "{out}");
    let times: Vec<u64> = packets.iter().map(|(at, ..)| *at).collect();
    assert!(times.len() > 100, "only {} RTP packets reached the caller", times.len());
    let (gap_at, gap) = times
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i, w[1] - w[0]))
        .max_by_key(|(_, gap)| *gap)
        .unwrap();
    eprintln!(
        "{} packets over {} ms; the longest gap {} µs after packet {gap_at}",
        times.len(),
        (times[times.len() - 1] - times[0]) / 1000,
        gap
    );
    // Measured here: the longest gap is one 20 ms frame (21 ms). The bound is looser than the
    // 40 ms goal so that a loaded 2-core CI machine does not fail it on scheduling noise; a
    // prompt rendered on the call path (the 280 ms hole this guards against) still does.
    assert!(gap <= 100_000, "a {} ms hole in our RTP after packet {gap_at}", gap / 1000);
}

#[test]
fn a_dial_target_outside_the_manifest_is_not_allowed_and_never_invited() {
    // The operator grants ivr-menu dialling pbx.example.com only; its `sales` var points at a
    // "phone" on loopback, which must never see an INVITE. The same scenario runs in
    // `vox test` (sample-flows/ivr-menu/tests/sales-not-allowed.toml), through the same check.
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("sip:sales@{}", phone.local_addr().unwrap());
    let server = serve_config(&denied_sales(dir.path(), &target), &[]);
    let (ok, out) = sipp(&server, "uac-press-digit.xml", "denied", &["-key", "digit", "1"]);
    assert!(ok, "the caller pressed 1 and the call ended with our BYE:\n{out}");
    phone.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(phone.recv(&mut [0u8; 2048]).is_err(), "a denied target was sent an INVITE");
    let cdrs = vox_until(&server, &["cdrs", "--number", "denied"], 15, |c| len(c) == 1);
    let (outcome, detail) = (cdrs[0]["outcome"].as_str(), cdrs[0]["detail"].as_str().unwrap());
    assert_eq!(outcome, Some("flow-error"), "{}", cdrs[0]);
    assert!(detail.contains(&format!("not allowed: dial {target}")), "{detail}");
}

/// Runs `vox ARGS…` against `server`'s API with its admin key; returns its stdout, failing the
/// test (with its stderr) if it fails.
fn vox_remote(server: &Server, args: &[&str]) -> String {
    let out = vox_output(server, args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "vox {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The server's log so far.
fn server_log(server: &Server) -> String {
    std::fs::read_to_string(server.data().join("vox.log")).unwrap_or_default()
}

/// Waits (up to `within`) for a line of the server's log that contains every one of `parts`:
/// the event a test needs before it goes on, instead of a guess at how long it takes.
fn wait_for_log(server: &Server, parts: &[&str], within: Duration) {
    if let Err(log) = log_line_within(server, parts, within) {
        panic!("no log line with {parts:?} in:\n{log}");
    }
}

/// Like [`wait_for_log`], returning the log instead of failing, for a test to add what it knows.
fn log_line_within(server: &Server, parts: &[&str], within: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let log = server_log(server);
        if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(log);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deploy_route_call_move_the_alias_and_split_a_canary() {
    let server = serve_config("", &[]);
    let ivr = repo().join("sample-flows/ivr-menu");
    let hello = repo().join("sample-flows/hello");
    // v1: ivr-menu, routed from +15550100 through the alias live.
    let out = vox_remote(&server, &["deploy", ivr.to_str().unwrap(), "--alias", "live"]);
    assert!(
        out.contains("deployed ivr-menu v1 (new)") && out.contains("ivr-menu@live -> v1"),
        "{out}"
    );
    let out = vox_remote(&server, &["routes", "add", "+15550100", "ivr-menu@live"]);
    assert!(out.contains("+15550100"), "{out}");
    // The route applies without a restart: a call to +15550100 runs ivr-menu v1 (which talks
    // far longer than 4 s: the caller hangs up first).
    std::thread::sleep(Duration::from_millis(300));
    let first = {
        let addr = server.addr;
        std::thread::spawn(move || {
            run_sipp(
                "uac-stay-then-hang-up.xml",
                free_port(),
                Some(addr),
                30,
                &["-s", "+15550100", "-d", "6000"],
            )
        })
    };
    wait_for_log(&server, &["flow=ivr-menu v1 via live"], Duration::from_secs(10));
    // v2 (another component under the same name: hello, which greets and hangs up), and live
    // moves to it while the first call is still talking to v1.
    let out = vox_remote(
        &server,
        &["deploy", hello.to_str().unwrap(), "--name", "ivr-menu", "--alias", "live"],
    );
    assert!(out.contains("deployed ivr-menu v2 (new)"), "{out}");
    let out = vox_remote(&server, &["versions", "ivr-menu"]);
    assert_eq!(out.lines().count(), 3, "a heading and two versions:\n{out}");
    std::thread::sleep(Duration::from_millis(500));
    // A new call runs v2: hello hangs up on it by itself.
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "+15550100", &[]);
    assert!(ok, "a new call after the alias moved did not run v2:\n{out}");
    assert!(server_log(&server).contains("flow=ivr-menu v2 via live"));
    // The call in progress stayed on v1: it talked for its full 6 s and hung up itself (v2
    // would have hung up on it within 2 s).
    let (ok, out) = first.join().unwrap();
    assert!(ok, "the call in progress did not stay on v1:\n{out}");

    // A canary: +15550200 split 50/50 between v1 and v2 over 200 calls.
    vox_remote(&server, &["routes", "add", "+15550200", "ivr-menu@1=50", "ivr-menu@2=50"]);
    std::thread::sleep(Duration::from_millis(500));
    let before = server_log(&server).len();
    let scenario = repo().join("cli/tests/sipp/uac-caller-hangs-up.xml");
    let status = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args(["-s", "+15550200", "-m", "200", "-r", "50", "-l", "100", "-i", "127.0.0.1"])
        .args(["-p", &free_port().to_string(), "-timeout", "60", "-timeout_error", "-nostdin"])
        .arg(server.addr.to_string())
        .current_dir(server.data())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "sipp: {status}");
    let log = server_log(&server);
    let canary = &log[before..];
    let v1 = canary.matches("flow=ivr-menu v1 ").count();
    let v2 = canary.matches("flow=ivr-menu v2 ").count();
    eprintln!("canary 50/50 over 200 calls: v1 {v1}, v2 {v2}");
    assert_eq!(v1 + v2, 200, "every call ran one of the two");
    assert!((80..=120).contains(&v1), "v1 got {v1} of 200 calls (expected 40-60 %)");
    // Routes are listed as written.
    let out = vox_remote(&server, &["routes", "ls"]);
    assert!(out.contains("ivr-menu@v1=50, ivr-menu@v2=50"), "{out}");
}

/// A child process killed (and reaped) when the test ends, even by a failure.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vox ARGS…` against `server`'s API with its admin key.
fn vox_output(server: &Server, args: &[&str]) -> std::process::Output {
    let key = std::fs::read_to_string(server.data().join("admin.key")).unwrap();
    let url = format!("http://{}", server.http.expect("vox serve printed its HTTP address"));
    Command::new(env!("CARGO_BIN_EXE_vox"))
        .args(args)
        .args(["--server", &url, "--key", key.trim()])
        .env("XDG_CONFIG_HOME", server.data())
        .output()
        .unwrap()
}

/// `vox ARGS…` against `server` that must fail; returns what it printed.
fn vox_remote_fails(server: &Server, args: &[&str]) -> String {
    let out = vox_output(server, args);
    assert!(!out.status.success(), "vox {args:?} should have failed");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `vox … --json` against `server`, parsed.
fn vox_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = vox_remote(server, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vox {args:?}: not JSON ({e}):\n{out}"))
}

/// Polls `vox ARGS --json` until `ready` holds (what calls report is written in the
/// background); fails after `secs`.
fn vox_until(
    server: &Server,
    args: &[&str],
    secs: u64,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let value = vox_json(server, args);
        if ready(&value) {
            return value;
        }
        assert!(std::time::Instant::now() < until, "vox {args:?} never got there: {value}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn len(v: &serde_json::Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// A sipp caller to `number` in the background; its result when joined.
fn sipp_caller(
    server: &Server,
    scenario: &'static str,
    number: &'static str,
) -> std::thread::JoinHandle<(bool, String)> {
    let addr = server.addr;
    std::thread::spawn(move || run_sipp(scenario, free_port(), Some(addr), 40, &["-s", number]))
}

/// The one live call, once it is answered.
fn answered_call(server: &Server) -> String {
    let calls =
        vox_until(server, &["calls", "ls"], 15, |c| len(c) == 1 && c[0]["state"] == "answered");
    calls[0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn rest_call_control_redirects_injects_prompts_hangs_up_and_leaves_cdrs_and_events() {
    let server = serve_config("", &[]);
    let flows = repo().join("sample-flows");
    vox_remote(&server, &["deploy", flows.join("ivr-menu").to_str().unwrap(), "--alias", "live"]);
    vox_remote(&server, &["deploy", flows.join("hello").to_str().unwrap(), "--alias", "live"]);
    vox_remote(&server, &["routes", "add", "+15550100", "ivr-menu@live"]);
    let assets = server.data().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("notice.wav"), pcm_wav(&vec![0i16; 8000], 8000)).unwrap();
    // Follow the event stream from now on, as an operator would.
    let key = std::fs::read_to_string(server.data().join("admin.key")).unwrap();
    let events_out = server.data().join("events.jsonl");
    let follower = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_vox"))
            .args(["events", "--follow", "--json", "--server"])
            .arg(format!("http://{}", server.http.unwrap()))
            .args(["--key", key.trim()])
            .stdout(std::fs::File::create(&events_out).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));

    // Call 1: ivr-menu talks for ~40 s; the API redirects it to hello, which greets and
    // hangs up — the caller sees our BYE within seconds.
    let caller = sipp_caller(&server, "uac-flow-hangs-up.xml", "+15550100");
    let first = answered_call(&server);
    let shown = vox_json(&server, &["calls", "show", &first]);
    assert_eq!(
        (shown["direction"].as_str(), shown["label"].as_str()),
        (Some("inbound"), Some("ivr-menu v1 via live"))
    );
    assert_eq!(shown["legs"][0]["role"], "caller");
    vox_remote(&server, &["calls", "say", &first, "An announcement from the operator."]);
    vox_remote(&server, &["calls", "play", &first, "notice.wav"]);
    let out = vox_remote_fails(&server, &["calls", "play", &first, "missing.wav"]);
    assert!(out.contains("422") && out.contains("missing.wav"), "{out}");
    let out = vox_remote(&server, &["calls", "redirect", &first, "hello@live"]);
    assert!(out.contains("now runs hello@live"), "{out}");
    let (ok, out) = caller.join().unwrap();
    assert!(ok, "the redirected call was ended by hello:\n{out}");

    // Call 2: hung up through the API.
    let caller = sipp_caller(&server, "uac-flow-hangs-up.xml", "+15550100");
    let second = answered_call(&server);
    vox_remote(&server, &["calls", "hangup", &second]);
    let (ok, out) = caller.join().unwrap();
    assert!(ok, "the API's hangup reached the caller as a BYE:\n{out}");

    // Both CDRs, with the flow that ran last and its outcome.
    let cdrs = vox_until(&server, &["cdrs"], 15, |c| len(c) == 2);
    let cdr = |id: &str| cdrs.as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone();
    let (one, two) = (cdr(&first), cdr(&second));
    assert_eq!(
        (one["flow"].as_str(), one["outcome"].as_str()),
        (Some("hello"), Some("completed")),
        "{one}"
    );
    assert_eq!(
        (two["flow"].as_str(), two["outcome"].as_str()),
        (Some("ivr-menu"), Some("hung-up")),
        "{two}"
    );
    assert_eq!(two["detail"], "hung up through the API");
    assert!(two["duration_ms"].as_i64().unwrap() > 0 && two["answered_at"].is_i64());
    assert_eq!(len(&vox_json(&server, &["cdrs", "--outcome", "hung-up"])), 1);
    assert_eq!(len(&vox_json(&server, &["cdrs", "--number", "+15550100", "--since", "5m"])), 2);
    let table = vox_remote(&server, &["cdrs"]);
    assert!(table.contains("OUTCOME") && table.contains("hung-up"), "{table}");

    // The live stream saw each call's lifecycle, in order.
    std::thread::sleep(Duration::from_millis(500));
    drop(follower);
    let streamed: Vec<serde_json::Value> = std::fs::read_to_string(&events_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds = |call: &str| -> Vec<String> {
        streamed
            .iter()
            .filter(|e| e["call_id"] == call)
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        kinds(&first),
        ["call.ringing", "call.answered", "call.redirected", "call.completed"]
    );
    assert_eq!(kinds(&second), ["call.ringing", "call.answered", "call.completed"]);
    assert!(streamed.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
    // The stored log has the same events.
    assert_eq!(len(&vox_json(&server, &["events"])), streamed.len());
    // Nothing is live any more.
    assert_eq!(vox_json(&server, &["calls", "ls"]), serde_json::json!([]));
}

#[test]
fn vox_call_originates_to_a_phone_and_runs_the_flow_when_it_answers() {
    // Calls may go to SIP URIs on loopback only, one at a time per tenant.
    let server = serve_config("[originate]\nmax_calls = 1\nallow = [\"sip:*@127.0.0.1:*\"]\n", &[]);
    vox_remote(
        &server,
        &["deploy", repo().join("sample-flows/hello").to_str().unwrap(), "--alias", "live"],
    );
    // A phone (sipp) that answers and talks until our BYE.
    let phone_dir = tempfile::tempdir().unwrap();
    std::fs::write(phone_dir.path().join("talk.wav"), ulaw_wav(&chirp(4.0))).unwrap();
    let port = free_port();
    let phone = {
        let dir = phone_dir.path().to_owned();
        std::thread::spawn(move || {
            run_sipp_in(&dir, "uas-answer-and-talk.xml", port, None, 30, &[])
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let to = format!("sip:phone@127.0.0.1:{port}");
    let out = vox_remote(&server, &["call", &to, "--flow", "hello", "--from", "+15550199"]);
    assert!(
        out.starts_with(&format!("calling {to}: CA")) && out.contains("hello v1 via live"),
        "{out}"
    );
    // A destination off the list is refused.
    let refused = vox_remote_fails(&server, &["call", "sip:+1900555@192.0.2.1", "--flow", "hello"]);
    assert!(refused.contains("originate.allow") && refused.contains("403"), "{refused}");
    let (ok, out) = phone.join().unwrap();
    assert!(ok, "the phone was called, answered, and got hello's BYE:\n{out}");
    let cdrs = vox_until(&server, &["cdrs"], 15, |c| len(c) == 1);
    let cdr = &cdrs[0];
    assert_eq!(
        (cdr["direction"].as_str(), cdr["outcome"].as_str()),
        (Some("outbound"), Some("completed")),
        "{cdr}"
    );
    assert_eq!(cdr["to"].as_str(), Some(to.as_str()));
    assert!(cdr["from"].as_str().unwrap().contains("+15550199"));
    // Nobody answers at a port where no phone listens: a CDR that says so. While it rings,
    // the tenant is at its limit of one call.
    let nobody = format!("sip:nobody@127.0.0.1:{}", free_port());
    vox_remote(&server, &["call", &nobody, "--flow", "hello", "--timeout", "8"]);
    let refused = vox_remote_fails(&server, &["call", &to, "--flow", "hello"]);
    assert!(refused.contains("max_calls") && refused.contains("429"), "{refused}");
    let cdrs = vox_until(&server, &["cdrs", "--number", "nobody"], 40, |c| len(c) == 1);
    let outcome = cdrs[0]["outcome"].as_str().unwrap();
    assert!(["no-answer", "failed"].contains(&outcome), "{}", cdrs[0]);
}

/// What a webhook receiver got: (event id, signature header, body).
type Hooked = Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A minimal HTTP webhook receiver on `listener` answering 204 to every POST.
fn webhook_receiver(listener: std::net::TcpListener) -> Hooked {
    let got: Hooked = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut length, mut id, mut signature) = (0usize, String::new(), String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "voxide-event-id" => id = value,
                    "voxide-signature" => signature = value,
                    _ => {}
                }
            }
            let mut body = vec![0u8; length];
            if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                continue;
            }
            sink.lock().unwrap().push((id, signature, body));
            let _ = std::io::Write::write_all(
                reader.get_mut(),
                b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            );
        }
    });
    got
}

#[test]
fn kill_9_mid_traffic_then_restart_keeps_flows_routes_cdrs_and_delivers_pending_webhooks() {
    // Retries every 200 ms doubling to at most 2 s, each attempt leased for 2 s + 5 s: after
    // the restart every pending event is due within ~7 s, however long the run before it took.
    let env = [
        ("VOX_WEBHOOK_RETRY_BASE_MS", "200"),
        ("VOX_WEBHOOK_RETRY_MAX_MS", "2000"),
        ("VOX_WEBHOOK_TIMEOUT_MS", "2000"),
    ];
    let server = serve_in(tempfile::tempdir().unwrap(), "127.0.0.1:0", "", &[], &env);
    let flows = repo().join("sample-flows");
    vox_remote(&server, &["deploy", flows.join("hello").to_str().unwrap(), "--alias", "live"]);
    vox_remote(&server, &["deploy", flows.join("ivr-menu").to_str().unwrap(), "--alias", "live"]);
    vox_remote(&server, &["routes", "add", "+15550101", "hello@live"]);
    vox_remote(&server, &["routes", "add", "+15550100", "ivr-menu@live"]);
    // The receiver is down until after the crash: every event waits in the outbox.
    let hook_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_addr = hook_listener.local_addr().unwrap();
    let hook_url = format!("http://{hook_addr}/hook");
    drop(hook_listener);
    let hook = vox_json(&server, &["webhooks", "add", &hook_url]);
    let (hook_id, secret) = (hook["id"].as_str().unwrap(), hook["secret"].as_str().unwrap());

    // 20 calls to hello complete; 5 calls to ivr-menu are still talking when it dies.
    let traffic = |number: &str, calls: &str, scenario: &str, extra: &[&str]| {
        Command::new("sipp")
            .arg("-sf")
            .arg(repo().join("cli/tests/sipp").join(scenario))
            .args(["-s", number, "-m", calls, "-r", "10", "-l", "20", "-i", "127.0.0.1"])
            .args(["-p", &free_port().to_string(), "-timeout", "60", "-nostdin"])
            .args(extra)
            .arg(server.addr.to_string())
            .current_dir(server.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let status = traffic("+15550101", "20", "uac-flow-hangs-up.xml", &[]).wait().unwrap();
    assert!(status.success(), "20 calls to hello: {status}");
    let completed = vox_until(&server, &["cdrs"], 20, |c| len(c) == 20);
    let talking =
        KillOnDrop(traffic("+15550100", "5", "uac-stay-then-hang-up.xml", &["-d", "30000"]));
    vox_until(&server, &["calls", "ls"], 20, |c| {
        len(c) == 5 && c.as_array().unwrap().iter().all(|c| c["state"] == "answered")
    });
    let before = vox_json(&server, &["events", "--limit", "1000"]);
    let pending = vox_json(&server, &["webhooks", "deliveries", hook_id, "--status", "pending"]);
    assert_eq!(len(&pending), len(&before), "nothing delivered yet");
    let data = server.kill_9();

    // Restart on the same data: flows, routes, CDRs and the undelivered events are all there,
    // and the events are delivered once the receiver is up.
    let got = webhook_receiver(std::net::TcpListener::bind(hook_addr).unwrap());
    let server = serve_in(data, "127.0.0.1:0", "", &[], &env);
    let flows = vox_json(&server, &["flows"]);
    let names: Vec<&str> =
        flows.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"hello") && names.contains(&"ivr-menu"), "{flows}");
    let routes = vox_json(&server, &["routes", "ls"]);
    let patterns: Vec<&str> =
        routes.as_array().unwrap().iter().map(|r| r["pattern"].as_str().unwrap()).collect();
    assert!(patterns.contains(&"+15550100") && patterns.contains(&"+15550101"), "{routes}");
    let cdrs = vox_json(&server, &["cdrs", "--limit", "100"]);
    let ids = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        v.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
    };
    assert!(ids(&completed).is_subset(&ids(&cdrs)), "every completed call's CDR survived");
    assert_eq!(
        vox_json(&server, &["calls", "ls"]),
        serde_json::json!([]),
        "the crashed calls are gone"
    );
    let all: std::collections::BTreeSet<String> = ids(&before);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let arrived: std::collections::BTreeSet<String> =
            got.lock().unwrap().iter().map(|(id, _, _)| id.clone()).collect();
        if all.is_subset(&arrived) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "{} of {} events delivered after the restart",
            arrived.intersection(&all).count(),
            all.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (id, signature, body) in got.lock().unwrap().iter() {
        let t: i64 = signature.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
        assert_eq!(*signature, voxide_api::signature(secret, t, body), "signature of {id}");
    }
    let delivered = vox_until(
        &server,
        &["webhooks", "deliveries", hook_id, "--status", "delivered"],
        10,
        |d| len(d) >= all.len(),
    );
    assert!(len(&delivered) >= all.len());
    // And it takes calls again.
    let (ok, out) = sipp(&server, "uac-flow-hangs-up.xml", "+15550101", &[]);
    assert!(ok, "a call after the restart:\n{out}");
    drop(talking);
}

// ---- the outbound dialer ----

/// A sipp phone answering every call to `port` with `scenario` until dropped.
/// (The directory is sipp's working directory, removed with the phone.)
struct Phone(Child, #[allow(dead_code)] tempfile::TempDir);

impl Phone {
    fn start(scenario: &str, port: u16) -> Phone {
        Phone::with_files(scenario, port, &[])
    }

    /// A phone with files in its working directory (the audio its scenario streams).
    fn with_files(scenario: &str, port: u16, files: &[(&str, Vec<u8>)]) -> Phone {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .arg("-sf")
            .arg(repo().join("cli/tests/sipp").join(scenario))
            .args(["-p", &port.to_string(), "-i", "127.0.0.1", "-nostdin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is not installed: run scripts/test.sh");
        Phone(child, dir)
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Etc/GMT…` for the zone where it is `hour` o'clock now.
fn zone_at_hour(hour: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let utc_hour = (now.as_secs() / 3600 % 24) as i64;
    let offset = (hour - utc_hour + 36).rem_euclid(24) - 12; // −12 … +11
    // POSIX sign: Etc/GMT-5 is five hours ahead of UTC.
    match offset {
        0 => "Etc/GMT".into(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

#[test]
fn a_campaign_of_200_leads_dials_bridges_retries_pauses_and_never_calls_dnc_or_late_leads() {
    const AGENTS: usize = 10;
    let users: String = (1..=AGENTS)
        .map(|i| format!("[[sip.users]]\nuser = \"agent{i}\"\npassword = \"pw{i}\"\n"))
        .collect();
    let server = serve_config(&format!("{ALICE}{users}"), &[]);
    // The agents register from one port, where one auto-answering phone takes their calls.
    let agent_port = free_port();
    for i in 1..=AGENTS {
        let (user, pw) = (format!("agent{i}"), format!("pw{i}"));
        let (ok, out) = run_sipp(
            "uac-register.xml",
            agent_port,
            Some(server.addr),
            10,
            &["-s", &user, "-au", &user, "-ap", &pw],
        );
        assert!(ok, "agent{i} could not register:\n{out}");
    }
    let (answers, busy, silent) = (free_port(), free_port(), free_port());
    let _phones = [
        Phone::start("uas-agent.xml", agent_port),
        Phone::start("uas-lead-answers.xml", answers),
        Phone::start("uas-busy.xml", busy),
        Phone::start("uas-ring-until-cancel.xml", silent),
    ];

    // 200 leads: 4 never answer, 20 are busy, 174 answer; one of those is on the DNC list and
    // one is where it is 22:00.
    let (noon, late) = (zone_at_hour(12), zone_at_hour(22));
    let mut csv = String::from("number,tz,first_name\n");
    let mut row = |n: String, tz: &str| csv += &format!("{n},{tz},Lee\n");
    (0..4).for_each(|i| row(format!("+1212777{i:04}"), &noon));
    (0..20).for_each(|i| row(format!("+1212666{i:04}"), &noon));
    (0..172).for_each(|i| row(format!("+1212555{i:04}"), &noon));
    row("+12125559990".into(), &noon);
    row("+12125559991".into(), &late);
    // Bad rows are rejected with their line; the good ones stay.
    csv += "12,bad,x\n+12125550000,Etc/GMT,dup\n";
    let dir = tempfile::tempdir().unwrap();
    let leads = dir.path().join("leads.csv");
    std::fs::write(&leads, csv).unwrap();
    let trunk = |prefix: &str, port: u16| {
        format!("[[trunks]]\nprefix = \"{prefix}\"\nuri = \"sip:{{number}}@127.0.0.1:{port}\"\n")
    };
    let settings = dir.path().join("spring.toml");
    let agents: Vec<String> = (1..=AGENTS).map(|i| format!("\"agent{i}\"")).collect();
    std::fs::write(
        &settings,
        format!(
            "agents = [{}]\ncaller_id = \"+12125550199\"\nwrap_secs = 0\nring_timeout_secs = 15\n\
             message = \"Sorry we missed you.\"\n\
             [retry]\nmax_attempts = 5\nbusy = {{ delay = 2, max = 2 }}\nno_answer = {{ delay = 0, max = 1 }}\n\n{}{}{}",
            agents.join(", "),
            trunk("+1212555", answers),
            trunk("+1212666", busy),
            trunk("+1212777", silent),
        ),
    )
    .unwrap();
    let out = vox_remote(
        &server,
        &["campaigns", "create", "spring", "--settings", settings.to_str().unwrap()],
    );
    assert!(out.contains("campaign spring created (draft)"), "{out}");
    // A setting the law forbids is refused with the reason.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "agents = [\"agent1\"]\nring_timeout_secs = 5\n[[trunks]]\nuri = \"sip:{number}@x\"\n",
    )
    .unwrap();
    let err = vox_remote_fails(
        &server,
        &["campaigns", "create", "bad", "--settings", bad.to_str().unwrap()],
    );
    assert!(err.contains("ring_timeout_secs 5: 15 to 120"), "{err}");

    let report =
        vox_json(&server, &["leads", "import", leads.to_str().unwrap(), "--campaign", "spring"]);
    assert_eq!(report["added"], 198, "{report}");
    assert_eq!(report["rejected_total"], 2, "{report}");
    let reasons: Vec<String> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}: {}", r["line"], r["reason"].as_str().unwrap()))
        .collect();
    assert!(reasons[0].starts_with("200: ") && reasons[1].starts_with("201: "), "{reasons:?}");
    let json = serde_json::json!([{ "number": "+1 (212) 555-0500", "tz": noon }, { "number": "+1 212 555 0501", "tz": noon }]);
    let body = dir.path().join("more.json");
    std::fs::write(&body, json.to_string()).unwrap();
    // The same import over REST as JSON (the CLI sends CSV).
    let http = server.http.unwrap();
    let key = std::fs::read_to_string(server.data().join("admin.key")).unwrap();
    let out = Command::new("curl")
        .args(["-sf", "-X", "POST", "-H", "content-type: application/json"])
        .args(["-H", &format!("authorization: Bearer {}", key.trim())])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{http}/api/v1/campaigns/spring/leads"))
        .output()
        .unwrap();
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(added["added"], 2, "{added} {}", String::from_utf8_lossy(&out.stderr));
    vox_remote(&server, &["dnc", "add", "+1 (212) 555-9990", "--reason", "asked not to be called"]);

    vox_remote(&server, &["campaigns", "start", "spring"]);
    // Pausing stops new dials at once: nothing starts after the pause has answered.
    vox_until(&server, &["campaigns", "attempts", "spring", "--limit", "1000"], 30, |a| {
        len(a) >= 20
    });
    vox_remote(&server, &["campaigns", "pause", "spring"]);
    let at_pause = len(&vox_json(&server, &["campaigns", "attempts", "spring", "--limit", "1000"]));
    std::thread::sleep(Duration::from_millis(2500));
    let later = len(&vox_json(&server, &["campaigns", "attempts", "spring", "--limit", "1000"]));
    assert_eq!(later, at_pause, "dials began after the pause");

    vox_remote(&server, &["campaigns", "start", "spring"]);
    // Done when only the late lead is open and nothing is dialling.
    let show = vox_until(&server, &["campaigns", "show", "spring"], 180, |c| {
        c["counts"]["leads"]["done"] == 199 && c["counts"]["attempts"].get("dialing").is_none()
    });
    let counts = &show["counts"];
    let d = |k: &str| counts["dispositions"][k].as_i64().unwrap_or(0);
    let a = |k: &str| counts["attempts"][k].as_i64().unwrap_or(0);
    // Agents auto-answer in milliseconds; a loaded machine may still abandon a few.
    assert_eq!(d("contacted") + a("abandoned"), 174, "{show}");
    assert!(a("abandoned") <= 3, "{show}");
    assert_eq!((d("busy"), d("no-answer"), d("dnc")), (20, 4, 1), "{show}");
    assert_eq!((a("busy"), a("no-answer")), (40, 4), "busy leads are retried once: {show}");
    assert_eq!(counts["leads"]["retry"], 1, "{show}");

    let attempts = vox_json(&server, &["campaigns", "attempts", "spring", "--limit", "1000"]);
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 218);
    for at in attempts {
        let n = at["number"].as_str().unwrap();
        assert!(n != "+12125559990" && n != "+12125559991", "dialled {n}: {at}");
        assert!(at["local_time"].as_str().unwrap().contains("Etc/GMT"), "{at}");
        assert!(at["call_id"].as_str().is_some_and(|c| c.starts_with("CA")), "{at}");
        match at["outcome"].as_str().unwrap() {
            "human" => {
                assert!(at["agent"].as_str().unwrap().starts_with("agent"), "{at}");
                assert!(at["answer_to_agent_ms"].as_i64().unwrap() <= 2000, "{at}");
            }
            "abandoned" => assert_eq!(at["played"], "Sorry we missed you.", "{at}"),
            "no-answer" => assert!(at["ring_ms"].as_i64().unwrap() >= 15_000, "{at}"),
            "busy" => {}
            other => panic!("unexpected outcome {other}: {at}"),
        }
    }
    let late_lead =
        vox_json(&server, &["leads", "ls", "--campaign", "spring", "--status", "retry"]);
    assert!(
        late_lead[0]["note"].as_str().unwrap().contains("outside calling hours: Etc/GMT"),
        "{late_lead}"
    );
    let dnc_lead = vox_json(&server, &["leads", "ls", "--campaign", "spring", "--limit", "1000"]);
    let dnc_lead =
        dnc_lead.as_array().unwrap().iter().find(|l| l["number"] == "+12125559990").unwrap();
    assert_eq!(
        (dnc_lead["disposition"].as_str(), dnc_lead["attempts"].as_i64()),
        (Some("dnc"), Some(0))
    );

    // Every attempt's call left a CDR.
    let cdrs = vox_json(&server, &["cdrs", "--limit", "1000"]);
    let by_outcome =
        |o: &str| cdrs.as_array().unwrap().iter().filter(|c| c["outcome"] == o).count();
    assert_eq!(by_outcome("busy"), 40);
    assert_eq!(by_outcome("no-answer"), 4);
    assert_eq!(by_outcome("completed"), 174);

    // Stopped for good; the live view ends once it shows `finished`.
    vox_remote(&server, &["campaigns", "stop", "spring"]);
    let out = vox_remote(&server, &["campaigns", "show", "spring", "--follow"]);
    assert!(out.contains("finished") && out.contains("dialled"), "{out}");
    let err = vox_remote_fails(&server, &["campaigns", "start", "spring"]);
    assert!(err.contains("finished: it cannot become running"), "{err}");
}

#[test]
fn machine_detection_connects_a_person_after_their_greeting_and_leaves_a_machine_a_message() {
    let server = serve_config(BARESIP_USERS, &[]);
    // The agent is a baresip phone, registered as bob, answering by itself.
    let agent = baresip_phone(server.addr, "bob", 880, "g711", ";answermode=auto");
    let agent_dir = agent.path().to_owned();
    let agent_run = std::thread::spawn(move || baresip(&agent_dir, &[], 14));
    // (The campaign dials nothing until an agent is logged in: no wait for the registration.)
    let silence = |ms: usize| vec![0i16; ms * 8];
    // A person: "Hello?" (0.6 s) after 0.3 s, then waits. A machine: a 4 s greeting.
    let hello: Vec<i16> = [silence(300), chirp(0.6), silence(3000)].concat();
    let (person, machine) = (free_port(), free_port());
    let _phones = [
        Phone::with_files("uas-lead-greets.xml", person, &[("greeting.wav", ulaw_wav(&hello))]),
        Phone::with_files("uas-machine.xml", machine, &[("greeting.wav", ulaw_wav(&chirp(4.0)))]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let tz = zone_at_hour(12);
    let leads = dir.path().join("leads.csv");
    std::fs::write(&leads, format!("number,tz\n+12125550001,{tz}\n+12126660001,{tz}\n")).unwrap();
    let settings = dir.path().join("amd.toml");
    std::fs::write(
        &settings,
        format!(
            "agents = [\"bob\"]\nwrap_secs = 0\n\
             [answering_machine]\ndetect = true\non_machine = \"leave-message\"\n\
             machine_message = \"Hello from Voxide, please call us back.\"\n\
             [[trunks]]\nprefix = \"+1212555\"\nuri = \"sip:{{number}}@127.0.0.1:{person}\"\n\
             [[trunks]]\nprefix = \"+1212666\"\nuri = \"sip:{{number}}@127.0.0.1:{machine}\"\n"
        ),
    )
    .unwrap();
    // Detection settings that would break the 2 s rule are refused.
    let bad = dir.path().join("bad.toml");
    let bad_settings = std::fs::read_to_string(&settings)
        .unwrap()
        .replace("detect = true", "detect = true\nafter_greeting_silence_ms = 2500");
    std::fs::write(&bad, bad_settings).unwrap();
    let err = vox_remote_fails(
        &server,
        &["campaigns", "create", "bad", "--settings", bad.to_str().unwrap()],
    );
    assert!(err.contains("answering_machine.after_greeting_silence_ms 2500: 300 to 1500"), "{err}");

    vox_remote(&server, &["campaigns", "create", "amd", "--settings", settings.to_str().unwrap()]);
    vox_remote(&server, &["leads", "import", leads.to_str().unwrap(), "--campaign", "amd"]);
    vox_remote(&server, &["campaigns", "start", "amd"]);
    let show = vox_until(&server, &["campaigns", "show", "amd"], 60, |c| {
        let a = &c["counts"]["attempts"];
        a["human"] == 1 && a["machine"] == 1
    });
    let attempts = vox_json(&server, &["campaigns", "attempts", "amd"]);
    let by_number =
        |n: &str| attempts.as_array().unwrap().iter().find(|a| a["number"] == n).cloned().unwrap();
    let person = by_number("+12125550001");
    assert_eq!(
        (person["outcome"].as_str(), person["agent"].as_str()),
        (Some("human"), Some("bob")),
        "{person} {show}"
    );
    let detail = person["detail"].as_str().unwrap();
    assert!(
        detail.contains("machine detection: human: after-greeting-silence, 1 word(s)"),
        "{person}"
    );
    // The answer-to-agent time includes the greeting; the 2 s ran from its end.
    assert!(person["answer_to_agent_ms"].as_i64().unwrap() >= 900, "{person}");
    let machine = by_number("+12126660001");
    assert_eq!(machine["outcome"], "machine", "{machine}");
    assert_eq!(machine["agent"], serde_json::Value::Null, "{machine}");
    assert_eq!(machine["played"], "Hello from Voxide, please call us back.", "{machine}");
    let detail = machine["detail"].as_str().unwrap();
    assert!(
        detail.contains("answering machine (machine: long-greeting")
            && detail.ends_with("message left"),
        "{machine}"
    );
    // The person is done; the machine is called again later, by the retry plan.
    assert_eq!(show["counts"]["dispositions"]["contacted"], 1, "{show}");
    let retry = vox_json(&server, &["leads", "ls", "--campaign", "amd", "--status", "retry"]);
    assert_eq!(retry[0]["number"], "+12126660001", "{retry}");
    // baresip took the person's call (not the machine's) and received its audio.
    let text = agent_run.join().unwrap();
    assert!(text.contains("Call established: sip:+12125550001@"), "{text}");
    assert!(!text.contains("+12126660001"), "the machine reached the agent:\n{text}");
    assert!(text.contains("incoming rtp for 'audio' established"), "no RTP reached bob:\n{text}");
}

#[test]
fn an_uploaded_hostile_strategy_asking_a_thousand_calls_a_second_gets_what_the_law_allows() {
    const AGENTS: usize = 3;
    let users: String = (1..=AGENTS)
        .map(|i| format!("[[sip.users]]\nuser = \"agent{i}\"\npassword = \"pw{i}\"\n"))
        .collect();
    let server = serve_config(&format!("{ALICE}{users}"), &[]);
    let agent_port = free_port();
    for i in 1..=AGENTS {
        let (user, pw) = (format!("agent{i}"), format!("pw{i}"));
        let args = ["-s", user.as_str(), "-au", user.as_str(), "-ap", pw.as_str()];
        let (ok, out) = run_sipp("uac-register.xml", agent_port, Some(server.addr), 10, &args);
        assert!(ok, "agent{i} could not register:\n{out}");
    }
    let (answers, silent) = (free_port(), free_port());
    let _phones = [
        Phone::start("uas-agent.xml", agent_port),
        Phone::start("uas-lead-answers.xml", answers),
        Phone::start("uas-ring-until-cancel.xml", silent),
    ];
    // The strategy is customer code: uploaded like a flow, under its own name.
    let guest = repo().join("runtime/tests/guests/hostile-strategy");
    let out = vox_remote(&server, &["deploy", guest.to_str().unwrap(), "--name", "hostile"]);
    assert!(out.contains("deployed hostile v1"), "{out}");
    let (noon, late) = (zone_at_hour(12), zone_at_hour(22));
    let mut csv = String::from("number,tz\n");
    (0..24).for_each(|i| csv += &format!("+1212555{i:04},{noon}\n"));
    (0..2).for_each(|i| csv += &format!("+1212777{i:04},{noon}\n"));
    csv += &format!("+12125559990,{noon}\n+12125559991,{late}\n");
    let dir = tempfile::tempdir().unwrap();
    let leads = dir.path().join("leads.csv");
    std::fs::write(&leads, csv).unwrap();
    let settings = dir.path().join("hostile.toml");
    let agents: Vec<String> = (1..=AGENTS).map(|i| format!("\"agent{i}\"")).collect();
    std::fs::write(
        &settings,
        format!(
            "agents = [{}]\nwrap_secs = 0\nring_timeout_secs = 15\n\
             [retry]\nno_answer = {{ delay = 0, max = 1 }}\n\
             [[trunks]]\nprefix = \"+1212555\"\nuri = \"sip:{{number}}@127.0.0.1:{answers}\"\n\
             [[trunks]]\nprefix = \"+1212777\"\nuri = \"sip:{{number}}@127.0.0.1:{silent}\"\n",
            agents.join(", ")
        ),
    )
    .unwrap();
    let settings = settings.to_str().unwrap();
    // A flow is not a strategy, nor a strategy a flow.
    vox_remote(&server, &["deploy", repo().join("sample-flows/hello").to_str().unwrap()]);
    let err = vox_remote_fails(
        &server,
        &["campaigns", "create", "x", "--settings", settings, "--strategy", "hello@1"],
    );
    assert!(err.contains("not a pacing strategy"), "{err}");
    // 1.23 % is the target the hostile strategy turns hostile at.
    let create = [
        "campaigns",
        "create",
        "hostile",
        "--settings",
        settings,
        "--strategy",
        "hostile@1",
        "--abandon-target",
        "0.0123",
    ];
    vox_remote(&server, &create);
    vox_remote(&server, &["leads", "import", leads.to_str().unwrap(), "--campaign", "hostile"]);
    vox_remote(&server, &["dnc", "add", "+12125559990"]);
    vox_remote(&server, &["campaigns", "start", "hostile"]);
    let show = vox_until(&server, &["campaigns", "show", "hostile"], 120, |c| {
        c["counts"]["leads"]["done"] == 27 && c["counts"]["attempts"].get("dialing").is_none()
    });
    let attempts = vox_json(&server, &["campaigns", "attempts", "hostile", "--limit", "1000"]);
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 26, "{show}");
    // Never more calls up at once than agents (no abandon budget yet: progressive).
    let mut edges: Vec<(i64, i32)> = attempts
        .iter()
        .flat_map(|a| {
            [(a["started_at"].as_i64().unwrap(), 1), (a["ended_at"].as_i64().unwrap(), -1)]
        })
        .collect();
    edges.sort();
    let (mut up, mut most) = (0, 0);
    for (_, d) in edges {
        up += d;
        most = most.max(up);
    }
    assert!(most <= AGENTS as i32, "{most} calls up at once with {AGENTS} agents");
    for at in attempts {
        let n = at["number"].as_str().unwrap();
        assert!(n != "+12125559990" && n != "+12125559991", "dialled {n}: {at}");
        match at["outcome"].as_str().unwrap() {
            "human" => assert!(at["answer_to_agent_ms"].as_i64().unwrap() <= 2000, "{at}"),
            "no-answer" => assert!(at["ring_ms"].as_i64().unwrap() >= 15_000, "{at}"),
            other => panic!("unexpected outcome {other}: {at}"),
        }
    }
    // The strategy spun on every fifth tick: each time the progressive rule paced instead,
    // with an event, and the campaign ran on.
    let events = vox_remote(&server, &["events", "--limit", "1000"]);
    assert!(events.contains("campaign.strategy-fault"), "{events}");
}

#[test]
fn a_campaigns_agents_can_be_the_members_of_a_queue_who_called_in_to_the_agent_flow() {
    let server = serve_config(ALICE, &[]);
    let agent_flow = repo().join("sample-flows/agent");
    vox_remote(&server, &["deploy", agent_flow.to_str().unwrap(), "--alias", "live"]);
    let vars = ["--var", "queue=outbound", "--var", "calls=10", "--var", "wait_ms=4000"];
    vox_remote(&server, &[&["routes", "add", "agents", "agent@live"][..], &vars].concat());
    // Two agents call in and wait in the queue; each stays until its flow hangs up.
    let addr = server.addr;
    let agents: Vec<_> = ["agent1", "agent2"]
        .into_iter()
        .map(|name| {
            let port = free_port();
            std::thread::spawn(move || {
                let args = ["-s", "agents", "-key", "agent", name];
                run_sipp("uac-agent-calls-in.xml", port, Some(addr), 90, &args)
            })
        })
        .collect();
    let answers = free_port();
    let _phone = Phone::start("uas-lead-answers.xml", answers);
    let dir = tempfile::tempdir().unwrap();
    let tz = zone_at_hour(12);
    let leads = dir.path().join("leads.csv");
    let rows: String = (0..6).map(|i| format!("+1212555{i:04},{tz}\n")).collect();
    std::fs::write(&leads, format!("number,tz\n{rows}")).unwrap();
    let settings = dir.path().join("queue.toml");
    std::fs::write(
        &settings,
        format!(
            "agent_queue = \"outbound\"\n\
             [[trunks]]\nuri = \"sip:{{number}}@127.0.0.1:{answers}\"\n"
        ),
    )
    .unwrap();
    // Both kinds of agents at once is refused.
    let both = dir.path().join("both.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(&both, format!("agents = [\"alice\"]\n{text}")).unwrap();
    let err = vox_remote_fails(
        &server,
        &["campaigns", "create", "x", "--settings", both.to_str().unwrap()],
    );
    assert!(err.contains("agents, agent_queue and flow: give one of them"), "{err}");
    vox_remote(&server, &["campaigns", "create", "q", "--settings", settings.to_str().unwrap()]);
    vox_remote(&server, &["leads", "import", leads.to_str().unwrap(), "--campaign", "q"]);
    // Dial once both agents wait (a member is ready while its flow waits in the queue).
    vox_remote(&server, &["campaigns", "start", "q"]);
    let show = vox_until(&server, &["campaigns", "show", "q"], 60, |c| {
        c["counts"]["leads"]["done"] == 6 && c["counts"]["attempts"].get("dialing").is_none()
    });
    let attempts = vox_json(&server, &["campaigns", "attempts", "q"]);
    let attempts = attempts.as_array().unwrap();
    let humans: Vec<&serde_json::Value> =
        attempts.iter().filter(|a| a["outcome"] == "human").collect();
    // An agent picked up within 2 s of every answer (a loaded machine may abandon one).
    assert!(humans.len() >= 5, "{show}");
    for at in &humans {
        assert!(at["answer_to_agent_ms"].as_i64().unwrap() <= 2000, "{at}");
    }
    for name in ["agent1", "agent2"] {
        assert!(humans.iter().any(|a| a["agent"] == name), "{name} took no call: {attempts:?}");
    }
    // Once no caller came for 4 s, each agent's flow said goodbye and hung up.
    for agent in agents {
        let (ok, out) = agent.join().unwrap();
        assert!(ok, "an agent's call did not end cleanly:\n{out}");
    }
}

#[test]
fn a_flow_campaign_hands_each_answered_person_to_its_flow_with_the_leads_columns_as_vars_and_machines_to_another()
 {
    let server = serve_config(ALICE, &[]);
    // hello plays `greeting_url` when the route (here: the lead) gives one and its manifest
    // allows the host: each lead's own URL is fetched once its call is answered.
    let (web, hits) = http_file("/greeting.wav", pcm_wav(&chirp(0.5), 8000));
    let hello = voxide_runtime::builder::build_flow(
        &repo().join("sample-flows/hello"),
        &voxide_runtime::builder::BuildOptions::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("flow.toml");
    std::fs::write(&manifest, format!("[capabilities]\nhttp = [\"http://{web}/\"]\n")).unwrap();
    let key = std::fs::read_to_string(server.data().join("admin.key")).unwrap();
    let http = server.http.unwrap();
    let out = Command::new("curl")
        .args(["-sf", "-H", &format!("authorization: Bearer {}", key.trim())])
        .arg("-F")
        .arg(format!("component=@{};type=application/wasm", hello.display()))
        .arg("-F")
        .arg(format!("manifest=<{}", manifest.display()))
        .arg(format!("http://{http}/api/v1/flows/reminder/versions"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Machines get another flow: hello again, saying its default greeting after theirs.
    vox_remote(
        &server,
        &[
            "deploy",
            repo().join("sample-flows/hello").to_str().unwrap(),
            "--name",
            "drop",
            "--alias",
            "live",
        ],
    );
    let (answers, machine) = (free_port(), free_port());
    // People say "hello" (and stay three seconds); the machine plays a 3 s greeting.
    let hello: Vec<i16> = [vec![0i16; 2400], chirp(0.6), vec![0i16; 24_000]].concat();
    let _phones = [
        Phone::with_files("uas-lead-greets.xml", answers, &[("greeting.wav", ulaw_wav(&hello))]),
        Phone::with_files("uas-machine.xml", machine, &[("greeting.wav", ulaw_wav(&chirp(3.0)))]),
    ];
    let tz = zone_at_hour(12);
    let leads = dir.path().join("leads.csv");
    let rows: String = (0..4)
        .map(|i| format!("+1212555{i:04},{tz},http://{web}/greeting.wav?lead={i}\n"))
        .collect();
    std::fs::write(&leads, format!("number,tz,greeting_url\n{rows}")).unwrap();
    let settings = dir.path().join("reminder.toml");
    std::fs::write(
        &settings,
        format!(
            "flow = \"reminder@1\"\nlines = 2\n\
             [answering_machine]\ndetect = true\non_machine = \"flow\"\nmachine_flow = \"drop\"\n\
             [[trunks]]\nprefix = \"+1212555\"\nuri = \"sip:{{number}}@127.0.0.1:{answers}\"\n\
             [[trunks]]\nprefix = \"+1212666\"\nuri = \"sip:{{number}}@127.0.0.1:{machine}\"\n"
        ),
    )
    .unwrap();
    let settings = settings.to_str().unwrap();
    let err = vox_remote_fails(
        &server,
        &["campaigns", "create", "x", "--settings", settings, "--strategy", "nope"],
    );
    assert!(err.contains("strategy \"nope\""), "{err}");
    vox_remote(&server, &["campaigns", "create", "reminder", "--settings", settings]);
    vox_remote(&server, &["leads", "import", leads.to_str().unwrap(), "--campaign", "reminder"]);
    // The machine's lead has no greeting_url (the drop flow may fetch nothing).
    let machines = dir.path().join("machines.csv");
    std::fs::write(&machines, format!("number,tz\n+12126660001,{tz}\n")).unwrap();
    vox_remote(&server, &["leads", "import", machines.to_str().unwrap(), "--campaign", "reminder"]);
    vox_remote(&server, &["campaigns", "start", "reminder"]);
    let show = vox_until(&server, &["campaigns", "show", "reminder"], 60, |c| {
        c["counts"]["attempts"]["human"] == 4 && c["counts"]["attempts"]["machine"] == 1
    });
    let attempts = vox_json(&server, &["campaigns", "attempts", "reminder"]);
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 5, "{show}");
    for at in attempts {
        let (outcome, flow) = match at["number"].as_str() {
            // `drop` (its live alias) was pinned to version 1 when the campaign was created.
            Some("+12126660001") => ("machine", "flow drop v1"),
            _ => ("human", "flow reminder v1"),
        };
        assert_eq!((at["outcome"].as_str(), at["agent"].as_str()), (Some(outcome), None), "{at}");
        assert_eq!(at["played"], flow, "{at}");
    }
    let machine = attempts.iter().find(|a| a["outcome"] == "machine").unwrap();
    assert!(
        machine["detail"].as_str().unwrap().contains("machine detection: machine"),
        "{machine}"
    );
    // Each lead's own URL (its column) was fetched.
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // The flow wrote each call's CDR, under its name.
    let cdrs = vox_json(&server, &["cdrs", "--limit", "10"]);
    let flows: Vec<&str> =
        cdrs.as_array().unwrap().iter().filter_map(|c| c["flow"].as_str()).collect();
    assert_eq!(flows.iter().filter(|f| **f == "reminder").count(), 4, "{cdrs}");
    assert_eq!(flows.iter().filter(|f| **f == "drop").count(), 1, "{cdrs}");
}

#[test]
fn vox_kb_adds_searches_and_removes_the_documents_flows_answer_from() {
    let server = serve_config(ALICE, &[]);
    let dir = tempfile::tempdir().unwrap();
    let faq = dir.path().join("Clinic FAQ.md");
    std::fs::write(
        &faq,
        "# Opening hours\n\nMonday to Friday, 9:00 to 17:00.\n\n# Parking\n\nFree behind the building.\n",
    )
    .unwrap();
    let out = vox_remote(&server, &["kb", "add", faq.to_str().unwrap()]);
    assert!(out.contains("document clinic-faq:"), "{out}");
    let hits = vox_json(&server, &["kb", "search", "where can I park", "-k", "1"]);
    assert_eq!(hits.as_array().unwrap().len(), 1, "{hits}");
    assert_eq!(
        (hits[0]["document"].as_str(), hits[0]["heading"].as_str()),
        (Some("clinic-faq"), Some("Parking"))
    );
    let out = vox_remote(&server, &["kb", "search", "opening hours"]);
    assert!(
        out.contains("clinic-faq › Opening hours") && out.contains("Monday to Friday"),
        "{out}"
    );
    assert!(vox_remote(&server, &["kb", "ls"]).contains("clinic-faq"));
    vox_remote(&server, &["kb", "rm", "clinic-faq"]);
    let err = vox_remote_fails(&server, &["kb", "rm", "clinic-faq"]);
    assert!(err.contains("not found"), "{err}");
}

/// espeak-ng saying `text`, at 8 kHz.
fn espeak(text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("said.wav");
    let status =
        Command::new("espeak-ng").args(["-v", "en-us", "-w"]).arg(&file).arg(text).status();
    assert!(status.expect("espeak-ng is installed (scripts/test.sh installs it)").success());
    let audio = voxide_media::wav::read_wav(&std::fs::read(&file).unwrap()).unwrap();
    voxide_media::resample::resample(&audio.samples, audio.sample_rate, 8000).unwrap()
}

/// The payloads of flow events named `name` on `server`, oldest first.
fn flow_events(server: &Server, name: &str) -> Vec<serde_json::Value> {
    let events = vox_json(server, &["events", "--limit", "1000"]);
    let mut events: Vec<&serde_json::Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "flow.event" && e["data"]["name"] == name)
        .collect();
    events.sort_by_key(|e| e["seq"].as_i64());
    events.iter().map(|e| e["data"]["payload"].clone()).collect()
}

#[test]
fn receptionist_hears_what_the_caller_says_and_knows_what_they_heard_of_an_interrupted_answer() {
    let config = format!(
        "[[routes]]\nmatch = \"desk\"\nflow = {:?}\n",
        repo().join("sample-flows/receptionist")
    );
    let server = serve_config(&config, &[]);
    // What the caller says, with pauses for the receptionist's replies (each may be cut short
    // by the next utterance, which is then heard as an interruption).
    let said = [
        "seven three five",
        "my name is alice",
        "yes",
        "no thank you",
        "four two",
        "i want to talk to sales",
        "carol",
        "yes please",
        "one eight zero nine",
        "support please",
    ];
    let pause = |ms: usize| vec![0i16; ms * 8];
    let mut audio = pause(500);
    for text in said {
        audio.extend(espeak(text));
        audio.extend(pause(3000));
    }
    // Then the long answer, interrupted two seconds in; then goodbye.
    audio.extend(espeak("what are your hours"));
    audio.extend(pause(3000));
    audio.extend(espeak("stop"));
    audio.extend(pause(3000));
    audio.extend(espeak("goodbye"));
    audio.extend(pause(4000));
    // Low line noise, as a phone line has.
    for (i, s) in audio.iter_mut().enumerate() {
        *s = s.saturating_add(((i.wrapping_mul(2_654_435_761) >> 7) % 65) as i16 - 32);
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("audio.wav"), ulaw_wav(&audio)).unwrap();
    let media_port = free_port().to_string();
    let seconds = audio.len() / 8000 + 30;
    let (ok, out) = run_sipp_in(
        work.path(),
        "uac-send-audio.xml",
        free_port(),
        Some(server.addr),
        seconds as u32,
        &["-s", "desk", "-mp", &media_port],
    );
    assert!(ok, "the receptionist did not hang up after goodbye:\n{out}\n{}", server_log(&server));
    vox_until(&server, &["events", "--limit", "1000"], 10, |e| {
        e.as_array().unwrap().iter().any(|e| e["type"] == "call.completed")
    });
    let turns = flow_events(&server, "speech.heard");
    let texts: Vec<String> =
        turns.iter().map(|t| t["text"].as_str().unwrap_or_default().to_owned()).collect();
    // Every utterance is one turn; WER over the whole conversation.
    let reference = format!("{} what are your hours stop goodbye", said.join(" "));
    let words = reference.split_whitespace().count();
    let errors = voxide_speech::word_errors(&reference, &texts.join(" "));
    let wer = errors as f64 / words as f64;
    for t in &turns {
        eprintln!("heard {:<28} confidence {}", t["text"], t["confidence"]);
    }
    eprintln!(
        "receptionist over RTP: {} turns for {} utterances, word error rate {errors}/{} = {:.1} %",
        turns.len(),
        said.len() + 3,
        words,
        wer * 100.0
    );
    assert!(wer <= 0.3, "word error rate {:.1} %: heard {texts:?}", wer * 100.0);
    // The hours answer was cut short by "stop": the caller heard its start, and the audio
    // sent stops where the caller's speech was detected (it began min-speech earlier).
    let spoken = flow_events(&server, "speech.spoken");
    let hours = spoken
        .iter()
        .find(|s| s["text"].as_str().is_some_and(|t| t.starts_with("We are open")))
        .unwrap_or_else(|| panic!("no hours answer in {spoken:?}"));
    assert_eq!(hours["completed"], false, "{hours}");
    let (text, heard) = (hours["text"].as_str().unwrap(), hours["heard_text"].as_str().unwrap());
    let heard_words: Vec<&str> = heard.split_whitespace().collect();
    let text_words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        !heard_words.is_empty()
            && heard_words.len() < text_words.len()
            && text_words.starts_with(&heard_words),
        "heard {heard:?} is not a prefix of the answer"
    );
    let heard_ms = hours["heard_ms"].as_i64().unwrap();
    let interrupted_at = hours["interrupted_at_ms"].as_i64().unwrap();
    eprintln!(
        "hours answer cut at {heard_ms} ms (speech began at {interrupted_at} ms): heard {heard:?}"
    );
    // Sent until the barge-in was detected: min-speech (200 ms) after the speech began, plus a
    // frame or two of the tap and the media task.
    let lag = heard_ms - interrupted_at;
    assert!((150..=600).contains(&lag), "audio stopped {lag} ms after the caller began");
    // The answer was about 12 s; "stop" came 3 s after "what are your hours" ended.
    assert!((1000..=4000).contains(&heard_ms), "heard {heard_ms} ms of the answer");
}
