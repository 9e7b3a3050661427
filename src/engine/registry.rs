//! The day's ClOrdID registry: every ClOrdID each session used, and the order it refers to.
//!
//! Every request looks its ClOrdID up (duplicates are refused all day) and adds it, so this is
//! the hottest table in the engine and also the largest (a million entries by default). A
//! general-purpose `HashMap` stores its 48-byte entries in the probed table itself, so with
//! that many entries nearly every lookup missed the cache and the TLB. Here entries are appended
//! to a dense vector in arrival order, and the probed table holds only 8-byte slots (a hash tag
//! and an entry index): the usual case, a fresh ClOrdID, touches one cache line of a table a
//! sixth of the size, and the append is sequential. Entries are never removed during a day, so
//! the table needs no tombstones, and both parts are sized at start and never grow.

use std::hash::BuildHasher;

use super::SessionId;
use super::hash::SeededState;
use super::types::ClOrdId;

/// Registry value for a ClOrdID whose request created or touched no order (a rejected request).
pub(crate) const NO_ORDER: u32 = u32::MAX;

/// One used ClOrdID.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// The session that used it; ClOrdIDs are unique per session only.
    pub session: SessionId,
    /// The id.
    pub cl_ord_id: ClOrdId,
    /// Index of the order the request created or acted on in the engine's order list, or
    /// [`NO_ORDER`].
    pub order: u32,
}

/// An empty slot of the probe table.
const EMPTY: u64 = 0;

/// Every ClOrdID used today, in memory reserved at start.
pub(crate) struct ClOrdIdRegistry {
    /// Entries in arrival order; never longer than `capacity`, so never reallocated.
    entries: Vec<Entry>,
    /// Open-addressing table with linear probing, a power of two at least twice `capacity`
    /// (load factor at most 1/2). A slot is [`EMPTY`] or `(hash >> 32) << 32 | (index + 1)`.
    slots: Vec<u64>,
    /// `slots.len() - 1`, for masking a hash into a slot index.
    mask: usize,
    /// Seeded hash of `(session, ClOrdID)` keys.
    hasher: SeededState,
    /// `cl_ord_ids_max` from the configuration.
    capacity: u32,
}

impl ClOrdIdRegistry {
    /// Reserves room for `capacity` ClOrdIDs.
    pub fn with_capacity(capacity: u32) -> ClOrdIdRegistry {
        let slot_count = (2 * capacity as usize).next_power_of_two().max(2);
        ClOrdIdRegistry {
            entries: Vec::with_capacity(capacity as usize),
            slots: vec![EMPTY; slot_count],
            mask: slot_count - 1,
            hasher: SeededState::new(),
            capacity,
        }
    }

    /// Writes every page of the probe table once, so that looking up and recording a ClOrdID
    /// never takes a page fault (see [`super::warm`]). The entries are appended in order, so
    /// they fault once per page only (one in ~85 ClOrdIDs) and are left untouched: touching all
    /// of them would make the whole day's capacity resident at start.
    ///
    /// The table asks for huge pages first ([`crate::mmap::advise_huge_pages`]): a lookup then
    /// rarely misses the TLB, which on a virtual machine cost more than the rest of the order.
    /// The entries, filled in order, keep small pages: a huge page's first touch would be one
    /// long fault on the order path.
    pub fn touch_memory(&mut self) {
        crate::mmap::advise_huge_pages(&mut self.slots);
        super::warm::touch(&mut self.slots);
    }

    /// Makes the memory of the next entries present (see [`super::warm::Ahead`]).
    pub fn keep_ahead(&mut self, ahead: &mut super::warm::Ahead) {
        ahead.keep(&mut self.entries);
    }

    /// Whether another ClOrdID can be recorded.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity as usize
    }

    /// The configured capacity.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Entries in arrival order (not canonical: callers sort before anything reaches a
    /// snapshot).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Forgets everything, keeping the reserved memory.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.slots.fill(EMPTY);
    }

    /// Where the probe for `(session, cl_ord_id)` ends: the slot holding it (`Ok`) or the empty
    /// slot where it would go (`Err`).
    fn probe(&self, session: SessionId, cl_ord_id: &ClOrdId) -> Result<usize, (usize, u64)> {
        let hash = self.hasher.hash_one((session, cl_ord_id));
        let tag = hash & !u64::from(u32::MAX);
        let mut at = hash as usize & self.mask;
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return Err((at, tag));
            }
            if slot & !u64::from(u32::MAX) == tag {
                let entry = &self.entries[(slot as u32 - 1) as usize];
                if entry.session == session && entry.cl_ord_id == *cl_ord_id {
                    return Ok(at);
                }
            }
            // Terminates: the table is at most half full, so an empty slot is always ahead.
            at = (at + 1) & self.mask;
        }
    }

    /// Whether the session used this ClOrdID today.
    pub fn contains(&self, session: SessionId, cl_ord_id: &ClOrdId) -> bool {
        self.probe(session, cl_ord_id).is_ok()
    }

    /// The order index recorded for the ClOrdID ([`NO_ORDER`] for a rejected request), or
    /// `None` if the session never used it.
    pub fn get(&self, session: SessionId, cl_ord_id: &ClOrdId) -> Option<u32> {
        let at = self.probe(session, cl_ord_id).ok()?;
        Some(self.entries[(self.slots[at] as u32 - 1) as usize].order)
    }

    /// Records a ClOrdID the session has not used; callers check [`Self::contains`] and
    /// [`Self::is_full`] first.
    pub fn insert(&mut self, session: SessionId, cl_ord_id: ClOrdId, order: u32) {
        assert!(!self.is_full(), "ClOrdID registry insert without room");
        let Err((at, tag)) = self.probe(session, &cl_ord_id) else {
            panic!("ClOrdID {cl_ord_id} of session {session} recorded twice");
        };
        self.entries.push(Entry {
            session,
            cl_ord_id,
            order,
        });
        self.slots[at] = tag | self.entries.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ClOrdId {
        ClOrdId::try_from_bytes(format!("id-{n}").as_bytes()).unwrap()
    }

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut registry = ClOrdIdRegistry::with_capacity(1000);
        for n in 0..1000 {
            assert!(!registry.contains(n % 7, &id(n)));
            registry.insert(n % 7, id(n), if n % 2 == 0 { n } else { NO_ORDER });
        }
        assert!(registry.is_full());
        for n in 0..1000 {
            let expected = if n % 2 == 0 { n } else { NO_ORDER };
            assert_eq!(registry.get(n % 7, &id(n)), Some(expected));
            assert_eq!(
                registry.get(n % 7 + 1, &id(n)),
                None,
                "ClOrdIDs are per session"
            );
        }
        assert_eq!(registry.get(0, &id(5000)), None);
        registry.clear();
        assert!(registry.entries().is_empty());
        assert_eq!(registry.get(0, &id(0)), None);
    }

    #[test]
    fn a_touched_registry_records_ids_without_page_faults() {
        // 4 MiB of slots and 12 MiB of entries: an untouched table faults on nearly every one of
        // these ids, since each lands on a random page.
        let mut registry = ClOrdIdRegistry::with_capacity(1 << 18);
        registry.touch_memory();
        let ids: Vec<ClOrdId> = (0..20_000).map(id).collect();
        crate::mmap::thread_minor_faults();
        let before = crate::mmap::thread_minor_faults();
        for (n, cl_ord_id) in ids.iter().enumerate() {
            registry.insert(1, *cl_ord_id, n as u32);
        }
        let faults = crate::mmap::thread_minor_faults() - before;
        // The entries fill in order and are left lazy: a fault per page of them at most (none
        // where the kernel backs them with huge pages). The slots, touched, add next to none;
        // untouched, nearly one per id.
        let entry_pages = (ids.len() * size_of::<Entry>()).div_ceil(4096) as i64;
        assert!(
            faults < entry_pages + 64,
            "{faults} page faults recording {} ids ({entry_pages} pages of entries)",
            ids.len()
        );
    }

    #[test]
    fn a_touched_registry_sits_on_huge_pages_where_the_kernel_gives_them() {
        // 16 MiB of slots, the default capacity's: at least seven whole 2 MiB pages inside.
        let mut registry = ClOrdIdRegistry::with_capacity(1 << 20);
        registry.touch_memory();
        if !crate::mmap::huge_pages_on_request() {
            return;
        }
        // The middle: the first and last pages share their mapping with whatever the allocator
        // put beside the table, and are left as they are.
        let middle = registry.slots[registry.slots.len() / 2..].as_ptr() as usize;
        let huge = crate::mmap::huge_page_bytes_at(middle).expect("the slots are mapped");
        assert!(
            huge >= 2 << 20,
            "{huge} bytes of the ClOrdID table on huge pages"
        );
    }

    #[test]
    #[should_panic(expected = "recorded twice")]
    fn inserting_a_used_id_is_a_bug() {
        let mut registry = ClOrdIdRegistry::with_capacity(4);
        registry.insert(1, id(1), 0);
        registry.insert(1, id(1), 0);
    }
}
