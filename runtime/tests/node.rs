//! A node started in-process, without the CLI: what a test, a benchmark or a cluster member
//! does. A real SIP caller (sipp) reaches a config-routed flow over loopback, and the call
//! leaves its CDR and events in the node's store.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use voxide_runtime::node::{Node, NodeConfig};
use voxide_store::CdrFilter;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_without_the_cli_answers_a_call_and_writes_its_cdr() {
    let data = tempfile::tempdir().unwrap();
    let config: NodeConfig = toml::from_str(&format!(
        "data_dir = {:?}\nmax_calls = 16\n[sip]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = \"hello\"\nflow = \"sample-flows/hello\"\n",
        data.path()
    ))
    .unwrap();
    let node = Node::builder(config, repo()).start().await.expect("the node starts");
    assert!(node.started().bootstrapped.is_some(), "a fresh store gets its first tenant");
    assert_eq!(node.router().routes().len(), 1);
    let addr = node.udp_addr().expect("SIP over UDP");

    let (dir, port) = (data.path().to_owned(), free_port());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sipp")
            .current_dir(dir)
            .arg("-sf")
            .arg(repo().join("cli/tests/sipp/uac-flow-hangs-up.xml"))
            .args(["-s", "hello", "-m", "1", "-l", "1", "-p", &port.to_string()])
            .args(["-i", "127.0.0.1", "-timeout", "20", "-timeout_error", "-nostdin"])
            .arg(addr.to_string())
            .output()
            .expect("sipp is not installed: run scripts/test.sh, which installs sip-tester")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the call to hello failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The config's tenant ("default", made by the first start) owns the call's records.
    let tenant = node.store().tenant_by_name("default").await.unwrap().expect("the tenant");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cdrs = loop {
        let cdrs = node.store().cdrs(&tenant.id, &CdrFilter::default()).await.unwrap();
        if !cdrs.is_empty() || Instant::now() > deadline {
            break cdrs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!((cdrs[0].flow.as_str(), cdrs[0].outcome.as_str()), ("hello", "completed"));
    let events = node.store().events_after(&tenant.id, 0, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["call.ringing", "call.answered", "call.completed"]);
    node.shutdown().await;
}
