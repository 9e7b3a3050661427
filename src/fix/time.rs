//! UTC time as FIX carries it: the UTCTimestamp text form of a [`Timestamp`].
//!
//! Nothing here reads a clock; the type and the one clock read live in [`crate::time`], which
//! this module re-exports so FIX code keeps naming its time where it always did.

use std::fmt;

pub use crate::time::Timestamp;

impl Timestamp {
    /// Writes the FIX UTCTimestamp form `YYYYMMDD-HH:MM:SS.sss` (21 bytes) without allocating,
    /// because every outbound message carries one.
    pub fn write_fix(self, out: &mut Vec<u8>) {
        let secs = self.as_secs();
        let millis = (self.0 / 1_000_000 % 1000) as u32;
        let days = (secs / 86_400) as i64;
        let secs_of_day = (secs % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        push_digits(out, year as u32, 4);
        push_digits(out, month, 2);
        push_digits(out, day, 2);
        out.push(b'-');
        push_digits(out, secs_of_day / 3600, 2);
        out.push(b':');
        push_digits(out, secs_of_day / 60 % 60, 2);
        out.push(b':');
        push_digits(out, secs_of_day % 60, 2);
        out.push(b'.');
        push_digits(out, millis, 3);
    }

    /// Parses a FIX UTCTimestamp: `YYYYMMDD-HH:MM:SS` with an optional fraction of 1 to 9
    /// digits. Returns `None` for anything else, including impossible dates, so the session can
    /// answer with a Reject for a value in the wrong format.
    pub fn parse_fix(value: &[u8]) -> Option<Timestamp> {
        if value.len() < 17 || value[8] != b'-' || value[11] != b':' || value[14] != b':' {
            return None;
        }
        let year = digits(&value[0..4])?;
        let month = digits(&value[4..6])?;
        let day = digits(&value[6..8])?;
        let hour = digits(&value[9..11])?;
        let minute = digits(&value[12..14])?;
        let second = digits(&value[15..17])?;
        // FIX allows a leap second (60); it folds into the next second here.
        if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let month_enum = time::Month::try_from(month as u8).ok()?;
        let date = time::Date::from_calendar_date(year as i32, month_enum, day as u8).ok()?;
        let mut nanos_frac: u64 = 0;
        if value.len() > 17 {
            let frac = &value[17..];
            if frac[0] != b'.' || frac.len() < 2 || frac.len() > 10 {
                return None;
            }
            let frac_digits = &frac[1..];
            let parsed = digits(frac_digits)? as u64;
            nanos_frac = parsed * 10u64.pow(9 - frac_digits.len() as u32);
        }
        let days = date.to_julian_day() as i64 - UNIX_EPOCH_JULIAN_DAY;
        if days < 0 {
            return None;
        }
        let secs = days as u64 * 86_400 + hour as u64 * 3600 + minute as u64 * 60 + second as u64;
        // Nanoseconds in a u64 end in 2554: a later date from a peer is a format error, not an
        // overflow.
        let nanos = secs.checked_mul(1_000_000_000)?.checked_add(nanos_frac)?;
        Some(Timestamp(nanos))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(21);
        self.write_fix(&mut buf);
        f.write_str(std::str::from_utf8(&buf).unwrap_or("?"))
    }
}

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Days since the epoch to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let date = time::Date::from_julian_day((days + UNIX_EPOCH_JULIAN_DAY) as i32)
        .unwrap_or(time::Date::MAX);
    (
        date.year() as i64,
        u8::from(date.month()) as u32,
        date.day() as u32,
    )
}

fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 {
        return None;
    }
    let mut value: u32 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (b - b'0') as u32;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_a_known_instant() {
        // 2026-11-23 12:34:56.789 UTC
        let t = Timestamp(1_795_437_296_789_000_000);
        let mut buf = Vec::new();
        t.write_fix(&mut buf);
        assert_eq!(std::str::from_utf8(&buf).unwrap(), "20261123-12:34:56.789");
        assert_eq!(Timestamp::parse_fix(&buf), Some(t));
        assert_eq!(
            Timestamp::parse_fix(b"20261123-12:34:56"),
            Some(Timestamp::from_secs(1_795_437_296))
        );
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            &b"2026112312:34:56"[..],
            b"20261323-12:34:56",
            b"20260230-12:34:56",
            b"20261123-24:00:00",
            b"20261123-12:34:56.",
            b"20261123-12:34:56.1234567890",
            b"zz",
            b"99991231-23:59:59",
        ] {
            assert_eq!(
                Timestamp::parse_fix(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
