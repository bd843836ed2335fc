//! `vox serve --http ADDR`: the operator's HTTP endpoint — liveness and metrics.
//!
//! `GET /healthz` answers `200 ok`; `GET /metrics` the counters in Prometheus text format
//! (calls in progress, SIP messages dropped or refused, media legs open). A small HTTP/1.1
//! responder on purpose: the control API (and its router) replaces it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use voxide_runtime::calls::MediaServices;
use voxide_sip::shell::{Command, SipHandle};

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, sip: SipHandle, media: Arc<MediaServices>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, sip.clone(), media.clone()));
            }
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, sip: SipHandle, media: Arc<MediaServices>) {
    // The request head only (no bodies here), within 8 KiB and 5 s.
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    let (code, reason, body) = if read != Ok(true) {
        (400, "Bad Request", "incomplete request\n".to_owned())
    } else {
        let text = String::from_utf8_lossy(&head);
        let mut parts = text.lines().next().unwrap_or_default().split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("GET"), Some("/healthz"), Some(_)) => (200, "OK", "ok\n".to_owned()),
            (Some("GET"), Some("/metrics"), Some(_)) => (200, "OK", metrics(&sip, &media).await),
            (Some("GET"), Some(_), Some(_)) => (404, "Not Found", "not found\n".to_owned()),
            (Some(_), Some(_), Some(v)) if v.starts_with("HTTP/") => {
                (405, "Method Not Allowed", "only GET\n".to_owned())
            }
            _ => (400, "Bad Request", "malformed request line\n".to_owned()),
        }
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn metrics(sip: &SipHandle, media: &MediaServices) -> String {
    let active = sip.active_calls().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stats = if sip.send(Command::Stats(tx)).await { rx.await.ok() } else { None };
    let (dropped, rejected) = stats.map_or((0, 0), |s| (s.dropped, s.rejected));
    format!(
        "# HELP voxide_sip_active_calls Calls in progress.\n# TYPE voxide_sip_active_calls gauge\n\
         voxide_sip_active_calls {active}\n\
         # HELP voxide_sip_dropped_total SIP messages dropped (garbage, stray responses).\n\
         # TYPE voxide_sip_dropped_total counter\nvoxide_sip_dropped_total {dropped}\n\
         # HELP voxide_sip_rejected_total SIP requests refused with an error response.\n\
         # TYPE voxide_sip_rejected_total counter\nvoxide_sip_rejected_total {rejected}\n\
         # HELP voxide_media_legs Media legs (RTP port pairs) open.\n# TYPE voxide_media_legs gauge\n\
         voxide_media_legs {}\n",
        media.engine.legs_in_use()
    )
}
