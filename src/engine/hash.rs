//! The hasher of the ClOrdID registry.
//!
//! std's SipHash spent about a quarter of the time of adding or canceling an order hashing
//! `(session, ClOrdID)` keys. This is a folded-multiply hash (the construction of wyhash and
//! foldhash) over whole 64-bit words, which is a few cycles per key.
//!
//! ClOrdIDs are chosen by clients, so a fixed hash function would let one client craft ids that
//! collide and slow every lookup for everyone. The seed therefore comes from std's per-process
//! random keys, exactly as `HashMap`'s default does. That randomness reaches only where entries
//! sit in the table, never an output, a snapshot or a digest: nothing iterates the table on the
//! way to one (DESIGN.md invariant 3).

use std::hash::{BuildHasher, Hasher, RandomState};

/// Builds [`WordHasher`]s sharing one random seed per table.
#[derive(Clone, Debug)]
pub(crate) struct SeededState {
    /// Random per table; mixed into every hash so collisions cannot be precomputed.
    seed: u64,
}

impl SeededState {
    /// A state with a fresh random seed.
    pub fn new() -> SeededState {
        SeededState {
            seed: RandomState::new().hash_one(0x6261_746f_6e5f_6b65_u64),
        }
    }
}

impl BuildHasher for SeededState {
    type Hasher = WordHasher;

    fn build_hasher(&self) -> WordHasher {
        WordHasher { state: self.seed }
    }
}

/// Folds each 64-bit word into the state with a 64×64→128-bit multiply.
pub(crate) struct WordHasher {
    /// Running hash; starts at the table's seed.
    state: u64,
}

/// An odd constant with well-mixed bits (the fractional part of the golden ratio).
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
/// A second constant so that the two multiplicands differ even for a zero word.
const OFFSET: u64 = 0xa076_1d64_78bd_642f;

impl WordHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word ^ OFFSET) * u128::from(MULTIPLIER);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round so that the last word also reaches the top bits hashbrown uses as tags.
        let product = u128::from(self.state ^ OFFSET) * u128::from(MULTIPLIER);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::engine::ClOrdId;

    #[test]
    fn similar_keys_spread_over_buckets_and_tags() {
        let state = SeededState::new();
        let mut low = HashSet::new();
        let mut high = HashSet::new();
        for n in 0..4096u32 {
            let id = ClOrdId::try_from_bytes(format!("ord-{n}").as_bytes()).unwrap();
            let hash = state.hash_one((n % 3, id));
            low.insert(hash & 4095);
            high.insert(hash >> 57);
        }
        // A uniform hash fills about 63% of 4096 buckets with 4096 keys; all 128 tags appear.
        assert!(low.len() > 2400, "{} buckets used", low.len());
        assert_eq!(high.len(), 128);
    }

    #[test]
    fn equal_keys_hash_equal_and_seeds_differ() {
        let state = SeededState::new();
        let a = ClOrdId::try_from_bytes(b"abc").unwrap();
        let b = ClOrdId::try_from_bytes(b"abc").unwrap();
        assert_eq!(state.hash_one((1u32, a)), state.hash_one((1u32, b)));
        assert_ne!(state.hash_one((1u32, a)), state.hash_one((2u32, a)));
        assert_ne!(state.hash_one(7u64), SeededState::new().hash_one(7u64));
    }
}
