//! Time as every part of baton carries it, and the one place the wall clock is read.
//!
//! The state machines (the FIX session, the gateway core, the engines) never read a clock: they
//! are given `now`, which is what lets tests run on virtual time and a seeded simulation replay a
//! run byte for byte. Only the I/O edges (the drivers, the CLI, the bench) call
//! [`Timestamp::now`]. How FIX writes and parses a time lives with FIX, in `fix::time`.

/// Nanoseconds since the Unix epoch, UTC. The one time type that crosses module boundaries, so
/// that a sequencer stamp, a SendingTime and a timer deadline can be compared without conversion.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The epoch itself; used as "never" by callers that need a sentinel.
    pub const ZERO: Timestamp = Timestamp(0);

    /// Whole seconds since the epoch; schedules and session periods work at this resolution.
    pub const fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs * 1_000_000_000)
    }

    /// Milliseconds since the epoch; FIX timestamps carry millisecond precision.
    pub const fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis * 1_000_000)
    }

    /// Whole seconds since the epoch, rounding down.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    /// Whole milliseconds since the epoch, rounding down.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// This time moved later by `millis`; saturates rather than wrapping so a huge configured
    /// interval can never produce a deadline in the past.
    pub const fn plus_millis(self, millis: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis.saturating_mul(1_000_000)))
    }

    /// Absolute distance between two times in milliseconds, for SendingTime accuracy checks.
    pub const fn abs_diff_millis(self, other: Timestamp) -> u64 {
        self.0.abs_diff(other.0) / 1_000_000
    }

    /// This time moved later by `duration`; saturates like [`Timestamp::plus_millis`].
    pub fn plus(self, duration: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this is; zero if it is not after it (a clock that stepped back
    /// must not read as a huge interval).
    pub const fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Reads the wall clock. Only the I/O edges (acceptor, CLI, bench) may call this; the state
    /// machines receive the result.
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}
