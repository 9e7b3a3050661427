//! The FIX side of the gateway: codec, venue dictionary, sans-IO session state machine and the
//! session store. Nothing in here touches a socket, a clock or tokio.

pub mod codec;
pub mod dictionary;
pub mod escape;
pub mod schedule;
pub mod session;
pub mod store;
pub mod tags;
pub mod time;
