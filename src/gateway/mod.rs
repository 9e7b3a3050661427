//! The gateway: accepts counterparties' TCP connections and drives one FIX session state machine
//! per configured CompID pair; translates business messages into engine requests and engine
//! outputs back into FIX.
//!
//! The core (sequencer, router, outbox, shadow) is a sans-IO state machine; [`driver`] is the
//! async code around it. [`sim`] runs the core with sessions and engines from a seed. [`run`]
//! assembles a gateway process. The core reports with the types in [`status`] and its own API;
//! `control` converts them, and plugs its control plane into [`run`] through
//! [`ControlHooks`], so nothing here imports `control` (a tidy test keeps it so).

pub mod acceptor;
pub mod assembly;
pub mod core;
pub mod cursor;
pub mod disk;
pub mod driver;
pub mod input_journal;
pub mod journal;
pub mod memory_journal;
pub mod outbox_mark;
pub mod placement;
pub mod sim;
pub mod status;
#[cfg(test)]
mod tidy_tests;
pub mod tls;
pub mod tls_record;
pub mod translate;

pub use acceptor::{Acceptor, AcceptorHandle, Inbound, Sessions};
pub use assembly::{ControlHooks, RunError, run};
