//! The run's verdict from what its passes found. One function for both drivers: the phase, the
//! reason and the message of a finished run depend only on these facts and the failure policy.
//!
//! The rules, first match wins:
//! 1. a shard whose last pass never produced a result (crashed after its retries, never ran, or a
//!    worker that could not start) leaves its entries unaccounted: Failed, `ShardFailed`;
//! 2. failed entries beyond the policy (any under FailJob, more than `maxFailedFiles`): Failed,
//!    `TooManyFailures`;
//! 3. a dry run (nothing copied, only compared) that compared everything else: Succeeded,
//!    `DryRun`, the message saying what a pass would create, update, write and find only in the
//!    destination;
//! 4. entries only in the destination: it is not identical to the source, and the run deletes
//!    nothing: Failed, `DestinationDiffers`;
//! 5. failed entries within the policy: Succeeded, `SucceededWithFailures`, the message saying
//!    that they are listed;
//! 6. otherwise Succeeded: every entry copied or up to date (and verified, when a verify ran).

use crate::units::human_bytes;

/// The failure policy, as the verdict needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// FailJob: any failed entry fails the run.
    pub fail_job: bool,
    /// Continue: more failed entries than this fail the run; `None` tolerates any number.
    pub max_failed_files: Option<u64>,
}

impl Policy {
    /// Whether `failed` entries leave the run within the policy.
    pub fn tolerates(&self, failed: u64) -> bool {
        !(self.fail_job && failed > 0) && self.max_failed_files.is_none_or(|m| failed <= m)
    }
}

/// What a finished run found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// Entries the scan could not read (each a failed entry).
    pub scan_failed: u64,
    /// Entries whose last pass ended not done: failed, unsupported, changed while read, or left
    /// different by a report-only verify. Entries the scan already counted are not counted again
    /// (see [`crate::ScanFailed`]).
    pub failed: u64,
    /// Shards whose last pass ended without a result.
    pub lost_shards: u64,
    /// Why workers could not run at all (local driver), shown in the message.
    pub broken: Vec<String>,
    /// Entries only in the destination, found by the verify pass.
    pub extraneous: u64,
    /// A verify pass compared the destination with the source.
    pub verified: bool,
    /// Entries at the destination, copied or found up to date, and their bytes (for the message).
    pub files: u64,
    pub bytes: u64,
    /// Of `files`, those the copy found already up to date: a later pass (a delta) says how few
    /// it wrote.
    pub up_to_date: u64,
    /// Entries the job's filters left out (said in the message: "identical" is within them).
    pub excluded: u64,
    /// The run only compared (`spec.dryRun`): what a pass would do. Its differences are the
    /// answer, not failures (`failed` counts only what could not be compared).
    pub dry_run: Option<DryRun>,
    /// A mirror (`mode: Mirror`): what it deleted, or why it deleted nothing.
    pub mirror: Option<Mirrored>,
    /// `verify.scope: Changed`: files compared by metadata only (this pass did not write them),
    /// said in the message so that "verified" is not read as "every file's content read".
    pub content_unchanged: u64,
}

/// What a mirror did between its copy and its verify pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mirrored {
    /// Entries deleted.
    pub deleted: u64,
    /// Entries the copy pass found that were gone when the prune came to them (an earlier
    /// attempt's deletions it could not tell, or someone else's).
    pub gone: u64,
    /// Why nothing was deleted (`mirror::decide`'s refusal, or a shard's).
    pub refused: Option<String>,
}

impl Mirrored {
    /// The entries gone before the prune came to them, said after what it deleted.
    fn gone_before(&self) -> String {
        match self.gone {
            0 => String::new(),
            n => format!(
                ", {} more gone before the prune came to them (deleted by an earlier attempt whose worker was stopped, or by someone else)",
                entries(n)
            ),
        }
    }
}

/// What a dry run found a pass would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DryRun {
    /// Entries missing at the destination.
    pub create: u64,
    /// Entries that differ.
    pub update: u64,
    /// Source bytes of the files to write.
    pub bytes: u64,
    /// Entries only in the destination.
    pub only_in_destination: u64,
    /// `mode: Mirror`: what a pass would delete (those entries with everything below them), its
    /// limit, and whether the limit lets it.
    pub mirror: Option<MirrorPreview>,
}

/// What a mirror would delete, as a dry run saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorPreview {
    pub entries: u64,
    pub limit: crate::mirror::MaxDeletes,
    pub allowed: bool,
}

/// Why the run ended as it did (the Ready condition's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Succeeded,
    SucceededWithFailures,
    ShardFailed,
    TooManyFailures,
    DestinationDiffers,
    DryRun,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Succeeded => "Succeeded",
            Reason::SucceededWithFailures => "SucceededWithFailures",
            Reason::ShardFailed => "ShardFailed",
            Reason::TooManyFailures => "TooManyFailures",
            Reason::DestinationDiffers => "DestinationDiffers",
            Reason::DryRun => "DryRun",
        }
    }
}

/// The verdict of a finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub succeeded: bool,
    pub reason: Reason,
    pub message: String,
    /// Failed entries of the run: the scan's plus the last passes'.
    pub failed_files: u64,
}

fn entries(n: u64) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

/// The verdict: see the module's rules.
pub fn decide(policy: Policy, f: &Facts) -> Verdict {
    let failed_files = f.scan_failed + f.failed;
    let verdict = |succeeded, reason, message| Verdict {
        succeeded,
        reason,
        message,
        failed_files,
    };
    if f.lost_shards > 0 || !f.broken.is_empty() {
        let mut m = if f.lost_shards > 0 {
            format!(
                "{} shard(s) ended without a result after their retries: their entries are not accounted for",
                f.lost_shards
            )
        } else {
            "a worker could not run".to_string()
        };
        if let Some(b) = f.broken.first() {
            m.push_str(&format!("; {b}"));
            if f.broken.len() > 1 {
                m.push_str(&format!(" (and {} more)", f.broken.len() - 1));
            }
        }
        return verdict(false, Reason::ShardFailed, m);
    }
    if policy.fail_job && failed_files > 0 {
        return verdict(
            false,
            Reason::TooManyFailures,
            format!(
                "{} failed (listed in failures) and the failure policy is FailJob",
                entries(failed_files)
            ),
        );
    }
    if let Some(max) = policy.max_failed_files.filter(|&m| failed_files > m) {
        return verdict(
            false,
            Reason::TooManyFailures,
            format!(
                "{} failed (listed in failures), more than maxFailedFiles ({max})",
                entries(failed_files)
            ),
        );
    }
    if let Some(d) = f.dry_run {
        return verdict(
            true,
            Reason::DryRun,
            format!(
                "dry run, nothing written: a pass would create {}, update {} and write {}; {} only in the destination{}{}{}",
                entries(d.create),
                entries(d.update),
                human_bytes(d.bytes),
                entries(d.only_in_destination),
                match d.mirror {
                    None => String::new(),
                    Some(m) if m.allowed => format!(
                        " (a Mirror pass would delete {}, within maxDeletes: {})",
                        entries(m.entries),
                        m.limit
                    ),
                    Some(m) => format!(
                        " (a Mirror pass would delete NOTHING: {} is more than maxDeletes: {})",
                        entries(m.entries),
                        m.limit
                    ),
                },
                if failed_files > 0 {
                    format!(
                        "; {} could not be compared (listed in failures)",
                        entries(failed_files)
                    )
                } else {
                    String::new()
                },
                match f.excluded {
                    0 => String::new(),
                    n => format!("; {} left out by the filter", entries(n)),
                }
            ),
        );
    }
    if f.extraneous > 0 {
        let why = match &f.mirror {
            None => "nothing was deleted".to_owned(),
            Some(Mirrored {
                refused: Some(r), ..
            }) => format!("the mirror refused: {r}"),
            Some(m) => format!(
                "the mirror deleted {}{}; what is left appeared since the copy pass or could not be deleted",
                entries(m.deleted),
                m.gone_before()
            ),
        };
        return verdict(
            false,
            Reason::DestinationDiffers,
            format!(
                "the destination is not identical: {} only in the destination (listed in the report; {why}){}",
                entries(f.extraneous),
                if failed_files > 0 {
                    format!(", and {} failed", entries(failed_files))
                } else {
                    String::new()
                }
            ),
        );
    }
    let mut what = format!("{} files ({})", f.files, human_bytes(f.bytes));
    if f.up_to_date > 0 {
        what.push_str(&format!(
            ", {} of them found already up to date",
            f.up_to_date
        ));
    }
    if let Some(m) = &f.mirror {
        what.push_str(&format!(
            "; {} only in the destination deleted (Mirror){}",
            entries(m.deleted),
            m.gone_before()
        ));
    }
    if f.excluded > 0 {
        what.push_str(&format!("; {} left out by the filter", entries(f.excluded)));
    }
    if f.content_unchanged > 0 {
        what.push_str(&format!(
            "; content read for the files this pass wrote, {} others compared by metadata (verify.scope Changed)",
            f.content_unchanged
        ));
    }
    if failed_files > 0 {
        return verdict(
            true,
            Reason::SucceededWithFailures,
            format!(
                "{} failed (listed in failures); everything else copied{}: {what}",
                entries(failed_files),
                if f.verified { " and verified" } else { "" }
            ),
        );
    }
    verdict(
        true,
        Reason::Succeeded,
        if f.verified {
            format!("copied and verified, destination identical: {what}")
        } else {
            format!("copied {what}; not verified (verify.mode None)")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTINUE: Policy = Policy {
        fail_job: false,
        max_failed_files: None,
    };
    const FAIL_JOB: Policy = Policy {
        fail_job: true,
        max_failed_files: None,
    };
    const AT_MOST_2: Policy = Policy {
        fail_job: false,
        max_failed_files: Some(2),
    };

    fn facts(scan_failed: u64, failed: u64) -> Facts {
        Facts {
            scan_failed,
            failed,
            verified: true,
            files: 10,
            bytes: 2048,
            ..Facts::default()
        }
    }

    /// One row: (policy, facts, succeeded, reason, failed_files, words the message must hold).
    type Row = (Policy, Facts, bool, Reason, u64, &'static [&'static str]);

    #[test]
    fn the_rules_in_order() {
        let lost = Facts {
            lost_shards: 1,
            ..facts(0, 0)
        };
        let broken = Facts {
            broken: vec!["worker 1: cannot start".into(), "worker 2: x".into()],
            ..facts(0, 0)
        };
        let extra = Facts {
            extraneous: 3,
            ..facts(0, 0)
        };
        let unverified = Facts {
            verified: false,
            ..facts(0, 0)
        };
        use Reason::*;
        let table: Vec<Row> = vec![
            (
                CONTINUE,
                facts(0, 0),
                true,
                Succeeded,
                0,
                &[
                    "copied and verified, destination identical",
                    "10 files (2.0 KiB)",
                ],
            ),
            (CONTINUE, unverified, true, Succeeded, 0, &["not verified"]),
            (
                CONTINUE,
                Facts {
                    up_to_date: 8,
                    ..facts(0, 0)
                },
                true,
                Succeeded,
                0,
                &["destination identical: 10 files (2.0 KiB), 8 of them found already up to date"],
            ),
            (
                CONTINUE,
                Facts {
                    dry_run: Some(super::DryRun {
                        create: 3,
                        update: 1,
                        bytes: 4096,
                        only_in_destination: 2,
                        mirror: None,
                    }),
                    extraneous: 2,
                    ..facts(0, 0)
                },
                true,
                DryRun,
                0,
                &[
                    "dry run, nothing written: a pass would create 3 entries, update 1 entry and write 4.0 KiB; 2 entries only in the destination",
                ],
            ),
            (
                Policy {
                    fail_job: false,
                    max_failed_files: Some(0),
                },
                Facts {
                    dry_run: Some(Default::default()),
                    ..facts(0, 1)
                },
                false,
                TooManyFailures,
                1,
                &["1 entry failed"],
            ),
            (
                CONTINUE,
                Facts {
                    excluded: 4,
                    ..facts(0, 0)
                },
                true,
                Succeeded,
                0,
                &[
                    "destination identical",
                    "10 files (2.0 KiB); 4 entries left out by the filter",
                ],
            ),
            (
                CONTINUE,
                facts(1, 0),
                true,
                SucceededWithFailures,
                1,
                &["1 entry failed", "listed"],
            ),
            (
                CONTINUE,
                facts(1, 4),
                true,
                SucceededWithFailures,
                5,
                &["5 entries failed"],
            ),
            (
                AT_MOST_2,
                facts(1, 1),
                true,
                SucceededWithFailures,
                2,
                &["2 entries failed"],
            ),
            (
                AT_MOST_2,
                facts(1, 2),
                false,
                TooManyFailures,
                3,
                &["more than maxFailedFiles (2)"],
            ),
            (
                FAIL_JOB,
                facts(0, 1),
                false,
                TooManyFailures,
                1,
                &["FailJob"],
            ),
            (
                FAIL_JOB,
                facts(1, 0),
                false,
                TooManyFailures,
                1,
                &["FailJob"],
            ),
            (FAIL_JOB, facts(0, 0), true, Succeeded, 0, &["identical"]),
            // A lost shard outranks every count: its entries were never looked at.
            (
                CONTINUE,
                lost.clone(),
                false,
                ShardFailed,
                0,
                &["1 shard(s)", "not accounted"],
            ),
            (
                FAIL_JOB,
                Facts { failed: 3, ..lost },
                false,
                ShardFailed,
                3,
                &["not accounted"],
            ),
            (
                CONTINUE,
                broken,
                false,
                ShardFailed,
                0,
                &["cannot start", "and 1 more"],
            ),
            (
                CONTINUE,
                extra.clone(),
                false,
                DestinationDiffers,
                0,
                &["3 entries only in the destination", "nothing was deleted"],
            ),
            (
                CONTINUE,
                Facts { failed: 1, ..extra },
                false,
                DestinationDiffers,
                1,
                &["and 1 entry failed"],
            ),
        ];
        for (i, (policy, f, ok, reason, failed, words)) in table.into_iter().enumerate() {
            let v = decide(policy, &f);
            assert_eq!(
                (v.succeeded, v.reason, v.failed_files),
                (ok, reason, failed),
                "row {i}: {v:?}"
            );
            for w in words {
                assert!(
                    v.message.contains(w),
                    "row {i}: {:?} lacks {w:?}",
                    v.message
                );
            }
            // Never "identical" unless nothing failed, nothing is extra and a verify said so
            // (and never from a dry run, which copied nothing).
            assert_eq!(
                v.message.contains("identical") && !v.message.contains("not identical"),
                ok && failed == 0 && f.verified && f.dry_run.is_none(),
                "row {i}: {:?}",
                v.message
            );
        }
    }

    #[test]
    fn reasons_are_camel_case_words() {
        for r in [
            Reason::Succeeded,
            Reason::SucceededWithFailures,
            Reason::ShardFailed,
            Reason::TooManyFailures,
            Reason::DestinationDiffers,
        ] {
            let s = r.as_str();
            assert!(
                s.chars().next().unwrap().is_ascii_uppercase()
                    && s.chars().all(|c| c.is_ascii_alphabetic())
            );
        }
    }

    #[test]
    fn a_mirror_says_what_it_deleted_or_why_it_deleted_nothing() {
        let mirrored = |deleted, refused: Option<&str>| Facts {
            mirror: Some(Mirrored {
                deleted,
                gone: 0,
                refused: refused.map(str::to_owned),
            }),
            ..facts(0, 0)
        };
        let v = decide(CONTINUE, &mirrored(3, None));
        assert!(v.succeeded, "{v:?}");
        assert!(
            v.message
                .starts_with("copied and verified, destination identical")
                && v.message
                    .contains("3 entries only in the destination deleted (Mirror)"),
            "{v:?}"
        );
        let refused = Facts {
            extraneous: 4,
            ..mirrored(
                0,
                Some("nothing deleted: 40 entries are only in the destination"),
            )
        };
        let v = decide(CONTINUE, &refused);
        assert_eq!((v.succeeded, v.reason), (false, Reason::DestinationDiffers));
        assert!(
            v.message
                .contains("the mirror refused: nothing deleted: 40 entries"),
            "{v:?}"
        );
        // Entries that appeared after the copy pass (no budget for them) are left and named.
        let late = Facts {
            extraneous: 1,
            ..mirrored(5, None)
        };
        let v = decide(CONTINUE, &late);
        assert!(
            !v.succeeded && v.message.contains("the mirror deleted 5 entries"),
            "{v:?}"
        );
        // What an earlier attempt deleted without telling is said apart, not taken for this
        // pass's deletions nor left out.
        let mut earlier = mirrored(2, None);
        earlier.mirror.as_mut().unwrap().gone = 2;
        let v = decide(CONTINUE, &earlier);
        assert!(
            v.succeeded
                && v.message.contains(
                    "2 entries only in the destination deleted (Mirror), 2 entries more gone before the prune came to them"
                ),
            "{v:?}"
        );
    }

    #[test]
    fn a_dry_run_of_a_mirror_says_what_it_would_delete_and_whether_its_limit_lets_it() {
        use crate::mirror::MaxDeletes;
        let dry = |allowed| Facts {
            dry_run: Some(DryRun {
                only_in_destination: 2,
                mirror: Some(MirrorPreview {
                    entries: 40,
                    limit: MaxDeletes::Count(100),
                    allowed,
                }),
                ..DryRun::default()
            }),
            ..facts(0, 0)
        };
        let v = decide(CONTINUE, &dry(true));
        assert!(
            v.message
                .contains("a Mirror pass would delete 40 entries, within maxDeletes: 100 entries"),
            "{v:?}"
        );
        let v = decide(CONTINUE, &dry(false));
        assert!(
            v.message
                .contains("a Mirror pass would delete NOTHING: 40 entries is more than maxDeletes"),
            "{v:?}"
        );
    }
}
