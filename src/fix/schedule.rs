//! When a session may be logged on, and which "session day" a time belongs to.
//!
//! Venues run FIX sessions on a daily schedule: Logons outside it are refused, and sequence
//! numbers restart at 1 with each new session day (after the maintenance window). The window that
//! contains a time is a pure function of that time, so the session state machine can decide
//! without a clock and tests can cross midnight on virtual time. Times of day are UTC.

use super::time::Timestamp;

const SECS_PER_DAY: u64 = 86_400;

/// Seconds after midnight UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(pub u32);

impl TimeOfDay {
    /// Parses `HH:MM:SS` (as QuickFIX's StartTime/EndTime), `None` if malformed.
    pub fn parse(text: &str) -> Option<TimeOfDay> {
        let mut parts = text.split(':');
        let mut next = |max: u32| -> Option<u32> {
            let part = parts.next()?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok().filter(|v| *v <= max)
        };
        let (h, m, s) = (next(23)?, next(59)?, next(59)?);
        if parts.next().is_some() {
            return None;
        }
        Some(TimeOfDay(h * 3600 + m * 60 + s))
    }
}

/// A session's trading hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Start of each daily window.
    pub start: TimeOfDay,
    /// End of each daily window; at or before `start` means the window ends the next day.
    pub end: TimeOfDay,
    /// Days on which a window may start, bit 0 = Monday .. bit 6 = Sunday.
    pub weekdays: u8,
    /// Always open, one session day forever: sequence numbers never reset by schedule.
    pub non_stop: bool,
}

/// One session day: the window a time falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When the window opened; its seconds identify the session day in the store.
    pub start: Timestamp,
    /// When it closes; the gateway logs sessions out then.
    pub end: Timestamp,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::non_stop()
    }
}

impl Schedule {
    /// A session that is always open.
    pub const fn non_stop() -> Schedule {
        Schedule {
            start: TimeOfDay(0),
            end: TimeOfDay(0),
            weekdays: 0x7f,
            non_stop: true,
        }
    }

    /// Parses a weekday list such as `Mon,Tue,Wed,Thu,Fri` into the bit mask; `None` names no
    /// day or an unknown one.
    pub fn parse_weekdays(text: &str) -> Option<u8> {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let mut mask = 0u8;
        for part in text.split(',') {
            let part = part.trim().to_ascii_lowercase();
            let index = NAMES
                .iter()
                .position(|name| part.starts_with(name) && part.len() >= 3)?;
            mask |= 1 << index;
        }
        (mask != 0).then_some(mask)
    }

    /// The window containing `now`, or `None` when the session is closed.
    pub fn window(&self, now: Timestamp) -> Option<Window> {
        if self.non_stop {
            return Some(Window {
                start: Timestamp::ZERO,
                end: Timestamp(u64::MAX),
            });
        }
        let secs = now.as_secs();
        let day = secs / SECS_PER_DAY;
        let length = if self.end > self.start {
            u64::from(self.end.0 - self.start.0)
        } else {
            SECS_PER_DAY - u64::from(self.start.0 - self.end.0)
        };
        // A window that started today or yesterday can contain `now`.
        for start_day in [day, day.saturating_sub(1)] {
            let start = start_day * SECS_PER_DAY + u64::from(self.start.0);
            if secs >= start && secs < start + length && self.weekday_enabled(start_day) {
                return Some(Window {
                    start: Timestamp::from_secs(start),
                    end: Timestamp::from_secs(start + length),
                });
            }
        }
        None
    }

    /// 1970-01-01 was a Thursday (bit 3).
    fn weekday_enabled(&self, day: u64) -> bool {
        let weekday = (day + 3) % 7;
        self.weekdays & (1 << weekday) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23 is a Monday.
    const MONDAY: u64 = 1_795_392_000;

    fn at(day_offset: u64, hms: &str) -> Timestamp {
        Timestamp::from_secs(
            MONDAY + day_offset * SECS_PER_DAY + TimeOfDay::parse(hms).unwrap().0 as u64,
        )
    }

    #[test]
    fn daily_window_contains_only_its_hours() {
        let schedule = Schedule {
            start: TimeOfDay::parse("08:00:00").unwrap(),
            end: TimeOfDay::parse("17:00:00").unwrap(),
            weekdays: Schedule::parse_weekdays("Mon,Tue,Wed,Thu,Fri").unwrap(),
            non_stop: false,
        };
        assert_eq!(schedule.window(at(0, "07:59:59")), None);
        let window = schedule.window(at(0, "08:00:00")).unwrap();
        assert_eq!(window.start, at(0, "08:00:00"));
        assert_eq!(window.end, at(0, "17:00:00"));
        assert_eq!(schedule.window(at(0, "17:00:00")), None);
        assert!(schedule.window(at(4, "12:00:00")).is_some(), "Friday");
        assert_eq!(schedule.window(at(5, "12:00:00")), None, "Saturday");
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_started() {
        let schedule = Schedule {
            start: TimeOfDay::parse("22:00:00").unwrap(),
            end: TimeOfDay::parse("21:00:00").unwrap(),
            weekdays: 0x7f,
            non_stop: false,
        };
        let window = schedule.window(at(1, "03:00:00")).unwrap();
        assert_eq!(window.start, at(0, "22:00:00"));
        assert_eq!(window.end, at(1, "21:00:00"));
        assert_eq!(
            schedule.window(at(1, "21:30:00")),
            None,
            "maintenance window"
        );
        assert_eq!(
            schedule.window(at(1, "22:00:00")).unwrap().start,
            at(1, "22:00:00")
        );
    }

    #[test]
    fn malformed_times_and_days_are_refused() {
        assert_eq!(TimeOfDay::parse("24:00:00"), None);
        assert_eq!(TimeOfDay::parse("8:00:00"), None);
        assert_eq!(TimeOfDay::parse("08:00"), None);
        assert_eq!(Schedule::parse_weekdays("Mon,Funday"), None);
        assert_eq!(Schedule::parse_weekdays("sat, Sunday"), Some(0b110_0000));
    }
}
