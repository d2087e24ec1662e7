//! kstatus-compatible conditions. The operator computes the full desired set on every reconcile; merging keeps
//! `lastTransitionTime` of a condition whose status did not change, so the time says when it became what it is,
//! not when the operator last looked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::constants::conditions::{FALSE, TRUE};

/// Builds one condition stamped with `now`; [`merge_conditions`] replaces the stamp when nothing changed.
pub fn condition(
    type_: &str,
    holds: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if holds { TRUE } else { FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// Returns `desired` (in its order), each with the `lastTransitionTime` of the same type in `previous` when its
/// `status` is unchanged. Conditions absent from `desired` are dropped: the operator is their only writer.
pub fn merge_conditions(previous: &[Condition], desired: Vec<Condition>) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|mut c| {
            if let Some(old) = previous.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// The condition of `type_` in `conditions`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when `conditions` has `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::conditions::{READY, RECONCILING, STALLED};

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_transition_time_even_when_reason_changes() {
        let prev = vec![condition(
            READY,
            false,
            "Scanning",
            "scanning",
            Some(1),
            at(100),
        )];
        let merged = merge_conditions(
            &prev,
            vec![condition(
                READY,
                false,
                "Copying",
                "copying",
                Some(1),
                at(200),
            )],
        );
        assert_eq!(merged[0].last_transition_time, at(100));
        assert_eq!(
            merged[0].reason, "Copying",
            "reason and message follow the new state"
        );
    }

    #[test]
    fn changed_status_takes_new_time() {
        let prev = vec![condition(READY, false, "Copying", "", Some(1), at(100))];
        let merged = merge_conditions(
            &prev,
            vec![condition(READY, true, "Succeeded", "", Some(1), at(300))],
        );
        assert_eq!(merged[0].last_transition_time, at(300));
        assert!(is_true(&merged, READY));
    }

    #[test]
    fn new_types_are_stamped_and_missing_types_dropped() {
        let prev = vec![condition(
            STALLED,
            true,
            "InvalidSpec",
            "",
            Some(1),
            at(100),
        )];
        let merged = merge_conditions(
            &prev,
            vec![
                condition(READY, false, "Copying", "", Some(2), at(400)),
                condition(RECONCILING, true, "Copying", "", Some(2), at(400)),
            ],
        );
        assert_eq!(merged.len(), 2);
        assert!(find(&merged, STALLED).is_none());
        assert!(merged.iter().all(|c| c.last_transition_time == at(400)));
    }
}
