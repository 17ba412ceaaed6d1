//! Lead statistics of one workspace: what a dashboard draws.
//!
//! Decisions where the issue is silent:
//! - **What the range covers.** `start`/`end` bound the series of new leads only.
//!   The counts by status and by source, the funnel and the median are about the
//!   workspace's leads as they stand. Those are the dashboard's "where are we"
//!   figures, and each is one index scan.
//! - **How it reads.** Counts are grouped in SQL (the series by UTC day, folded
//!   into weeks and months here), so only a few hundred rows cross; the funnel
//!   joins only the status changes to their leads. `cargo bench --bench leads --
//!   stats` measures it at 10k and 100k leads, every one inside the range.
//! - **Buckets.** Days, ISO weeks (starting on Monday) or calendar months, all in
//!   UTC. The first bucket is the one `start` falls in; the last holds the instant
//!   before `end`. Every bucket is there, zero-filled. At most [`BUCKETS_MAX`]; the
//!   default range is the 30 days before now, by day.
//! - **Funnel.** The leads that were ever in each status: now, or before or after a
//!   recorded status change. A lead moved from `new` straight to `won` did not
//!   reach `contacted`.
//! - **Time to contact.** For each lead with a change from `new` to `contacted`:
//!   the time from its creation to the first such change. The median is over those
//!   leads, in seconds; `None` when there are none.
//! - **Range.** `start` and `end` lie between 1970 and 9999 (what both backends
//!   store and the day arithmetic handles); outside, a validation error.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::LeadStatus;
use crate::{Error, Result};

/// The most buckets one series may have (a year by day, or 30 years by month).
pub const BUCKETS_MAX: usize = 400;

/// How long a series' buckets are.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// A UTC day (the default).
    #[default]
    Day,
    /// An ISO week, from Monday 00:00 UTC.
    Week,
    /// A calendar month, in UTC.
    Month,
}

/// What [`super::Leads::stats`] computes: the range and bucket of its series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsQuery {
    /// The series starts in the bucket of this instant (default: 30 days before
    /// `end`).
    pub start: Option<DateTime<Utc>>,
    /// The series ends before this instant (default: now).
    pub end: Option<DateTime<Utc>>,
    /// The series' bucket (default: a day).
    pub bucket: Bucket,
}

/// A workspace's lead statistics.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadStats {
    /// Leads in the workspace.
    pub total: u64,
    /// Leads in each status now, every status in pipeline order.
    pub by_status: Vec<StatusCount>,
    /// Leads by source now, most first (then by name; `null` is no source).
    pub by_source: Vec<SourceCount>,
    /// New leads per bucket over the range, zero-filled.
    pub series: Series,
    /// Leads that were ever in each status, every status in pipeline order.
    pub funnel: Vec<StatusCount>,
    /// The median time from creation to the first change from `new` to
    /// `contacted`, in seconds (`null` when no lead made that change).
    pub median_seconds_to_contacted: Option<f64>,
}

/// A number of leads with one status.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    /// The status.
    pub status: LeadStatus,
    /// How many leads.
    pub count: u64,
}

/// A number of leads with one source.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceCount {
    /// The source (`null`: none given).
    pub source: Option<String>,
    /// How many leads.
    pub count: u64,
}

/// New leads over time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    /// The bucket length.
    pub bucket: Bucket,
    /// The range asked for: from `start` …
    pub start: DateTime<Utc>,
    /// … to `end` (exclusive).
    pub end: DateTime<Utc>,
    /// One point per bucket, oldest first.
    pub points: Vec<Point>,
}

/// One bucket of a series.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Where the bucket starts.
    pub start: DateTime<Utc>,
    /// Leads created in it (and in the range).
    pub count: u64,
}

/// The range of a query, checked: `(start, end)` with `start < end` and at most
/// [`BUCKETS_MAX`] buckets.
pub(crate) fn range(q: &StatsQuery, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let to = q.end.unwrap_or(now);
    let from = match q.start {
        Some(f) => f,
        None => to
            .checked_sub_signed(Duration::days(30))
            .ok_or_else(|| Error::invalid("end", "is too early"))?,
    };
    // Within what both backends store and the day arithmetic handles.
    let earliest = DateTime::<Utc>::UNIX_EPOCH;
    let latest = Utc
        .with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(to);
    if from < earliest || from > latest {
        return Err(Error::invalid("start", "must be from 1970 to 9999"));
    }
    if to < earliest || to > latest {
        return Err(Error::invalid("end", "must be from 1970 to 9999"));
    }
    if from >= to {
        return Err(Error::invalid("start", "must be before end"));
    }
    let mut n = 0;
    let mut at = start_of(q.bucket, from);
    while at < to {
        n += 1;
        if n > BUCKETS_MAX {
            return Err(Error::invalid(
                "start",
                format!("the range holds more than {BUCKETS_MAX} buckets: narrow it or take a longer bucket"),
            ));
        }
        at = next(q.bucket, at).ok_or_else(|| Error::invalid("end", "is too late"))?;
    }
    Ok((from, to))
}

/// The start of the bucket `t` falls in.
pub(crate) fn start_of(bucket: Bucket, t: DateTime<Utc>) -> DateTime<Utc> {
    let day = t.date_naive();
    let first = match bucket {
        Bucket::Day => day,
        Bucket::Week => day
            .checked_sub_signed(Duration::days(i64::from(
                day.weekday().num_days_from_monday(),
            )))
            .unwrap_or(day),
        Bucket::Month => NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day),
    };
    Utc.from_utc_datetime(&first.and_time(chrono::NaiveTime::MIN))
}

/// The start of the bucket after the one starting at `start`.
fn next(bucket: Bucket, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match bucket {
        Bucket::Day => start.checked_add_signed(Duration::days(1)),
        Bucket::Week => start.checked_add_signed(Duration::days(7)),
        Bucket::Month => start.checked_add_months(chrono::Months::new(1)),
    }
}

/// The zero-filled series of `created`: `(day, leads)` pairs, each day a UTC day
/// within `[from, to)` as days since 1970-01-01.
pub(crate) fn series(
    bucket: Bucket,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    created: &[(i64, i64)],
) -> Series {
    let mut points = Vec::new();
    let mut at = start_of(bucket, from);
    while at < to {
        points.push(Point {
            start: at,
            count: 0,
        });
        match next(bucket, at) {
            Some(n) => at = n,
            None => break,
        }
    }
    for (day, n) in created {
        let Some(t) = day
            .checked_mul(86_400)
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
        else {
            continue;
        };
        let start = start_of(bucket, t);
        // Points are sorted by start: find the bucket by binary search.
        if let Ok(i) = points.binary_search_by(|p| p.start.cmp(&start)) {
            if let Some(p) = points.get_mut(i) {
                p.count += u64::try_from(*n).unwrap_or(0);
            }
        }
    }
    Series {
        bucket,
        start: from,
        end: to,
        points,
    }
}

/// Counts by status, zero-filled, in pipeline order: the sum over `parts` of each
/// status's rows (unknown stored names, which crm never writes, are left out).
pub(crate) fn by_status(parts: &[&[(String, i64)]]) -> Vec<StatusCount> {
    LeadStatus::ALL
        .iter()
        .map(|s| StatusCount {
            status: *s,
            count: parts
                .iter()
                .flat_map(|rows| rows.iter())
                .filter(|(name, _)| name == s.as_str())
                .map(|(_, n)| u64::try_from(*n).unwrap_or(0))
                .sum(),
        })
        .collect()
}

/// The median of `seconds` (sorted in place); `None` for none.
pub(crate) fn median(seconds: &mut [f64]) -> Option<f64> {
    seconds.sort_by(f64::total_cmp);
    let n = seconds.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => seconds.get(n / 2).copied(),
        _ => Some((seconds.get(n / 2 - 1)? + seconds.get(n / 2)?) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn buckets_start_on_days_mondays_and_firsts() {
        let t = at("2026-11-29T17:45:00Z"); // a Sunday
        assert_eq!(start_of(Bucket::Day, t), at("2026-11-29T00:00:00Z"));
        assert_eq!(start_of(Bucket::Week, t), at("2026-11-23T00:00:00Z"));
        assert_eq!(start_of(Bucket::Month, t), at("2026-11-01T00:00:00Z"));
        assert_eq!(
            start_of(Bucket::Week, at("2026-11-30T00:00:00Z")),
            at("2026-11-30T00:00:00Z")
        );
    }

    #[test]
    fn a_series_is_zero_filled_and_counts_each_day_once() {
        let day = |s: &str| at(s).timestamp() / 86_400;
        let created = [
            (day("2026-01-30T00:00:00Z"), 1),
            (day("2026-01-31T00:00:00Z"), 1),
            (day("2026-02-01T00:00:00Z"), 1),
            (day("2026-03-15T00:00:00Z"), 2),
        ];
        let s = series(
            Bucket::Month,
            at("2026-01-15T00:00:00Z"),
            at("2026-04-01T00:00:00Z"),
            &created,
        );
        let got: Vec<_> = s.points.iter().map(|p| (p.start, p.count)).collect();
        assert_eq!(
            got,
            [
                (at("2026-01-01T00:00:00Z"), 2),
                (at("2026-02-01T00:00:00Z"), 1),
                (at("2026-03-01T00:00:00Z"), 2),
            ]
        );
        let days = series(
            Bucket::Day,
            at("2026-01-30T06:00:00Z"),
            at("2026-02-02T00:00:00Z"),
            &created,
        );
        assert_eq!(
            days.points.iter().map(|p| p.count).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        let weeks = series(
            Bucket::Week,
            at("2026-01-26T00:00:00Z"),
            at("2026-02-09T00:00:00Z"),
            &created,
        );
        assert_eq!(
            weeks.points.iter().map(|p| p.count).collect::<Vec<_>>(),
            [3, 0]
        );
    }

    #[test]
    fn ranges_are_checked() {
        let now = at("2026-11-29T12:00:00Z");
        let (from, to) = range(&StatsQuery::default(), now).expect("the default range");
        assert_eq!((from, to), (at("2026-10-30T12:00:00Z"), now));
        let backwards = StatsQuery {
            start: Some(now),
            end: Some(now),
            bucket: Bucket::Day,
        };
        assert!(range(&backwards, now).is_err());
        let long = StatsQuery {
            start: Some(at("2020-01-01T00:00:00Z")),
            end: Some(now),
            bucket: Bucket::Day,
        };
        let err = range(&long, now).expect_err("too many days");
        assert!(err.to_string().contains("start"), "{err}");
        let monthly = StatsQuery {
            bucket: Bucket::Month,
            ..long
        };
        assert!(range(&monthly, now).is_ok());
        let far = StatsQuery {
            start: Some(DateTime::<Utc>::MIN_UTC),
            end: Some(DateTime::<Utc>::MAX_UTC),
            bucket: Bucket::Month,
        };
        assert!(range(&far, now).is_err());
    }

    #[test]
    fn medians_of_odd_even_and_no_values() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
