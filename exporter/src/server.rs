//! The HTTP side: `GET /metrics` (0.0.4 text, or OpenMetrics when asked; gzip when asked) and
//! `GET /healthz`. Scrapes run one at a time on the blocking pool: a second scraper waits for
//! the first instead of doubling the work.

use crate::encode::Format;
use crate::scrape::Exporter;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;

/// What the handlers share.
#[derive(Debug, Clone)]
struct Shared {
    exporter: Arc<Exporter>,
    one_scrape: Arc<Semaphore>,
}

/// The exporter's routes.
pub fn router(exporter: Arc<Exporter>) -> Router {
    let shared = Shared {
        exporter,
        one_scrape: Arc::new(Semaphore::new(1)),
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared)
        .layer(CompressionLayer::new().gzip(true))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let Ok(_permit) = shared.one_scrape.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let exporter = shared.exporter.clone();
    match tokio::task::spawn_blocking(move || exporter.scrape(format)).await {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "scrape failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("scrape failed: {e}\n"),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "scrape task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "scrape task failed\n").into_response()
        }
    }
}
