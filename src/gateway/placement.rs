//! The scheduling class of the engine processes on this host: a standby's wake-up must not
//! preempt the order path.
//!
//! Every input goes to both engines, and a link write wakes the engine it is written to on the
//! writer's core, where the kernel lets a freshly woken thread run before the writer (a
//! synchronous wake-up). For the authoritative engine that is what an order wants: it answers at
//! once. For a standby it is the opposite: its whole apply runs before the gateway reads the
//! authoritative engine's answer, so the standby's work lands on every order's latency although
//! nothing waits for its answer. Measured in ping-pong, the gateway was preempted 1.2–1.6 times
//! per order, mostly by the standby.
//!
//! `SCHED_BATCH` is the normal time-sharing class with the same CPU share but without wake-up
//! preemption: a standby in it runs as soon as the gateway sleeps (or on the other core), never
//! in the middle of an order. So the gateway's driver puts every thread of an engine that owns
//! no inputs (neither authoritative nor a canary) in `SCHED_BATCH`, and an engine that takes
//! authority back in `SCHED_OTHER`. It reaches only engines on this host over a Unix socket
//! (whose peer's process id the kernel reports), leaves threads an operator put in another class
//! (real-time, idle) alone, and never fails the link: a refusal (another user's process) is
//! logged and the engine runs as it was started. `[gateway] standby_sched_batch = false` turns it
//! off.

use std::io;

/// Puts every thread of process `pid` in `SCHED_BATCH` (`batch`) or in `SCHED_OTHER`; returns
/// how many threads were changed. Threads in any other class are left as they are.
#[cfg(target_os = "linux")]
pub fn set_batch(pid: u32, batch: bool) -> io::Result<usize> {
    let (from, to) = if batch {
        (libc::SCHED_OTHER, libc::SCHED_BATCH)
    } else {
        (libc::SCHED_BATCH, libc::SCHED_OTHER)
    };
    let mut changed = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread that ended since the directory was read has no class any more.
        if policy_of(tid).ok() != Some(from) {
            continue;
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler(2) changes the policy of thread `tid` and reads `param`,
        // which lives across the call; the normal classes take priority 0 and keep the nice
        // value.
        if unsafe { libc::sched_setscheduler(tid as libc::pid_t, to, &param) } != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ESRCH) {
                continue;
            }
            return Err(error);
        }
        changed += 1;
    }
    Ok(changed)
}

/// Elsewhere the classes do not exist: nothing is changed.
#[cfg(not(target_os = "linux"))]
pub fn set_batch(_pid: u32, _batch: bool) -> io::Result<usize> {
    Ok(0)
}

/// The scheduling class of thread `tid` (`SCHED_OTHER`, `SCHED_BATCH`...), for tests and status.
#[cfg(target_os = "linux")]
pub fn policy_of(tid: u32) -> io::Result<i32> {
    // SAFETY: sched_getscheduler(2) reads the policy of thread `tid`; no memory is passed.
    let policy = unsafe { libc::sched_getscheduler(tid as libc::pid_t) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(policy)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A child process whose threads can be moved between classes without touching this one.
    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep runs")
    }

    #[test]
    fn a_process_goes_to_batch_and_back_and_other_classes_are_left_alone() {
        let mut child = sleeper();
        let pid = child.id();
        assert_eq!(policy_of(pid).unwrap(), libc::SCHED_OTHER);
        assert_eq!(set_batch(pid, true).unwrap(), 1);
        assert_eq!(policy_of(pid).unwrap(), libc::SCHED_BATCH);
        assert_eq!(set_batch(pid, true).unwrap(), 0, "already there");
        assert_eq!(set_batch(pid, false).unwrap(), 1);
        assert_eq!(policy_of(pid).unwrap(), libc::SCHED_OTHER);
        // An operator's choice (here the idle class) is not ours to undo.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: as in `set_batch`, on the child's only thread.
        let set = unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_IDLE, &param) };
        assert_eq!(set, 0);
        assert_eq!(set_batch(pid, true).unwrap(), 0);
        assert_eq!(set_batch(pid, false).unwrap(), 0);
        assert_eq!(policy_of(pid).unwrap(), libc::SCHED_IDLE);
        child.kill().expect("the child stops");
        child.wait().expect("the child is reaped");
    }

    #[test]
    fn a_process_that_is_gone_is_an_error_not_a_panic() {
        let mut child = sleeper();
        let pid = child.id();
        child.kill().expect("the child stops");
        child.wait().expect("the child is reaped");
        assert!(set_batch(pid, true).is_err());
    }
}
