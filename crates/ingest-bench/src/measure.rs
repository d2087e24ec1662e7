//! Runs one command and measures it the way `time -v` would: wall seconds, and user+system CPU
//! and peak RSS from `wait4`, which covers the child and every descendant it waited for (a
//! shell's pipeline, GNU parallel's jobs, fpsync's rsyncs).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    /// The largest resident set of any one process in the tree (what the kernel keeps), KiB.
    pub max_rss_kib: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signalled(i32),
    /// Killed by us after the time limit.
    TimedOut,
}

impl Outcome {
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(c) => write!(f, "exit {c}"),
            Outcome::Signalled(s) => write!(f, "killed by signal {s}"),
            Outcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Spawns `cmd` in its own process group and waits for it. After `limit` the whole group is
/// killed, so a hung peer cannot stall the benchmark.
pub fn run(cmd: &mut Command, limit: Duration) -> io::Result<Measured> {
    cmd.process_group(0);
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (timed_tx, timed_rx) = mpsc::channel::<bool>();
    let watchdog = std::thread::spawn(move || {
        let fired = matches!(
            done_rx.recv_timeout(limit),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if fired {
            // SAFETY: kill has no memory effects; the group is the child's, still unreaped.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = timed_tx.send(fired);
    });
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own child, which std will not reap
        // because we never call Child::wait.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let wall = start.elapsed();
    let _ = done_tx.send(());
    let timed_out = timed_rx.recv().unwrap_or(false);
    let _ = watchdog.join();
    drop(child);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let outcome = if timed_out {
        Outcome::TimedOut
    } else if libc::WIFEXITED(status) {
        Outcome::Exited(libc::WEXITSTATUS(status))
    } else {
        Outcome::Signalled(libc::WTERMSIG(status))
    };
    Ok(Measured {
        wall_s: wall.as_secs_f64(),
        user_s: secs(ru.ru_utime),
        sys_s: secs(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grandchild_memory_and_cpu_are_counted() {
        // dd (a grandchild, under sh) touches a 48 MiB buffer.
        let m = run(
            Command::new("sh").args([
                "-c",
                "dd if=/dev/zero of=/dev/null bs=48M count=2 2>/dev/null; true",
            ]),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(m.outcome, Outcome::Exited(0));
        assert!(m.max_rss_kib >= 48 * 1024, "{m:?}");
        let m = run(
            Command::new("sh").args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 3",
            ]),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(m.outcome, Outcome::Exited(3));
        assert!(
            m.user_s + m.sys_s > 0.05 && m.wall_s >= m.user_s * 0.5,
            "{m:?}"
        );
    }

    #[test]
    fn time_limit_kills_the_whole_group() {
        let m = run(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30; wait"]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert_eq!(m.outcome, Outcome::TimedOut);
        assert!(m.wall_s < 10.0, "{m:?}");
    }

    #[test]
    fn missing_program_is_an_error() {
        assert!(
            run(
                &mut Command::new("/nonexistent/tool"),
                Duration::from_secs(5)
            )
            .is_err()
        );
    }
}
