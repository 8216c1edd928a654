//! Remote write 1.0's messages (`prometheus/prompb` `remote.proto` and `types.proto`, the
//! fields a writer of float samples needs) and their wire form: a protobuf `WriteRequest`
//! compressed with snappy's block format (not its framed format).

use super::queue::Batch;
use crate::series::{SeriesRef, SeriesSet};
use bytes::Bytes;
use prost::Message;

/// `prometheus.WriteRequest`: the body of one POST (field 2 is reserved; 3, metadata, unused).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series, each with its own labels and samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: one label set and its samples.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Its labels, `__name__` included, sorted by name, names unique.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Its samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`: one name and value.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Label {
    /// The label's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The label's value (never empty: an empty value is the label's absence).
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: one value at one time.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// When, in milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A request body that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Snappy refused the encoded request (only past 4 GiB).
    #[error("cannot snappy-compress a {len}-byte write request: {source}")]
    Compress {
        /// The encoded request's size.
        len: usize,
        /// Why.
        source: snap::Error,
    },
}

/// One series as remote write wants it: `__name__`, the container's and the family's labels,
/// then each of `external` the series does not already have (a series' own label wins), sorted
/// by name, labels with an empty value left out; one sample at `timestamp_ms`.
pub fn time_series(
    series: SeriesRef<'_>,
    external: &[(String, String)],
    timestamp_ms: i64,
) -> TimeSeries {
    let mut labels: Vec<Label> =
        Vec::with_capacity(1 + series.container.len() + series.extra.len() + external.len());
    labels.push(Label {
        name: "__name__".to_string(),
        value: series.name.to_string(),
    });
    for (name, value) in series.container.iter().chain(series.extra).chain(external) {
        if !value.is_empty() {
            labels.push(Label {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    // Stable: of two labels with one name, the first pushed (the series' own) stays.
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels.dedup_by(|later, earlier| later.name == earlier.name);
    TimeSeries {
        labels,
        samples: vec![Sample {
            value: series.value,
            timestamp: timestamp_ms,
        }],
    }
}

/// A request's body: the protobuf encoding, snappy-compressed (block format).
pub fn body(request: &WriteRequest) -> Result<Bytes, EncodeError> {
    let encoded = request.encode_to_vec();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&encoded)
        .map_err(|source| EncodeError::Compress {
            len: encoded.len(),
            source,
        })?;
    Ok(Bytes::from(compressed))
}

/// Hands a collection's series to `emit` as request bodies of at most `batch_samples` samples
/// each (one sample per series), in the collection's order, each as soon as it is built (so
/// only one request is held here, however large the collection).
pub fn batches(
    set: &SeriesSet,
    external: &[(String, String)],
    batch_samples: usize,
    mut emit: impl FnMut(Batch),
) -> Result<(), EncodeError> {
    let batch_samples = batch_samples.max(1);
    let mut request = WriteRequest::default();
    for series in set.iter() {
        request
            .timeseries
            .push(time_series(series, external, set.timestamp_ms));
        if request.timeseries.len() == batch_samples {
            emit(finish(&mut request)?);
        }
    }
    if !request.timeseries.is_empty() {
        emit(finish(&mut request)?);
    }
    Ok(())
}

/// Turns the request built so far into a batch and empties it.
fn finish(request: &mut WriteRequest) -> Result<Batch, EncodeError> {
    let samples = request.timeseries.iter().map(|t| t.samples.len()).sum();
    let body = body(request)?;
    request.timeseries.clear();
    Ok(Batch { samples, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Value;

    fn labels(list: &[(&str, &str)]) -> Vec<Label> {
        list.iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    fn split(set: &SeriesSet, external: &[(String, String)], batch_samples: usize) -> Vec<Batch> {
        let mut out = Vec::new();
        batches(set, external, batch_samples, |b| out.push(b)).unwrap();
        out
    }

    fn decode(batch: &Batch) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&batch.body)
            .expect("snappy block");
        WriteRequest::decode(&raw[..]).expect("protobuf")
    }

    #[test]
    fn write_request_bytes_follow_the_spec() {
        // up{} 1 @ 1000 ms, encoded by hand from remote.proto and types.proto: field 1 of
        // WriteRequest, of TimeSeries (labels) and of Label (name) are length-delimited
        // (tag 0x0a), field 2 of TimeSeries and of Label 0x12; Sample's value is a double
        // (tag 0x09, 8 bytes little-endian) and its timestamp a varint (tag 0x10).
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels(&[("__name__", "up")]),
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
            }],
        };
        let mut expected = vec![0x0a, 30, 0x0a, 14, 0x0a, 8];
        expected.extend_from_slice(b"__name__");
        expected.extend_from_slice(&[0x12, 2, b'u', b'p', 0x12, 12, 0x09]);
        expected.extend_from_slice(&1.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0xe8, 0x07]);
        assert_eq!(request.encode_to_vec(), expected);
        assert_eq!(WriteRequest::decode(&expected[..]).unwrap(), request);
    }

    #[test]
    fn body_is_a_snappy_block_not_a_frame() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels(&[("__name__", "up")]),
                samples: vec![],
            }],
        };
        let encoded = request.encode_to_vec();
        let body = body(&request).unwrap();
        // A block starts with the uncompressed length as a varint, then (this short) one
        // literal: tag (len - 1) << 2. A frame would start with the 0xff stream identifier.
        assert_eq!(body[0] as usize, encoded.len());
        assert_eq!(body[1] as usize, (encoded.len() - 1) << 2);
        assert_eq!(&body[2..], &encoded[..]);
        let back = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(back, encoded);
    }

    #[test]
    fn snappy_roundtrip_of_a_large_repetitive_body() {
        let text: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let compressed = snap::raw::Encoder::new().compress_vec(&text).unwrap();
        assert!(compressed.len() < text.len());
        assert_eq!(
            snap::raw::Decoder::new()
                .decompress_vec(&compressed)
                .unwrap(),
            text
        );
    }

    #[test]
    fn series_labels_are_sorted_unique_and_win_over_external() {
        let mut set = SeriesSet::new(42);
        set.push(
            "container_cpu_usage_seconds_total",
            "id=\"/a\",pod=\"p\",job=\"own\"",
            &[("cpu", "total")],
            Value::Float(2.5),
        );
        let external = vec![
            ("instance".to_string(), "host1".to_string()),
            ("job".to_string(), "proclens".to_string()),
            ("zone".to_string(), String::new()),
        ];
        let series = set.iter().next().unwrap();
        let ts = time_series(series, &external, set.timestamp_ms);
        assert_eq!(
            ts.labels,
            labels(&[
                ("__name__", "container_cpu_usage_seconds_total"),
                ("cpu", "total"),
                ("id", "/a"),
                ("instance", "host1"),
                ("job", "own"),
                ("pod", "p"),
            ])
        );
        assert_eq!(
            ts.samples,
            vec![Sample {
                value: 2.5,
                timestamp: 42
            }]
        );
    }

    #[test]
    fn a_collection_splits_into_batches_of_at_most_batch_samples() {
        let mut set = SeriesSet::new(7);
        for i in 0..12_u64 {
            set.push(
                "x_bytes",
                &format!("id=\"/c{}\"", i % 5),
                &[],
                Value::Int(i),
            );
        }
        let five = split(&set, &[], 5);
        assert_eq!(
            five.iter().map(|b| b.samples).collect::<Vec<_>>(),
            [5, 5, 2]
        );
        let values: Vec<f64> = five
            .iter()
            .flat_map(|b| decode(b).timeseries)
            .map(|t| {
                assert_eq!(t.samples.len(), 1);
                assert_eq!(t.samples[0].timestamp, 7);
                t.samples[0].value
            })
            .collect();
        assert_eq!(values, (0..12).map(|i| i as f64).collect::<Vec<_>>());
        assert!(split(&SeriesSet::new(0), &[], 5).is_empty());
        assert_eq!(split(&set, &[], 12).len(), 1);
    }

    #[test]
    fn compressed_size_per_sample_of_realistic_series() {
        // A kubelet-shaped label set: the figure the README's memory bound quotes.
        let mut set = SeriesSet::new(1_764_000_000_000);
        for pod in 0..50 {
            let labels = format!(
                "id=\"/kubepods/burstable/pod{pod:08x}-1b2c-4d5e-8f90-a1b2c3d4e5f6/0123456789abcdef{pod:048x}\",\
                 image=\"registry.example.com/team/app:1.{pod}\",namespace=\"default\",\
                 pod=\"app-{pod:05}-7d9f8c6b5-x2x9z\",container=\"app\""
            );
            for family in crate::families::FAMILIES {
                set.push(family.name, &labels, &[], Value::Float(pod as f64 * 1.37e9));
            }
        }
        let external = vec![("instance".to_string(), "node-17".to_string())];
        let all = split(&set, &external, 5_000);
        let bytes: usize = all.iter().map(|b| b.body.len()).sum();
        let per_sample = bytes as f64 / set.len() as f64;
        eprintln!("{per_sample:.1} compressed bytes per sample");
        assert!(per_sample < 40.0, "{per_sample} bytes per sample");
    }
}
