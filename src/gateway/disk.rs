//! Whether the gateway is refusing new business because its disk is full, for the metrics
//! endpoint.
//!
//! The sequencer is the one writer: it sets the state when the input journal cannot get space
//! and clears it when an append succeeds again. Kept process-wide, like the log's dropped-line
//! count, because a gateway process has one journal and the metrics endpoint reads it without a
//! handle on the sequencer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether new business is being refused for want of disk space.
static FULL: AtomicBool = AtomicBool::new(false);

/// Free bytes on the journal's file system when the sequencer last measured (at the failed
/// allocation), `u64::MAX` when unknown.
static FREE_BYTES: AtomicU64 = AtomicU64::new(u64::MAX);

/// The journal could not get space; `free_bytes` is what the file system reported.
pub fn set_full(free_bytes: Option<u64>) {
    FREE_BYTES.store(free_bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    FULL.store(true, Ordering::Relaxed);
}

/// An append succeeded again: business is accepted.
pub fn set_space_returned() {
    FULL.store(false, Ordering::Relaxed);
}

/// Whether new business is refused for want of disk space now.
pub fn full() -> bool {
    FULL.load(Ordering::Relaxed)
}

/// Free bytes measured when the disk was last found full, if known.
pub fn free_bytes_when_full() -> Option<u64> {
    Some(FREE_BYTES.load(Ordering::Relaxed)).filter(|&bytes| bytes != u64::MAX)
}
