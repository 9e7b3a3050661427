//! Every limit in one place, each with the reason for its number.

// ---------------------------------------------------------------------------------------------
// Engine: order books, matching and snapshots (`crate::engine`).
// ---------------------------------------------------------------------------------------------

/// Longest ClOrdID in bytes. FIX does not bound tag 11; 32 covers UUIDs without dashes and the
/// schemes of the OMSs we have seen, and keeps an order record within two cache lines.
pub const ENGINE_CL_ORD_ID_LEN_MAX: usize = 32;

/// Longest Symbol in bytes: long enough for exchange tickers, FX pairs and option roots, short
/// enough to live inline in every order and report.
pub const ENGINE_SYMBOL_LEN_MAX: usize = 16;

/// Instruments one engine may carry. Each book preallocates two level vectors of `levels_max`
/// entries, so this bounds the engine's fixed memory; partitioning across engines scales past it.
pub const ENGINE_INSTRUMENTS_MAX: usize = 1024;

/// Open orders across all books when the configuration does not say: far above what a demo or
/// a test venue rests, and about 30 MB of order records reserved up front.
pub const ENGINE_ORDERS_MAX_DEFAULT: u32 = 1 << 18;

/// Upper bound for `orders_max`. Order records are addressed by `u32` slab indices with one value
/// reserved as "none", and level totals (a sum of open quantities) must fit a `u64`.
pub const ENGINE_ORDERS_MAX_LIMIT: u32 = 1 << 24;

/// Price levels per side of one book when the configuration does not say: a deep equity book
/// shows a few hundred levels; beyond that, far-away orders are rejected rather than the vector
/// growing.
pub const ENGINE_LEVELS_MAX_DEFAULT: u32 = 1024;

/// Upper bound for `levels_max`. Levels are a sorted vector whose insert shifts the far side of
/// the book; 64 Ki levels keep that shift within a few microseconds.
pub const ENGINE_LEVELS_MAX_LIMIT: u32 = 1 << 16;

/// ClOrdIDs remembered per engine for the session day when the configuration does not say. Every
/// request consumes one (duplicates are refused for the whole day), so this is the day's request
/// budget across all sessions: a million requests, for about 80 MB reserved up front (ids, their
/// hash table and the day's order list).
pub const ENGINE_CL_ORD_IDS_MAX_DEFAULT: u32 = 1 << 20;

/// Upper bound for `cl_ord_ids_max`: 64 Mi entries keep the day's id tables within about 5 GB.
pub const ENGINE_CL_ORD_IDS_MAX_LIMIT: u32 = 1 << 26;

/// Largest quantity of one order. Far above any real order, and small enough that the quantity
/// times any `i64` price fits an `i128` notional and all open quantity fits a `u64` (checked
/// below), so no arithmetic on quantities can overflow.
pub const ENGINE_ORDER_QTY_MAX: u64 = 1_000_000_000_000;

const _: () = assert!(
    (ENGINE_ORDERS_MAX_LIMIT as u128) * (ENGINE_ORDER_QTY_MAX as u128) <= u64::MAX as u128,
    "the open quantity of a full book must fit a u64 level total"
);
const _: () = assert!(ENGINE_ORDERS_MAX_DEFAULT <= ENGINE_ORDERS_MAX_LIMIT);
const _: () = assert!(ENGINE_LEVELS_MAX_DEFAULT <= ENGINE_LEVELS_MAX_LIMIT);
const _: () = assert!(ENGINE_CL_ORD_IDS_MAX_DEFAULT <= ENGINE_CL_ORD_IDS_MAX_LIMIT);
const _: () = assert!(
    ENGINE_CL_ORD_IDS_MAX_DEFAULT >= ENGINE_ORDERS_MAX_DEFAULT,
    "every order consumes a ClOrdID, so fewer ids than orders would leave order slots unusable"
);
const _: () = assert!(
    ENGINE_CL_ORD_ID_LEN_MAX <= u8::MAX as usize,
    "inline identifiers store their length in a u8"
);
const _: () = assert!(
    ENGINE_SYMBOL_LEN_MAX <= u8::MAX as usize,
    "inline identifiers store their length in a u8"
);
