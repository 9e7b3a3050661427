//! baton: a FIX session gateway that keeps every counterparty's session connected while the
//! trading engine behind it is upgraded, canaried, rolled back or fails over.
//!
//! # Layout
//!
//! Data flows through the parts in this order:
//!
//! - [`fix`]: the tag=value codec, the venue dictionary from `fix-specs/`, the sans-IO session
//!   state machine (bytes and time in, actions out) and the memory-mapped session store.
//! - [`gateway`]: the acceptor and connection I/O that drive the session state machines, the
//!   input journal every inbound business message is appended to before an engine sees it, and
//!   (later) the sequencer, router and outbox.
//! - [`link`]: the gateway↔engine wire protocol.
//! - [`engine`]: order books, matching, snapshot/restore and state digest.
//! - [`control`]: admin API, changes, approvals, gates and the audit log.
//! - [`bench`]: the FIX initiator used by tests and the load generator.
//!
//! [`config`] reads the TOML configuration shared by all of them; [`constants`] is the one home
//! of every limit.

pub mod bench;
pub mod config;
pub mod constants;
pub mod control;
pub mod engine;
pub mod fix;
pub mod gateway;
pub mod link;
pub mod mmap;
mod record;
