//! Operation latency per destination mount, as a histogram that adds up across workers: each
//! worker counts its tasks' durations in fixed power-of-two buckets, the coordinator sums the
//! buckets of every worker and reads percentiles from the sum. No clock here: durations come in
//! as microseconds.

/// Buckets: `[0, 2)`, `[2, 4)`, ... `[2^k, 2^(k+1))` microseconds, the last one open-ended
/// (2^31 µs is about 36 minutes: longer is a stall, counted elsewhere).
pub const BUCKETS: usize = 32;

/// The bucket of a duration in microseconds.
pub fn bucket_of(micros: u64) -> usize {
    let b = (u64::BITS - micros.leading_zeros()).saturating_sub(1) as usize;
    b.min(BUCKETS - 1)
}

/// The upper bound (µs) of bucket `b`: what a percentile falling in it is reported as, so a
/// figure is never better than what was measured.
pub fn bucket_upper(b: usize) -> u64 {
    1u64 << (b + 1).min(63)
}

/// Adds `other` into `sum`, growing it as needed (a shorter list is a valid histogram).
pub fn add(sum: &mut Vec<u64>, other: &[u64]) {
    if sum.len() < other.len() {
        sum.resize(other.len(), 0);
    }
    for (s, o) in sum.iter_mut().zip(other) {
        *s += o;
    }
}

/// The `q`-quantile (0 < q <= 1) in microseconds, as the upper bound of its bucket; `None` for an
/// empty histogram.
pub fn percentile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (b, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper(b));
        }
    }
    Some(bucket_upper(buckets.len() - 1))
}

/// The mean time per entry (µs) of tasks whose durations are `buckets` and which handled
/// `entries` entries in all: each task counted at its bucket's geometric middle, so the figure is
/// within √2 of the truth for a lone task and closer for a spread of them. `None` when nothing
/// was handled.
pub fn time_per_entry(buckets: &[u64], entries: u64) -> Option<u64> {
    if entries == 0 || buckets.iter().all(|&n| n == 0) {
        return None;
    }
    let total: f64 = buckets
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            let middle = if b == 0 {
                1.0
            } else {
                (1u64 << b) as f64 * std::f64::consts::SQRT_2
            };
            n as f64 * middle
        })
        .sum();
    Some(((total / entries as f64).round() as u64).max(1))
}

/// A worker's `--mount-pace` argument: each destination's time per entry (µs) in the order the
/// worker is given them, `-` where not known; `None` when none is known (the argument is left out).
/// One spelling for both drivers: local `run` and the operator start the passes after the copy
/// knowing which destination is slow.
pub fn mount_pace_arg(paces: &[Option<u64>]) -> Option<String> {
    paces.iter().any(Option::is_some).then(|| {
        let list: Vec<String> = paces
            .iter()
            .map(|p| p.map_or_else(|| "-".to_owned(), |us| us.to_string()))
            .collect();
        format!("--mount-pace={}", list.join(","))
    })
}

/// How a destination server answers, from its figures beside the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Its median task takes [`SLOW_FACTOR`] times the best server's or more.
    Slow,
    /// A worker found its tasks waiting for the stall timeout with none finishing.
    Unresponsive,
}

/// How much slower than the best server a server's median task must be to be called Slow.
pub const SLOW_FACTOR: u64 = 4;
/// Tasks a server must have finished before its median says anything.
pub const MIN_TASKS: u64 = 20;

/// Each server's health: `p50` is its median task time (µs) and task count, `unresponsive`
/// whether a worker reported it. The best median among servers with enough tasks is the
/// baseline: a single server is never Slow (nothing to compare with).
pub fn classify(p50: &[Option<(u64, u64)>], unresponsive: &[bool]) -> Vec<Health> {
    let enough = |x: &Option<(u64, u64)>| x.filter(|(_, tasks)| *tasks >= MIN_TASKS);
    let best = p50.iter().filter_map(|x| enough(x).map(|(p, _)| p)).min();
    p50.iter()
        .enumerate()
        .map(|(i, x)| {
            if unresponsive.get(i).copied().unwrap_or(false) {
                Health::Unresponsive
            } else if let (Some((p, _)), Some(best)) = (enough(x), best)
                && p >= best.max(1) * SLOW_FACTOR
            {
                Health::Slow
            } else {
                Health::Healthy
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn mount_pace_arg_lists_every_destination_in_order_or_nothing() {
        assert_eq!(mount_pace_arg(&[]), None);
        assert_eq!(mount_pace_arg(&[None, None]), None);
        assert_eq!(
            mount_pace_arg(&[Some(120), None, Some(7)]).as_deref(),
            Some("--mount-pace=120,-,7")
        );
    }

    use super::*;

    #[test]
    fn buckets_are_powers_of_two_and_the_last_is_open() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(1000), 9); // 512..1024
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for us in [1, 7, 900, 1 << 20] {
            assert!(bucket_upper(bucket_of(us)) > us, "{us}");
        }
    }

    #[test]
    fn a_server_is_slow_only_beside_a_faster_one_with_enough_tasks() {
        use Health::*;
        let h = classify(
            &[
                Some((1024, 500)),
                Some((4096, 500)),
                Some((65_536, 5)),
                None,
            ],
            &[false, false, false, true],
        );
        // 4x the best is Slow; too few tasks say nothing; a reported server is Unresponsive.
        assert_eq!(h, [Healthy, Slow, Healthy, Unresponsive]);
        assert_eq!(classify(&[Some((1 << 20, 900))], &[false]), [Healthy]);
        assert_eq!(
            classify(&[Some((2048, 100)), Some((4096, 100))], &[false, false]),
            [Healthy, Healthy]
        );
    }

    #[test]
    fn percentiles_come_from_the_summed_workers_and_never_flatter() {
        let mut fast = vec![0; BUCKETS];
        fast[bucket_of(1_000)] = 98;
        let mut slow = vec![0; BUCKETS];
        slow[bucket_of(50_000)] = 2;
        let mut sum = Vec::new();
        add(&mut sum, &fast);
        add(&mut sum, &slow[..20]);
        assert_eq!(sum.iter().sum::<u64>(), 100);
        assert_eq!(percentile(&sum, 0.5), Some(1024));
        assert_eq!(percentile(&sum, 0.98), Some(1024));
        assert_eq!(percentile(&sum, 0.99), Some(65_536));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[0, 0], 0.99), None);
    }

    #[test]
    fn time_per_entry_weighs_each_task_at_its_buckets_middle() {
        // Nothing handled: nothing known.
        assert_eq!(time_per_entry(&[], 0), None);
        assert_eq!(time_per_entry(&[0, 0, 3], 0), None);
        assert_eq!(time_per_entry(&[0, 0], 10), None);
        // Ten tasks in [1024, 2048) µs, 16 entries each: about 1448 / 16 µs per entry.
        let mut b = vec![0; BUCKETS];
        b[bucket_of(1500)] = 10;
        assert_eq!(time_per_entry(&b, 160), Some(91));
        // A slower mount's tasks land four buckets up: sixteen times the time per entry.
        let mut slow = vec![0; BUCKETS];
        slow[bucket_of(1500 * 16)] = 10;
        assert_eq!(time_per_entry(&slow, 160), Some(1448));
        // Never zero: a mount measured is never taken for one not measured.
        assert_eq!(time_per_entry(&[5], 1000), Some(1));
    }
}
