//! Five-field cron expressions evaluated in a time zone, the way Healthchecks
//! does it (its `cronsim` package, version 2.9, ported here).
//!
//! Why a port and not a cron crate: Healthchecks, and the crontabs our users
//! copy, follow Debian cron across daylight-saving changes, and the Rust
//! crates do not (the `cron` crate has 6-7 fields, Sunday = 1 and AND-ed
//! day fields; none treats fixed-time jobs differently). The rules, proven by
//! the tests against values computed with cronsim:
//! - A job at a fixed time (neither the minute nor the hour field starts
//!   with `*`, e.g. `30 2 * * *`) is computed on the wall clock: a time the
//!   spring-forward gap skips runs at the first minute after the gap (02:30
//!   becomes 03:00), and a time the fall-back repeats runs once, at its first
//!   occurrence.
//! - Any other job (`0 * * * *`, `*/15 * * * *`) follows real time: every
//!   hour that really elapses, including both passes of a repeated hour.
//!
//! Syntax (cronsim's): `*`, lists `a,b`, ranges `a-b`, steps `*/n`, `a/n`,
//! `a-b/n`, month and day names (`JAN`, `MON`), day of week 0-7 (0 and 7 are
//! Sunday), `L` and `LW` (last day, last weekday) in the day-of-month field,
//! `5L` (last Friday) and `5#2` (second Friday) in the day-of-week field.
//! When both day fields are restricted (neither starts with `*`) a day
//! matching either one matches, as in Debian cron.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

/// Longest cron expression accepted, in bytes (Healthchecks' column size).
pub const MAX_CRON_LEN: usize = 100;

/// How far ahead a schedule is searched before it is called never-firing
/// (`0 0 30 2 *`): cronsim's bound.
const MAX_YEARS_AHEAD: i32 = 50;

const DAY_LAST: i8 = -1;
const DAY_LAST_WEEKDAY: i8 = -2;
/// The `nth` of a `5L` day-of-week item.
const NTH_LAST: u8 = 0;

/// Why an expression is refused: the field, as cronsim names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron expression longer than {MAX_CRON_LEN} bytes")]
    TooLong,
    #[error("cron expression needs 5 fields (minute hour day-of-month month day-of-week)")]
    WrongNumberOfFields,
    #[error("bad {0} field")]
    BadField(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Minute,
    Hour,
    Day,
    Month,
    Dow,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::Day => "day-of-month",
            Field::Month => "month",
            Field::Dow => "day-of-week",
        }
    }

    fn range(self) -> (u8, u8) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::Day => (1, 31),
            Field::Month => (1, 12),
            Field::Dow => (0, 7),
        }
    }

    fn err(self) -> CronError {
        CronError::BadField(self.name())
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One parsed item: a plain value, or a day-of-month / day-of-week special.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Value(u8),
    /// `L` / `LW` in the day-of-month field.
    DaySpecial(i8),
    /// `5L` (nth = NTH_LAST) or `5#2` in the day-of-week field.
    Nth(u8, u8),
}

fn parse_int(field: Field, s: &str) -> Result<u8, CronError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(field.err());
    }
    s.parse::<u8>().map_err(|_| field.err())
}

fn parse_value(field: Field, s: &str) -> Result<u8, CronError> {
    let named = match field {
        Field::Month => MONTHS.iter().position(|m| *m == s).map(|i| i + 1),
        Field::Dow => DAYS.iter().position(|d| *d == s),
        _ => None,
    };
    if let Some(i) = named {
        return u8::try_from(i).map_err(|_| field.err());
    }
    let v = parse_int(field, s)?;
    let (lo, hi) = field.range();
    if v < lo || v > hi {
        return Err(field.err());
    }
    Ok(v)
}

fn full_range(field: Field) -> Vec<Item> {
    let (lo, hi) = field.range();
    (lo..=hi).map(Item::Value).collect()
}

/// cronsim's `Field.parse`, same order of tests, so the same strings are
/// accepted and mean the same.
fn parse_term(field: Field, s: &str) -> Result<Vec<Item>, CronError> {
    if s == "*" {
        return Ok(full_range(field));
    }
    if s.contains(',') {
        let mut out = Vec::new();
        for term in s.split(',') {
            out.extend(parse_term(field, term)?);
        }
        return Ok(out);
    }
    if field == Field::Dow && s.contains('L') {
        let value = &s[..s.len().saturating_sub(1)];
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || !s.ends_with('L') {
            return Err(field.err());
        }
        return Ok(vec![Item::Nth(parse_value(field, value)?, NTH_LAST)]);
    }
    if field == Field::Dow
        && let Some((term, nth)) = s.split_once('#')
    {
        let nth = parse_int(field, nth)?;
        if !(1..=5).contains(&nth) {
            return Err(field.err());
        }
        return Ok(vec![Item::Nth(parse_value(field, term)?, nth)]);
    }
    if let Some((term, step)) = s.split_once('/') {
        return parse_step(field, term, step);
    }
    if let Some((start, end)) = s.split_once('-') {
        let start = parse_value(field, start)?;
        let end = parse_value(field, end)?;
        if end < start {
            return Err(field.err());
        }
        return Ok((start..=end).map(Item::Value).collect());
    }
    if field == Field::Day && s == "LW" {
        return Ok(vec![Item::DaySpecial(DAY_LAST_WEEKDAY)]);
    }
    if field == Field::Day && s == "L" {
        return Ok(vec![Item::DaySpecial(DAY_LAST)]);
    }
    Ok(vec![Item::Value(parse_value(field, s)?)])
}

fn parse_step(field: Field, term: &str, step: &str) -> Result<Vec<Item>, CronError> {
    let step = usize::from(parse_int(field, step)?);
    if step == 0 {
        return Err(field.err());
    }
    let mut items = parse_term(field, term)?;
    items.sort();
    items.dedup();
    if items.iter().any(|i| matches!(i, Item::DaySpecial(_))) {
        return Ok(items);
    }
    // `5/15` starts at 5 and runs to the field's end; `1-1/2` (a range of
    // one) does not: cronsim tells them apart by the absence of `-`.
    if let [Item::Value(start)] = items.as_slice()
        && !term.contains('-')
    {
        let (_, hi) = field.range();
        return Ok((*start..=hi).step_by(step).map(Item::Value).collect());
    }
    Ok(items.into_iter().step_by(step).collect())
}

/// A parsed five-field expression.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minutes: u64,
    hours: u32,
    days: u32,
    day_last: bool,
    day_last_weekday: bool,
    months: u16,
    weekdays: u8,
    /// (day of week 0-7, nth 1-5 or NTH_LAST)
    nth_weekdays: Vec<(u8, u8)>,
    /// Both day fields must match (one of them starts with `*`).
    day_and: bool,
}

fn values(items: &[Item]) -> impl Iterator<Item = u8> + '_ {
    items.iter().filter_map(|i| match i {
        Item::Value(v) => Some(*v),
        _ => None,
    })
}

fn bits64(items: &[Item]) -> u64 {
    values(items).fold(0, |acc, v| acc | (1u64 << v))
}

const DAYS_IN_MONTH: [u8; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Fields {
    fn parse(expr: &str) -> Result<Fields, CronError> {
        if expr.len() > MAX_CRON_LEN {
            return Err(CronError::TooLong);
        }
        let upper = expr.to_ascii_uppercase();
        let parts: Vec<&str> = upper.split_whitespace().collect();
        let [minute, hour, day, month, dow] = parts.as_slice() else {
            return Err(CronError::WrongNumberOfFields);
        };
        // In cronsim's order, so the first bad field is the one named.
        let minutes = bits64(&parse_term(Field::Minute, minute)?);
        let hours = u32::try_from(bits64(&parse_term(Field::Hour, hour)?)).unwrap_or(u32::MAX);
        let day_items = parse_term(Field::Day, day)?;
        let month_items = parse_term(Field::Month, month)?;
        let dow_items = parse_term(Field::Dow, dow)?;
        let nth_weekdays = dow_items
            .iter()
            .filter_map(|i| match i {
                Item::Nth(d, n) => Some((*d, *n)),
                _ => None,
            })
            .collect();
        Self::finish(
            minutes,
            hours,
            &day_items,
            &month_items,
            u8::try_from(bits64(&dow_items)).unwrap_or(u8::MAX),
            nth_weekdays,
            day.starts_with('*') || dow.starts_with('*'),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        minutes: u64,
        hours: u32,
        day_items: &[Item],
        month_items: &[Item],
        weekdays: u8,
        nth_weekdays: Vec<(u8, u8)>,
        day_and: bool,
    ) -> Result<Fields, CronError> {
        let months = u16::try_from(bits64(month_items)).unwrap_or(u16::MAX);
        let min_day = values(day_items).min();
        let has_special = day_items.iter().any(|i| matches!(i, Item::DaySpecial(_)));
        // `0 0 31 2 *` can never fire: refuse it as cronsim does.
        if day_and && !has_special {
            if let Some(min_day) = min_day.filter(|d| *d > 29) {
                let longest = values(month_items)
                    .map(|m| DAYS_IN_MONTH[usize::from(m)])
                    .max()
                    .unwrap_or(0);
                if min_day > longest {
                    return Err(Field::Day.err());
                }
            }
        }
        Ok(Fields {
            minutes,
            hours,
            days: u32::try_from(bits64(day_items)).unwrap_or(u32::MAX),
            day_last: day_items.contains(&Item::DaySpecial(DAY_LAST)),
            day_last_weekday: day_items.contains(&Item::DaySpecial(DAY_LAST_WEEKDAY)),
            months,
            weekdays,
            nth_weekdays,
            day_and,
        })
    }

    fn has_minute(&self, m: u32) -> bool {
        self.minutes & (1u64 << m) != 0
    }

    fn has_hour(&self, h: u32) -> bool {
        self.hours & (1u32 << h) != 0
    }

    fn has_month(&self, m: u32) -> bool {
        self.months & (1u16 << m) != 0
    }

    fn single_minute(&self) -> Option<u32> {
        (self.minutes.count_ones() == 1).then(|| self.minutes.trailing_zeros())
    }

    fn match_dom(&self, d: NaiveDate) -> bool {
        if self.days & (1u32 << d.day()) != 0 {
            return true;
        }
        let last = last_day_of_month(d);
        if self.day_last_weekday && d.day() == last_weekday(d, last) {
            return true;
        }
        self.day_last && d.day() == last
    }

    fn match_dow(&self, d: NaiveDate) -> bool {
        // 1 = Monday .. 7 = Sunday; 0 and 7 both mean Sunday in the field.
        let dow = u8::try_from(d.weekday().number_from_monday()).unwrap_or(0);
        let sunday_alias = dow % 7;
        if self.weekdays & (1u8 << dow) != 0 || self.weekdays & (1u8 << sunday_alias) != 0 {
            return true;
        }
        let is = |want: u8| want == dow || want == sunday_alias;
        let last = last_day_of_month(d);
        let idx = u8::try_from(d.day().div_ceil(7)).unwrap_or(0);
        self.nth_weekdays.iter().any(|(want, nth)| {
            is(*want) && ((*nth == NTH_LAST && d.day() + 7 > last) || *nth == idx)
        })
    }

    fn match_day(&self, d: NaiveDate) -> bool {
        if self.day_and {
            self.match_dom(d) && self.match_dow(d)
        } else {
            self.match_dom(d) || self.match_dow(d)
        }
    }
}

fn last_day_of_month(d: NaiveDate) -> u32 {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|first| first.pred_opt())
        .map_or(28, |last| last.day())
}

fn last_weekday(d: NaiveDate, last: u32) -> u32 {
    let Some(last_date) = d.with_day(last) else {
        return last;
    };
    match last_date.weekday().number_from_monday() {
        7 => last - 2,
        6 => last - 1,
        _ => last,
    }
}

/// A cursor over time: wall-clock (naive) for fixed-time jobs, real time
/// (zone-aware, ticking through UTC) for the others. cronsim's algorithm is
/// written once over both.
trait Cursor: Sized {
    fn local(&self) -> NaiveDateTime;
    fn tick(&mut self, seconds: i64);
    /// Set the wall-clock fields, keeping the current side of an ambiguous
    /// hour (Python's `replace` keeps `fold`).
    fn set_local(&mut self, local: NaiveDateTime);
    /// Midnight of a day, its first occurrence (Python's `combine`).
    fn set_midnight(&mut self, date: NaiveDate);
}

struct Naive(NaiveDateTime);

impl Cursor for Naive {
    fn local(&self) -> NaiveDateTime {
        self.0
    }
    fn tick(&mut self, seconds: i64) {
        self.0 += Duration::seconds(seconds);
    }
    fn set_local(&mut self, local: NaiveDateTime) {
        self.0 = local;
    }
    fn set_midnight(&mut self, date: NaiveDate) {
        self.0 = date.and_time(NaiveTime::MIN);
    }
}

struct Aware(DateTime<Tz>);

impl Aware {
    /// A wall time in the zone: the earlier instant when it is repeated
    /// unless `keep` (the current instant) sits on the later side; the
    /// first instant after the gap when it is skipped.
    fn resolve(tz: Tz, local: NaiveDateTime, keep: Option<&DateTime<Tz>>) -> DateTime<Tz> {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t,
            LocalResult::Ambiguous(early, late) => match keep {
                Some(k) if k.offset() == late.offset() => late,
                _ => early,
            },
            LocalResult::None => first_after_gap(tz, local),
        }
    }
}

/// A skipped wall time becomes the first real minute after it.
fn first_after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Tz> {
    let mut probe = local;
    // Gaps are at most a few hours; a day bounds the search.
    for _ in 0..(24 * 60) {
        probe += Duration::minutes(1);
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return t,
            LocalResult::Ambiguous(early, _) => return early,
            LocalResult::None => {}
        }
    }
    Utc.from_utc_datetime(&local).with_timezone(&tz)
}

impl Cursor for Aware {
    fn local(&self) -> NaiveDateTime {
        self.0.naive_local()
    }
    fn tick(&mut self, seconds: i64) {
        self.0 += Duration::seconds(seconds);
    }
    fn set_local(&mut self, local: NaiveDateTime) {
        self.0 = Aware::resolve(self.0.timezone(), local, Some(&self.0));
    }
    fn set_midnight(&mut self, date: NaiveDate) {
        self.0 = Aware::resolve(self.0.timezone(), date.and_time(NaiveTime::MIN), None);
    }
}

/// cronsim's `advance`: roll the cursor forward until every field matches.
/// False when nothing matches within MAX_YEARS_AHEAD.
fn advance<C: Cursor>(f: &Fields, c: &mut C) -> bool {
    let start_year = c.local().year();
    loop {
        advance_month(f, c);
        if c.local().year() > start_year + MAX_YEARS_AHEAD {
            return false;
        }
        if advance_day(f, c) || advance_hour(f, c) || advance_minute(f, c) || advance_second(c) {
            continue;
        }
        return true;
    }
}

fn advance_month<C: Cursor>(f: &Fields, c: &mut C) {
    let mut needle = c.local().date();
    if f.has_month(needle.month()) {
        return;
    }
    while !f.has_month(needle.month()) {
        let Some(next) = first_of_next_month(needle) else {
            return;
        };
        needle = next;
    }
    c.set_midnight(needle);
}

fn first_of_next_month(d: NaiveDate) -> Option<NaiveDate> {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
}

fn advance_day<C: Cursor>(f: &Fields, c: &mut C) -> bool {
    let mut needle = c.local().date();
    if f.match_day(needle) {
        return false;
    }
    while !f.match_day(needle) {
        let Some(next) = needle.succ_opt() else {
            break;
        };
        needle = next;
        // A new month: go back to check the month field.
        if needle.day() == 1 {
            break;
        }
    }
    c.set_midnight(needle);
    true
}

fn advance_hour<C: Cursor>(f: &Fields, c: &mut C) -> bool {
    let local = c.local();
    if f.has_hour(local.hour()) {
        return false;
    }
    c.set_local(
        local
            .with_minute(0)
            .and_then(|l| l.with_second(0))
            .unwrap_or(local),
    );
    while !f.has_hour(c.local().hour()) {
        c.tick(3600);
        if c.local().hour() == 0 {
            break;
        }
    }
    true
}

fn advance_minute<C: Cursor>(f: &Fields, c: &mut C) -> bool {
    let local = c.local();
    if f.has_minute(local.minute()) {
        return false;
    }
    c.set_local(local.with_second(0).unwrap_or(local));
    if let Some(target) = f.single_minute() {
        let delta = (i64::from(target) - i64::from(c.local().minute())).rem_euclid(60);
        c.tick(delta * 60);
    }
    while !f.has_minute(c.local().minute()) {
        c.tick(60);
        if c.local().minute() == 0 {
            break;
        }
    }
    true
}

/// Five-field expressions fire at second 0.
fn advance_second<C: Cursor>(c: &mut C) -> bool {
    let second = c.local().second();
    if second == 0 {
        return false;
    }
    c.tick(i64::from(60 - second));
    true
}

/// A cron schedule: an expression and the zone it is read in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    expr: String,
    tz: Tz,
    fields: Fields,
    /// Computed on the wall clock (see the module doc).
    wall_clock: bool,
}

impl Cron {
    /// Parse `expr` for zone `tz`.
    pub fn new(expr: &str, tz: Tz) -> Result<Cron, CronError> {
        let fields = Fields::parse(expr)?;
        let mut parts = expr.split_whitespace();
        let minute = parts.next().unwrap_or("*");
        let hour = parts.next().unwrap_or("*");
        let wall_clock = tz != Tz::UTC && !minute.starts_with('*') && !hour.starts_with('*');
        Ok(Cron {
            expr: expr.to_owned(),
            tz,
            fields,
            wall_clock,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first firing strictly after `after` (cronsim's `next()` from the
    /// last ping, to the second); None when nothing fires within 50 years.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Truncated in UTC: in the zone, an ambiguous wall time would refuse it.
        let start = (after.with_nanosecond(0)? + Duration::seconds(1)).with_timezone(&self.tz);
        if self.wall_clock {
            let mut c = Naive(start.naive_local());
            if !advance(&self.fields, &mut c) {
                return None;
            }
            Some(Aware::resolve(self.tz, c.0, None).with_timezone(&Utc))
        } else {
            let mut c = Aware(start);
            if !advance(&self.fields, &mut c) {
                return None;
            }
            Some(c.0.with_timezone(&Utc))
        }
    }
}
