//! `expires:`, a workflow's optional end of validity (RFC 3339).
//!
//! A signed workflow stays signed forever: whoever recorded it can serve it
//! again later. `expires:` bounds that replay. It is checked after the clock
//! phase, against a clock iguana trusts: the wall clock when it is at or
//! after iguana's build date (the RTC was sane, or SNTP set it), else the
//! build date itself. Real time is never before the build, so the build
//! date is a lower bound nobody on the network can move: a workflow that
//! expired before iguana was built is refused even on a machine whose RTC
//! battery is dead and whose NTP answers were forged to say 2001.
//!
//! Parsing and the check are pure; the boot passes the clock in.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A parsed `expires:` value: seconds since 1970 (UTC), and the text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expires {
    pub at: i64,
    text: String,
}

impl fmt::Display for Expires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Expires {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(|e| serde::de::Error::custom(format!("expires: {e}")))
    }
}

/// `2027-01-31T12:00:00Z`, `2027-01-31T13:00:00+01:00`, with optional
/// fractional seconds (ignored) and `t`/`z` or a space as RFC 3339 allows.
pub fn parse(text: &str) -> Result<Expires, String> {
    let bad = |why: &str| format!("{text:?} is not an RFC 3339 time ({why}), e.g. 2027-01-31T12:00:00Z");
    let b = text.as_bytes();
    if b.len() < 19 {
        return Err(bad("too short"));
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let punct = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if punct.iter().any(|&(at, c)| b[at] != c) || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let field = |from, len| num(from, len).ok_or_else(|| bad("not a number where one belongs"));
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    // 60: a leap second, which RFC 3339 allows.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time"));
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad("a '.' without fraction digits"));
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'));
            let (Some(h), Some(m)) = (two(*h1, *h2), two(*m1, *m2)) else { return Err(bad("bad offset")) };
            if h > 23 || m > 59 {
                return Err(bad("bad offset"));
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
        }
        _ => return Err(bad("needs a zone: Z or +HH:MM")),
    };
    let at = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(Expires { at, text: text.to_string() })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's days-from-civil, the inverse of
/// `clock::civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Why a workflow is refused for its age.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expired at {expires} (it is {now}{basis})")]
pub struct Expired {
    pub expires: String,
    pub now: String,
    /// Empty when the clock was trusted; else why the build date counted.
    pub basis: String,
}

/// The verdict on `expires` at wall clock `now` for an iguana built at
/// `build` (both seconds since 1970). `Ok(Some(note))` when the clock was
/// not trusted and the build date counted instead (the boot logs it).
pub fn check(expires: &Expires, now: u64, build: u64) -> Result<Option<String>, Expired> {
    let trusted = now >= build;
    let counted = now.max(build);
    let text = |secs: u64| crate::clock::civil(std::time::Duration::from_secs(secs));
    if expires.at <= i64::try_from(counted).unwrap_or(i64::MAX) {
        let basis = if trusted {
            String::new()
        } else {
            format!(" at least: the clock says {}, before iguana's build date, so the build date counts", text(now))
        };
        return Err(Expired { expires: expires.to_string(), now: text(counted), basis });
    }
    Ok((!trusted).then(|| {
        format!(
            "expires {expires} checked against iguana's build date {}: the clock ({}) is before it and was not set by NTP",
            text(build),
            text(now)
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_parse(text: &str, expected: Result<i64, &str>) {
        let got = parse(text).map(|e| e.at);
        match (&got, expected) {
            (Ok(at), Ok(want)) => assert_eq!(*at, want, "{text}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e} lacks {want:?}"),
            _ => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parses_rfc3339() {
        // Expected values from `date -u -d ... +%s` (GNU coreutils).
        let cases: &[(&str, Result<i64, &str>)] = &[
            ("1970-01-01T00:00:00Z", Ok(0)),
            ("2026-11-27T14:30:00Z", Ok(1_795_789_800)),
            ("2026-11-27t14:30:00z", Ok(1_795_789_800)),
            ("2026-11-27 14:30:00Z", Ok(1_795_789_800)),
            ("2026-11-27T15:30:00+01:00", Ok(1_795_789_800)),
            ("2026-11-27T09:00:00-05:30", Ok(1_795_789_800)),
            ("2026-11-27T14:30:00.999999Z", Ok(1_795_789_800)),
            ("2028-02-29T00:00:00Z", Ok(1_835_395_200)),
            ("2000-02-29T00:00:00Z", Ok(951_782_400)),
            ("2016-12-31T23:59:60Z", Ok(1_483_228_800)),
            ("2027-02-29T00:00:00Z", Err("no such date")),
            ("1900-02-29T00:00:00Z", Err("no such date")),
            ("2026-13-01T00:00:00Z", Err("no such date")),
            ("2026-11-31T00:00:00Z", Err("no such date")),
            ("2026-11-27T24:00:00Z", Err("no such time")),
            ("2026-11-27T14:30:00", Err("needs a zone")),
            ("2026-11-27T14:30:00+0100", Err("needs a zone")),
            ("2026-11-27T14:30:00+24:00", Err("bad offset")),
            ("2026-11-27T14:30:00.Z", Err("without fraction digits")),
            ("2026-11-27", Err("too short")),
            ("27.11.2026 14:30:00 UTC", Err("expected YYYY-MM-DDTHH:MM:SS")),
            ("2026-1a-27T14:30:00Z", Err("not a number")),
            ("2026-11-27T14:30:00Z trailing", Err("needs a zone")),
            ("２026-11-27T14:30:00Z", Err("expected YYYY")),
        ];
        for (text, expected) in cases {
            check_parse(text, *expected);
        }
    }

    #[test]
    fn expiry_against_a_trusted_clock_or_the_build_date() {
        let build = 1_795_000_000; // 2026-11-18T11:06:40Z
        let expires = parse("2026-11-27T14:30:00Z").unwrap(); // 1_795_789_800
        // (now, verdict: Ok(note?) or the error text)
        let cases: &[(u64, Result<bool, &str>)] = &[
            // A trusted clock (at or after the build date) decides.
            (1_795_789_799, Ok(false)),
            (1_795_789_800, Err("expired at 2026-11-27T14:30:00Z (it is 2026-11-27T14:30:00Z)")),
            (1_800_000_000, Err("expired at 2026-11-27T14:30:00Z (it is 2027-01-15T08:00:00Z)")),
            // A clock before the build date: the build date counts, with a note.
            (978_307_200, Ok(true)),
        ];
        for (now, want) in cases {
            match (check(&expires, *now, build), want) {
                (Ok(note), Ok(noted)) => assert_eq!(note.is_some(), *noted, "{now}: {note:?}"),
                (Err(e), Err(text)) => assert_eq!(e.to_string(), *text, "{now}"),
                (got, _) => panic!("{now}: got {got:?}, expected {want:?}"),
            }
        }
        // Expired before the build: refused whatever the (untrusted) clock says.
        let old = parse("2026-01-01T00:00:00Z").unwrap();
        let err = check(&old, 978_307_200, build).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expired at 2026-01-01T00:00:00Z (it is 2026-11-18T11:06:40Z at least: the clock says \
             2001-01-01T00:00:00Z, before iguana's build date, so the build date counts)"
        );
    }
}
