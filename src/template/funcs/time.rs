//! Sprig's date functions (`now`, `date`, `dateInZone`, `htmlDate`, `htmlDateInZone`,
//! `toDate`, `mustToDate`, `unixEpoch`, `dateModify`, `mustDateModify`, `ago`, `duration`,
//! `durationRound`), as ESO's copy of Sprig (`runtime/template/v2/sprig/date.go`) defines
//! them, with Go's layouts (`"2006-01-02 15:04:05"`) and Go's duration syntax (`"-1h30m"`).
//!
//! A time is carried as an RFC 3339 string with nanoseconds, in UTC
//! (`2024-05-01T10:00:00.123456789Z`): that is what `{{ now }}` prints (Go prints
//! `2024-05-01 10:00:00.123456789 +0000 UTC m=+0.1`). Functions taking a time also take Unix
//! seconds (an integer), as Sprig's do. Differences, each failing loudly instead of guessing:
//! a string that is not such a time is an error (Sprig silently uses the current time); time
//! zones other than `UTC` and `Local` (UTC in a container) are refused (Sprig falls back to
//! UTC). A template that calls `now` or `ago` renders differently at every refresh, so its
//! Secret is rewritten at every refresh, as in ESO.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use gotmpl::Value;

use super::*;

/// The functions of this module, for the registry.
pub(super) const TABLE: &[(&str, Fun)] = &[
    ("now", |_| Ok(s(to_text(Utc::now())))),
    ("date", |a| format_in(&str_arg(a, 0)?, arg(a, 1)?, "Local")),
    ("dateInZone", |a| {
        format_in(&str_arg(a, 0)?, arg(a, 1)?, &str_arg(a, 2)?)
    }),
    ("htmlDate", |a| format_in("2006-01-02", arg(a, 0)?, "Local")),
    ("htmlDateInZone", |a| {
        format_in("2006-01-02", arg(a, 0)?, &str_arg(a, 1)?)
    }),
    ("toDate", |a| {
        parse(&str_arg(a, 0)?, &str_arg(a, 1)?).map(|t| s(to_text(t)))
    }),
    ("mustToDate", |a| {
        parse(&str_arg(a, 0)?, &str_arg(a, 1)?).map(|t| s(to_text(t)))
    }),
    ("unixEpoch", |a| {
        Ok(s(time_arg(arg(a, 0)?)?.timestamp().to_string()))
    }),
    ("dateModify", date_modify),
    ("mustDateModify", date_modify),
    ("ago", |a| {
        let t = time_arg(arg(a, 0)?)?;
        let nanos = (Utc::now() - t).num_nanoseconds().unwrap_or(i64::MAX) as i128;
        // Rounded to the second, halves away from zero, as Go's Duration.Round.
        let secs = (nanos + nanos.signum() * 500_000_000) / 1_000_000_000;
        Ok(s(go_duration(secs * 1_000_000_000)))
    }),
    ("duration", |a| {
        let n = match arg(a, 0)? {
            Value::String(t) => t.parse::<i64>().unwrap_or(0),
            Value::Int(n) => *n,
            _ => 0,
        };
        Ok(s(go_duration(n as i128 * 1_000_000_000)))
    }),
    ("durationRound", |a| {
        let nanos: i128 = match arg(a, 0)? {
            Value::String(t) => parse_go_duration(t).unwrap_or(0),
            Value::Int(n) => *n as i128,
            _ => 0,
        };
        Ok(s(duration_round(nanos.unsigned_abs())))
    }),
];

/// A time as this module carries it.
pub(super) fn to_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A time argument: the RFC 3339 text of [`to_text`] (any offset), or Unix seconds.
fn time_arg(v: &Value) -> Result<DateTime<Utc>, String> {
    match v {
        Value::Int(n) => Utc
            .timestamp_opt(*n, 0)
            .single()
            .ok_or_else(|| "time out of range".into()),
        Value::Uint(n) => Utc
            .timestamp_opt(i64::try_from(*n).unwrap_or(i64::MAX), 0)
            .single()
            .ok_or_else(|| "time out of range".into()),
        Value::String(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                "the time is neither an RFC 3339 time (as now and toDate give) nor Unix seconds"
                    .into()
            }),
        _ => Err(
            "the time is neither an RFC 3339 time (as now and toDate give) nor Unix seconds".into(),
        ),
    }
}

fn zone_ok(zone: &str) -> Result<(), String> {
    match zone {
        "UTC" | "Local" | "" => Ok(()),
        _ => Err("time zones other than UTC and Local (UTC here) are not supported".into()),
    }
}

fn format_in(layout: &str, t: &Value, zone: &str) -> Result<Value, String> {
    zone_ok(zone)?;
    fits(layout.len().saturating_mul(8))?;
    Ok(s(go_format(&time_arg(t)?, layout)))
}

fn date_modify(a: &[Value]) -> Result<Value, String> {
    let d = parse_go_duration(&str_arg(a, 0)?).ok_or("invalid duration")?;
    let t = time_arg(arg(a, 1)?)?;
    let d = chrono::Duration::nanoseconds(i64::try_from(d).map_err(|_| "duration out of range")?);
    t.checked_add_signed(d)
        .map(|t| s(to_text(t)))
        .ok_or_else(|| "time out of range".into())
}

/// The elements of a Go layout, longest first where one is a prefix of another.
const ELEMENTS: &[&str] = &[
    "January",
    "Monday",
    "2006",
    "-07:00:00",
    "-0700",
    "-07:00",
    "Z07:00:00",
    "Z0700",
    "Z07:00",
    "Jan",
    "Mon",
    "MST",
    "002",
    "__2",
    "_2",
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "15",
    "-07",
    "Z07",
    "PM",
    "pm",
    "1",
    "2",
    "3",
    "4",
    "5",
];

/// Go's `Time.Format` of `t` (UTC) with `layout`.
fn go_format(t: &DateTime<Utc>, layout: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        // Fractional seconds: `.000`/`,000` (fixed) or `.999` (trailing zeros dropped).
        if let Some(first) = rest.chars().next()
            && (first == '.' || first == ',')
        {
            let digits = rest[1..]
                .chars()
                .take_while(|c| *c == '0' || *c == '9')
                .collect::<String>();
            if !digits.is_empty()
                && digits
                    .chars()
                    .all(|c| c == digits.chars().next().unwrap_or('0'))
                && !rest[1 + digits.len()..].starts_with(|c: char| c.is_ascii_digit())
            {
                let frac = format!("{:09}", t.nanosecond() % 1_000_000_000);
                let mut f = frac[..digits.len().min(9)].to_string();
                if digits.starts_with('9') {
                    f = f.trim_end_matches('0').to_string();
                    if !f.is_empty() {
                        out.push(first);
                        out.push_str(&f);
                    }
                } else {
                    out.push(first);
                    out.push_str(&f);
                }
                rest = &rest[1 + digits.len()..];
                continue;
            }
        }
        let Some(e) = ELEMENTS.iter().find(|e| rest.starts_with(**e)) else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        let piece = match *e {
            "January" => t.format("%B").to_string(),
            "Jan" => t.format("%b").to_string(),
            "Monday" => t.format("%A").to_string(),
            "Mon" => t.format("%a").to_string(),
            "2006" => format!("{:04}", t.year()),
            "06" => format!("{:02}", t.year().rem_euclid(100)),
            "01" => format!("{:02}", t.month()),
            "1" => t.month().to_string(),
            "02" => format!("{:02}", t.day()),
            "2" => t.day().to_string(),
            "_2" => format!("{:>2}", t.day()),
            "002" => format!("{:03}", t.ordinal()),
            "__2" => format!("{:>3}", t.ordinal()),
            "15" => format!("{:02}", t.hour()),
            "03" => format!("{hour12:02}"),
            "3" => hour12.to_string(),
            "04" => format!("{:02}", t.minute()),
            "4" => t.minute().to_string(),
            "05" => format!("{:02}", t.second()),
            "5" => t.second().to_string(),
            "PM" => if t.hour() < 12 { "AM" } else { "PM" }.into(),
            "pm" => if t.hour() < 12 { "am" } else { "pm" }.into(),
            "MST" => "UTC".into(),
            "Z0700" | "Z07:00" | "Z07" | "Z07:00:00" => "Z".into(),
            "-0700" => "+0000".into(),
            "-07:00" => "+00:00".into(),
            "-07" => "+00".into(),
            "-07:00:00" => "+00:00:00".into(),
            other => other.to_string(),
        };
        out.push_str(&piece);
        rest = &rest[e.len()..];
    }
    out
}

/// Go's `time.ParseInLocation(layout, text, UTC)`, for the elements [`go_format`] writes
/// (numeric offsets honoured, zone names as UTC).
fn parse(layout: &str, text: &str) -> Result<DateTime<Utc>, String> {
    let bad = || "the text does not match the layout".to_string();
    let (mut year, mut month, mut day, mut hour, mut min, mut sec, mut nanos) =
        (0i32, 1u32, 1u32, 0u32, 0u32, 0u32, 0u32);
    let (mut pm, mut offset) = (None, 0i64);
    let (mut l, mut t) = (layout, text);
    let num = |t: &mut &str, min_digits: usize, max_digits: usize| -> Result<i64, String> {
        let t0 = t.trim_start_matches(' ');
        let n = t0
            .chars()
            .take(max_digits)
            .take_while(char::is_ascii_digit)
            .count();
        if n < min_digits {
            return Err(bad());
        }
        let v = t0[..n].parse::<i64>().map_err(|_| bad())?;
        *t = &t0[n..];
        Ok(v)
    };
    while !l.is_empty() {
        if l.starts_with('.') || l.starts_with(',') {
            let digits = l[1..]
                .chars()
                .take_while(|c| *c == '0' || *c == '9')
                .count();
            if digits > 0 {
                l = &l[1 + digits..];
                if t.starts_with('.') || t.starts_with(',') {
                    let n = t[1..].chars().take_while(char::is_ascii_digit).count();
                    let frac = format!("{:0<9}", &t[1..1 + n.min(9)]);
                    nanos = frac.parse().map_err(|_| bad())?;
                    t = &t[1 + n..];
                }
                continue;
            }
        }
        let Some(e) = ELEMENTS.iter().find(|e| l.starts_with(**e)) else {
            let c = l.chars().next().unwrap_or(' ');
            t = t.strip_prefix(c).ok_or_else(bad)?;
            l = &l[c.len_utf8()..];
            continue;
        };
        l = &l[e.len()..];
        match *e {
            "2006" => year = num(&mut t, 4, 4)? as i32,
            "06" => {
                // Go: 69..=99 are 19xx, the rest 20xx.
                let yy = num(&mut t, 2, 2)? as i32;
                year = if yy >= 69 { 1900 + yy } else { 2000 + yy };
            }
            "01" | "1" => month = num(&mut t, 1, 2)? as u32,
            "January" | "Jan" => {
                let names = [
                    "January",
                    "February",
                    "March",
                    "April",
                    "May",
                    "June",
                    "July",
                    "August",
                    "September",
                    "October",
                    "November",
                    "December",
                ];
                let (i, name) = names
                    .iter()
                    .enumerate()
                    .find_map(|(i, n)| {
                        let short = &n[..3];
                        let full = *e == "January";
                        let want = if full { *n } else { short };
                        t.starts_with(want).then_some((i, want))
                    })
                    .ok_or_else(bad)?;
                month = i as u32 + 1;
                t = &t[name.len()..];
            }
            "Monday" | "Mon" => {
                let n = t.chars().take_while(char::is_ascii_alphabetic).count();
                t = &t[n..];
            }
            "02" | "2" | "_2" => day = num(&mut t, 1, 2)? as u32,
            "002" | "__2" => {
                num(&mut t, 1, 3)?;
            }
            "15" => hour = num(&mut t, 1, 2)? as u32,
            "03" | "3" => hour = num(&mut t, 1, 2)? as u32,
            "04" | "4" => min = num(&mut t, 1, 2)? as u32,
            "05" | "5" => sec = num(&mut t, 1, 2)? as u32,
            "PM" | "pm" => {
                let word = t.get(..2).ok_or_else(bad)?.to_ascii_uppercase();
                pm = Some(word == "PM");
                t = &t[2..];
            }
            "MST" => {
                let n = t.chars().take_while(char::is_ascii_alphabetic).count();
                t = &t[n..];
            }
            zone => {
                if zone.starts_with('Z') && t.starts_with('Z') {
                    t = &t[1..];
                    continue;
                }
                let sign = match t.chars().next() {
                    Some('+') => 1,
                    Some('-') => -1,
                    _ => return Err(bad()),
                };
                t = &t[1..];
                let h = num(&mut t, 2, 2)?;
                t = t.strip_prefix(':').unwrap_or(t);
                let m = if zone.ends_with("07") {
                    0
                } else {
                    num(&mut t, 2, 2)?
                };
                offset = sign * (h * 3600 + m * 60);
            }
        }
    }
    if !t.is_empty() {
        return Err(bad());
    }
    if let Some(pm) = pm {
        hour = hour % 12 + if pm { 12 } else { 0 };
    }
    let naive = chrono::NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_nano_opt(hour, min, sec, nanos))
        .ok_or_else(bad)?;
    Ok(Utc.from_utc_datetime(&naive) - chrono::Duration::seconds(offset))
}

/// Go's `time.ParseDuration`: a sign, then decimal numbers with units `ns`, `us`/`µs`, `ms`,
/// `s`, `m`, `h` (`"-1.5h"`, `"2h45m"`); nanoseconds.
pub(super) fn parse_go_duration(text: &str) -> Option<i128> {
    let (neg, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .count();
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let units: &[(&str, f64)] = &[
            ("ns", 1.0),
            ("us", 1e3),
            ("µs", 1e3),
            ("μs", 1e3),
            ("ms", 1e6),
            ("s", 1e9),
            ("m", 60e9),
            ("h", 3600e9),
        ];
        let (unit, scale) = units.iter().find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    Some(if neg { -(total as i128) } else { total as i128 })
}

/// Go's `Duration.String`: `1h2m3.5s`, `1m35s`, `0s`, `1.5ms`.
pub(super) fn go_duration(nanos: i128) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let frac = |v: u128, unit: u128| -> String {
        let whole = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rem:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let (h, rem) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let secs = frac(rem, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// Sprig's `durationRound`: the largest unit (y, mo, d, h, m, s) the duration exceeds.
fn duration_round(u: u128) -> String {
    const S: u128 = 1_000_000_000;
    for (unit, name) in [
        (S * 3600 * 24 * 365, "y"),
        (S * 3600 * 24 * 30, "mo"),
        (S * 3600 * 24, "d"),
        (S * 3600, "h"),
        (S * 60, "m"),
        (S, "s"),
    ] {
        if u > unit {
            return format!("{}{name}", u / unit);
        }
    }
    "0s".into()
}
