//! The gateway: accepts counterparties' TCP connections and drives one FIX session state machine
//! per configured CompID pair; translates business messages into engine requests and engine
//! outputs back into FIX.
//!
//! The core (sequencer, router, outbox, shadow) is a sans-IO state machine; [`driver`] is the
//! async code around it. [`sim`] runs the core with sessions and engines from a seed. The core
//! reports with the types in [`status`] and its own API; `control` converts them, so nothing
//! here imports `control`.

pub mod acceptor;
pub mod core;
pub mod cursor;
pub mod disk;
pub mod driver;
pub mod input_journal;
pub mod journal;
pub mod memory_journal;
pub mod outbox_mark;
pub mod sim;
pub mod status;
pub mod tls;
pub mod tls_record;
pub mod translate;

pub use acceptor::{Acceptor, AcceptorHandle, Inbound, Sessions};
