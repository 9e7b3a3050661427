//! The control plane: what an operator uses to run baton. For now the process supervisor behind
//! `baton up`; admin API, change records, approvals, gates and the audit log live here too as
//! they are built.

pub mod supervisor;
