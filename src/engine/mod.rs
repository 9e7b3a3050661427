//! The engine side of baton: order books, matching, snapshot/restore and the state digest.
//!
//! An engine is a pure state machine (DESIGN.md invariant 3): it never reads a clock, a random
//! source or a socket, and never sees FIX. This first part holds the value types the engine and
//! the gateway exchange.

mod types;

pub use types::{
    ClOrdId, CxlRejReason, CxlRejResponseTo, ExecType, OrdRejReason, OrdStatus, OrdType, Price,
    Qty, RejectText, Side, Symbol, TimeInForce,
};
