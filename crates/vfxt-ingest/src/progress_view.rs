//! Shows live progress: a redrawn line on a terminal, a plain line every few seconds otherwise
//! (logs, CI, `kubectl logs`). Shared by every command that moves data.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ingest_copy::Snapshot;

/// What is known in advance, for percentages and ETA.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected {
    pub files: u64,
    pub bytes: u64,
}

/// Renders one progress line from a snapshot. Pure, so it is tested without a terminal.
pub fn render(label: &str, s: &Snapshot, elapsed: Duration, expected: Option<Expected>) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let files_rate = s.files as f64 / secs;
    let bytes_rate = s.bytes as f64 / secs;
    let mut line = format!(
        "{label}: {} files, {} ({} files/s, {}/s)",
        s.files,
        bytes(s.bytes),
        files_rate.round() as u64,
        bytes(bytes_rate as u64)
    );
    if s.verified > 0 {
        line.push_str(&format!(", verified {}", s.verified));
    }
    if s.failed > 0 {
        line.push_str(&format!(", {} failed", s.failed));
    }
    if let Some(e) = expected.filter(|e| e.files > 0 || e.bytes > 0) {
        let frac = fraction(s, e);
        line.push_str(&format!(", {:.1}%", frac * 100.0));
        if frac > 0.0 && frac < 1.0 {
            let eta = secs * (1.0 - frac) / frac;
            line.push_str(&format!(", ETA {}", duration(eta)));
        }
    } else if s.dirs_queued > s.dirs_listed {
        line.push_str(&format!(", {} dirs to list", s.dirs_queued - s.dirs_listed));
    }
    line
}

/// Done fraction, weighing files and bytes equally (small-file trees are bound by files, big
/// files by bytes: the field guide's two metrics).
pub fn fraction(s: &Snapshot, e: Expected) -> f64 {
    let f = if e.files > 0 {
        (s.files as f64 / e.files as f64).min(1.0)
    } else {
        1.0
    };
    let b = if e.bytes > 0 {
        (s.bytes as f64 / e.bytes as f64).min(1.0)
    } else {
        1.0
    };
    (f + b) / 2.0
}

pub use ingest_api::units::human_bytes as bytes;

pub fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Draws progress on stderr until `stop` is set. Call from a scoped thread.
pub fn report_until(
    stop: &AtomicBool,
    label: &str,
    expected: Option<Expected>,
    snapshot: impl Fn() -> Snapshot,
) {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        let line = render(label, &snapshot(), started.elapsed(), expected);
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if tty {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rates_percent_and_eta() {
        let s = Snapshot {
            files: 50,
            bytes: 500,
            ..Default::default()
        };
        let line = render(
            "copy",
            &s,
            Duration::from_secs(10),
            Some(Expected {
                files: 100,
                bytes: 1000,
            }),
        );
        assert_eq!(
            line,
            "copy: 50 files, 500 B (5 files/s, 50 B/s), 50.0%, ETA 0:10"
        );
    }

    #[test]
    fn without_totals_shows_walk_backlog() {
        let s = Snapshot {
            files: 1,
            dirs_listed: 2,
            dirs_queued: 5,
            failed: 1,
            ..Default::default()
        };
        let line = render("copy", &s, Duration::from_secs(1), None);
        assert!(line.ends_with(", 1 failed, 3 dirs to list"), "{line}");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(3725.0), "1:02:05");
    }
}
