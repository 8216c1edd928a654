//! proclens-exporter scraped by a real Prometheus: real cgroups with real workloads (a process
//! allocating a known amount, CPU burners, a quota that throttles), queried back through
//! Prometheus's API. Runs on the v1 host and again in the v2 VM.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proclens_cgroup::files::FileCache;
use proclens_cgroup::{Collector, Discovery, FoundCgroup, HostPaths};
use proclens_exporter::encode::Format;
use proclens_exporter::filter::MetricFilter;
use proclens_exporter::scrape::{Exporter, LabelSource, RuntimeLabels};
use proclens_tests::rig::prometheus::http_get;
use proclens_tests::rig::{
    self, ContainerSpec, ContainerdDaemon, ExporterDaemon, PodSpec, PrometheusOptions,
    PrometheusServer, Sample, TempCgroup, BUSYBOX_IMAGE,
};

use crate::util::MIB;

/// How long a condition in Prometheus may take to appear (scrapes every second; TCG in the VM).
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(120);

/// A process in a test cgroup, killed on drop.
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Workload {
    /// Spawns `program args`, moves it into `cg`, and only then tells it to start (a line on its
    /// stdin): on v1, memory charged before the move would stay with the old cgroup.
    fn start_in(cg: &TempCgroup, program: &str, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {program}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        let mut workload = Workload {
            child,
            stdin,
            stdout,
        };
        cg.add_pid(workload.child.id())?;
        let stdin = workload.stdin.as_mut().context("no stdin")?;
        writeln!(stdin, "go").context("start the workload")?;
        stdin.flush()?;
        Ok(workload)
    }

    /// The workload binary (`proclens-workload`, env `PROCLENS_WORKLOAD_BIN`).
    fn binary() -> Result<String> {
        let path = rig::find_binary("PROCLENS_WORKLOAD_BIN", "proclens-workload")?;
        Ok(path
            .to_str()
            .context("workload path is not UTF-8")?
            .to_string())
    }

    /// A process that, once in `cg`, allocates and touches `bytes` and says "ready".
    fn allocating(cg: &TempCgroup, bytes: u64) -> Result<Self> {
        let bytes = bytes.to_string();
        let mut workload = Workload::start_in(cg, &Workload::binary()?, &["alloc", &bytes])?;
        let mut line = String::new();
        let stdout = workload.stdout.as_mut().context("no stdout")?;
        stdout
            .read_line(&mut line)
            .context("read the allocator's answer")?;
        if line.trim() != "ready" {
            bail!("the allocator said {line:?} instead of ready");
        }
        Ok(workload)
    }

    /// A process spinning on the CPU once in `cg`.
    fn burning(cg: &TempCgroup) -> Result<Self> {
        Workload::start_in(cg, &Workload::binary()?, &["burn"])
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the one sample of `samples`, failing unless there is exactly one.
fn single(samples: &[Sample], what: &str) -> Result<f64> {
    match samples {
        [one] => Ok(one.value),
        _ => bail!("{what}: expected one series, got {samples:?}"),
    }
}

/// The cgroup's path as the exporter's `id` label shows it.
fn id_of(cg: &TempCgroup) -> String {
    format!("/{}", cg.name())
}

/// The kernel's CPU usage of `cg` in seconds: v1 cpuacct.usage where a cpuacct hierarchy has
/// the cgroup, else v2 cpu.stat usage_usec (a hybrid host's controller-less v2 directory counts
/// too, but lazily: never prefer it).
fn kernel_cpu_seconds(cg: &TempCgroup) -> Result<f64> {
    let dirs: Vec<_> = cg
        .procs_files()
        .iter()
        .filter_map(|f| f.parent().map(|d| d.to_path_buf()))
        .collect();
    if let Some(usage) = dirs
        .iter()
        .map(|d| d.join("cpuacct.usage"))
        .find(|f| f.exists())
    {
        let ns: u64 = std::fs::read_to_string(&usage)?.trim().parse()?;
        return Ok(ns as f64 / 1e9);
    }
    let stat = dirs
        .iter()
        .map(|d| d.join("cpu.stat"))
        .find(|f| f.exists())
        .context("no cpuacct.usage or cpu.stat")?;
    let text = std::fs::read_to_string(&stat)?;
    let usec: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .context("cpu.stat has no usage_usec")?
        .trim()
        .parse()?;
    Ok(usec as f64 / 1e6)
}

#[test]
fn prometheus_scrapes_memory_and_cpu_of_real_cgroups() -> Result<()> {
    rig::preflight()?;
    let memory_cg = TempCgroup::builder().memory_limit(512 * MIB).create()?;
    let burner_cg = TempCgroup::builder().create()?;
    let allocated = 200 * MIB;
    let _allocator = Workload::allocating(&memory_cg, allocated)?;
    let _burner = Workload::burning(&burner_cg)?;
    let exporter = ExporterDaemon::start_over(&[id_of(&memory_cg), id_of(&burner_cg)], &[])?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        targets: vec![exporter.target()],
        interval: Duration::from_secs(1),
        ..PrometheusOptions::default()
    })?;

    prometheus.wait_for("up{job=\"proclens\"} == 1", PROMETHEUS_TIMEOUT, |s| {
        s.len() == 1
    })?;

    // Memory: the allocation, within 10% (the interpreter itself adds a few MiB).
    let memory_id = id_of(&memory_cg);
    let within = |value: f64| (value - allocated as f64).abs() <= 0.1 * allocated as f64;
    for family in [
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
    ] {
        let expr = format!("{family}{{id=\"{memory_id}\"}}");
        let samples = prometheus.wait_for(&expr, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
        let value = single(&samples, &expr)?;
        assert!(
            within(value),
            "{expr} = {value} bytes, expected {allocated} ± 10%"
        );
    }
    let limit = format!("container_spec_memory_limit_bytes{{id=\"{memory_id}\"}}");
    let samples = prometheus.wait_for(&limit, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    assert_eq!(single(&samples, &limit)?, (512 * MIB) as f64, "{limit}");

    // CPU, exactly: a value Prometheus scraped after the kernel counted k0 lies between k0
    // and what the kernel counts right after the query.
    let burner_id = id_of(&burner_cg);
    let counter = format!("container_cpu_usage_seconds_total{{id=\"{burner_id}\",cpu=\"total\"}}");
    let k0 = kernel_cpu_seconds(&burner_cg)?;
    let samples = prometheus.wait_for(&counter, PROMETHEUS_TIMEOUT, |s| {
        s.len() == 1 && s[0].value >= k0
    })?;
    let k1 = kernel_cpu_seconds(&burner_cg)?;
    let scraped = single(&samples, &counter)?;
    assert!(
        k0 <= scraped && scraped <= k1,
        "{counter} = {scraped}, the kernel counted {k0} before and {k1} after"
    );

    // And its rate over 10 s: the burner's share of a core, as the kernel counted it over the
    // same 10 s (loosely: scrapes land anywhere within a second of the window's ends).
    let rate_expr = format!("rate({counter}[10s])");
    let (k_start, started) = (kernel_cpu_seconds(&burner_cg)?, Instant::now());
    rig::poll(Duration::from_secs(60), "10 s to pass", || {
        Ok((started.elapsed() >= Duration::from_secs(10)).then_some(()))
    })?;
    let kernel_rate = (kernel_cpu_seconds(&burner_cg)? - k_start) / started.elapsed().as_secs_f64();
    let samples = prometheus.wait_for(&rate_expr, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    let rate = single(&samples, &rate_expr)?;
    assert!(
        kernel_rate > 0.2,
        "the burner ran only {kernel_rate} cores: the machine is too busy to judge"
    );
    assert!(
        (rate - kernel_rate).abs() <= 0.5 * kernel_rate,
        "{rate_expr} = {rate} cores, the kernel counted {kernel_rate}; samples: {}",
        prometheus.query_raw(&format!("{counter}[15s]"))?
    );
    Ok(())
}

#[test]
fn a_throttled_cgroup_shows_throttling_in_prometheus() -> Result<()> {
    rig::preflight()?;
    // Half a core for four burners: throttled in nearly every period, also on a busy machine
    // (CFS shares the CPUs by runnable thread: with two burners and a load of 8 they would get
    // less than half a core between them and never reach the quota).
    let cg = TempCgroup::builder().cfs_quota(50_000, 100_000).create()?;
    let _burners = [
        Workload::burning(&cg)?,
        Workload::burning(&cg)?,
        Workload::burning(&cg)?,
        Workload::burning(&cg)?,
    ];
    let exporter = ExporterDaemon::start_over(&[id_of(&cg)], &[])?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        targets: vec![exporter.target()],
        interval: Duration::from_secs(1),
        ..PrometheusOptions::default()
    })?;
    let id = id_of(&cg);
    let ratio = format!(
        "increase(container_cpu_cfs_throttled_periods_total{{id=\"{id}\"}}[10s]) \
         / increase(container_cpu_cfs_periods_total{{id=\"{id}\"}}[10s]) > 0.25"
    );
    prometheus.wait_for(&ratio, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    let quota = format!("container_spec_cpu_quota{{id=\"{id}\"}}");
    assert_eq!(single(&prometheus.query(&quota)?, &quota)?, 50_000.0);
    let period = format!("container_spec_cpu_period{{id=\"{id}\"}}");
    assert_eq!(single(&prometheus.query(&period)?, &period)?, 100_000.0);
    let throttled = format!("container_cpu_cfs_throttled_seconds_total{{id=\"{id}\"}} > 0");
    prometheus.wait_for(&throttled, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    Ok(())
}

/// The families of one exposition, from its TYPE lines.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn exposition_passes_promtool_but_for_the_documented_cadvisor_names() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().memory_limit(64 * MIB).create()?;
    let _sleeper = Workload::start_in(&cg, "sh", &["-c", "read _; read _"])?;
    // The whole host: every kind of cgroup it has goes through promtool.
    let exporter = ExporterDaemon::start(None, &[])?;
    let text = exporter.scrape()?;
    assert!(text.contains(&format!("id=\"{}\"", id_of(&cg))), "{text}");
    let unexpected = crate::util::promtool_complaints(&text)?;
    assert!(unexpected.is_empty(), "promtool: {unexpected:?}");
    assert!(families(&text).contains("container_memory_failcnt"));
    Ok(())
}

#[test]
fn openmetrics_and_gzip_when_asked() -> Result<()> {
    rig::preflight()?;
    let exporter = ExporterDaemon::start(None, &[])?;
    let url = format!("{}/metrics", exporter.url());
    let text = http_get(&url, &[("Accept-Encoding", "identity")])?;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(text.content_encoding, "");
    assert!(!text.body.contains("# EOF"), "0.0.4 text has no EOF marker");
    assert!(text
        .body
        .contains("# TYPE container_cpu_usage_seconds_total counter"));
    let om = http_get(
        &url,
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    )?;
    assert_eq!(om.status, 200);
    assert!(om
        .content_type
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(om.body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(
        om.body
            .contains("# TYPE container_cpu_usage_seconds counter"),
        "{}",
        om.body
    );
    // Compressed when asked (the rig decodes it).
    let gz = http_get(&url, &[("Accept-Encoding", "gzip")])?;
    assert_eq!((gz.status, gz.content_encoding.as_str()), (200, "gzip"));
    assert!(
        gz.body.contains("# TYPE machine_cpu_cores gauge"),
        "{}",
        gz.body
    );
    let health = http_get(&format!("{}/healthz", exporter.url()), &[])?;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    Ok(())
}

/// The value of the series of `family` whose label list contains every `labels` pair, from an
/// exposition in the 0.0.4 text format.
fn value_in(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(family))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .find(|rest| {
            labels
                .iter()
                .all(|(name, value)| rest.contains(&format!("{name}=\"{value}\"")))
        })
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A network namespace with a veth pair to the host (`<name>h` on the host, `<name>c` inside,
/// 10.<a>.<b>.1 and .2 /30), removed on drop.
struct VethNamespace {
    name: String,
    host_ip: String,
    inner_ip: String,
}

impl VethNamespace {
    fn create(index: u8) -> Result<Self> {
        // A short unique name: interface names are limited to 15 bytes.
        let name = format!("pl{}x{index}", std::process::id() % 100_000);
        let subnet = format!(
            "10.251.{}",
            (std::process::id() % 60) * 4 + u32::from(index)
        );
        let ns = VethNamespace {
            name: name.clone(),
            host_ip: format!("{subnet}.1"),
            inner_ip: format!("{subnet}.2"),
        };
        let (host_if, inner_if) = (format!("{name}h"), format!("{name}c"));
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                inner_if.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                inner_if.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.host_ip),
                "dev".into(),
                host_if.clone(),
            ],
            vec!["link".into(), "set".into(), host_if, "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.inner_ip),
                "dev".into(),
                inner_if.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                inner_if,
                "up".into(),
            ],
        ];
        for args in steps {
            let out = rig::process::run(Command::new("ip").args(&args), Duration::from_secs(30))?;
            if !out.status.success() {
                bail!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(ns)
    }

    /// The interface inside the namespace.
    fn inner_interface(&self) -> String {
        format!("{}c", self.name)
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn traffic_into_a_container_namespace_shows_in_its_network_counters() -> Result<()> {
    rig::preflight()?;
    let netns = VethNamespace::create(1)?;
    let cg = TempCgroup::builder().create()?;
    let host_cg = TempCgroup::builder().create()?;
    // A UDP receiver inside the namespace (and the cgroup): it counts what arrives.
    // It stops at 100 datagrams, or after 5 s without one (UDP may drop some on a busy host).
    let listen = format!("{}:9999", netns.inner_ip);
    let workload = Workload::binary()?;
    let mut receiver = Workload::start_in(
        &cg,
        "ip",
        &[
            "netns",
            "exec",
            &netns.name,
            &workload,
            "udp-recv",
            &listen,
            "100",
            "5000",
        ],
    )?;
    let mut line = String::new();
    receiver
        .stdout
        .as_mut()
        .context("no stdout")?
        .read_line(&mut line)?;
    assert_eq!(line.trim(), "ready");
    // A process of another cgroup on the host's network: it has no network series.
    let _host_process = Workload::start_in(&host_cg, "sh", &["-c", "read _; read _"])?;
    let exporter = ExporterDaemon::start_over(&[id_of(&cg), id_of(&host_cg)], &[])?;
    let id = id_of(&cg);
    let interface = netns.inner_interface();
    let labels = [("id", id.as_str()), ("interface", interface.as_str())];
    let before = exporter.scrape()?;
    let rx_bytes = value_in(&before, "container_network_receive_bytes_total", &labels)
        .with_context(|| format!("no receive series for {labels:?} in\n{before}"))?;
    let rx_packets = value_in(&before, "container_network_receive_packets_total", &labels)
        .context("no receive packets series")?;

    let socket = std::net::UdpSocket::bind(format!("{}:0", netns.host_ip))?;
    let payload = [7u8; 1000];
    for _ in 0..100 {
        socket.send_to(&payload, format!("{}:9999", netns.inner_ip))?;
    }
    line.clear();
    receiver
        .stdout
        .as_mut()
        .context("no stdout")?
        .read_line(&mut line)?;
    let received: f64 = line
        .trim()
        .parse()
        .with_context(|| format!("receiver said {line:?}"))?;
    assert!(received >= 1.0, "the receiver got none of the datagrams");

    let after = exporter.scrape()?;
    let rx_bytes_after = value_in(&after, "container_network_receive_bytes_total", &labels)
        .context("no receive series after the traffic")?;
    let rx_packets_after = value_in(&after, "container_network_receive_packets_total", &labels)
        .context("no receive packets series after")?;
    // Every datagram received: 1000 bytes + UDP (8), IPv4 (20) and Ethernet (14) headers each.
    assert!(
        rx_packets_after - rx_packets >= received,
        "receive packets went from {rx_packets} to {rx_packets_after}, {received} datagrams arrived"
    );
    assert!(
        rx_bytes_after - rx_bytes >= received * 1042.0,
        "receive bytes went from {rx_bytes} to {rx_bytes_after}, {received} datagrams arrived"
    );
    for family in [
        "container_network_transmit_bytes_total",
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
    ] {
        assert!(
            value_in(&after, family, &labels).is_some(),
            "{family} for {labels:?}"
        );
    }
    assert!(
        value_in(
            &after,
            "container_network_receive_bytes_total",
            &[("id", "/lo")]
        )
        .is_none()
            && !after.contains("interface=\"lo\""),
        "loopback is left out"
    );
    let host_id = id_of(&host_cg);
    assert!(
        value_in(
            &after,
            "container_network_receive_bytes_total",
            &[("id", &host_id)]
        )
        .is_none(),
        "a host-network process's cgroup has no network series"
    );
    assert!(
        value_in(&after, "container_processes", &[("id", &host_id)]) == Some(1.0),
        "but it is exported"
    );
    Ok(())
}

/// A label source that destroys one cgroup (its process killed, its directories removed) when
/// the exporter asks for that cgroup's labels: after its cgroup files were read and before its
/// processes are, the moment a container exiting mid-scrape hits.
struct DestroyWhenAsked {
    victim: String,
    doomed: Mutex<Option<(Workload, TempCgroup)>>,
}

impl LabelSource for DestroyWhenAsked {
    fn labels(&self, cgroup: &FoundCgroup) -> Option<Arc<RuntimeLabels>> {
        if cgroup.path == self.victim {
            // The process first, then the directories (Workload's drop waits for the exit).
            if let Some((workload, cg)) = self.doomed.lock().unwrap().take() {
                drop(workload);
                drop(cg);
            }
        }
        None
    }
}

#[test]
fn a_cgroup_vanishing_during_a_scrape_drops_only_its_series() -> Result<()> {
    rig::preflight()?;
    let parent = TempCgroup::builder().create()?;
    parent.enable_controllers_for_children()?;
    let stays = parent.child("stays")?;
    let goes = parent.child("goes")?;
    let _stays_process = Workload::start_in(&stays, "sh", &["-c", "read _; read _"])?;
    let goes_process = Workload::start_in(&goes, "sh", &["-c", "read _; read _"])?;
    let (stays_id, goes_id) = (id_of(&stays), id_of(&goes));
    let hook = Arc::new(DestroyWhenAsked {
        victim: goes_id.clone(),
        doomed: Mutex::new(Some((goes_process, goes))),
    });
    let collector = Collector::discover(HostPaths::default(), FileCache::new(1000))?;
    let discovery = Discovery {
        roots: vec![id_of(&parent)],
        ..Discovery::default()
    };
    let exporter = Exporter::new(collector, discovery, &MetricFilter::default(), hook.clone());

    let text = exporter.scrape(Format::Text)?;
    assert!(
        hook.doomed.lock().unwrap().is_none(),
        "the victim was listed and destroyed"
    );
    assert!(
        !text.contains(&format!("id=\"{goes_id}\"")),
        "no series of the vanished cgroup:\n{text}"
    );
    assert_eq!(
        value_in(&text, "container_processes", &[("id", &stays_id)]),
        Some(1.0),
        "its sibling is still there:\n{text}"
    );
    assert_eq!(
        value_in(&text, "proclens_exporter_containers_vanished_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value_in(&text, "proclens_exporter_containers", &[]),
        Some(1.0)
    );
    Ok(())
}

#[test]
fn at_most_60_series_per_container() -> Result<()> {
    rig::preflight()?;
    // Everything a container can have: a memory and a CPU limit, a network namespace with one
    // interface, block I/O on one device.
    let netns = VethNamespace::create(2)?;
    let cg = TempCgroup::builder()
        .memory_limit(256 * MIB)
        .cfs_quota(50_000, 100_000)
        .create()?;
    let dir = tempfile::Builder::new()
        .prefix("proclens-test-io-")
        .tempdir()?;
    let (dev, _) = crate::util::disk_of(dir.path())?
        .context("the temp dir is not on a block device: no I/O series to count")?;
    cg.count_io_on(&dev)?;
    let file = crate::util::uncached_file(dir.path(), MIB as usize)?;
    let script = format!("read _; cat {} > /dev/null; read _", file.display());
    let _process = Workload::start_in(
        &cg,
        "ip",
        &["netns", "exec", &netns.name, "sh", "-c", &script],
    )?;
    let exporter = ExporterDaemon::start_over(&[id_of(&cg)], &[])?;
    let id = id_of(&cg);
    let needle = format!("id=\"{id}\"");
    let text = rig::poll(
        Duration::from_secs(30),
        "the container's network series",
        || {
            let text = exporter.scrape()?;
            Ok(text
                .contains(&format!("interface=\"{}\"", netns.inner_interface()))
                .then_some(text))
        },
    )?;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .collect();
    eprintln!("{} series for one fully limited container", series.len());
    assert!(
        series.len() <= 60,
        "{} series for one container (budget 60):\n{}",
        series.len(),
        series.join("\n")
    );
    // Not a vacuous bound: the families a v1 container has are all there.
    assert!(
        series.len() >= 35,
        "only {} series:\n{}",
        series.len(),
        series.join("\n")
    );
    Ok(())
}

/// The kubernetes-mixin's CPUThrottlingHigh alert, with 20 s windows instead of 5 m and no
/// `for`, as a Prometheus rule file.
const CPU_THROTTLING_HIGH: &str = r#"groups:
  - name: kubernetes-resources
    rules:
      - alert: CPUThrottlingHigh
        expr: |
          sum(increase(container_cpu_cfs_throttled_periods_total{container!=""}[20s])) by (container, pod, namespace)
            /
          sum(increase(container_cpu_cfs_periods_total[20s])) by (container, pod, namespace)
            > ( 25 / 100 )
"#;

#[test]
fn a_containerd_pod_gets_cri_labels_and_fires_cpu_throttling_high() -> Result<()> {
    rig::preflight()?;
    let daemon = ContainerdDaemon::start()?;
    let pod = PodSpec::kubelet("games", "arena-0", &[("app", "arena")]);
    let sandbox = daemon.run_pod(&pod)?;
    let kubelet_labels: HashMap<String, String> = [
        ("io.kubernetes.container.name", "server"),
        ("io.kubernetes.pod.name", "arena-0"),
        ("io.kubernetes.pod.namespace", "games"),
        ("io.kubernetes.pod.uid", pod.uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let server = daemon.start_container(
        &sandbox,
        &ContainerSpec {
            name: "server".into(),
            image: BUSYBOX_IMAGE.into(),
            labels: kubelet_labels,
            // Four burners under half a core: throttled in nearly every period, on a busy
            // machine too.
            command: vec![
                "sh".into(),
                "-c".into(),
                "for i in 1 2 3; do while :; do :; done & done; while :; do :; done".into(),
            ],
        },
    )?;
    let cpu_dir = daemon
        .container_cgroup("cpu", &pod, &server)
        .context("no cpu hierarchy")?;
    let layout = proclens_cgroup::Layout::discover(&HostPaths::default())?;
    let path = format!("{}/{server}", daemon.pod_cgroup(&pod));
    proclens_cgroup::write::apply(
        &layout,
        &layout.set_at(&path),
        &proclens_cgroup::write::LimitUpdate {
            cpu_max: Some(proclens_cgroup::write::CpuBandwidth {
                quota_us: Some(50_000),
                period_us: 100_000,
            }),
            ..Default::default()
        },
    )
    .with_context(|| format!("limit {} to half a core", cpu_dir.display()))?;

    let exporter = ExporterDaemon::start_with_config(
        &format!(
            "[discovery]\nroots = [{:?}]\n[cri]\nendpoint = {:?}\nrefresh = \"1s\"\n",
            daemon.cgroup_root(),
            daemon.socket().display().to_string()
        ),
        &[],
    )?;

    // The container's series carry its CRI labels, the pod's series its pod's (no container).
    let text = rig::poll(Duration::from_secs(60), "CRI labels on the series", || {
        let text = exporter.scrape()?;
        Ok(text.contains("container=\"server\"").then_some(text))
    })?;
    let container_labels = [
        ("id", path.as_str()),
        ("name", server.as_str()),
        ("image", BUSYBOX_IMAGE),
        ("namespace", "games"),
        ("pod", "arena-0"),
        ("container", "server"),
    ];
    assert!(
        value_in(
            &text,
            "container_cpu_usage_seconds_total",
            &container_labels
        )
        .is_some(),
        "no CPU series with {container_labels:?} in\n{text}"
    );
    let pod_path = daemon.pod_cgroup(&pod);
    let pod_line = text
        .lines()
        .find(|l| {
            l.starts_with("container_memory_usage_bytes{")
                && l.contains(&format!("id=\"{pod_path}\""))
        })
        .with_context(|| format!("no memory series for the pod cgroup {pod_path} in\n{text}"))?;
    assert!(
        pod_line.contains("pod=\"arena-0\"")
            && pod_line.contains("namespace=\"games\"")
            && !pod_line.contains("container="),
        "pod series: {pod_line}"
    );

    let prometheus = PrometheusServer::start(&PrometheusOptions {
        targets: vec![exporter.target()],
        interval: Duration::from_secs(1),
        rules: Some(CPU_THROTTLING_HIGH.to_string()),
        ..PrometheusOptions::default()
    })?;
    let firing = prometheus.wait_for(
        "ALERTS{alertname=\"CPUThrottlingHigh\",alertstate=\"firing\"}",
        PROMETHEUS_TIMEOUT,
        |s| !s.is_empty(),
    )?;
    assert_eq!(firing.len(), 1, "{firing:?}");
    let alert = &firing[0];
    assert_eq!(
        (
            alert.label("container"),
            alert.label("pod"),
            alert.label("namespace")
        ),
        ("server", "arena-0", "games")
    );
    Ok(())
}
