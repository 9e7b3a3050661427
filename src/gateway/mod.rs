//! The gateway: accepts counterparties' TCP connections and drives one FIX session state machine
//! per configured CompID pair. Later parts (sequencer, journal, router, outbox) sit behind it.

pub mod acceptor;
pub mod journal;

pub use acceptor::{Acceptor, AcceptorHandle};
