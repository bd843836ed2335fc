//! `vox serve --http ADDR`: the operator's endpoints beside the control API — liveness and
//! metrics.
//!
//! `GET /healthz` answers `200 ok`; `GET /metrics` the counters in Prometheus text format
//! (calls in progress, SIP messages dropped or refused, media legs open, flows compiled in
//! memory). These two need no
//! key (load balancers and scrapers call them); everything under `/api/v1` does.

use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use voxide_runtime::calls::MediaServices;
use voxide_runtime::flows::FlowEngine;
use voxide_sip::shell::{Command, SipHandle};

/// The operator routes, to merge with the API's.
pub fn routes(sip: SipHandle, media: Arc<MediaServices>, engine: FlowEngine) -> axum::Router {
    axum::Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let (sip, media, engine) = (sip.clone(), media.clone(), engine.clone());
            async move {
                let text = metrics(&sip, &media, &engine).await;
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
            }
        }),
    )
}

async fn metrics(sip: &SipHandle, media: &MediaServices, engine: &FlowEngine) -> String {
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
         voxide_media_legs {}\n\
         # HELP voxide_flows_loaded Flow versions compiled in memory (routed, running, or used lately).\n\
         # TYPE voxide_flows_loaded gauge\nvoxide_flows_loaded {}\n",
        media.engine.legs_in_use(),
        engine.free_unused()
    )
}
