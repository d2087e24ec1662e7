//! Mirror mode's rules for a sharded pass (pure): whether the entries the copy pass found only
//! in the destination may be deleted, and how many each shard may delete.
//!
//! A sharded mirror runs in three steps. The copy pass lists each directory's destination beside
//! its complete source listing and weighs what only the destination has (an entry with
//! everything below it), deleting nothing: each shard's result says how many entries it found.
//! [`decide`] then weighs the pass as a whole, before anything is deleted: nothing is deleted
//! when a shard never finished, when the pass failed more entries than the failure policy allows
//! (a listing among them makes the picture incomplete), when some destination directory could
//! not be listed, or when the total is above [`MaxDeletes`]. Otherwise a prune pass runs each
//! shard that found something again, deleting at most what that shard found: entries that
//! appeared in the destination since (not weighed) are left to the verify pass to report, so
//! the limit holds even for a destination that changes under the job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ShardId;
use crate::verdict::Policy;

/// The most a mirror may delete in one pass: above it the pass deletes nothing and says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MaxDeletes {
    /// Entries (a directory and everything below it each count).
    Count(u64),
    /// Basis points (hundredths of a percent) of the destination's entries in scope: the
    /// pass's entries plus those to delete.
    BasisPoints(u32),
}

impl Default for MaxDeletes {
    /// A final pass deletes what users removed since the last one: a small share of a tree. More
    /// usually means a wrong source (an empty or unmounted export), which must not empty the
    /// destination.
    fn default() -> Self {
        MaxDeletes::BasisPoints(100)
    }
}

impl MaxDeletes {
    /// `1000` or `5%`.
    pub fn parse(text: &str) -> Result<MaxDeletes, String> {
        let bad = || {
            format!(
                "{text:?} is not a limit: give a count of entries (1000) or a percentage of the destination's entries (5%)"
            )
        };
        match text.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("{text:?}: a percentage is 0..=100"));
                }
                Ok(MaxDeletes::BasisPoints((p * 100.0).round() as u32))
            }
            None => text
                .trim()
                .parse()
                .map(MaxDeletes::Count)
                .map_err(|_| bad()),
        }
    }

    /// Whether deleting `entries` of `in_scope` destination entries stays within the limit.
    pub fn allows(&self, entries: u64, in_scope: u64) -> bool {
        match *self {
            MaxDeletes::Count(n) => entries <= n,
            MaxDeletes::BasisPoints(bp) => {
                u128::from(entries) * 10_000 <= u128::from(bp) * u128::from(in_scope)
            }
        }
    }
}

impl std::fmt::Display for MaxDeletes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDeletes::Count(n) => write!(f, "{n} entries"),
            MaxDeletes::BasisPoints(bp) => {
                write!(
                    f,
                    "{}% of the destination's entries",
                    f64::from(*bp) / 100.0
                )
            }
        }
    }
}

/// What the copy pass of a mirror found only in the destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Weighed {
    /// Entries found per shard (only shards that found some).
    pub per_shard: BTreeMap<ShardId, u64>,
    /// Destination directories that could not be listed and entries that could not be
    /// weighed: the picture is incomplete.
    pub unweighed: u64,
}

impl Weighed {
    /// Entries found in all.
    pub fn entries(&self) -> u64 {
        self.per_shard.values().sum()
    }

    /// One shard's finding (its first completion only: callers add each shard once).
    pub fn add(&mut self, shard: ShardId, entries: u64, unweighed: u64) {
        if entries > 0 {
            *self.per_shard.entry(shard).or_default() += entries;
        }
        self.unweighed += unweighed;
    }
}

/// What a mirror does after its copy pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The destination has nothing the source lacks: no prune pass.
    Nothing,
    /// A prune pass over these shards, each deleting at most its budget.
    Prune {
        budgets: BTreeMap<ShardId, u64>,
        entries: u64,
    },
    /// Nothing is deleted, and why (for the status and the verdict).
    Refused(String),
}

/// What the copy pass left, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyOutcome {
    /// Failed entries of the scan and the copy pass (a failed listing among them).
    pub failed: u64,
    /// Shards that ended without a result.
    pub lost_shards: u64,
    /// Destination entries in scope: the pass's entries plus those found to delete.
    pub in_scope: u64,
}

/// Whether the entries a mirror's copy pass found may be deleted (see the module).
pub fn decide(limit: MaxDeletes, policy: Policy, copy: CopyOutcome, w: &Weighed) -> Decision {
    let entries = w.entries();
    if entries == 0 && w.unweighed == 0 {
        return Decision::Nothing;
    }
    let refuse = |why: String| Decision::Refused(format!("nothing deleted: {why}"));
    if copy.lost_shards > 0 {
        return refuse(format!(
            "{} shard(s) never finished their copy, so what their directories hold is not known",
            copy.lost_shards
        ));
    }
    if !policy.tolerates(copy.failed) {
        return refuse(format!(
            "the scan and the copy failed {} entries, beyond the failure policy; some listings may be incomplete",
            copy.failed
        ));
    }
    if w.unweighed > 0 {
        return refuse(format!(
            "{} destination directories or entries could not be listed or counted",
            w.unweighed
        ));
    }
    if !limit.allows(entries, copy.in_scope) {
        return refuse(format!(
            "{entries} entries are only in the destination, more than maxDeletes ({limit}, {} in scope); check the source is the right one, then raise maxDeletes or delete them yourself",
            copy.in_scope
        ));
    }
    Decision::Prune {
        budgets: w.per_shard.clone(),
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_a_count_or_a_percentage() {
        assert_eq!(MaxDeletes::parse("1000"), Ok(MaxDeletes::Count(1000)));
        assert_eq!(MaxDeletes::parse("5%"), Ok(MaxDeletes::BasisPoints(500)));
        assert_eq!(MaxDeletes::parse("0.5%"), Ok(MaxDeletes::BasisPoints(50)));
        assert_eq!(
            MaxDeletes::default().to_string(),
            "1% of the destination's entries"
        );
        for bad in ["", "-1", "ten", "101%", "%"] {
            assert!(MaxDeletes::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_limit_weighs_entries_against_the_destination_in_scope() {
        assert!(MaxDeletes::Count(3).allows(3, 10));
        assert!(!MaxDeletes::Count(3).allows(4, 1_000_000));
        assert!(MaxDeletes::BasisPoints(100).allows(10, 1000));
        assert!(!MaxDeletes::BasisPoints(100).allows(11, 1000));
        assert!(MaxDeletes::BasisPoints(0).allows(0, 0));
        assert!(!MaxDeletes::BasisPoints(0).allows(1, 1000));
        // An empty source (everything in scope is to be deleted) is never within a percentage
        // below 100.
        assert!(!MaxDeletes::BasisPoints(9900).allows(500, 500));
        assert!(MaxDeletes::BasisPoints(10_000).allows(500, 500));
    }

    fn weighed(per_shard: &[(ShardId, u64)]) -> Weighed {
        let mut w = Weighed::default();
        for (s, n) in per_shard {
            w.add(*s, *n, 0);
        }
        w
    }

    const ANY: Policy = Policy {
        fail_job: false,
        max_failed_files: None,
    };
    const NONE: Policy = Policy {
        fail_job: true,
        max_failed_files: None,
    };

    fn clean(in_scope: u64) -> CopyOutcome {
        CopyOutcome {
            in_scope,
            ..CopyOutcome::default()
        }
    }

    #[test]
    fn within_the_limit_each_shard_may_delete_what_it_found() {
        let w = weighed(&[(3, 2), (7, 1), (9, 0)]);
        assert_eq!(w.entries(), 3);
        assert_eq!(
            decide(MaxDeletes::Count(3), NONE, clean(100), &w),
            Decision::Prune {
                budgets: BTreeMap::from([(3, 2), (7, 1)]),
                entries: 3
            }
        );
        assert_eq!(
            decide(MaxDeletes::Count(3), NONE, clean(100), &Weighed::default()),
            Decision::Nothing
        );
    }

    #[test]
    fn over_the_limit_nothing_is_deleted_and_the_refusal_names_it() {
        let w = weighed(&[(0, 60), (1, 41)]);
        let Decision::Refused(why) = decide(MaxDeletes::BasisPoints(100), ANY, clean(10_000), &w)
        else {
            panic!("101 of 10,000 is over 1%");
        };
        assert!(
            why.contains("101 entries") && why.contains("maxDeletes"),
            "{why}"
        );
        assert!(matches!(
            decide(MaxDeletes::BasisPoints(101), ANY, clean(10_000), &w),
            Decision::Prune { entries: 101, .. }
        ));
        // An empty source: every destination entry in scope is to go. Refused below 100%.
        let all = weighed(&[(0, 500)]);
        assert!(matches!(
            decide(MaxDeletes::BasisPoints(9_900), ANY, clean(500), &all),
            Decision::Refused(_)
        ));
    }

    #[test]
    fn failures_beyond_the_policy_lost_shards_or_unlisted_directories_refuse() {
        let w = weighed(&[(0, 1)]);
        let big = MaxDeletes::Count(1_000);
        let failed = |n| CopyOutcome {
            failed: n,
            ..clean(100)
        };
        // FailJob tolerates none; maxFailedFiles 2 tolerates two.
        assert!(matches!(
            decide(big, NONE, failed(1), &w),
            Decision::Refused(_)
        ));
        let two = Policy {
            fail_job: false,
            max_failed_files: Some(2),
        };
        assert!(matches!(
            decide(big, two, failed(2), &w),
            Decision::Prune { .. }
        ));
        assert!(matches!(
            decide(big, two, failed(3), &w),
            Decision::Refused(_)
        ));
        let lost = CopyOutcome {
            lost_shards: 1,
            ..clean(100)
        };
        assert!(matches!(decide(big, ANY, lost, &w), Decision::Refused(_)));
        let mut unlisted = w.clone();
        unlisted.add(4, 0, 1);
        assert!(matches!(
            decide(big, ANY, clean(100), &unlisted),
            Decision::Refused(_)
        ));
        // Unlisted directories with nothing found still refuse: what they hold is unknown.
        let mut only = Weighed::default();
        only.add(2, 0, 1);
        assert!(matches!(
            decide(big, ANY, clean(100), &only),
            Decision::Refused(_)
        ));
    }
}
