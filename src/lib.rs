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
//!   FIX <-> engine translation, and the core: sequencer, input journal (every inbound business
//!   message is appended before an engine sees it), router (which engine is authoritative for
//!   which symbol: one engine, or a canary's symbols on another) and outbox (each output
//!   delivered once). The core is sans-IO; its driver owns the engine links and the timer, and
//!   a seeded simulation (`baton sim`) runs it through crashes and failovers on virtual time.
//! - [`link`]: the gateway <-> engine wire protocol and its transports (TCP, Unix sockets, and
//!   shared-memory rings for an engine on the gateway's host).
//! - [`engine`]: the `Engine` trait, order books, matching, snapshot/restore and state digest.
//! - [`control`]: the `baton ctl` API and endpoint, and the Prometheus metrics endpoint that
//!   serves the same status; the control plane that checks each command
//!   against the change records and policy and writes it to the hash-chained audit log before
//!   the sequencer acts on it; immutable artifacts; and the supervisor behind `baton up`.
//! - [`bench`](mod@bench): the FIX initiator used by tests, `baton demo`, and the `baton bench` load
//!   generator with its same-run echo baseline and plots.
//!
//! [`mmap`] holds every unsafe memory-map call of the store and the journal, which share one
//! checksummed record layout; `link::shm` holds the shared-memory link's, each with its reason.
//!
//! [`logging`] writes log lines to stderr without letting a closed or stalled pipe stop the
//! process.
//!
//! [`config`] reads the TOML configuration shared by all of them; [`constants`] is the one home
//! of every limit.
//!
//! [`time`] is the one time type every part shares and the one place the wall clock is read;
//! the state machines are given `now` instead.
//!
//! [`sd_notify`] tells systemd when the gateway is ready, alive and stopping; [`handover`] passes
//! sockets between the gateway and the process that holds them while it restarts.

pub mod bench;
pub mod config;
pub mod constants;
pub mod control;
pub mod engine;
pub mod fix;
pub mod gateway;
pub mod handover;
pub mod link;
pub mod logging;
pub mod mmap;
mod record;
pub mod sd_notify;
pub mod time;
