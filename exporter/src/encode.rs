//! Writes metric families in the Prometheus text format 0.0.4 or in OpenMetrics 1.0 text, into
//! one reusable buffer, streaming: no per-series value objects, a container's label set escaped
//! once per scrape and copied into each of its series.
//!
//! Why our own writer: `prometheus` encodes 0.0.4 (and protobuf) but not OpenMetrics, and builds a
//! `MetricFamily` of boxed `Metric`s with owned label pairs per scrape; `prometheus-client`
//! encodes only OpenMetrics. The exporter must answer both, for ~60,000 series at 1,000
//! containers, so it writes the two formats directly (BENCHMARKS.md compares it with the
//! `prometheus` crate's encoder on the same series).

use crate::series::SeriesSet;
use std::fmt::Write as _;

/// The exposition format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0 text, when the Accept header asks for `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a non-zero quality, else 0.0.4.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let wants_openmetrics = accept.split(',').any(|choice| {
            let mut params = choice.split(';').map(str::trim);
            let media = params.next().unwrap_or("");
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A family's metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset when the container restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets: `_bucket{le}`, `_sum` and `_count` samples, written
    /// with [`Encoder::sample_named`].
    Histogram,
}

/// A sample value: integers stay exact, others are written as the shortest round-trip decimal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count or a size in bytes.
    Int(u64),
    /// A value with a fraction (seconds).
    Float(f64),
}

/// Escapes a label value for both formats (backslash, double quote, newline) onto `out`.
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name="value"` to a comma-separated label list being built in `out`.
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    escape_label_value(out, value);
    out.push('"');
}

/// Where an [`Encoder`] writes.
#[derive(Debug)]
enum Sink<'a> {
    /// Exposition text in `format`.
    Text { out: &'a mut String, format: Format },
    /// Series for remote write.
    Series(&'a mut SeriesSet),
}

/// Writes families and their series into a text buffer, or collects them as a [`SeriesSet`]:
/// the family catalogue writes both through the same calls.
#[derive(Debug)]
pub struct Encoder<'a> {
    sink: Sink<'a>,
    /// The current family's name, as its samples are named.
    family: &'static str,
}

impl<'a> Encoder<'a> {
    /// An encoder appending exposition text in `format` to `out`.
    pub fn new(out: &'a mut String, format: Format) -> Self {
        Encoder {
            sink: Sink::Text { out, format },
            family: "",
        }
    }

    /// An encoder adding every sample to `set` as a series (HELP and TYPE are not kept).
    pub fn series(set: &'a mut SeriesSet) -> Self {
        Encoder {
            sink: Sink::Series(set),
            family: "",
        }
    }

    /// Starts a family: its HELP and TYPE lines. Every sample written until the next family
    /// belongs to it. In OpenMetrics a counter's family name drops `_total` (its samples keep
    /// it), and a counter whose name lacks `_total` (cAdvisor's `container_memory_failcnt`) is
    /// declared `unknown`, which OpenMetrics allows without the suffix.
    pub fn family(&mut self, name: &'static str, help: &str, kind: Kind) {
        self.family = name;
        let Sink::Text { out, format } = &mut self.sink else {
            return;
        };
        let (declared, kind_word) = match (*format, kind) {
            (_, Kind::Gauge) => (name, "gauge"),
            (_, Kind::Histogram) => (name, "histogram"),
            (Format::Text, Kind::Counter) => (name, "counter"),
            (Format::OpenMetrics, Kind::Counter) => match name.strip_suffix("_total") {
                Some(stem) => (stem, "counter"),
                None => (name, "unknown"),
            },
        };
        let _ = writeln!(out, "# HELP {declared} {help}");
        let _ = writeln!(out, "# TYPE {declared} {kind_word}");
    }

    /// Writes one sample of the current family: `labels` is a pre-escaped comma-separated list
    /// (a container's), `extra` more label pairs (escaped here).
    pub fn sample(&mut self, labels: &str, extra: &[(&str, &str)], value: Value) {
        self.sample_named(self.family, labels, extra, value);
    }

    /// Writes one sample of the current family under its own `name`: a histogram's
    /// `<family>_bucket`, `_sum` and `_count`.
    pub fn sample_named(
        &mut self,
        name: &'static str,
        labels: &str,
        extra: &[(&str, &str)],
        value: Value,
    ) {
        let out = match &mut self.sink {
            Sink::Text { out, .. } => &mut **out,
            Sink::Series(set) => {
                set.push(name, labels, extra, value);
                return;
            }
        };
        out.push_str(name);
        if !labels.is_empty() || !extra.is_empty() {
            out.push('{');
            out.push_str(labels);
            for (i, (name, value)) in extra.iter().enumerate() {
                if i > 0 || !labels.is_empty() {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                escape_label_value(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        match value {
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Float(v) if v.is_nan() => out.push_str("NaN"),
            Value::Float(v) if v.is_infinite() => {
                out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" })
            }
            Value::Float(v) => {
                let _ = write!(out, "{v}");
            }
        }
        out.push('\n');
    }

    /// Writes a family of one sample without labels (a process's own counters and gauges).
    pub fn single(&mut self, name: &'static str, help: &str, kind: Kind, value: Value) {
        self.family(name, help, kind);
        self.sample("", &[], value);
    }

    /// Ends the exposition (OpenMetrics' `# EOF`).
    pub fn finish(self) {
        if let Sink::Text {
            out,
            format: Format::OpenMetrics,
        } = self.sink
        {
            out.push_str("# EOF\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        // What Prometheus 2.42 sends by default.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Text
        );
    }

    #[test]
    fn text_format_counter_and_gauge() {
        let mut out = String::new();
        let mut labels = String::new();
        push_label(&mut labels, "id", "/a\"b\\c\nd");
        let mut enc = Encoder::new(&mut out, Format::Text);
        enc.family("x_seconds_total", "Time.", Kind::Counter);
        enc.sample(&labels, &[("cpu", "total")], Value::Float(1.5));
        enc.family("y_bytes", "Size.", Kind::Gauge);
        enc.sample("", &[], Value::Int(42));
        enc.sample("", &[], Value::Float(f64::INFINITY));
        enc.finish();
        assert_eq!(
            out,
            "# HELP x_seconds_total Time.\n# TYPE x_seconds_total counter\n\
             x_seconds_total{id=\"/a\\\"b\\\\c\\nd\",cpu=\"total\"} 1.5\n\
             # HELP y_bytes Size.\n# TYPE y_bytes gauge\ny_bytes 42\ny_bytes +Inf\n"
        );
    }

    #[test]
    fn openmetrics_names_counters_without_total_and_ends_with_eof() {
        let mut out = String::new();
        let mut enc = Encoder::new(&mut out, Format::OpenMetrics);
        enc.family("x_total", "Count.", Kind::Counter);
        enc.sample("id=\"/\"", &[], Value::Int(3));
        enc.family("container_memory_failcnt", "Hits.", Kind::Counter);
        enc.sample("", &[], Value::Int(0));
        enc.finish();
        assert_eq!(
            out,
            "# HELP x Count.\n# TYPE x counter\nx_total{id=\"/\"} 3\n\
             # HELP container_memory_failcnt Hits.\n# TYPE container_memory_failcnt unknown\n\
             container_memory_failcnt 0\n# EOF\n"
        );
    }

    #[test]
    fn histograms_keep_their_type_and_sample_names_in_both_formats() {
        for (format, eof) in [(Format::Text, ""), (Format::OpenMetrics, "# EOF\n")] {
            let mut out = String::new();
            let mut enc = Encoder::new(&mut out, format);
            enc.family("h_seconds", "Time.", Kind::Histogram);
            enc.sample_named("h_seconds_bucket", "", &[("le", "+Inf")], Value::Int(2));
            enc.sample_named("h_seconds_sum", "", &[], Value::Float(0.5));
            enc.sample_named("h_seconds_count", "", &[], Value::Int(2));
            enc.finish();
            assert_eq!(
                out,
                format!(
                    "# HELP h_seconds Time.\n# TYPE h_seconds histogram\n\
                     h_seconds_bucket{{le=\"+Inf\"}} 2\nh_seconds_sum 0.5\nh_seconds_count 2\n{eof}"
                )
            );
        }
    }

    #[test]
    fn series_mode_keeps_what_the_text_would_show() {
        let mut set = SeriesSet::new(5);
        let mut labels = String::new();
        push_label(&mut labels, "id", "/a\"b");
        let mut enc = Encoder::series(&mut set);
        enc.family("x_seconds_total", "Time.", Kind::Counter);
        enc.sample(&labels, &[("cpu", "total")], Value::Float(1.5));
        enc.family("y_bytes", "Size.", Kind::Gauge);
        enc.sample("", &[], Value::Int(42));
        enc.finish();
        let series: Vec<_> = set
            .iter()
            .map(|s| (s.name, s.container.to_vec(), s.extra.to_vec(), s.value))
            .collect();
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            series,
            [
                (
                    "x_seconds_total",
                    vec![pair("id", "/a\"b")],
                    vec![pair("cpu", "total")],
                    1.5
                ),
                ("y_bytes", vec![], vec![], 42.0),
            ]
        );
    }
}
