//! Runs one command and measures it the way `time -v` would: wall seconds, and user+system CPU
//! and peak RSS from `wait4`, which covers the child and every descendant it waited for (a
//! shell's pipeline, GNU parallel's jobs, fpsync's rsyncs).
//!
//! Peak RSS needs care: at `exec` Linux records the peak RSS of the address space being
//! replaced into the new process's maxrss, and a child spawned with vfork shares the spawner's
//! address space. Spawned straight from the benchmark, every tool would report at least the
//! benchmark's own peak (which grows with the comparisons). So tools are started through
//! [`launcher_main`] (this binary, run fresh), which spawns the tool, reaps it with `wait4` and
//! writes down its usage: the floor is then the launcher's own couple of MiB.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hidden first argument that makes this binary the launcher.
pub const LAUNCHER_ARG: &str = "__measure";

#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub wall_s: f64,
    pub usage: Usage,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    pub user_s: f64,
    pub sys_s: f64,
    /// The largest resident set of any one process in the tree (what the kernel keeps), KiB.
    pub max_rss_kib: u64,
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

    fn from_status(status: libc::c_int) -> Self {
        if libc::WIFEXITED(status) {
            Outcome::Exited(libc::WEXITSTATUS(status))
        } else {
            Outcome::Signalled(libc::WTERMSIG(status))
        }
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

/// Waits for our child `pid`; its status and the usage of it and its reaped descendants.
fn wait4(pid: libc::pid_t) -> io::Result<(libc::c_int, Usage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own child, which std will not reap
        // because Child::wait is never called for it.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        user_s: secs(ru.ru_utime),
        sys_s: secs(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    };
    Ok((status, usage))
}

/// Runs `cmd` through `launcher` (this program's own binary) so that its peak RSS is its own
/// (see the module docs), or directly when `launcher` is None. `usage_file` is scratch space.
/// The stdio set on `cmd` is not carried over: pass it in `stdio`.
pub fn run(
    cmd: &Command,
    launcher: Option<&Path>,
    usage_file: &Path,
    stdio: impl FnOnce(&mut Command),
    limit: Duration,
) -> io::Result<Measured> {
    let Some(launcher) = launcher else {
        let mut c = clone_command(cmd);
        stdio(&mut c);
        return run_direct(&mut c, limit);
    };
    let _ = fs::remove_file(usage_file);
    let mut c = Command::new(launcher);
    c.arg(LAUNCHER_ARG)
        .arg(usage_file)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    copy_env_and_dir(cmd, &mut c);
    stdio(&mut c);
    let mut m = run_direct(&mut c, limit)?;
    if m.outcome != Outcome::TimedOut {
        let text = fs::read_to_string(usage_file).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "the launcher left no usage in {}: {e}",
                    usage_file.display()
                ),
            )
        })?;
        let (usage, outcome) = parse_usage(&text).ok_or_else(|| {
            io::Error::other(format!(
                "bad usage record {text:?} in {}",
                usage_file.display()
            ))
        })?;
        m.usage = usage;
        m.outcome = outcome;
    }
    Ok(m)
}

fn clone_command(cmd: &Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    copy_env_and_dir(cmd, &mut c);
    c
}

fn copy_env_and_dir(from: &Command, to: &mut Command) {
    for (k, v) in from.get_envs() {
        match v {
            Some(v) => to.env(k, v),
            None => to.env_remove(k),
        };
    }
    if let Some(d) = from.get_current_dir() {
        to.current_dir(d);
    }
}

/// The process group of the tool being measured, for [`install_interrupt_handler`].
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_interrupt(sig: libc::c_int) {
    let group = RUNNING_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill and _exit are async-signal-safe.
    unsafe {
        if group > 0 {
            libc::kill(-group, libc::SIGKILL);
        }
        libc::_exit(128 + sig);
    }
}

/// Tools run in their own process group (so a hung one can be killed whole), which also keeps
/// a terminal's Ctrl-C from reaching them: on SIGINT, SIGTERM or SIGHUP the benchmark kills the
/// running tool's group before it exits.
pub fn install_interrupt_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { libc::signal(sig, on_interrupt as *const () as libc::sighandler_t) };
    }
}

/// Spawns `cmd` in its own process group and waits for it. After `limit` the whole group is
/// killed, so a hung peer cannot stall the benchmark.
pub fn run_direct(cmd: &mut Command, limit: Duration) -> io::Result<Measured> {
    cmd.process_group(0);
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    RUNNING_GROUP.store(pid, Ordering::SeqCst);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let fired = matches!(
            done_rx.recv_timeout(limit),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if fired {
            // SAFETY: kill has no memory effects; the group is the child's, and the child is
            // not reaped before this thread is joined.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        fired
    });
    let waited = wait4(pid);
    let wall = start.elapsed();
    RUNNING_GROUP.store(0, Ordering::SeqCst);
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    drop(child);
    let (status, usage) = waited?;
    let outcome = if timed_out {
        Outcome::TimedOut
    } else {
        Outcome::from_status(status)
    };
    Ok(Measured {
        wall_s: wall.as_secs_f64(),
        usage,
        outcome,
    })
}

fn parse_usage(text: &str) -> Option<(Usage, Outcome)> {
    let f: Vec<&str> = text.split_whitespace().collect();
    let [user, sys, rss, kind, code] = f[..] else {
        return None;
    };
    let usage = Usage {
        user_s: user.parse().ok()?,
        sys_s: sys.parse().ok()?,
        max_rss_kib: rss.parse().ok()?,
    };
    let code: i32 = code.parse().ok()?;
    let outcome = match kind {
        "exit" => Outcome::Exited(code),
        "signal" => Outcome::Signalled(code),
        _ => return None,
    };
    Some((usage, outcome))
}

/// The launcher: `vfxt-bench __measure USAGE_FILE -- PROGRAM ARGS...`. Runs the program with
/// this process's stdio and environment, writes its usage and outcome to USAGE_FILE, and exits
/// with its code.
pub fn launcher_main(args: &[OsString]) -> ExitCode {
    let [usage_file, sep, program, rest @ ..] = args else {
        eprintln!("vfxt-bench {LAUNCHER_ARG}: expected USAGE_FILE -- PROGRAM [ARGS...]");
        return ExitCode::from(125);
    };
    if sep != "--" {
        eprintln!("vfxt-bench {LAUNCHER_ARG}: expected -- before the program");
        return ExitCode::from(125);
    }
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "vfxt-bench {LAUNCHER_ARG}: cannot run {}: {e}",
                program.to_string_lossy()
            );
            return ExitCode::from(127);
        }
    };
    let (status, u) = match wait4(child.id() as libc::pid_t) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vfxt-bench {LAUNCHER_ARG}: wait: {e}");
            return ExitCode::from(125);
        }
    };
    let (kind, code, exit) = match Outcome::from_status(status) {
        Outcome::Exited(c) => ("exit", c, c as u8),
        Outcome::Signalled(s) => ("signal", s, 128u8.wrapping_add(s as u8)),
        Outcome::TimedOut => unreachable!("from_status never times out"),
    };
    let line = format!("{} {} {} {kind} {code}\n", u.user_s, u.sys_s, u.max_rss_kib);
    if let Err(e) = fs::write(usage_file, line) {
        eprintln!(
            "vfxt-bench {LAUNCHER_ARG}: cannot write {}: {e}",
            usage_file.to_string_lossy()
        );
        return ExitCode::from(125);
    }
    ExitCode::from(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn grandchild_memory_and_cpu_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let u = tmp.path().join("usage");
        // dd (a grandchild, under sh) touches a 48 MiB buffer.
        let m = run(
            &sh("dd if=/dev/zero of=/dev/null bs=48M count=2 2>/dev/null; true"),
            None,
            &u,
            |_| {},
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(m.outcome, Outcome::Exited(0));
        assert!(m.usage.max_rss_kib >= 48 * 1024, "{m:?}");
        let m = run(
            &sh("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 3"),
            None,
            &u,
            |_| {},
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(m.outcome, Outcome::Exited(3));
        assert!(
            m.usage.user_s + m.usage.sys_s > 0.05 && m.wall_s >= m.usage.user_s * 0.5,
            "{m:?}"
        );
    }

    #[test]
    fn time_limit_kills_the_whole_group() {
        let tmp = tempfile::tempdir().unwrap();
        let m = run(
            &sh("sleep 30 & sleep 30; wait"),
            None,
            &tmp.path().join("u"),
            |_| {},
            Duration::from_millis(300),
        )
        .unwrap();
        assert_eq!(m.outcome, Outcome::TimedOut);
        assert!(m.wall_s < 10.0, "{m:?}");
    }

    #[test]
    fn missing_program_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Command::new("/nonexistent/tool");
        assert!(
            run(
                &c,
                None,
                &tmp.path().join("u"),
                |_| {},
                Duration::from_secs(5)
            )
            .is_err()
        );
    }

    #[test]
    fn usage_records_parse_and_reject_garbage() {
        let (u, o) = parse_usage("0.5 0.25 2048 exit 1\n").unwrap();
        assert_eq!(
            u,
            Usage {
                user_s: 0.5,
                sys_s: 0.25,
                max_rss_kib: 2048
            }
        );
        assert_eq!(o, Outcome::Exited(1));
        assert_eq!(
            parse_usage("0 0 1 signal 9").unwrap().1,
            Outcome::Signalled(9)
        );
        assert!(parse_usage("0 0 x exit 0").is_none());
        assert!(parse_usage("").is_none());
    }
}
