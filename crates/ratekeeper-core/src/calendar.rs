//! Calendar windows: a fixed window that starts at local midnight of a
//! day, of a week's first day, of a month's first day or of a year's, in a
//! time zone (UTC, or an IANA zone such as `Europe/Berlin`), so that a
//! monthly quota resets when the month does, whatever its length and
//! across daylight-saving changes.
//!
//! Boundaries are computed with [jiff](https://docs.rs/jiff) and its time
//! zone database (the system's, or the one bundled into the binary where
//! the system has none).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use smol_str::SmolStr;

/// A day of the week, the first of a weekly calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Weekday {
    /// Monday (the default: ISO 8601's first day).
    #[default]
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    const ALL: [(Self, &'static str); 7] = [
        (Self::Monday, "monday"),
        (Self::Tuesday, "tuesday"),
        (Self::Wednesday, "wednesday"),
        (Self::Thursday, "thursday"),
        (Self::Friday, "friday"),
        (Self::Saturday, "saturday"),
        (Self::Sunday, "sunday"),
    ];

    /// `monday` … `sunday`.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(day, _)| *day == self)
            .map_or("monday", |(_, name)| name)
    }

    fn to_jiff(self) -> jiff::civil::Weekday {
        use jiff::civil::Weekday as W;
        match self {
            Self::Monday => W::Monday,
            Self::Tuesday => W::Tuesday,
            Self::Wednesday => W::Wednesday,
            Self::Thursday => W::Thursday,
            Self::Friday => W::Friday,
            Self::Saturday => W::Saturday,
            Self::Sunday => W::Sunday,
        }
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Weekday {
    type Err = CalendarError;

    /// A day's name in any case, whole or its first three letters.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let name = text.trim().to_ascii_lowercase();
        Self::ALL
            .iter()
            .find(|(_, full)| name.len() >= 3 && full.starts_with(&name))
            .map(|(day, _)| *day)
            .ok_or_else(|| CalendarError::UnknownWeekday(text.chars().take(64).collect()))
    }
}

/// A calendar window that could not be set up.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalendarError {
    /// No time zone by this name in the time zone database.
    UnknownZone(String),
    /// Not a day of the week.
    UnknownWeekday(String),
}

impl fmt::Display for CalendarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownZone(zone) => write!(
                f,
                "unknown time zone {zone:?} (expected \"UTC\" or an IANA name such as \"Europe/Berlin\")"
            ),
            Self::UnknownWeekday(day) => write!(
                f,
                "unknown day of the week {day:?} (expected monday, tuesday, …, sunday)"
            ),
        }
    }
}

impl std::error::Error for CalendarError {}

/// Where calendar windows are counted: a time zone and the first day of a
/// week. Given to a fixed-window rule with
/// [`Rule::with_calendar`](crate::Rule::with_calendar), whose quota's
/// window (a day, a week, a month or a year) says which windows.
///
/// ```
/// use ratekeeper_core::{Algorithm, Calendar, Rule, Weekday};
///
/// let monthly = Rule::new("monthly", Algorithm::FixedWindow, "10000/month".parse()?)?
///     .with_calendar(Calendar::new("Europe/Berlin")?)?;
/// let weekly = Rule::new("weekly", Algorithm::FixedWindow, "500/week".parse()?)?
///     .with_calendar(Calendar::utc().week_starts_on(Weekday::Sunday))?;
/// # let _ = (monthly, weekly);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Calendar {
    zone: TimeZone,
    name: SmolStr,
    week_start: Weekday,
}

impl Calendar {
    /// Windows in the time zone called `zone`: `UTC`, or an IANA name.
    pub fn new(zone: &str) -> Result<Self, CalendarError> {
        let name = zone.trim();
        if name.eq_ignore_ascii_case("utc") {
            return Ok(Self::utc());
        }
        let tz = TimeZone::get(name)
            .map_err(|_| CalendarError::UnknownZone(zone.chars().take(64).collect()))?;
        Ok(Self {
            zone: tz,
            name: SmolStr::new(name),
            week_start: Weekday::Monday,
        })
    }

    /// Windows in UTC.
    pub fn utc() -> Self {
        Self {
            zone: TimeZone::UTC,
            name: SmolStr::new_static("UTC"),
            week_start: Weekday::Monday,
        }
    }

    /// Weekly windows start on `day` (default Monday).
    #[must_use]
    pub fn week_starts_on(mut self, day: Weekday) -> Self {
        self.week_start = day;
        self
    }

    /// The time zone's name, as given.
    pub fn zone(&self) -> &str {
        &self.name
    }

    /// The first day of a weekly window.
    pub fn week_start(&self) -> Weekday {
        self.week_start
    }
}

impl fmt::Debug for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calendar")
            .field("zone", &self.name)
            .field("week_start", &self.week_start)
            .finish()
    }
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.week_start == other.week_start
    }
}

impl Eq for Calendar {}

impl Hash for Calendar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.week_start.hash(state);
    }
}

/// Which calendar windows: what a quota's window means on a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// From local midnight to local midnight (23 to 25 hours across a
    /// daylight-saving change).
    Day,
    /// Seven days from local midnight of the week's first day.
    Week,
    /// From local midnight of the 1st to that of the next month's 1st.
    Month,
    /// From local midnight of January 1st to the next.
    Year,
}

impl Period {
    const ALL: [Self; 4] = [Self::Day, Self::Week, Self::Month, Self::Year];
    /// The period whose nominal length is `window`: a day, 7 days, 30
    /// days (a month, as `"10000/month"` writes it) or 365 days (a year).
    pub fn of_window(window: Duration) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.nominal() == window)
    }

    /// The nominal length: a day, 7 days, 30 days or 365 days (the window
    /// of a quota written `"N/month"`).
    pub fn nominal(self) -> Duration {
        const DAY: u64 = 86_400;
        Duration::from_secs(match self {
            Self::Day => DAY,
            Self::Week => 7 * DAY,
            Self::Month => 30 * DAY,
            Self::Year => 365 * DAY,
        })
    }

    /// The period named `day`, `week`, `month` or `year` (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| name.trim().eq_ignore_ascii_case(p.as_str()))
    }

    /// `day`, `week`, `month` or `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

/// The windows around an instant, in µs since the epoch: the one it falls
/// in (`start` to `end`), the one before (from `prev`, when there is one),
/// and the one after (to `next_end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) prev: Option<u64>,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) next_end: u64,
}

impl Span {
    /// Windows of `window` µs aligned to the epoch (at least 1 µs).
    pub(crate) fn aligned(now: u64, window: u64) -> Self {
        let window = window.max(1);
        let start = now - now % window;
        let end = start.saturating_add(window);
        Self {
            prev: start.checked_sub(window),
            start,
            end,
            next_end: end.saturating_add(window),
        }
    }

    /// The next window's length.
    pub(crate) fn next_len(&self) -> u64 {
        self.next_end.saturating_sub(self.end)
    }

    /// The span of the window after this one, given the end of the one
    /// after that.
    fn shifted(&self, next_next_end: u64) -> Self {
        Self {
            prev: Some(self.start),
            start: self.end,
            end: self.next_end,
            next_end: next_next_end,
        }
    }
}

/// A rule's calendar and the windows its quota asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Windows {
    pub(crate) calendar: Calendar,
    pub(crate) period: Period,
}

impl Windows {
    /// The start of the window `at` falls in; `None` outside the dates the
    /// time zone database can name.
    fn start_of(&self, at: u64) -> Option<u64> {
        let at = jiff::Timestamp::from_microsecond(i64::try_from(at).ok()?).ok()?;
        let date = at.to_zoned_datetime(self.calendar.zone.clone()).date();
        let first = match self.period {
            Period::Day => date,
            Period::Week => {
                let back = self.calendar.week_start.to_jiff().until(date.weekday());
                date.checked_sub(jiff::Span::new().days(back)).ok()?
            }
            Period::Month => date.first_of_month(),
            Period::Year => date.first_of_year(),
        };
        self.midnight(first)
    }

    /// The start of the window after the one starting at `start`.
    fn after(&self, start: u64) -> Option<u64> {
        let at = jiff::Timestamp::from_microsecond(i64::try_from(start).ok()?).ok()?;
        let date = at.to_zoned_datetime(self.calendar.zone.clone()).date();
        let step = match self.period {
            Period::Day => jiff::Span::new().days(1),
            Period::Week => jiff::Span::new().weeks(1),
            Period::Month => jiff::Span::new().months(1),
            Period::Year => jiff::Span::new().years(1),
        };
        self.midnight(date.checked_add(step).ok()?)
    }

    /// Local midnight of `date` (or the first instant of the day, where a
    /// daylight-saving change skips midnight), in µs.
    fn midnight(&self, date: Date) -> Option<u64> {
        let zoned = date
            .to_zoned_datetime(self.calendar.zone.clone())
            .ok()?
            .start_of_day()
            .ok()?;
        u64::try_from(zoned.timestamp().as_microsecond()).ok()
    }

    /// The windows around `now`; `None` outside the dates the time zone
    /// database can name (then the quota's nominal window applies).
    pub(crate) fn span(&self, now: u64) -> Option<Span> {
        let start = self.start_of(now)?;
        let end = self.after(start)?;
        Some(Span {
            prev: start.checked_sub(1).and_then(|last| self.start_of(last)),
            start,
            end,
            next_end: self.after(end)?,
        })
    }

    /// Six consecutive window boundaries, `now` between the third and the
    /// fourth: for a store deciding on its own clock (Redis), which picks
    /// the window its `now` falls in among them, whichever side of a
    /// boundary the two clocks are on.
    pub(crate) fn boundaries(&self, now: u64) -> Option<[u64; 6]> {
        let s = self.span(now)?;
        let prev = s.prev?;
        let before_prev = prev.checked_sub(1).and_then(|last| self.start_of(last))?;
        let after = s.shifted(self.after(s.next_end)?);
        Some([before_prev, prev, s.start, s.end, after.end, after.next_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(text: &str) -> u64 {
        let ts: jiff::Timestamp = text.parse().unwrap();
        u64::try_from(ts.as_microsecond()).unwrap()
    }

    fn windows(zone: &str, period: Period) -> Windows {
        Windows {
            calendar: Calendar::new(zone).unwrap(),
            period,
        }
    }

    #[test]
    fn months_start_at_local_midnight_of_the_first_across_dst_and_leap_years() {
        let berlin = windows("Europe/Berlin", Period::Month);
        // March 2024: CET until the 31st, CEST after; February of a leap year.
        let s = berlin.span(us("2024-03-15T12:00:00Z")).unwrap();
        assert_eq!(s.start, us("2024-02-29T23:00:00Z"));
        assert_eq!(s.end, us("2024-03-31T22:00:00Z"));
        assert_eq!(s.next_end, us("2024-04-30T22:00:00Z"));
        assert_eq!(s.prev, Some(us("2024-01-31T23:00:00Z")));
        // 29 days of February 2024, 31 of March less the hour DST took.
        let feb = berlin.span(us("2024-02-29T22:59:59Z")).unwrap();
        assert_eq!(feb.end - feb.start, 29 * 86_400_000_000);
        assert_eq!(s.end - s.start, (31 * 24 - 1) * 3_600_000_000);
        // October: the hour comes back.
        let oct = berlin.span(us("2024-10-27T01:30:00Z")).unwrap();
        assert_eq!(oct.start, us("2024-09-30T22:00:00Z"));
        assert_eq!(oct.end, us("2024-10-31T23:00:00Z"));
        assert_eq!(oct.end - oct.start, (31 * 24 + 1) * 3_600_000_000);
        // The first instant of a month belongs to it; the one before does not.
        let first = us("2024-10-31T23:00:00Z");
        assert_eq!(berlin.span(first).unwrap().start, first);
        assert_eq!(berlin.span(first - 1).unwrap().end, first);
    }

    #[test]
    fn days_weeks_and_years() {
        let day = windows("Europe/Berlin", Period::Day);
        // The spring-forward day has 23 hours.
        let d = day.span(us("2024-03-31T12:00:00Z")).unwrap();
        assert_eq!(d.end - d.start, 23 * 3_600_000_000);
        let utc = Windows {
            calendar: Calendar::utc().week_starts_on(Weekday::Sunday),
            period: Period::Week,
        };
        // 2026-11-30 is a Monday: its week began on Sunday the 29th.
        let w = utc.span(us("2026-11-30T10:00:00Z")).unwrap();
        assert_eq!(w.start, us("2026-11-29T00:00:00Z"));
        assert_eq!(w.end, us("2026-12-06T00:00:00Z"));
        let monday = windows("UTC", Period::Week);
        assert_eq!(
            monday.span(us("2026-11-29T23:59:59Z")).unwrap().start,
            us("2026-11-23T00:00:00Z")
        );
        let year = windows("America/New_York", Period::Year);
        let y = year.span(us("2024-07-01T00:00:00Z")).unwrap();
        assert_eq!(y.start, us("2024-01-01T05:00:00Z"));
        assert_eq!(y.end, us("2025-01-01T05:00:00Z"));
    }

    #[test]
    fn six_boundaries_around_now() {
        let utc = windows("UTC", Period::Month);
        let b = utc.boundaries(us("2026-03-10T00:00:00Z")).unwrap();
        let expected = [
            "2026-01-01",
            "2026-02-01",
            "2026-03-01",
            "2026-04-01",
            "2026-05-01",
            "2026-06-01",
        ]
        .map(|d| us(&format!("{d}T00:00:00Z")));
        assert_eq!(b, expected);
        assert_eq!(Span::aligned(250, 100).prev, Some(100));
        assert_eq!(Span::aligned(50, 100).prev, None);
    }

    #[test]
    fn names_and_errors() {
        for p in Period::ALL {
            assert_eq!(Period::from_name(&p.as_str().to_uppercase()), Some(p));
            assert_eq!(Period::of_window(p.nominal()), Some(p));
        }
        assert_eq!(Period::from_name("fortnight"), None);
        assert_eq!("Sun".parse::<Weekday>(), Ok(Weekday::Sunday));
        assert_eq!(" FRIDAY ".parse::<Weekday>(), Ok(Weekday::Friday));
        assert!("fr".parse::<Weekday>().is_err() && "funday".parse::<Weekday>().is_err());
        assert_eq!(Calendar::new("utc").unwrap(), Calendar::utc());
        let e = Calendar::new("Mars/Olympus").unwrap_err().to_string();
        assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
        assert_eq!(
            Period::of_window(Duration::from_secs(30 * 86_400)),
            Some(Period::Month)
        );
        assert_eq!(Period::of_window(Duration::from_secs(2 * 86_400)), None);
    }
}
