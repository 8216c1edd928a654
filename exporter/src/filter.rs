//! Which metric families a scrape writes: allow and deny lists of family names with `*`
//! wildcards (like cAdvisor's `--disable_metrics`, but by name). A family left out is also not
//! read: its files cost nothing.

/// Allow and deny lists; an empty allow list allows every family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricFilter {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl MetricFilter {
    /// A filter writing the families matching some `allow` pattern (all if `allow` is empty)
    /// and no `deny` pattern.
    pub fn new(allow: Vec<String>, deny: Vec<String>) -> Self {
        MetricFilter { allow, deny }
    }

    /// Whether family `name` is written.
    pub fn allows(&self, name: &str) -> bool {
        let allowed = self.allow.is_empty() || self.allow.iter().any(|p| glob_match(p, name));
        allowed && !self.deny.iter().any(|p| glob_match(p, name))
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "container_network_*",
            "container_network_receive_bytes_total"
        ));
        assert!(!glob_match(
            "container_network_*",
            "container_cpu_usage_seconds_total"
        ));
        assert!(glob_match("*_total", "x_total"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("ab*ba", "aba"), "the ends may not overlap");
    }

    #[test]
    fn deny_wins_over_allow() {
        let filter = MetricFilter::new(
            vec!["container_memory_*".into()],
            vec!["container_memory_failcnt".into()],
        );
        assert!(filter.allows("container_memory_rss"));
        assert!(!filter.allows("container_memory_failcnt"));
        assert!(!filter.allows("container_cpu_usage_seconds_total"));
        assert!(MetricFilter::default().allows("anything"));
    }
}
