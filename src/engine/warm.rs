//! Writing the memory reserved at start once, before the first order.
//!
//! The engine reserves all its memory at start (see [`super::MatchingEngine`]), but reserving is
//! not touching: the allocator hands out fresh pages the kernel maps only on first access. The
//! ClOrdID table is probed at a random slot per request, so until every one of its pages had
//! been touched nearly every new ClOrdID took one or two page faults on the order path (a read
//! fault mapping the shared zero page, then a write fault copying it): 1.4 to 1.8 per order at
//! 2,000 orders/s, for minutes after every start. Touching the table once at start moves all of
//! them before the first order; memory filled in order faults once per page and is left lazy.

/// Bytes between two writes: a page, the unit the kernel maps.
const PAGE_BYTES: usize = 4096;

/// How many `T`s apart two writes are so that every page of a `[T]` gets one.
fn stride<T>() -> usize {
    (PAGE_BYTES / size_of::<T>().max(1)).max(1)
}

/// Writes one element per page of `items` with its own value. The value goes through
/// [`std::hint::black_box`], so the compiler cannot drop the store as writing what is there.
pub(crate) fn touch<T: Copy>(items: &mut [T]) {
    for item in items.iter_mut().step_by(stride::<T>()) {
        *item = std::hint::black_box(*item);
    }
}

/// Bytes made present at a time ahead of a vector's end (see [`Ahead`]): 16 pages, a few hundred
/// order records, which this VM faults in in 0.1–0.3 ms; asked again when half is used.
const AHEAD_BYTES: usize = 64 << 10;

/// Keeps the memory just past a vector's end present, so that what is appended next (an order
/// record, a ClOrdID entry) does not take its page's first-touch fault on the order path: the
/// engine calls [`Ahead::keep`] between inputs, once their answers are written. Memory filled in
/// order is not touched at start, which would make the whole day's capacity resident.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ahead {
    /// The vector's buffer, so a vector replaced (by a restore) starts over.
    buffer: usize,
    /// Items of that buffer below which the memory is present.
    present_to: usize,
}

impl Ahead {
    /// Makes the next [`AHEAD_BYTES`] past `items`' end present once less than half of them is
    /// left; nothing when enough is (a comparison), or when the capacity is reached.
    pub(crate) fn keep<T>(&mut self, items: &mut Vec<T>) {
        let buffer = items.as_ptr() as usize;
        if buffer != self.buffer {
            *self = Ahead {
                buffer,
                present_to: 0,
            };
        }
        let per_item = size_of::<T>().max(1);
        let ahead = (AHEAD_BYTES / per_item).max(1);
        let len = items.len();
        if len + ahead / 2 <= self.present_to {
            return;
        }
        let from = self.present_to.max(len);
        let to = (len + ahead).min(items.capacity());
        if to <= from {
            return;
        }
        crate::mmap::make_present(&mut items.spare_capacity_mut()[from - len..to - len]);
        self.present_to = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_changes_no_value() {
        let mut items: Vec<u64> = (0..10_000).collect();
        touch(&mut items);
        assert!(items.iter().enumerate().all(|(i, &v)| v == i as u64));
        touch::<()>(&mut [(); 3]);
        touch::<u8>(&mut []);
    }
}
