//! `vox serve --http ADDR`: the operator's endpoints beside the control API — liveness and
//! metrics.
//!
//! `GET /healthz` answers `200 ok`; `GET /metrics` the node's counters in Prometheus text
//! format ([`voxide_runtime::node::Metrics`]: calls in progress, SIP messages dropped or
//! refused, media legs open, flows compiled in memory). These two need no key (load
//! balancers and scrapers call them); everything under `/api/v1` does.

use axum::http::header;
use axum::routing::get;
use voxide_runtime::node::Metrics;

/// The operator routes, to merge with the API's.
pub fn routes(metrics: Metrics) -> axum::Router {
    axum::Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                let text = metrics.render().await;
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
            }
        }),
    )
}
