//! The control plane: what an operator uses to run baton. The process supervisor behind
//! `baton up`; the control API that `baton ctl` speaks to the gateway; the change records,
//! approvals and policy that decide whether authority may move; immutable artifacts; the
//! hash-chained audit log every control action is written to before it takes effect; and the
//! metrics endpoint that serves the same status to Prometheus.

pub mod api;
pub mod artifact;
pub mod audit;
pub mod audit_writer;
pub mod change;
pub mod client;
pub mod endpoint;
pub mod gateway_plane;
pub mod holder;
pub mod metrics;
pub mod peer;
pub mod plane;
pub mod ready;
pub mod stage;
pub mod supervisor;
pub mod upgrade;
pub mod watch;
