//! The engine's memory of what it recently sent, so a resent input is answered with the same
//! outputs instead of being applied twice or leaving a hole in the gateway's outbox.

use std::collections::VecDeque;

use crate::constants::LINK_FRAME_BYTES_MAX;

/// Encoded Outputs payloads of the most recently applied inputs, consecutive by input seq,
/// bounded both in inputs and in bytes.
#[derive(Debug)]
pub(crate) struct ReplayLog {
    /// Seq of the input whose payload is `entries[0]`; meaningless while `entries` is empty.
    first_seq: u64,
    /// End offset in `bytes` of each retained input's payload, oldest first, relative to
    /// `bytes_base`. Inputs are consecutive: entry `i` belongs to seq `first_seq + i`.
    entries: VecDeque<u64>,
    /// The payloads back to back.
    bytes: VecDeque<u8>,
    /// Offset that `bytes[0]` has in the stream of all payloads ever pushed; lets entries hold
    /// stable offsets while the front is evicted.
    bytes_base: u64,
    /// Most inputs retained.
    inputs_max: usize,
    /// Most payload bytes retained.
    bytes_max: usize,
}

impl ReplayLog {
    /// An empty log with the given bounds, and room reserved for them (one payload over, which
    /// `push` holds before it evicts): grown by doubling instead, the ring copied everything it
    /// held on the order loop at each step, up to 32 MiB at once. Reserved is not resident: the
    /// kernel backs each page when the ring first reaches it.
    pub(crate) fn new(inputs_max: usize, bytes_max: usize) -> ReplayLog {
        ReplayLog {
            first_seq: 0,
            entries: VecDeque::with_capacity(inputs_max.saturating_add(1)),
            bytes: VecDeque::with_capacity(bytes_max.saturating_add(LINK_FRAME_BYTES_MAX)),
            bytes_base: 0,
            inputs_max,
            bytes_max,
        }
    }

    /// Records the payload of input `seq`, which must follow the last one recorded (any seq
    /// after [`ReplayLog::clear`]); evicts the oldest entries beyond the bounds.
    pub(crate) fn push(&mut self, seq: u64, payload: &[u8]) {
        if self.entries.is_empty() {
            self.first_seq = seq;
        } else {
            assert_eq!(
                Some(seq),
                self.first_seq.checked_add(self.entries.len() as u64),
                "replay log entries must be consecutive"
            );
        }
        self.bytes.extend(payload);
        self.entries
            .push_back(self.bytes_base + self.bytes.len() as u64);
        while self.entries.len() > self.inputs_max || self.bytes.len() > self.bytes_max {
            self.evict_oldest();
        }
    }

    /// Drops everything: after a restore the engine's history is another engine's, and its own
    /// earlier outputs no longer describe it.
    pub(crate) fn clear(&mut self) {
        self.bytes_base += self.bytes.len() as u64;
        self.bytes.clear();
        self.entries.clear();
    }

    /// The payload recorded for `seq`, copied into `out`; false if it is not retained.
    pub(crate) fn get(&self, seq: u64, out: &mut Vec<u8>) -> bool {
        let Some(position) = seq.checked_sub(self.first_seq) else {
            return false;
        };
        let Ok(position) = usize::try_from(position) else {
            return false;
        };
        let Some(&end) = self.entries.get(position) else {
            return false;
        };
        let start = match position {
            0 => self.bytes_base,
            _ => self.entries[position - 1],
        };
        let range = (start - self.bytes_base) as usize..(end - self.bytes_base) as usize;
        out.extend(self.bytes.range(range));
        true
    }

    /// Removes the oldest entry and its bytes.
    fn evict_oldest(&mut self) {
        let Some(end) = self.entries.pop_front() else {
            return;
        };
        let len = (end - self.bytes_base) as usize;
        self.bytes.drain(..len);
        self.bytes_base = end;
        self.first_seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(log: &ReplayLog, seq: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        log.get(seq, &mut out).then_some(out)
    }

    #[test]
    fn keeps_the_latest_inputs_within_both_bounds() {
        let mut log = ReplayLog::new(3, 10);
        log.push(5, b"aa");
        log.push(6, b"");
        log.push(7, b"bbb");
        assert_eq!(get(&log, 4), None);
        assert_eq!(get(&log, 5).unwrap(), b"aa");
        assert_eq!(get(&log, 6).unwrap(), b"");
        assert_eq!(get(&log, 7).unwrap(), b"bbb");
        assert_eq!(get(&log, 8), None);
        // Over the input bound: 5 goes.
        log.push(8, b"cc");
        assert_eq!(get(&log, 5), None);
        assert_eq!(get(&log, 8).unwrap(), b"cc");
        // Over the byte bound (3 + 2 + 6 > 10): 6 and 7 go.
        log.push(9, b"dddddd");
        assert_eq!(get(&log, 7), None);
        assert_eq!(get(&log, 8).unwrap(), b"cc");
        assert_eq!(get(&log, 9).unwrap(), b"dddddd");
        // A payload larger than the whole budget is not retained at all.
        log.push(10, b"eeeeeeeeeee");
        assert_eq!(get(&log, 9), None);
        assert_eq!(get(&log, 10), None);
        log.push(11, b"f");
        assert_eq!(get(&log, 11).unwrap(), b"f");
    }

    #[test]
    fn clear_forgets_and_restarts_anywhere() {
        let mut log = ReplayLog::new(4, 100);
        log.push(1, b"a");
        log.push(2, b"b");
        log.clear();
        assert_eq!(get(&log, 1), None);
        log.push(100, b"x");
        assert_eq!(get(&log, 100).unwrap(), b"x");
        assert_eq!(get(&log, 2), None);
        assert_eq!(get(&log, u64::MAX), None);
    }
}
