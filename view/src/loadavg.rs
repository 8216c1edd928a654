//! Per-container load averages with the kernel's fixed-point EMA (kernel/sched/loadavg.c
//! constants), and the /proc/loadavg line.

use std::fmt::Write;

/// Fixed-point shift of load values.
pub const FSHIFT: u32 = 11;
/// 1.0 in fixed point.
pub const FIXED_1: u64 = 1 << FSHIFT;
/// Sampling interval of the kernel's load average, in seconds.
pub const LOAD_INTERVAL_SECS: u64 = 5;
/// Decay factors per 5 s sample for the 1, 5 and 15 minute averages: 1/exp(5s/1min) etc.
pub const EXP: [u64; 3] = [1884, 2014, 2037];

/// The three averages in fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadAvg {
    /// 1, 5 and 15 minute averages, `FIXED_1` = 1.0.
    pub avenrun: [u64; 3],
}

/// One kernel `calc_load` step: `load * exp + active * (1 - exp)`, rounded up while rising.
fn calc_load(load: u64, exp: u64, active: u64) -> u64 {
    let mut new = load * exp + active * (FIXED_1 - exp);
    if active >= load {
        new += FIXED_1 - 1;
    }
    new / FIXED_1
}

/// `x^n` in fixed point (kernel `fixed_power_int`).
fn fixed_power(mut x: u64, mut n: u64) -> u64 {
    let mut result = FIXED_1;
    while n > 0 {
        if n & 1 == 1 {
            result = (result * x + FIXED_1 / 2) >> FSHIFT;
        }
        n >>= 1;
        if n > 0 {
            x = (x * x + FIXED_1 / 2) >> FSHIFT;
        }
    }
    result
}

impl LoadAvg {
    /// Advances the averages by `samples` 5-second intervals during which `active` tasks
    /// (running + uninterruptible) were present: the kernel's NO_HZ catch-up `calc_load_n`.
    pub fn advance(&mut self, active: u32, samples: u64) {
        if samples == 0 {
            return;
        }
        let active = u64::from(active) * FIXED_1;
        for (load, exp) in self.avenrun.iter_mut().zip(EXP) {
            *load = calc_load(*load, fixed_power(exp, samples), active);
        }
    }
}

/// Renders /proc/loadavg: three averages, `running/total` tasks, and a last pid.
pub fn render_loadavg(load: &LoadAvg, running: u32, total: u32, last_pid: u32) -> String {
    let mut out = String::with_capacity(48);
    for (i, value) in load.avenrun.iter().enumerate() {
        let whole = value >> FSHIFT;
        let frac = ((value & (FIXED_1 - 1)) * 100) >> FSHIFT;
        let _ = write!(out, "{whole}.{frac:02}{}", if i < 2 { " " } else { "" });
    }
    let _ = writeln!(out, " {running}/{total} {last_pid}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_busy_task_converges_to_one() {
        let mut load = LoadAvg::default();
        for _ in 0..200 {
            load.advance(1, 1);
        }
        assert_eq!(load.avenrun[0], FIXED_1);
        assert!(render_loadavg(&load, 1, 3, 42).starts_with("1.00 "));
    }

    #[test]
    fn one_minute_rises_like_the_kernel() {
        let mut load = LoadAvg::default();
        load.advance(1, 12); // one minute at load 1 → 1 - 1/e ≈ 0.63
        let one_min = load.avenrun[0] as f64 / FIXED_1 as f64;
        assert!((one_min - 0.632).abs() < 0.01, "{one_min}");
        assert!(load.avenrun[1] < load.avenrun[0] && load.avenrun[2] < load.avenrun[1]);
    }

    #[test]
    fn batch_advance_matches_steps() {
        let mut stepped = LoadAvg {
            avenrun: [3000, 3000, 3000],
        };
        let mut batched = stepped;
        for _ in 0..6 {
            stepped.advance(0, 1);
        }
        batched.advance(0, 6);
        for (a, b) in stepped.avenrun.iter().zip(batched.avenrun) {
            assert!(a.abs_diff(b) <= 3, "{a} vs {b}");
        }
    }

    #[test]
    fn format() {
        let load = LoadAvg {
            avenrun: [FIXED_1 / 2, FIXED_1 * 2 + FIXED_1 / 4, 0],
        };
        assert_eq!(render_loadavg(&load, 1, 7, 123), "0.50 2.25 0.00 1/7 123\n");
    }
}
