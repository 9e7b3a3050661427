//! Where the core keeps its outbox cursor, the last input whose outputs are all in their
//! sessions: the memory-mapped [`OutboxCursor`] in production, [`MemoryCursor`] in the seeded
//! simulation, whose crash can lose the last write as a kill just before it would.

use std::sync::{Arc, Mutex, PoisonError};

use super::cursor::OutboxCursor;

/// A persisted outbox cursor.
pub trait CursorStore: Send {
    /// The last input whose outputs were all delivered.
    fn get(&self) -> u64;
    /// Records that every output of inputs up to `value` was delivered.
    fn set(&mut self, value: u64);
}

impl CursorStore for OutboxCursor {
    fn get(&self) -> u64 {
        OutboxCursor::get(self)
    }

    fn set(&mut self, value: u64) {
        OutboxCursor::set(self, value)
    }
}

/// A cursor in memory. Clones share the value, so the simulator keeps one to read after a crash.
#[derive(Clone, Debug, Default)]
pub struct MemoryCursor {
    /// The current value and the one before the last write.
    values: Arc<Mutex<(u64, u64)>>,
}

impl MemoryCursor {
    /// A cursor at 0.
    pub fn new() -> MemoryCursor {
        MemoryCursor::default()
    }

    /// The simulated gateway died; with `lose_last`, just before its last cursor write landed
    /// (after the outputs it covers were stored in their sessions). Returns the cursor a
    /// restarted gateway reads.
    pub fn crash(&self, lose_last: bool) -> MemoryCursor {
        let (value, previous) = *self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = if lose_last { previous } else { value };
        MemoryCursor {
            values: Arc::new(Mutex::new((kept, kept))),
        }
    }
}

impl CursorStore for MemoryCursor {
    fn get(&self) -> u64 {
        self.values.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn set(&mut self, value: u64) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        *values = (value, values.0);
    }
}
