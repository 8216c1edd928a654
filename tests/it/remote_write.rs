//! proclens-exporter's remote write: pushed into a real Prometheus's receiver and queried back;
//! against an endpoint that is down, failing (500) or refusing (400): memory stays at the
//! queue's bound while samples are dropped and counted, and a refusal is not retried.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use proclens_tests::rig::prometheus::free_port;
use proclens_tests::rig::{self, ExporterDaemon, PrometheusOptions, PrometheusServer, TempCgroup};

use crate::util::{Sleeper, MIB};

/// How long a condition may take to appear (a busy 2-core machine; TCG in the VM).
const TIMEOUT: Duration = Duration::from_secs(180);

/// The value of the unlabelled sample `name` in exposition `text`.
fn metric(text: &str, name: &str) -> Result<f64> {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .with_context(|| format!("no {name} in the exposition"))?;
    value
        .trim()
        .parse()
        .with_context(|| format!("{name} = {value:?}"))
}

/// The exporter's remote write counters, from one scrape of its /metrics.
#[derive(Debug, Clone, Copy)]
struct Counters {
    sent: u64,
    failed: u64,
    dropped: u64,
    retries: u64,
    queue_samples: u64,
    queue_bytes: u64,
}

fn counters(exporter: &ExporterDaemon) -> Result<Counters> {
    let text = exporter.scrape()?;
    let get = |name: &str| -> Result<u64> {
        let value = metric(&text, &format!("proclens_remote_write_{name}"))?;
        Ok(value as u64)
    };
    Ok(Counters {
        sent: get("samples_sent_total")?,
        failed: get("samples_failed_total")?,
        dropped: get("samples_dropped_total")?,
        retries: get("retries_total")?,
        queue_samples: get("queue_samples")?,
        queue_bytes: get("queue_bytes")?,
    })
}

/// A process's resident memory, in bytes (`VmRSS`).
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .context("no VmRSS")?
        .trim()
        .parse()
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// `len` random alphanumeric characters (xorshift seeded from the clock: snappy cannot
/// shrink them).
fn random_text(len: usize) -> String {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut state = seed | 1;
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

/// One request a [`FakeEndpoint`] received.
#[derive(Debug, Clone)]
struct Received {
    /// When it arrived.
    at: Instant,
    /// Header names (lower-cased) and values.
    headers: Vec<(String, String)>,
    /// A hash of the body: a retry sends the same body again.
    body_hash: u64,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// How a [`FakeEndpoint`] answers its `n`th request (from 0): the status (e.g. "500 Internal
/// Server Error") and more header lines, each ending in CRLF.
type Answers = fn(usize) -> (&'static str, &'static str);

/// A remote write endpoint answering as told, recording what it got.
struct FakeEndpoint {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeEndpoint {
    /// Listens on a free port, answering as `answers` says.
    fn start(answers: Answers) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the fake endpoint")?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let received = received.clone();
                        std::thread::spawn(move || {
                            let _ = answer(stream, answers, &received);
                        });
                    }
                }
            })
        };
        Ok(FakeEndpoint {
            port,
            received,
            stop,
            thread: Some(thread),
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one connection's requests (HTTP/1.1 keep-alive) until the client closes it.
fn answer(stream: TcpStream, answers: Answers, received: &Mutex<Vec<Received>>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse())
            .transpose()?
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        let (status, more_headers) = {
            let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
            received.push(Received {
                at: Instant::now(),
                headers,
                body_hash: hasher.finish(),
            });
            answers(received.len() - 1)
        };
        let text = "fake endpoint's answer\n";
        write!(
            writer,
            "HTTP/1.1 {status}\r\n{more_headers}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        writer.flush()?;
    }
}

/// The host's name: the exporter's default `instance` label.
fn hostname() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

/// The families `/metrics` shows for cgroup `id`.
fn families_of(text: &str, id: &str) -> BTreeSet<String> {
    let needle = format!("id=\"{id}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .filter_map(|l| l.split('{').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn prometheus_receives_the_pushed_series() -> Result<()> {
    rig::preflight()?;
    let limit = 96 * MIB;
    let cg = TempCgroup::builder().memory_limit(limit).create()?;
    let _sleeper = Sleeper::start_in(&cg)?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        interval: Duration::from_secs(1),
        remote_write_receiver: true,
        ..PrometheusOptions::default()
    })?;
    let id = format!("/{}", cg.name());
    // Only the test's cgroup, in batches of 10: one collection is several requests.
    let config = format!(
        "[discovery]\nroots = [\"{id}\"]\n[remote_write]\ninterval = \"500ms\"\nbatch_samples = 10\n"
    );
    let url = format!("{}/api/v1/write", prometheus.url());
    let exporter = ExporterDaemon::start_with_config(&config, &["--remote-write", &url])?;

    let expr = format!("container_spec_memory_limit_bytes{{id=\"{id}\"}}");
    let samples = prometheus
        .wait_for(&expr, TIMEOUT, |s| s.len() == 1)
        .with_context(|| format!("exporter log: {}", exporter.log()))?;
    assert_eq!(samples[0].value, limit as f64, "{expr}: {samples:?}");
    assert_eq!(samples[0].label("job"), "proclens", "{samples:?}");
    assert_eq!(samples[0].label("instance"), hostname()?, "{samples:?}");

    // Every family /metrics shows for the cgroup reached Prometheus.
    let scraped = families_of(&exporter.scrape()?, &id);
    assert!(scraped.len() > 10, "{scraped:?}");
    let all = format!("{{id=\"{id}\"}}");
    prometheus.wait_for(&all, TIMEOUT, |s| {
        s.iter()
            .map(|x| x.label("__name__").to_string())
            .collect::<BTreeSet<_>>()
            == scraped
    })?;

    let c = counters(&exporter)?;
    assert!(c.sent > 0, "{c:?}");
    assert_eq!((c.failed, c.dropped), (0, 0), "{c:?}; {}", exporter.log());
    Ok(())
}

#[test]
fn the_whole_host_is_pushed_without_a_refusal() -> Result<()> {
    rig::preflight()?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        interval: Duration::from_secs(1),
        remote_write_receiver: true,
        ..PrometheusOptions::default()
    })?;
    // Every cgroup of the host, in the default batches: Prometheus refuses a request (400)
    // holding two series with one label set, so none may.
    let config = "[remote_write]\ninterval = \"1s\"\n";
    let url = format!("{}/api/v1/write", prometheus.url());
    let exporter = ExporterDaemon::start_with_config(config, &["--remote-write", &url])?;
    prometheus
        .wait_for(
            "count_over_time(machine_cpu_cores{job=\"proclens\"}[5m]) >= 3",
            TIMEOUT,
            |s| s.len() == 1,
        )
        .with_context(|| format!("exporter log: {}", exporter.log()))?;
    let containers = prometheus.query("count(container_last_seen)")?;
    assert!(
        containers.first().is_some_and(|s| s.value >= 1.0),
        "{containers:?}"
    );
    let c = counters(&exporter)?;
    assert!(c.sent > 0, "{c:?}");
    assert_eq!((c.failed, c.dropped), (0, 0), "{c:?}; {}", exporter.log());
    Ok(())
}

/// Samples the queue holds in the memory tests.
const QUEUE_SAMPLES: u64 = 200;

/// Runs an exporter pushing to `url` (which never accepts) with a small queue and every
/// series carrying a 32 KiB label snappy cannot shrink, so an unbounded queue would grow by
/// megabytes a second. Checks that once the queue is full the exporter's RSS stays within
/// 32 MiB of its level then, while fifty queues' worth of samples are dropped (and counted),
/// and that the queue gauge never exceeds the capacity. Returns the last counters.
fn memory_stays_bounded(url: &str) -> Result<Counters> {
    rig::preflight()?;
    let cg = TempCgroup::builder().memory_limit(64 * MIB).create()?;
    let _sleeper = Sleeper::start_in(&cg)?;
    let id = format!("/{}", cg.name());
    let config = format!(
        "[discovery]\nroots = [\"{id}\"]\n[remote_write]\ninterval = \"20ms\"\ntimeout = \"2s\"\n\
         queue_samples = {QUEUE_SAMPLES}\nbatch_samples = 20\n\
         [remote_write.external_labels]\npadding = \"{}\"\n",
        random_text(32 * 1024)
    );
    let exporter = ExporterDaemon::start_with_config(&config, &["--remote-write", url])?;
    let pid = exporter.pid();
    let within_bound = |c: &Counters| -> Result<()> {
        if c.queue_samples > QUEUE_SAMPLES {
            bail!(
                "queue gauge {} above its capacity {QUEUE_SAMPLES}",
                c.queue_samples
            );
        }
        Ok(())
    };

    // The queue fills, then a few queues' worth more go so allocations settle.
    let full = rig::poll(TIMEOUT, "the queue to fill and drop", || {
        let c = counters(&exporter)?;
        within_bound(&c)?;
        Ok((c.dropped > 0).then_some(c))
    })?;
    let warm = rig::poll(TIMEOUT, "five more queues' worth dropped", || {
        let c = counters(&exporter)?;
        within_bound(&c)?;
        Ok((c.dropped >= full.dropped + 5 * QUEUE_SAMPLES && c.queue_samples > 0).then_some(c))
    })?;
    let rss_full = rss_bytes(pid)?;
    let bytes_per_sample = warm.queue_bytes / warm.queue_samples.max(1);

    let mut rss_max = rss_full;
    let end = rig::poll(TIMEOUT, "fifty more queues' worth dropped", || {
        let c = counters(&exporter)?;
        within_bound(&c)?;
        rss_max = rss_max.max(rss_bytes(pid)?);
        Ok((c.dropped >= warm.dropped + 50 * QUEUE_SAMPLES).then_some(c))
    })?;
    let unbounded = (end.dropped - warm.dropped) * bytes_per_sample;
    assert!(
        unbounded >= 64 * MIB,
        "an unbounded queue would have grown by only {unbounded} bytes ({bytes_per_sample} per \
         sample): the test could not tell"
    );
    assert!(
        rss_max <= rss_full + 32 * MIB,
        "RSS grew from {rss_full} to {rss_max} bytes while {} samples were dropped (an unbounded \
         queue: +{unbounded}); {end:?}",
        end.dropped - warm.dropped
    );
    assert_eq!((end.sent, end.failed), (0, 0), "{end:?}");
    eprintln!(
        "RSS {rss_full} -> max {rss_max} bytes; {} samples dropped (unbounded: +{unbounded} bytes); {end:?}",
        end.dropped - warm.dropped
    );
    Ok(end)
}

#[test]
fn an_unreachable_endpoint_keeps_memory_bounded() -> Result<()> {
    // Bound and released: nobody listens, connections are refused.
    let url = format!("http://127.0.0.1:{}/api/v1/write", free_port()?);
    let end = memory_stays_bounded(&url)?;
    assert!(end.retries > 0, "{end:?}");
    Ok(())
}

#[test]
fn an_endpoint_answering_500_keeps_memory_bounded_and_is_retried() -> Result<()> {
    let endpoint = FakeEndpoint::start(|_| ("500 Internal Server Error", ""))?;
    let end = memory_stays_bounded(&endpoint.url())?;
    // Each 500 was a retry (of the oldest batch then: a full queue drops a batch waiting for
    // its retry first, so the same body is seldom sent twice here).
    assert!(end.retries > 0, "{end:?}");
    assert!(endpoint.received().len() as u64 >= end.retries, "{end:?}");
    Ok(())
}

#[test]
fn a_503_with_retry_after_is_retried_after_that_long_then_sent() -> Result<()> {
    rig::preflight()?;
    let endpoint = FakeEndpoint::start(|n| match n {
        0 | 1 => ("503 Service Unavailable", "Retry-After: 1\r\n"),
        _ => ("200 OK", ""),
    })?;
    let cg = TempCgroup::builder().create()?;
    let _sleeper = Sleeper::start_in(&cg)?;
    let id = format!("/{}", cg.name());
    let config = format!("[discovery]\nroots = [\"{id}\"]\n[remote_write]\ninterval = \"100ms\"\n");
    let exporter =
        ExporterDaemon::start_with_config(&config, &["--remote-write", &endpoint.url()])?;
    let c = rig::poll(TIMEOUT, "the endpoint to accept", || {
        let c = counters(&exporter)?;
        Ok((c.sent > 0 && c.queue_samples == 0).then_some(c))
    })?;
    assert_eq!(
        (c.retries, c.failed, c.dropped),
        (2, 0, 0),
        "{c:?}; {}",
        exporter.log()
    );
    let received = endpoint.received();
    assert!(received.len() >= 3, "{received:?}");
    // The first batch three times, a second apart (the backoff alone: 100 and 200 ms).
    assert_eq!(received[0].body_hash, received[1].body_hash);
    assert_eq!(received[1].body_hash, received[2].body_hash);
    for pair in received[..3].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    }
    Ok(())
}

#[test]
fn a_4xx_answer_is_counted_failed_and_not_retried() -> Result<()> {
    rig::preflight()?;
    let endpoint = FakeEndpoint::start(|_| ("400 Bad Request", ""))?;
    let cg = TempCgroup::builder().create()?;
    let _sleeper = Sleeper::start_in(&cg)?;
    let id = format!("/{}", cg.name());
    let config = format!(
        "[discovery]\nroots = [\"{id}\"]\n[remote_write]\ninterval = \"100ms\"\nbatch_samples = 20\n"
    );
    let exporter =
        ExporterDaemon::start_with_config(&config, &["--remote-write", &endpoint.url()])?;
    let c = rig::poll(TIMEOUT, "ten refused requests", || {
        let c = counters(&exporter)?;
        Ok((endpoint.received().len() >= 10 && c.failed > 0).then_some(c))
    })?;
    assert_eq!((c.retries, c.sent, c.dropped), (0, 0, 0), "{c:?}");
    let received = endpoint.received();
    let distinct: HashSet<u64> = received.iter().map(|r| r.body_hash).collect();
    assert_eq!(
        distinct.len(),
        received.len(),
        "a refused body was sent again"
    );
    // Remote write 1.0's headers.
    let first = &received[0];
    assert_eq!(first.header("content-encoding"), "snappy", "{first:?}");
    assert_eq!(first.header("content-type"), "application/x-protobuf");
    assert_eq!(first.header("x-prometheus-remote-write-version"), "0.1.0");
    assert!(
        first.header("user-agent").starts_with("proclens-exporter/"),
        "{first:?}"
    );
    assert!(exporter.log().contains("not retried"), "{}", exporter.log());
    Ok(())
}
