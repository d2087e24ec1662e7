//! Rate limits that follow the clock (`spec.limits.windows`): a weekly schedule in a named time
//! zone, say weekdays 08:00–18:00 at 100 MiB/s and no limit otherwise. Pure: the instant is an
//! argument, so a test walks a week (and its daylight-saving changes) without waiting.
//!
//! At an instant, the first window that holds the local time gives the limits (a limit it leaves
//! out is none); outside every window the base limits apply. A window whose end is not after its
//! start runs past midnight into the next day; its days are the days it starts on.

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

/// Bytes and entries per second; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_per_second: Option<u64>,
}

impl Rates {
    pub fn is_unlimited(&self) -> bool {
        self.bytes_per_second.is_none() && self.files_per_second.is_none()
    }

    /// A worker's flags for these rates (`--bytes-per-second`, `--files-per-second`; none for
    /// what is unlimited).
    pub fn worker_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = self.bytes_per_second {
            out.extend(["--bytes-per-second".to_owned(), b.to_string()]);
        }
        if let Some(f) = self.files_per_second {
            out.extend(["--files-per-second".to_owned(), f.to_string()]);
        }
        out
    }
}

/// One window of the week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub start: Time,
    pub end: Time,
    pub rates: Rates,
}

/// A checked schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub base: Rates,
    pub zone: TimeZone,
    pub windows: Vec<Window>,
}

/// `HH:MM` (24-hour).
pub fn parse_time(text: &str) -> Result<Time, String> {
    let bad = || format!("{text:?} is not a time of day: give HH:MM, 00:00 to 23:59");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// `Mon`..`Sun`, or `Weekdays` / `Weekends` / `All`.
pub fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    use Weekday::*;
    Ok(match text {
        "Mon" => vec![Monday],
        "Tue" => vec![Tuesday],
        "Wed" => vec![Wednesday],
        "Thu" => vec![Thursday],
        "Fri" => vec![Friday],
        "Sat" => vec![Saturday],
        "Sun" => vec![Sunday],
        "Weekdays" => vec![Monday, Tuesday, Wednesday, Thursday, Friday],
        "Weekends" => vec![Saturday, Sunday],
        "All" => vec![
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
        ],
        _ => {
            return Err(format!(
                "{text:?} is not a day: give Mon, Tue, Wed, Thu, Fri, Sat, Sun, Weekdays, Weekends or All"
            ));
        }
    })
}

/// An IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("{name:?} is not a time zone: give an IANA name such as UTC, Europe/Berlin or America/New_York")
    })
}

impl Window {
    /// Whether the window holds the local `day` and `time`.
    fn holds(&self, day: Weekday, time: Time) -> bool {
        if self.start < self.end {
            return self.days.contains(&day) && self.start <= time && time < self.end;
        }
        // Past midnight: from `start` on its own days, until `end` on the day after.
        (self.days.contains(&day) && time >= self.start)
            || (self.days.contains(&day.wrapping_sub(1)) && time < self.end)
    }
}

impl Schedule {
    /// The limits at `at`.
    pub fn at(&self, at: Timestamp) -> Rates {
        let local = at.to_zoned(self.zone.clone());
        let (day, time) = (local.weekday(), local.time());
        self.windows
            .iter()
            .find(|w| w.holds(day, time))
            .map_or(self.base, |w| w.rates)
    }
}

/// One worker's share of `rates` when `workers` share them, rounded up (never 0).
pub fn share(rates: Rates, workers: u64) -> Rates {
    let part = |v: Option<u64>| v.map(|v| v.div_ceil(workers.max(1)).max(1));
    Rates {
        bytes_per_second: part(rates.bytes_per_second),
        files_per_second: part(rates.files_per_second),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn office_hours(zone: &str) -> Schedule {
        Schedule {
            base: Rates::default(),
            zone: parse_zone(zone).unwrap(),
            windows: vec![Window {
                days: parse_days("Weekdays").unwrap(),
                start: parse_time("08:00").unwrap(),
                end: parse_time("18:00").unwrap(),
                rates: Rates {
                    bytes_per_second: Some(100 * MIB),
                    files_per_second: None,
                },
            }],
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn office_hours_are_limited_in_their_own_zone_and_the_rest_is_not() {
        let s = office_hours("Europe/Berlin");
        let limited = Some(100 * MIB);
        // Monday 2026-11-30: 08:00 in Berlin (CET, UTC+1) is 07:00 UTC.
        assert_eq!(s.at(ts("2026-11-30T06:59:59Z")).bytes_per_second, None);
        assert_eq!(s.at(ts("2026-11-30T07:00:00Z")).bytes_per_second, limited);
        assert_eq!(s.at(ts("2026-11-30T16:59:59Z")).bytes_per_second, limited);
        assert_eq!(s.at(ts("2026-11-30T17:00:00Z")).bytes_per_second, None);
        // Saturday: no window.
        assert_eq!(s.at(ts("2026-12-05T10:00:00Z")).bytes_per_second, None);
        // In summer (CEST, UTC+2) the window moves with the clocks.
        assert_eq!(s.at(ts("2026-07-06T06:30:00Z")).bytes_per_second, limited);
        assert_eq!(s.at(ts("2026-07-06T05:59:00Z")).bytes_per_second, None);
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts_and_the_base_applies_outside() {
        let s = Schedule {
            base: Rates {
                bytes_per_second: Some(10 * MIB),
                files_per_second: Some(500),
            },
            zone: parse_zone("UTC").unwrap(),
            windows: vec![Window {
                days: parse_days("Fri").unwrap(),
                start: parse_time("22:00").unwrap(),
                end: parse_time("06:00").unwrap(),
                rates: Rates::default(),
            }],
        };
        // Friday 2026-12-04 22:00 until Saturday 06:00: unlimited.
        assert_eq!(s.at(ts("2026-12-04T21:59:00Z")), s.base);
        assert_eq!(s.at(ts("2026-12-04T22:00:00Z")), Rates::default());
        assert_eq!(s.at(ts("2026-12-05T05:59:00Z")), Rates::default());
        assert_eq!(s.at(ts("2026-12-05T06:00:00Z")), s.base);
        // Thursday night is not Friday's.
        assert_eq!(s.at(ts("2026-12-03T23:00:00Z")), s.base);
    }

    #[test]
    fn the_first_window_that_holds_wins() {
        let mut s = office_hours("UTC");
        s.windows.push(Window {
            days: parse_days("All").unwrap(),
            start: parse_time("00:00").unwrap(),
            end: parse_time("23:59").unwrap(),
            rates: Rates {
                bytes_per_second: Some(MIB),
                files_per_second: None,
            },
        });
        assert_eq!(
            s.at(ts("2026-11-30T09:00:00Z")).bytes_per_second,
            Some(100 * MIB)
        );
        assert_eq!(s.at(ts("2026-11-28T09:00:00Z")).bytes_per_second, Some(MIB));
    }

    #[test]
    fn bad_times_days_and_zones_are_refused_saying_what_is_valid() {
        for bad in ["8:00", "24:00", "08:60", "0800", "", "ab:cd"] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("HH:MM"), "{bad}: {e}");
        }
        assert!(parse_days("Monday").unwrap_err().contains("Weekdays"));
        assert!(parse_zone("Mars/Olympus").unwrap_err().contains("IANA"));
        assert_eq!(
            parse_time("23:59").unwrap(),
            Time::new(23, 59, 0, 0).unwrap()
        );
    }

    #[test]
    fn shares_round_up_and_never_reach_zero() {
        let r = Rates {
            bytes_per_second: Some(10),
            files_per_second: Some(1),
        };
        assert_eq!(
            share(r, 3),
            Rates {
                bytes_per_second: Some(4),
                files_per_second: Some(1)
            }
        );
        assert_eq!(share(r, 0), r);
        assert_eq!(share(Rates::default(), 5), Rates::default());
    }
}
