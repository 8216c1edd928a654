//! A test workload with nothing but this binary: it waits for a line on stdin (so the test can
//! move it into a cgroup first), then does one thing and says so on stdout. Used where the
//! cgroup v2 VM has no python or stress-ng.
//!
//! - `alloc BYTES`: allocates and touches BYTES, prints `ready`, waits for stdin to close.
//! - `burn`: spins on the CPU until killed.
//! - `udp-recv ADDR:PORT COUNT TIMEOUT_MS`: binds, prints `ready`, receives up to COUNT
//!   datagrams (stopping after TIMEOUT_MS without one), prints how many, waits for stdin.

use std::io::{BufRead, Write};
use std::net::UdpSocket;
use std::time::Duration;

use anyhow::{bail, Context, Result};

fn wait_for_line() -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read stdin")?;
    Ok(())
}

fn say(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wait_for_line()?;
    match args.as_slice() {
        ["alloc", bytes] => {
            let bytes: usize = bytes.parse().context("alloc BYTES")?;
            let mut block = vec![0u8; bytes];
            // Touch every page so it is charged, not just reserved.
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            std::hint::black_box(&block);
            say("ready")?;
            wait_for_line()?;
            drop(block);
        }
        ["burn"] => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        ["udp-recv", addr, count, timeout_ms] => {
            let count: u64 = count.parse().context("udp-recv COUNT")?;
            let timeout: u64 = timeout_ms.parse().context("udp-recv TIMEOUT_MS")?;
            let socket = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
            socket.set_read_timeout(Some(Duration::from_millis(timeout)))?;
            say("ready")?;
            let mut buf = [0u8; 2048];
            let mut received = 0u64;
            while received < count && socket.recv(&mut buf).is_ok() {
                received += 1;
            }
            say(&received.to_string())?;
            wait_for_line()?;
        }
        _ => bail!(
            "usage: proclens-workload alloc BYTES | burn | udp-recv ADDR:PORT COUNT TIMEOUT_MS"
        ),
    }
    Ok(())
}
