//! The POST itself, through hyper-util's pooled HTTP/1 client over hyper 1, which axum already
//! builds on: the only crates it adds are its pool's small helpers (`want`, `try-lock`,
//! `futures-channel`). reqwest would wrap the same hyper in layers a POST to one endpoint does
//! not need (redirects, proxies, TLS by default). Plain `http://` only: a TLS endpoint is
//! reached through a local proxy.

use super::backoff::parse_retry_after;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::{Duration, SystemTime};

/// The user agent every request names.
pub const USER_AGENT_VALUE: &str = concat!("proclens-exporter/", env!("CARGO_PKG_VERSION"));

/// How much of a refusal's body is kept for the log.
const BODY_LOGGED: usize = 1024;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered.
    Answered {
        /// The HTTP status.
        status: u16,
        /// Its `Retry-After`, when it sent one that parses.
        retry_after: Option<Duration>,
        /// The start of its body (for the log), lossily decoded.
        body: String,
    },
    /// No answer: connection refused or reset, DNS failure, or the timeout.
    NoAnswer {
        /// Why, with every cause.
        reason: String,
    },
}

/// POSTs request bodies to one remote write endpoint.
#[derive(Debug, Clone)]
pub struct WriteClient {
    http: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    timeout: Duration,
}

impl WriteClient {
    /// A client for `url` (an `http://` URL), each attempt (connect, send, answer) bounded by
    /// `timeout`. Needs a tokio runtime with timers to send.
    pub fn new(url: Uri, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        WriteClient { http, url, timeout }
    }

    /// POSTs one snappy-compressed `WriteRequest` with remote write 1.0's headers.
    pub async fn post(&self, body: Bytes) -> Attempt {
        let request = Request::post(self.url.clone())
            .header(CONTENT_ENCODING, HeaderValue::from_static("snappy"))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )
            .header(
                "X-Prometheus-Remote-Write-Version",
                HeaderValue::from_static("0.1.0"),
            )
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Full::new(body));
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                return Attempt::NoAnswer {
                    reason: format!("cannot build the request: {e}"),
                }
            }
        };
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| chain(&e))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // Read the body so the connection can be reused; a long one is cut (and that
            // connection closed).
            let body = match Limited::new(response.into_body(), BODY_LOGGED)
                .collect()
                .await
            {
                Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, String>(Attempt::Answered {
                status,
                retry_after,
                body: body.trim().to_string(),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(reason)) => Attempt::NoAnswer { reason },
            Err(_) => Attempt::NoAnswer {
                reason: format!("no answer within {:?}", self.timeout),
            },
        }
    }
}

/// An error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
