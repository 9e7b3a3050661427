//! Load generation and measurement. Never needed at run time: the gateway does not depend on
//! anything here. [`initiator`] is the FIX client the integration tests and `baton bench` share.

pub mod demo;
pub mod echo;
pub mod harness;
pub mod hostile;
pub mod initiator;
pub mod load;
pub mod peer;
pub mod plot;
pub mod poll;
pub mod report;
pub mod usage;
pub mod venue;
