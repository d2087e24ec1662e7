//! The scan's histograms as rows for people. `vfxt-ingest scan` prints them and the IngestJob's
//! `status.totals` carries them: both take their rows from here, so a bucket reads the same
//! wherever it is shown.

use ingest_job::units::human_bytes;

use crate::scan::AGE_BUCKETS;

/// A non-empty row of the size histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeRow {
    /// `0 B`, or `[low, high)` in binary units.
    pub label: String,
    /// Smallest size in the row.
    pub min_bytes: u64,
    pub files: u64,
}

/// The non-empty rows of a size histogram ([`crate::format::HISTOGRAM_BUCKETS`]), smallest
/// first, each row `per_row` power-of-two buckets wide (at least 1): 1 gives every bucket, 4
/// sizes a factor of 16 apart, few rows for a compact status. Empty files are a row of their own.
pub fn size_rows(histogram: &[u64], per_row: usize) -> Vec<SizeRow> {
    let per_row = per_row.max(1);
    let empty = histogram.first().map(|&files| SizeRow {
        label: "0 B".to_string(),
        min_bytes: 0,
        files,
    });
    let sized = histogram
        .iter()
        .enumerate()
        .skip(1)
        .collect::<Vec<_>>()
        .chunks(per_row)
        .map(|row| {
            let (first, last) = (row[0].0, row[row.len() - 1].0);
            SizeRow {
                label: size_range_label(first, last),
                min_bytes: 1 << (first - 1),
                files: row.iter().map(|(_, n)| **n).sum(),
            }
        })
        .collect::<Vec<_>>();
    empty
        .into_iter()
        .chain(sized)
        .filter(|r| r.files > 0)
        .collect()
}

/// `[2^(first-1), 2^last)`: the sizes of power-of-two buckets `first..=last` (both at least 1).
fn size_range_label(first: usize, last: usize) -> String {
    let low = 1u64 << (first - 1);
    // The last bucket's upper bound, 2^64, is past u64: the largest size stands for it.
    let high = 1u64.checked_shl(last as u32).unwrap_or(u64::MAX);
    format!("[{}, {})", human_bytes(low), human_bytes(high))
}

/// A non-empty row of the age histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeRow {
    /// The bucket's name in [`AGE_BUCKETS`].
    pub label: &'static str,
    /// The bucket's upper bound in seconds; none for the last, unbounded one.
    pub below_seconds: Option<i64>,
    pub files: u64,
}

/// The non-empty rows of an age histogram ([`AGE_BUCKETS`]), youngest first.
pub fn age_rows(histogram: &[u64]) -> Vec<AgeRow> {
    histogram
        .iter()
        .zip(AGE_BUCKETS)
        .filter(|(n, _)| **n > 0)
        .map(|(&files, (label, below))| AgeRow {
            label,
            below_seconds: (below < i64::MAX).then_some(below),
            files,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::HISTOGRAM_BUCKETS;
    use crate::scan::{age_bucket, size_bucket};

    fn histogram(sizes: &[u64]) -> Vec<u64> {
        let mut h = vec![0; HISTOGRAM_BUCKETS];
        for &s in sizes {
            h[size_bucket(s)] += 1;
        }
        h
    }

    fn rows(h: &[u64], per_row: usize) -> Vec<(String, u64, u64)> {
        size_rows(h, per_row)
            .into_iter()
            .map(|r| (r.label, r.min_bytes, r.files))
            .collect()
    }

    #[test]
    fn one_bucket_per_row_lists_the_non_empty_power_of_two_buckets() {
        let h = histogram(&[0, 0, 1, 1500, 2047, 3 << 20]);
        assert_eq!(
            rows(&h, 1),
            [
                ("0 B".to_string(), 0, 2),
                ("[1 B, 2 B)".to_string(), 1, 1),
                ("[1.0 KiB, 2.0 KiB)".to_string(), 1024, 2),
                ("[2.0 MiB, 4.0 MiB)".to_string(), 2 << 20, 1),
            ]
        );
    }

    #[test]
    fn wider_rows_sum_their_buckets_and_the_last_row_ends_at_the_largest_size() {
        let h = histogram(&[0, 1, 15, 16, 255, 256, 5000, u64::MAX]);
        assert_eq!(
            rows(&h, 4),
            [
                ("0 B".to_string(), 0, 1),
                ("[1 B, 16 B)".to_string(), 1, 2),
                ("[16 B, 256 B)".to_string(), 16, 2),
                ("[256 B, 4.0 KiB)".to_string(), 256, 1),
                ("[4.0 KiB, 64.0 KiB)".to_string(), 4096, 1),
                ("[1.0 EiB, 16.0 EiB)".to_string(), 1 << 60, 1),
            ]
        );
        // A width of 0 is taken as 1, not a panic.
        assert_eq!(rows(&h, 0), rows(&h, 1));
        assert!(size_rows(&[], 4).is_empty());
    }

    #[test]
    fn age_rows_keep_the_non_empty_buckets_with_their_bounds() {
        let mut h = vec![0; AGE_BUCKETS.len()];
        h[age_bucket(10)] += 3;
        h[age_bucket(i64::MAX)] += 1;
        assert_eq!(
            age_rows(&h),
            [
                AgeRow {
                    label: "under 1 hour",
                    below_seconds: Some(3600),
                    files: 3
                },
                AgeRow {
                    label: "3 years or more",
                    below_seconds: None,
                    files: 1
                },
            ]
        );
    }
}
