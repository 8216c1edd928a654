//! The optional push: Prometheus remote write 1.0 to one endpoint (`--remote-write URL`).
//!
//! Flow: every interval [`run`] has the exporter collect once
//! ([`crate::scrape::Exporter::collect_series`]: the same families and labels as `/metrics`,
//! stamped with the collection's time), labels each series (`__name__`, then the external
//! labels), and splits the collection into batches of at most `batch_samples` ([`proto`]),
//! each a snappy-compressed protobuf `WriteRequest`. Batches wait in a [`queue::BatchQueue`]
//! bounded in samples: when full, the oldest batch is dropped. One sender task POSTs the oldest
//! batch ([`client`]); a 2xx counts it sent, a 429, 5xx or no answer puts it back in front and
//! waits (exponential backoff, or the server's `Retry-After`; [`backoff`]), any other status
//! counts it failed. A batch waiting for its retry is still the oldest, so a long outage drops
//! it first: memory stays at the queue's bound whatever the endpoint does.

pub mod backoff;
pub mod client;
pub mod proto;
pub mod queue;

use crate::encode::{Encoder, Kind, Value};
use crate::scrape::Exporter;
use backoff::{Backoff, Verdict};
use client::{Attempt, WriteClient};
use hyper::Uri;
use queue::{Batch, BatchQueue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Remote write's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The endpoint (`http://host:port/api/v1/write`).
    pub url: Uri,
    /// Time between collections.
    pub interval: Duration,
    /// Longest time one attempt (connect, send, answer) may take.
    pub timeout: Duration,
    /// Samples queued at most; past it the oldest batch is dropped.
    pub queue_samples: usize,
    /// Samples per request at most.
    pub batch_samples: usize,
    /// Labels added to every series that lacks them, sorted by name, no empty value.
    pub external_labels: Vec<(String, String)>,
}

/// Checks a remote write URL: `http://` with a host (no TLS: see [`client`]).
pub fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https is not supported (no TLS in the exporter); send to a local \
                 proxy over http"
            ))
        }
        _ => return Err(format!("{url:?} is not an http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} names no host"));
    }
    Ok(uri)
}

/// Remote write's counters, exposed on `/metrics` with the exporter's own.
#[derive(Debug, Default)]
pub struct RemoteWriteStats {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    queue_samples: AtomicU64,
    queue_bytes: AtomicU64,
}

impl RemoteWriteStats {
    /// Samples the endpoint accepted.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Samples the endpoint refused for good.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Samples dropped from the full queue.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Requests retried.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Writes the `proclens_remote_write_*` families.
    pub fn write(&self, encoder: &mut Encoder<'_>) {
        let counters: [(&'static str, &str, &AtomicU64); 4] = [
            (
                "proclens_remote_write_samples_sent_total",
                "Samples the remote write endpoint accepted.",
                &self.sent,
            ),
            (
                "proclens_remote_write_samples_failed_total",
                "Samples the remote write endpoint refused with a status not worth retrying (4xx but 429).",
                &self.failed,
            ),
            (
                "proclens_remote_write_samples_dropped_total",
                "Samples dropped unsent because the remote write queue was full.",
                &self.dropped,
            ),
            (
                "proclens_remote_write_retries_total",
                "Remote write requests retried after a 429, a 5xx or no answer.",
                &self.retries,
            ),
        ];
        for (name, help, value) in counters {
            encoder.single(
                name,
                help,
                Kind::Counter,
                Value::Int(value.load(Ordering::Relaxed)),
            );
        }
        let gauges: [(&'static str, &str, &AtomicU64); 2] = [
            (
                "proclens_remote_write_queue_samples",
                "Samples waiting in the remote write queue.",
                &self.queue_samples,
            ),
            (
                "proclens_remote_write_queue_bytes",
                "Bytes of compressed requests waiting in the remote write queue.",
                &self.queue_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            encoder.single(
                name,
                help,
                Kind::Gauge,
                Value::Int(value.load(Ordering::Relaxed)),
            );
        }
    }
}

/// The queue and what the collector and the sender share.
#[derive(Debug)]
struct Shared {
    queue: Mutex<BatchQueue>,
    /// Woken when a batch is queued.
    ready: Notify,
    stats: Arc<RemoteWriteStats>,
}

impl Shared {
    /// Runs `op` on the queue, then counts what it dropped and updates the gauges.
    fn with_queue<T>(&self, op: impl FnOnce(&mut BatchQueue) -> (T, usize)) -> T {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (out, dropped) = op(&mut queue);
        let s = &self.stats;
        s.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        s.queue_samples
            .store(queue.samples() as u64, Ordering::Relaxed);
        s.queue_bytes.store(queue.bytes() as u64, Ordering::Relaxed);
        out
    }

    /// Queues a new batch (dropping the oldest when full) and wakes the sender.
    fn push(&self, batch: Batch) {
        self.with_queue(|q| ((), q.push_back(batch).samples));
        self.ready.notify_one();
    }

    /// Puts a batch to retry back in front (dropped if it is the oldest of a full queue).
    fn put_back(&self, batch: Batch) {
        self.with_queue(|q| ((), q.push_front(batch).samples));
    }

    /// Takes the oldest batch.
    fn take(&self) -> Option<Batch> {
        self.with_queue(|q| (q.pop_front(), 0))
    }
}

/// Collects every `settings.interval` and sends, until the runtime stops. Spawn it on the
/// exporter's runtime; the collections run on its blocking pool.
pub async fn run(exporter: Arc<Exporter>, settings: Settings, stats: Arc<RemoteWriteStats>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(BatchQueue::new(settings.queue_samples)),
        ready: Notify::new(),
        stats,
    });
    let client = WriteClient::new(settings.url.clone(), settings.timeout);
    tracing::info!(url = %settings.url, interval = ?settings.interval, "remote write on");
    tokio::spawn(send(shared.clone(), client));
    let settings = Arc::new(settings);
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (exporter, wanted, queue) = (exporter.clone(), settings.clone(), shared.clone());
        // Each batch is queued as soon as it is built: a collection larger than the queue
        // never waits whole in memory beside it.
        let collected = tokio::task::spawn_blocking(move || {
            let set = exporter.collect_series()?;
            if set.unparsable() > 0 {
                tracing::warn!(
                    series = set.unparsable(),
                    "series left out of remote write: label list unparsable"
                );
            }
            proto::batches(
                &set,
                &wanted.external_labels,
                wanted.batch_samples,
                |batch| queue.push(batch),
            )?;
            Ok::<_, CollectError>(())
        })
        .await;
        match collected {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "remote write: collection failed"),
            Err(e) => tracing::error!(error = %e, "remote write: collection task failed"),
        }
    }
}

/// A collection that could not be queued (whole or in part).
#[derive(Debug, thiserror::Error)]
enum CollectError {
    /// The host's cgroups could not be listed.
    #[error("cannot list the containers: {0}")]
    List(#[from] proclens_cgroup::Error),
    /// A request body could not be built.
    #[error(transparent)]
    Encode(#[from] proto::EncodeError),
}

/// Sends the oldest batch, one at a time, forever.
async fn send(shared: Arc<Shared>, client: WriteClient) {
    let mut backoff = Backoff::default();
    // Whether the last attempt failed: failures are logged when they start and end, not each.
    let mut failing = false;
    loop {
        let Some(batch) = shared.take() else {
            shared.ready.notified().await;
            continue;
        };
        let attempt = client.post(batch.body.clone()).await;
        let (verdict, retry_after, why) = match &attempt {
            Attempt::Answered {
                status,
                retry_after,
                body,
            } => (
                backoff::verdict(*status),
                *retry_after,
                format!("HTTP {status}: {body}"),
            ),
            Attempt::NoAnswer { reason } => (Verdict::Retry, None, reason.clone()),
        };
        match verdict {
            Verdict::Sent => {
                shared
                    .stats
                    .sent
                    .fetch_add(batch.samples as u64, Ordering::Relaxed);
                backoff.reset();
                if failing {
                    tracing::info!("remote write: the endpoint accepts again");
                    failing = false;
                }
            }
            Verdict::Fail => {
                shared
                    .stats
                    .failed
                    .fetch_add(batch.samples as u64, Ordering::Relaxed);
                if failing {
                    tracing::debug!(samples = batch.samples, %why, "remote write: batch refused");
                } else {
                    tracing::warn!(samples = batch.samples, %why, "remote write: batch refused, not retried");
                    failing = true;
                }
            }
            Verdict::Retry => {
                shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                let delay = backoff.next_delay(retry_after);
                if failing {
                    tracing::debug!(%why, ?delay, "remote write: retrying");
                } else {
                    tracing::warn!(%why, ?delay, "remote write: endpoint failing, retrying with backoff");
                    failing = true;
                }
                shared.put_back(batch);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_url("http://127.0.0.1:9090/api/v1/write").is_ok());
        assert!(parse_url("http://prometheus/api/v1/write").is_ok());
        let https = parse_url("https://x/api/v1/write").unwrap_err();
        assert!(https.contains("https is not supported"), "{https}");
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/api/v1/write").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn counters_are_written_as_families() {
        let stats = RemoteWriteStats::default();
        stats.sent.store(10, Ordering::Relaxed);
        stats.queue_samples.store(3, Ordering::Relaxed);
        let mut out = String::new();
        let mut encoder = Encoder::new(&mut out, crate::encode::Format::Text);
        stats.write(&mut encoder);
        encoder.finish();
        assert!(out.contains("# TYPE proclens_remote_write_samples_sent_total counter\nproclens_remote_write_samples_sent_total 10\n"), "{out}");
        assert!(out.contains("proclens_remote_write_samples_dropped_total 0\n"));
        assert!(out.contains("proclens_remote_write_retries_total 0\n"));
        assert!(out.contains("# TYPE proclens_remote_write_queue_samples gauge\nproclens_remote_write_queue_samples 3\n"));
    }

    #[test]
    fn shared_queue_counts_drops_and_keeps_the_gauges() {
        let stats = Arc::new(RemoteWriteStats::default());
        let shared = Shared {
            queue: Mutex::new(BatchQueue::new(10)),
            ready: Notify::new(),
            stats: stats.clone(),
        };
        let batch = |samples| Batch {
            samples,
            body: bytes::Bytes::from_static(b"xyz"),
        };
        shared.push(batch(6));
        shared.push(batch(6));
        assert_eq!(stats.dropped(), 6);
        assert_eq!(stats.queue_samples.load(Ordering::Relaxed), 6);
        let taken = shared.take().unwrap();
        assert_eq!(stats.queue_samples.load(Ordering::Relaxed), 0);
        shared.push(batch(5));
        shared.put_back(taken);
        assert_eq!(stats.dropped(), 12, "the retried batch was the oldest");
        assert_eq!(stats.queue_samples.load(Ordering::Relaxed), 5);
        assert_eq!(stats.queue_bytes.load(Ordering::Relaxed), 3);
    }
}
