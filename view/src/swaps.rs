//! /proc/swaps: one virtual line for the container's swap, or the header alone.

/// The kernel's header line.
pub const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

/// Renders swaps for a container with `total_kb` of swap of which `used_kb` is in use.
pub fn render_swaps(total_kb: u64, used_kb: u64) -> String {
    let mut out = String::from(HEADER);
    if total_kb > 0 {
        out.push_str(&format!(
            "{:<40}{}\t{}\t\t{}\t\t{}\n",
            "none", "virtual", total_kb, used_kb, 0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_only_without_swap() {
        assert_eq!(render_swaps(0, 0), HEADER);
    }

    #[test]
    fn one_line_with_swap() {
        let text = render_swaps(131072, 4096);
        let line = text.lines().nth(1).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields, ["none", "virtual", "131072", "4096", "0"]);
    }
}
