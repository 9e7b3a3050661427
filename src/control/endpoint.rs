//! TEMPORARY: replaced by the control endpoint.
use super::api::{ControlReply, ControlRequest};
/// A command for the sequencer.
pub struct ControlCommand {
    /// What.
    pub request: ControlRequest,
    /// Answer.
    pub reply: tokio::sync::oneshot::Sender<ControlReply>,
}
