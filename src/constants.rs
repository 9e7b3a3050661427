//! Every limit in one place, each with the reason for its number.

// ---------------------------------------------------------------------------------------------
// Session store (`fix::store::MmapStore`)
// ---------------------------------------------------------------------------------------------

/// Size a new session's message log starts at. 1 MiB holds about 4,000 messages of 250 bytes, so
/// a quiet session never remaps; the file is sparse, so a gateway with a thousand sessions
/// reserves address space, not disk.
pub const STORE_MESSAGES_BYTES_INITIAL: u64 = 1 << 20;

/// Default ceiling of a session's message log for one session day, over which an append is
/// refused with `StoreError::Full`. A busy drop-copy session sends about ten million messages of
/// ~250 bytes a day (~2.5 GiB with record headers); 4 GiB leaves headroom for that and still
/// stops a runaway send loop long before it fills the disk.
pub const STORE_MESSAGES_BYTES_MAX: u64 = 4 << 30;

/// Factor the message log grows by when an append does not fit. Doubling keeps the number of
/// remaps per day logarithmic (12 from 1 MiB to 4 GiB) while wasting at most half the file.
pub const STORE_MESSAGES_GROWTH_FACTOR: u64 = 2;

const _: () = assert!(STORE_MESSAGES_BYTES_INITIAL <= STORE_MESSAGES_BYTES_MAX);
const _: () = assert!(STORE_MESSAGES_GROWTH_FACTOR >= 2);
