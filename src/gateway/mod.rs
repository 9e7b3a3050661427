//! The gateway: accepts counterparties' TCP connections and drives one FIX session state machine
//! per configured CompID pair; translates business messages into engine requests and engine
//! outputs back into FIX.

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
pub mod translate;

pub use acceptor::{Acceptor, AcceptorHandle, Inbound, Sessions};
