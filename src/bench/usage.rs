//! What each process of the venue spent per order: CPU seconds (user + system, from
//! `/proc/PID/stat`) and context switches (from every thread's `/proc/PID/task/TID/status`).
//!
//! A one-session ping-pong is a chain of wake-ups: client → gateway → engine → gateway → client,
//! each a sleeping thread woken by another process. On two cores with three busy processes, a
//! voluntary context switch is a sleep and each sleep costs a wake-up (scheduler latency, cache
//! refill) on the way back. Counting them per order per process, next to CPU per order, is what
//! shows whether a latency target is reachable without spinning threads, and what spinning buys.

use std::fs;

use serde::{Deserialize, Serialize};

/// One process's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// User + system CPU time, in microseconds (clock-tick resolution for other processes).
    pub cpu_us: u64,
    /// Voluntary context switches over all live threads: the thread slept (waited for I/O, a
    /// futex, a timer).
    pub voluntary_switches: u64,
    /// Involuntary context switches over all live threads: the scheduler took the core away.
    pub involuntary_switches: u64,
}

/// A process's usage over a measurement, per order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// Which process: `gateway`, `blue`, `green`, `bench client`.
    pub name: String,
    /// CPU seconds spent during the measurement.
    pub cpu_s: f64,
    /// CPU microseconds per order answered.
    pub cpu_us_per_order: f64,
    /// Voluntary context switches (sleeps) per order answered.
    pub sleeps_per_order: f64,
    /// Involuntary context switches (preemptions) per order answered.
    pub preemptions_per_order: f64,
}

/// Reads `pid`'s counters; `None` when the process is gone or `/proc` is not there. For this
/// process, `getrusage` is used instead: it also counts threads that have exited (the load's
/// client threads are joined before the counters are read), which `/proc` forgets.
pub fn read(pid: u32) -> Option<Counters> {
    if pid == std::process::id() {
        return read_self();
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ...: comm may hold spaces; fields after it start with state (field 3),
    // so utime (field 14) and stime (field 15) are the 12th and 13th after the ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let mut counters = Counters {
        cpu_us: ((utime + stime) as f64 * 1e6 / ticks_per_s()) as u64,
        ..Counters::default()
    };
    // The process's own status counts its main thread only: sum every thread's.
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let (voluntary, involuntary) = switches(&status);
        counters.voluntary_switches += voluntary;
        counters.involuntary_switches += involuntary;
    }
    Some(counters)
}

/// This process's counters, threads that have exited included.
fn read_self() -> Option<Counters> {
    // SAFETY: rusage is plain data, so zeroed is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes one rusage into the struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(Counters {
        cpu_us: micros(usage.ru_utime) + micros(usage.ru_stime),
        voluntary_switches: usage.ru_nvcsw as u64,
        involuntary_switches: usage.ru_nivcsw as u64,
    })
}

/// The two context-switch counts of a `status` file.
fn switches(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// Clock ticks per second, for `cpu_ticks`.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf(3) reads a system constant; no memory is involved.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The usage between `before` and `after`, per `orders` (at least 1).
pub fn between(name: &str, before: Counters, after: Counters, orders: u64) -> ProcessUsage {
    let orders = orders.max(1) as f64;
    let cpu_s = after.cpu_us.saturating_sub(before.cpu_us) as f64 / 1e6;
    let per_order = |a: u64, b: u64| (a.saturating_sub(b) as f64 / orders * 100.0).round() / 100.0;
    ProcessUsage {
        name: name.to_owned(),
        cpu_s: (cpu_s * 1000.0).round() / 1000.0,
        cpu_us_per_order: (cpu_s * 1e6 / orders * 10.0).round() / 10.0,
        sleeps_per_order: per_order(after.voluntary_switches, before.voluntary_switches),
        preemptions_per_order: per_order(after.involuntary_switches, before.involuntary_switches),
    }
}

/// Counters of several named processes, taken together.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(name, pid, counters)` of each process readable at the time.
    processes: Vec<(String, u32, Counters)>,
}

impl Snapshot {
    /// Reads every process in `processes` now.
    pub fn take(processes: &[(String, u32)]) -> Snapshot {
        Snapshot {
            processes: processes
                .iter()
                .filter_map(|(name, pid)| read(*pid).map(|c| (name.clone(), *pid, c)))
                .collect(),
        }
    }

    /// Each process's usage since `earlier`, per `orders`; a process that was restarted in
    /// between (another pid under the same name) is left out, its counters having restarted.
    pub fn since(&self, earlier: &Snapshot, orders: u64) -> Vec<ProcessUsage> {
        self.processes
            .iter()
            .filter_map(|(name, pid, after)| {
                let (_, _, before) = earlier
                    .processes
                    .iter()
                    .find(|(n, p, _)| n == name && p == pid)?;
                Some(between(name, *before, *after, orders))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_and_its_work_is_counted() {
        let me = std::process::id();
        let before = read(me).expect("/proc/self");
        // Burn some CPU and sleep a few times, on another thread too.
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        // A thread that sleeps and exits before the counters are read still counts.
        std::thread::spawn(|| {
            for _ in 0..5 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
        .join()
        .unwrap();
        let after = read(me).unwrap();
        assert!(after.cpu_us > before.cpu_us, "{before:?} {after:?}");
        assert!(
            after.voluntary_switches >= before.voluntary_switches + 5,
            "{before:?} {after:?}"
        );
        let usage = between("me", before, after, 10);
        assert!(
            usage.cpu_s > 0.0 && usage.sleeps_per_order >= 0.5,
            "{usage:?}"
        );
    }

    #[test]
    fn another_process_is_read_from_proc() {
        // A shell that waits for 20 short-lived children (each wait is a sleep), then idles.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 20 ]; do sleep 0.001; i=$((i+1)); done; echo done; sleep 30",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let counters = read(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let counters = counters.expect("the child's /proc entries");
        assert!(counters.voluntary_switches >= 20, "{counters:?}");
        assert_eq!(read(child.id()), None, "a reaped process has no counters");
    }

    #[test]
    fn status_fields_are_parsed_and_missing_ones_are_zero() {
        let status = "Name:\tbaton\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(switches(status), (12, 3));
        assert_eq!(switches("Name:\tx\n"), (0, 0));
    }
}
