// The cross-core probe: two threads pinned to two CPUs bounce one cache line, to tell the
// machine's fast state (~100 ns per handoff) from its slow one (300 ns - 3 us) before each pair.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The bounced counter, alone on its cache lines; the stop flag lives on others.
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

#[derive(Default)]
struct Shared {
    counter: Line,
    stop: Line,
    ready: AtomicBool,
}

fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Spins until the counter equals `want`; false if told to stop first.
fn await_value(shared: &Shared, want: u64) -> bool {
    let mut spins = 0u32;
    loop {
        if shared.counter.0.load(Ordering::Acquire) == want {
            return true;
        }
        spins = spins.wrapping_add(1);
        if spins % 1024 == 0 && shared.stop.0.load(Ordering::Relaxed) != 0 {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// Bounces a cache line between `cpu_a` and `cpu_b` for about `duration`; returns the mean
/// nanoseconds of one one-way handoff.
pub fn cross_core_ns(cpu_a: usize, cpu_b: usize, duration: Duration) -> Result<f64> {
    let shared = Arc::new(Shared::default());
    let other = shared.clone();
    let pong = std::thread::spawn(move || -> Result<()> {
        pin(cpu_b)?;
        other.ready.store(true, Ordering::Release);
        let mut want = 1;
        while await_value(&other, want) {
            other.counter.0.store(want + 1, Ordering::Release);
            want += 2;
        }
        Ok(())
    });
    let mine = shared.clone();
    // Not on the main thread: pinning it would also pin every child we start later.
    let ping = std::thread::spawn(move || -> Result<(u64, Duration)> {
        let shared = mine;
        let result = (|| {
            pin(cpu_a)?;
            let wait_end = Instant::now() + Duration::from_secs(2);
            while !shared.ready.load(Ordering::Acquire) {
                if Instant::now() > wait_end {
                    return Err(anyhow!("the probe thread on CPU {cpu_b} did not start"));
                }
                std::hint::spin_loop();
            }
            let start = Instant::now();
            let mut value = 0;
            loop {
                // Odd values are ours to write; the other side answers with the next even one.
                shared.counter.0.store(value + 1, Ordering::Release);
                if !await_value(&shared, value + 2) {
                    break;
                }
                value += 2;
                if value % 256 == 0 && start.elapsed() >= duration {
                    break;
                }
            }
            Ok((value, start.elapsed()))
        })();
        shared.stop.0.store(1, Ordering::Relaxed);
        result
    });
    let ping = ping.join().map_err(|_| anyhow!("the probe thread panicked"))?;
    let pong = pong.join().map_err(|_| anyhow!("the probe thread panicked"))?;
    let (handoffs, elapsed) = ping?;
    pong?;
    if handoffs == 0 {
        return Err(anyhow!("no handoff completed"));
    }
    Ok(elapsed.as_nanos() as f64 / handoffs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_measures_something() {
        if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
            return;
        }
        let ns = cross_core_ns(0, 1, Duration::from_millis(20)).unwrap();
        assert!(ns > 0.0 && ns < 1e6, "{ns}");
    }
}
