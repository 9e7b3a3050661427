//! The control plane: what an operator uses to run baton. The process supervisor behind
//! `baton up`, and the control API that `baton ctl` speaks to the gateway; change records,
//! approvals, gates and the audit log live here too as they are built.

pub mod api;
pub mod artifact;
pub mod audit;
pub mod client;
pub mod endpoint;
pub mod supervisor;
