//! Sets of shard ids in Kubernetes' compressed index form (`"0-5,7,9-12"`, as in a Job's
//! `status.completedIndexes`): a checkpoint of a pass with 100,000 shards done in order is a few
//! bytes, not a list.

use std::collections::BTreeSet;

use crate::queue::ShardId;

/// `"0-5,7"` for {0,1,2,3,4,5,7}; `""` for the empty set.
pub fn format(ids: &BTreeSet<ShardId>) -> String {
    let mut out = String::new();
    let mut it = ids.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    out
}

/// The set [`format`] wrote. Errors name the part that is not `N` or `N-M` (M ≥ N).
pub fn parse(s: &str) -> Result<BTreeSet<ShardId>, String> {
    let mut ids = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not an index or a range N-M");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (ShardId, ShardId) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a {
                    return Err(bad());
                }
                ids.extend(a..=b);
            }
            None => {
                ids.insert(part.parse().map_err(|_| bad())?);
            }
        }
    }
    Ok(ids)
}

/// How many ids `s` holds, without building the set; malformed parts count 0.
pub fn count(s: &str) -> u64 {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u64::from(p.parse::<u64>().is_ok()),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        for ids in [
            vec![],
            vec![0],
            vec![0, 1, 2, 3, 4, 5, 7],
            vec![1, 3, 5],
            vec![9, 10, 11, 12, 100],
        ] {
            let set: BTreeSet<ShardId> = ids.into_iter().collect();
            let text = format(&set);
            assert_eq!(parse(&text).unwrap(), set, "{text}");
            assert_eq!(count(&text), set.len() as u64, "{text}");
        }
        assert_eq!(format(&(0..100_000).collect()), "0-99999");
        assert_eq!(format(&[0, 1, 2, 3, 4, 5, 7].into()), "0-5,7");
    }

    #[test]
    fn malformed_parts_are_named() {
        assert!(parse("1,x").unwrap_err().contains("\"x\""));
        assert!(parse("5-2").unwrap_err().contains("\"5-2\""));
        assert_eq!(count("1,x,3-4"), 3);
    }
}
