//! /proc/uptime: the container's age and idle time.

/// The container's uptime and idle seconds: uptime = host uptime − start of the container's init
/// (both since boot), idle = uptime × visible CPUs − CPU time the container used, never negative.
pub fn container_uptime(
    host_uptime_secs: f64,
    init_start_secs: f64,
    visible_cpus: usize,
    busy_secs: f64,
) -> (f64, f64) {
    let uptime = (host_uptime_secs - init_start_secs).max(0.0);
    let idle = (uptime * visible_cpus as f64 - busy_secs).max(0.0);
    (uptime, idle)
}

/// Renders uptime as the kernel does ("%.2f %.2f\n").
pub fn render_uptime(uptime_secs: f64, idle_secs: f64) -> String {
    format!("{uptime_secs:.2} {idle_secs:.2}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_and_idle() {
        let (up, idle) = container_uptime(1000.0, 900.0, 2, 50.0);
        assert_eq!((up, idle), (100.0, 150.0));
        assert_eq!(render_uptime(up, idle), "100.00 150.00\n");
    }

    #[test]
    fn never_negative() {
        assert_eq!(container_uptime(10.0, 20.0, 1, 5.0), (0.0, 0.0));
    }
}
