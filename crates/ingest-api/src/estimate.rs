//! How long a run will take, from what the job's earlier passes measured (`status.passes`). Both
//! drivers, the operator and `vfxt-ingest run`, keep the passes and fill
//! `status.totals.estimatedSeconds` from here; `vfxt-ingest scan --rates-from` prints the same.

use crate::job::{PassMode, PassRecord, Totals};

/// What a finished pass moved per second, over its whole run (scan, copy and verify).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub files_per_second: f64,
    pub bytes_per_second: f64,
}

/// Runs shorter than this measure start-up more than copying.
const MIN_MEASURED_SECONDS: f64 = 1.0;

impl PassRecord {
    /// Files and bytes per second of a Copy pass with both times; none for a dry run (it writes
    /// nothing) or a run too short to measure.
    pub fn rates(&self) -> Option<Rates> {
        // A Mirror pass copies too (and deletes); a dry run writes nothing.
        if self.mode == PassMode::DryRun {
            return None;
        }
        let (start, end) = (self.start_time.as_ref()?, self.completion_time.as_ref()?);
        let secs = end.0.duration_since(start.0).as_secs_f64();
        (secs >= MIN_MEASURED_SECONDS).then(|| Rates {
            files_per_second: self.files as f64 / secs,
            bytes_per_second: self.bytes as f64 / secs,
        })
    }
}

/// The measured Copy pass that wrote the most bytes (the latest of equals): the one nearest a
/// full copy, whose [`PassRecord::rates`] the estimate takes. A delta pass would mislead both
/// ways: its files per second count files found up to date, which are only compared, and its
/// bytes per second spread its few written bytes over the whole run.
pub fn rate_pass(passes: &[PassRecord]) -> Option<&PassRecord> {
    passes
        .iter()
        .filter(|p| p.rates().is_some())
        .max_by_key(|p| p.bytes)
}

/// Seconds a run copying `files` and `bytes` takes at `rates`: the larger of the two times (a
/// tree of small files is bound by files, one of large files by bytes). None when the tree has
/// something of a kind that was not measured (a zero rate): an estimate leaving it out would
/// promise too little.
pub fn estimate_seconds(files: u64, bytes: u64, rates: Rates) -> Option<u64> {
    let time = |n: u64, per_second: f64| match n {
        0 => Some(0.0),
        _ if per_second > 0.0 => Some(n as f64 / per_second),
        _ => None,
    };
    let secs = time(files, rates.files_per_second)?.max(time(bytes, rates.bytes_per_second)?);
    Some(secs.ceil() as u64)
}

impl Totals {
    /// These totals with [`Totals::estimated_seconds`] from `passes` (the job's earlier runs);
    /// none when no Copy pass measured what the tree holds.
    pub fn with_estimate(mut self, passes: &[PassRecord]) -> Totals {
        self.estimated_seconds = rate_pass(passes)
            .and_then(PassRecord::rates)
            .and_then(|r| estimate_seconds(self.files, self.bytes, r));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pass(run: i64, mode: PassMode, secs: i64, files: u64, bytes: u64) -> PassRecord {
        let at = |s: i64| Some(Time(Timestamp::from_second(1_800_000_000 + s).unwrap()));
        PassRecord {
            run,
            mode,
            start_time: at(0),
            completion_time: at(secs),
            files,
            bytes,
            ..PassRecord::default()
        }
    }

    #[test]
    fn a_copy_pass_measures_over_its_whole_run_and_other_passes_measure_nothing() {
        let r = pass(1, PassMode::Copy, 100, 1000, 5 << 20).rates().unwrap();
        assert_eq!(r.files_per_second, 10.0);
        assert_eq!(r.bytes_per_second, (5 << 20) as f64 / 100.0);
        assert_eq!(pass(1, PassMode::DryRun, 100, 1000, 0).rates(), None);
        assert_eq!(pass(1, PassMode::Copy, 0, 1000, 10).rates(), None);
        let unfinished = PassRecord {
            completion_time: None,
            ..pass(1, PassMode::Copy, 100, 1000, 10)
        };
        assert_eq!(unfinished.rates(), None);
    }

    #[test]
    fn the_pass_that_wrote_the_most_gives_the_rates_the_latest_of_equals() {
        let bulk = pass(1, PassMode::Copy, 1000, 10_000, 1 << 30);
        let delta = pass(2, PassMode::Copy, 50, 10_000, 1 << 20);
        let dry = pass(3, PassMode::DryRun, 10, 10_000, 0);
        let run = |passes: &[PassRecord]| rate_pass(passes).map(|p| p.run);
        assert_eq!(run(&[bulk.clone(), delta.clone(), dry.clone()]), Some(1));
        let again = pass(4, PassMode::Copy, 500, 10_000, 1 << 30);
        assert_eq!(run(&[bulk, again, delta]), Some(4));
        assert_eq!(run(&[dry]), None);
        assert_eq!(run(&[]), None);
    }

    #[test]
    fn the_slower_of_files_and_bytes_sets_the_estimate() {
        let r = Rates {
            files_per_second: 100.0,
            bytes_per_second: 1000.0,
        };
        // 50 s of files, 2.5 s of bytes; then 1 s of files, 30 s of bytes (rounded up).
        assert_eq!(estimate_seconds(5000, 2500, r), Some(50));
        assert_eq!(estimate_seconds(100, 29_001, r), Some(30));
        assert_eq!(estimate_seconds(0, 0, r), Some(0));
        // Bytes to copy but none measured: no estimate rather than one of files alone.
        let no_bytes = Rates {
            bytes_per_second: 0.0,
            ..r
        };
        assert_eq!(estimate_seconds(5000, 1, no_bytes), None);
        assert_eq!(estimate_seconds(5000, 0, no_bytes), Some(50));
    }

    #[test]
    fn totals_get_an_estimate_only_from_a_measured_copy_pass() {
        let t = Totals {
            files: 20_000,
            bytes: 2_000_000_000,
            ..Totals::default()
        };
        let bulk = pass(1, PassMode::Copy, 1000, 10_000, 1_000_000_000);
        // Twice the files and twice the bytes of a 1000 s pass.
        assert_eq!(
            t.clone().with_estimate(&[bulk]).estimated_seconds,
            Some(2000)
        );
        let dry = pass(2, PassMode::DryRun, 10, 10_000, 0);
        assert_eq!(t.with_estimate(&[dry]).estimated_seconds, None);
    }
}
