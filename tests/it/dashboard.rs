//! The Grafana dashboard (packaging/grafana/proclens.json): every metric name its PromQL uses is
//! a family a real exporter (reading a real fused's stats file) emits.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use proclens_tests::rig::{self, PrometheusOptions, PrometheusServer, TempCgroup};
use serde_json::Value;

use crate::fused_stats::{exporter_reading, PublishingFused};
use crate::util::probe_in;

/// PromQL functions the dashboard may call (followed by `(`).
const FUNCTIONS: &[&str] = &[
    "abs",
    "clamp_min",
    "clamp_max",
    "histogram_quantile",
    "increase",
    "irate",
    "label_values",
    "rate",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "vector",
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "topk",
    "bottomk",
];

/// Aggregations and operators written as words (not followed by `(` when grouped).
const KEYWORDS: &[&str] = &[
    "sum", "avg", "max", "min", "count", "topk", "bottomk", "and", "or", "unless", "bool", "offset",
];

/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The dashboard file.
fn dashboard_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/proclens.json")
}

/// `expr` with string literals emptied and the insides of `{…}` and `[…]` removed (label
/// matchers, range durations, Grafana variables live there).
fn strip(expr: &str) -> Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars();
    let mut closing: Option<char> = None;
    while let Some(c) = chars.next() {
        if c == '"' {
            let mut escaped = false;
            loop {
                match chars.next() {
                    None => bail!("unterminated string in {expr:?}"),
                    Some('\\') if !escaped => escaped = true,
                    Some('"') if !escaped => break,
                    Some(_) => escaped = false,
                }
            }
            if closing.is_none() {
                out.push_str("\"\"");
            }
            continue;
        }
        match (closing, c) {
            (None, '{') => {
                out.push('{');
                closing = Some('}');
            }
            (None, '[') => {
                out.push('[');
                closing = Some(']');
            }
            (Some(end), c) if c == end => {
                out.push(c);
                closing = None;
            }
            (Some(_), _) => {}
            (None, c) => out.push(c),
        }
    }
    ensure!(closing.is_none(), "unclosed bracket in {expr:?}");
    Ok(out)
}

/// The metric names a PromQL expression selects: identifiers that are not functions (followed
/// by `(`), aggregation or operator words, or the label names of a grouping clause. An unknown
/// function is an error, so a new one is looked at rather than taken for a metric.
fn metric_names(expr: &str) -> Result<BTreeSet<String>> {
    let text = strip(expr)?;
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut at = 0;
    while at < bytes.len() {
        let c = bytes[at];
        let starts_ident = c.is_ascii_alphabetic() || c == b'_' || c == b':';
        let after_number = at > 0 && (bytes[at - 1].is_ascii_digit() || bytes[at - 1] == b'.');
        if !starts_ident || after_number {
            at += 1;
            continue;
        }
        let start = at;
        while at < bytes.len()
            && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_' || bytes[at] == b':')
        {
            at += 1;
        }
        let word = &text[start..at];
        let rest = text[at..].trim_start();
        if GROUPING.contains(&word) {
            // Skip the label list that follows.
            if rest.starts_with('(') {
                let close = rest
                    .find(')')
                    .with_context(|| format!("unclosed {word} list in {expr:?}"))?;
                at = text.len() - rest.len() + close + 1;
            }
            continue;
        }
        if rest.starts_with('(') {
            ensure!(
                FUNCTIONS.contains(&word),
                "{word}( in {expr:?} is no PromQL function this test knows"
            );
            continue;
        }
        if KEYWORDS.contains(&word) {
            continue;
        }
        names.insert(word.to_string());
    }
    Ok(names)
}

/// Every PromQL expression of the dashboard: panels' targets' `expr` (rows' nested panels too)
/// and the query variables' queries.
fn expressions(dashboard: &Value) -> Result<Vec<String>> {
    fn panels(list: &Value, out: &mut Vec<String>) -> Result<()> {
        for panel in list.as_array().context("panels is not a list")? {
            if let Some(nested) = panel.get("panels") {
                panels(nested, out)?;
            }
            for target in panel
                .get("targets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let expr = target
                    .get("expr")
                    .and_then(Value::as_str)
                    .with_context(|| format!("a target without expr: {target}"))?;
                out.push(expr.to_string());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    panels(dashboard.get("panels").context("no panels")?, &mut out)?;
    for variable in dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .context("no templating list")?
    {
        if variable.get("type").and_then(Value::as_str) == Some("query") {
            let query = variable
                .pointer("/query/query")
                .or_else(|| variable.get("query"))
                .and_then(Value::as_str)
                .with_context(|| format!("a query variable without a query: {variable}"))?;
            out.push(query.to_string());
        }
    }
    Ok(out)
}

#[test]
fn the_extraction_is_strict_and_simple() -> Result<()> {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le, file) (rate(a_bucket{file=~\"$f\"}[$__rate_interval]))) \
         / on (id) group_left (pod) b_total > 0 and max without (cpu) (c:rule)",
    )?;
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b_total", "c:rule"]
    );
    assert_eq!(
        metric_names("label_values(x_total{namespace=~\"$namespace\"}, pod)")?
            .into_iter()
            .collect::<Vec<_>>(),
        ["pod", "x_total"],
        "label_values' label is taken as a name too: variables are checked by hand below"
    );
    assert!(metric_names("made_up_fn(x)").is_err());
    assert!(metric_names("x{a=\"b\"").is_err());
    Ok(())
}

#[test]
fn dashboard_is_grafana_json_with_the_asked_variables_and_panels() -> Result<()> {
    let text = std::fs::read_to_string(dashboard_path())?;
    let dashboard: Value = serde_json::from_str(&text).context("the dashboard is not JSON")?;
    let variables: Vec<&str> = dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .context("no variables")?
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "pod"]);
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel.pointer("/datasource/uid").and_then(Value::as_str),
            Some("${datasource}"),
            "{}",
            panel["title"]
        );
        titles.push(panel["title"].as_str().unwrap_or_default().to_string());
    }
    for wanted in [
        "CPU usage vs quota",
        "Memory working set vs limit",
        "CPU throttling ratio",
        "Pressure (PSI)",
        "Network receive",
        "Network transmit",
        "fused reads per second by file",
        "fused read latency p99 by file",
        "fused errors",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "{wanted} not in {titles:?}"
        );
    }
    Ok(())
}

/// Every name a scrape emits: TYPE lines' families and every sample's name (a histogram's
/// `_bucket`, `_sum` and `_count`).
fn emitted(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[test]
fn every_metric_the_dashboard_uses_is_emitted() -> Result<()> {
    rig::preflight()?;
    let text = std::fs::read_to_string(dashboard_path())?;
    let dashboard: Value = serde_json::from_str(&text)?;
    let mut used = BTreeSet::new();
    for expr in expressions(&dashboard)? {
        used.extend(metric_names(&expr)?);
    }
    // label_values(metric, label): the label is a label, not a metric.
    for label in ["namespace", "pod"] {
        used.remove(label);
    }
    ensure!(used.len() >= 15, "too few names found: {used:?}");

    let cg = TempCgroup::builder().create()?;
    let mut probe = probe_in(&cg)?;
    let fused = PublishingFused::start()?;
    probe.read_string(&fused.daemon.path("proc/meminfo"))?;
    rig::poll(
        std::time::Duration::from_secs(20),
        "fused's stats file",
        || Ok(fused.stats_file.exists().then_some(())),
    )?;
    let exporter = exporter_reading(&cg, &fused.stats_file)?;
    let scrape = exporter.scrape()?;
    let emitted = emitted(&scrape);
    ensure!(
        emitted.contains("proclens_fused_read_duration_seconds_bucket"),
        "fused's numbers are not in the scrape:\n{scrape}"
    );
    let missing: Vec<&String> = used.iter().filter(|n| !emitted.contains(*n)).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard uses names the exporter does not emit: {missing:?}"
    );
    Ok(())
}

/// `expr` as Grafana would send it with every variable at "All" and a 1 m rate interval.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
}

#[test]
fn every_dashboard_query_runs_in_a_real_prometheus() -> Result<()> {
    rig::preflight()?;
    let text = std::fs::read_to_string(dashboard_path())?;
    let dashboard: Value = serde_json::from_str(&text)?;
    let cg = TempCgroup::builder().create()?;
    let mut probe = probe_in(&cg)?;
    let fused = PublishingFused::start()?;
    let meminfo = fused.daemon.path("proc/meminfo");
    let exporter = exporter_reading(&cg, &fused.stats_file)?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        targets: vec![exporter.target()],
        interval: std::time::Duration::from_secs(1),
        ..PrometheusOptions::default()
    })?;
    // Reads between scrapes, until Prometheus sees fused's reads and latencies go up.
    let p99 = "histogram_quantile(0.99, sum by (file, le) \
               (rate(proclens_fused_read_duration_seconds_bucket{file=\"meminfo\"}[1m])))";
    rig::poll(
        std::time::Duration::from_secs(60),
        "fused's meminfo p99 in Prometheus",
        || {
            probe.read_string(&meminfo)?;
            let samples = prometheus.query(p99)?;
            Ok(samples
                .first()
                .filter(|s| s.value > 0.0 && s.value.is_finite())
                .map(|_| ()))
        },
    )
    .with_context(|| format!("Prometheus log: {}", prometheus.log()))?;
    for expr in expressions(&dashboard)? {
        if expr.starts_with("label_values(") {
            continue;
        }
        let sent = as_grafana_sends(&expr);
        prometheus
            .query(&sent)
            .with_context(|| format!("the dashboard's {expr:?}"))?;
    }
    let reads = prometheus.query(&as_grafana_sends(
        "sum by (instance, file) (rate(proclens_fused_reads_total[$__rate_interval]))",
    ))?;
    ensure!(
        reads
            .iter()
            .any(|s| s.label("file") == "meminfo" && s.value > 0.0),
        "{reads:?}"
    );
    Ok(())
}
