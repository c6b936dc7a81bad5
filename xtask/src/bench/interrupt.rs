// Interrupt-mode cases: the wake-up cost of a reflector sleeping on its call eventfd (against
// the machine's own floor: a bare eventfd wake-up between two pinned threads), and the CPU an
// idle switch with idle apps uses (against the same in polling mode).

use std::time::Duration;

use anyhow::{bail, Result};

use super::ours::{final_json, number, port, Ctx};
use crate::scratch::Sandbox;

/// Idle apps in the idle-CPU case.
const IDLE_APPS: usize = 6;

/// Round trips in the wake cases.
const WAKES: usize = 5000;
/// Gap between round trips, long enough for the sleeper to fall asleep.
const WAKE_GAP: Duration = Duration::from_micros(200);

/// `ping` (polling, backend) against `echo` on a virtio-user port that sleeps on its call
/// eventfd (`interrupt`) or polls. Returns p50 and p99 in microseconds.
pub fn wake(sb: &mut Sandbox, ctx: &Ctx, interrupt: bool) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    let vu = port("vu-server", &sock);
    let mut args = vec!["--port", vu.as_str(), "--core", "0", "--secs", "0", "--quiet"];
    if interrupt {
        args.push("--interrupt");
    }
    ctx.spawn(sb, "echo", &args)?;
    sb.wait_for_path(&sock, Duration::from_secs(20))?;
    // Gaps between pings let the reflector fall asleep before each one.
    let backend = port("vhost-client", &sock);
    let p = ctx.spawn(
        sb,
        "ping",
        &[
            "--port",
            &backend,
            "--core",
            "1",
            "--count",
            &WAKES.to_string(),
            "--interval-us",
            &WAKE_GAP.as_micros().to_string(),
            "--json",
            "--quiet",
        ],
    )?;
    sb.wait_all_success(&[p], Duration::from_secs(120))?;
    let v = final_json(sb, p, "ping")?;
    Ok(vec![number(&v, "p50_us")?, number(&v, "p99_us")?])
}

fn cpu_ticks(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().map_or(0, |s| {
        // Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
    })
}

/// fastpathd with `IDLE_APPS` ports and an idle sink on each, all in interrupt mode or all
/// polling; returns the CPU milliseconds they use per second of idle time.
pub fn idle_cpu(sb: &mut Sandbox, ctx: &Ctx, interrupt: bool) -> Result<Vec<f64>> {
    let ctl = sb.path("ctl.sock");
    let ctl_s = ctl.display().to_string();
    let mut sw_args: Vec<String> = vec!["--core".into(), "0".into(), "--ctl".into(), ctl_s];
    if interrupt {
        sw_args.push("--interrupt".into());
    }
    let socks: Vec<_> = (0..IDLE_APPS).map(|i| sb.path(&format!("p{i}.sock"))).collect();
    for (i, s) in socks.iter().enumerate() {
        sw_args.push("--port".into());
        sw_args.push(format!("br0:p{i}:vhost:{}", s.display()));
    }
    let refs: Vec<&str> = sw_args.iter().map(String::as_str).collect();
    let mut ids = vec![ctx.spawn(sb, "fastpathd", &refs)?];
    for s in &socks {
        sb.wait_for_path(s, Duration::from_secs(20))?;
        let p = port("vu", s);
        let mut a = vec!["--port", p.as_str(), "--secs", "0", "--quiet"];
        if interrupt {
            a.push("--interrupt");
        }
        ids.push(ctx.spawn(sb, "sink", &a)?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let pids: Vec<i32> = ids.iter().map(|&id| sb.proc(id).pid()).collect();
    let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let secs = ctx.secs.max(2);
    std::thread::sleep(Duration::from_secs(secs));
    sb.check_alive()?;
    let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let hz = 100.0; // USER_HZ
    let ms_per_s = (after - before) as f64 / hz * 1000.0 / secs as f64;
    println!(
        "[idle_cpu] {} mode: fastpathd + {IDLE_APPS} idle sinks used {ms_per_s:.1} ms of CPU per second",
        if interrupt { "interrupt" } else { "polling" }
    );
    Ok(vec![ms_per_s])
}

/// The machine's floor under `wake`: the same round trip with nothing but the kernel in it.
/// A thread on CPU 0 sleeps in poll(2) on an eventfd; the main thread on CPU 1 stamps the
/// time, writes the eventfd and spins until the sleeper, woken, has stored its answer in
/// shared memory. Returns p50 and p99 in microseconds.
pub fn eventfd_floor() -> Result<Vec<f64>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use nix::unistd::Pid;
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    fn pin(cpu: usize) -> Result<()> {
        let mut set = CpuSet::new();
        set.set(cpu)?;
        sched_setaffinity(Pid::from_raw(0), &set)?;
        Ok(())
    }
    let efd = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK)?);
    let answered = Arc::new(AtomicUsize::new(0));
    let sleeper = {
        let (efd, answered) = (Arc::clone(&efd), Arc::clone(&answered));
        std::thread::spawn(move || -> Result<()> {
            pin(0)?;
            for i in 1..=WAKES {
                let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(1000u16))?;
                let _ = efd.read();
                answered.store(i, Ordering::Release);
            }
            Ok(())
        })
    };
    pin(1)?;
    let mut lat = Vec::with_capacity(WAKES);
    for i in 1..=WAKES {
        std::thread::sleep(WAKE_GAP);
        let t0 = Instant::now();
        efd.write(1)?;
        while answered.load(Ordering::Acquire) != i {
            if t0.elapsed() > Duration::from_secs(2) {
                bail!("eventfd floor: the sleeping thread did not answer wake-up {i} within 2 s");
            }
            std::hint::spin_loop();
        }
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    sleeper.join().map_err(|_| anyhow::anyhow!("eventfd floor: the sleeping thread panicked"))??;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!("[wake] kernel floor: eventfd wake-up round trip p50 {:.1} us p99 {:.1} us", pct(0.5), pct(0.99));
    Ok(vec![pct(0.5), pct(0.99)])
}
