//! One collection as series (label pairs and a value each) instead of exposition text: what
//! [`crate::remote_write`] pushes. Filled by the [`crate::encode::Encoder`] in its series mode, so
//! the family catalogue writes both outputs through the same calls.

use crate::encode::Value;
use std::collections::HashMap;

/// One series of a collection, borrowed from its [`SeriesSet`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesRef<'s> {
    /// The family's name (the `__name__` label).
    pub name: &'static str,
    /// The container's labels (`id`, then what the runtime knows), unescaped; empty for
    /// host-wide families.
    pub container: &'s [(String, String)],
    /// The family's own labels (`cpu`, `device`, `interface`).
    pub extra: &'s [(String, String)],
    /// The value.
    pub value: f64,
}

/// One series as stored: its container's label list by index.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    name: &'static str,
    container: usize,
    extra: Vec<(String, String)>,
    value: f64,
}

/// Every series of one collection, stamped with the collection's time. A container's label
/// list is unescaped once and shared by its series.
#[derive(Debug, Clone, Default)]
pub struct SeriesSet {
    /// When the collection read the containers, milliseconds since the epoch.
    pub timestamp_ms: i64,
    containers: Vec<Vec<(String, String)>>,
    /// Escaped label list → index in `containers`.
    index: HashMap<String, usize>,
    points: Vec<Point>,
    unparsable: usize,
}

impl SeriesSet {
    /// An empty set stamped `timestamp_ms`.
    pub fn new(timestamp_ms: i64) -> Self {
        SeriesSet {
            timestamp_ms,
            ..SeriesSet::default()
        }
    }

    /// Adds one series of family `name`: `labels` is a container's escaped label list (as
    /// [`crate::encode::push_label`] builds it), `extra` more label pairs, unescaped. A label list
    /// that does not parse leaves the series out (counted by [`SeriesSet::unparsable`]).
    pub fn push(&mut self, name: &'static str, labels: &str, extra: &[(&str, &str)], value: Value) {
        let container = match self.index.get(labels) {
            Some(&at) => at,
            None => match parse_label_list(labels) {
                Some(pairs) => {
                    self.containers.push(pairs);
                    let at = self.containers.len() - 1;
                    self.index.insert(labels.to_string(), at);
                    at
                }
                None => {
                    self.unparsable += 1;
                    return;
                }
            },
        };
        let value = match value {
            // Remote write carries doubles: above 2^53 the nearest one, as Prometheus's own
            // text parser would give.
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        };
        self.points.push(Point {
            name,
            container,
            extra: extra
                .iter()
                .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
                .collect(),
            value,
        });
    }

    /// How many series the set holds.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the set holds no series.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Series left out because their label list did not parse (a bug if ever non-zero).
    pub fn unparsable(&self) -> usize {
        self.unparsable
    }

    /// The series, in the order they were written.
    pub fn iter(&self) -> impl Iterator<Item = SeriesRef<'_>> + '_ {
        self.points.iter().map(|p| SeriesRef {
            name: p.name,
            container: self
                .containers
                .get(p.container)
                .map_or(&[][..], Vec::as_slice),
            extra: &p.extra,
            value: p.value,
        })
    }
}

/// Parses a comma-separated list of `name="escaped value"` pairs (the exposition's label
/// syntax: `\\`, `\"` and `\n` escapes) into unescaped pairs; `None` when it is not one.
pub fn parse_label_list(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        if name.is_empty() || name.contains([',', '"', '\\', '=']) {
            return None;
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => match chars.next()?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    _ => return None,
                },
                (_, c) => value.push(c),
            }
        };
        pairs.push((name.to_string(), value));
        rest = after.get(end + 1..)?;
        if !rest.is_empty() {
            rest = rest.strip_prefix(',')?;
            if rest.is_empty() {
                return None;
            }
        }
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::push_label;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_lists_parse_back() {
        assert_eq!(parse_label_list(""), Some(vec![]));
        assert_eq!(
            parse_label_list(r#"id="/a\"b\\c\nd",pod="p""#),
            Some(pairs(&[("id", "/a\"b\\c\nd"), ("pod", "p")]))
        );
        assert_eq!(parse_label_list(r#"id="""#), Some(pairs(&[("id", "")])));
        for bad in [
            "id",
            "id=\"x",
            "id=\"x\",",
            "id=\"x\"pod=\"y\"",
            "=\"x\"",
            "id=\"\\t\"",
            "id=\"x\\",
        ] {
            assert_eq!(parse_label_list(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn push_label_then_parse_is_identity(
            list in proptest::collection::vec(("[a-z_][a-z0-9_]{0,8}", any::<String>()), 0..5)
        ) {
            let mut text = String::new();
            for (name, value) in &list {
                push_label(&mut text, name, value);
            }
            prop_assert_eq!(parse_label_list(&text), Some(list));
        }

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = parse_label_list(&text);
        }
    }

    #[test]
    fn series_share_their_container_labels() {
        let mut set = SeriesSet::new(1_700_000_000_000);
        set.push("a_bytes", "id=\"/x\"", &[], Value::Int(3));
        set.push(
            "b_total",
            "id=\"/x\"",
            &[("cpu", "total")],
            Value::Float(1.5),
        );
        set.push("machine_cpu_cores", "", &[], Value::Int(4));
        set.push("broken", "id=", &[], Value::Int(1));
        assert_eq!(set.len(), 3);
        assert_eq!(set.unparsable(), 1);
        assert_eq!(set.containers.len(), 2, "one list per container, one empty");
        let all: Vec<SeriesRef<'_>> = set.iter().collect();
        assert_eq!(all[0].container, &pairs(&[("id", "/x")])[..]);
        assert_eq!(all[1].extra, &pairs(&[("cpu", "total")])[..]);
        assert_eq!((all[1].name, all[1].value), ("b_total", 1.5));
        assert!(all[2].container.is_empty());
        assert_eq!(all[2].value, 4.0);
    }
}
