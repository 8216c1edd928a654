//! Pressure stall information (PSI): how long tasks waited for a resource.

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PsiLine {
    /// Share of time stalled over the last 10 s, in percent.
    pub avg10: f64,
    /// Over the last 60 s, in percent.
    pub avg60: f64,
    /// Over the last 300 s, in percent.
    pub avg300: f64,
    /// Total stall time in µs.
    pub total_us: u64,
}

/// A pressure file (cpu.pressure, memory.pressure, io.pressure, /proc/pressure/*).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled; absent from cpu pressure before Linux 5.13.
    pub full: Option<PsiLine>,
}

/// Pressure stall information of a container (v2 only: v1 has no per-cgroup PSI).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PressureSnapshot {
    /// cpu.pressure; `None` where the kernel has no such file.
    pub cpu: Option<Psi>,
    /// memory.pressure.
    pub memory: Option<Psi>,
    /// io.pressure.
    pub io: Option<Psi>,
}
