//! TEMPORARY stub so the session compiles before the real dictionary lands.
use super::codec::{FieldProblem, Message};
use super::tags::SessionRejectReason;
/// Stub.
pub struct Dictionary;
impl Dictionary {
    /// Stub.
    pub fn venue() -> &'static Dictionary {
        static D: Dictionary = Dictionary;
        &D
    }
    /// Stub.
    pub fn validate(&self, m: &Message) -> Result<(), FieldProblem> {
        if let Some(p) = m.problem() {
            return Err(p);
        }
        if !matches!(
            m.msg_type(),
            b"0" | b"1"
                | b"2"
                | b"3"
                | b"4"
                | b"5"
                | b"A"
                | b"D"
                | b"F"
                | b"G"
                | b"8"
                | b"9"
                | b"j"
        ) {
            return Err(FieldProblem {
                reason: SessionRejectReason::InvalidMsgType,
                tag: 35,
            });
        }
        for t in [49u32, 56, 34, 52] {
            if m.get(t).is_none() {
                return Err(FieldProblem {
                    reason: SessionRejectReason::RequiredTagMissing,
                    tag: t,
                });
            }
        }
        if m.msg_type() == b"A" && m.get(108).is_none() {
            return Err(FieldProblem {
                reason: SessionRejectReason::RequiredTagMissing,
                tag: 108,
            });
        }
        if m.get(52).is_some() && m.timestamp_opt(52).is_err() {
            return Err(FieldProblem {
                reason: SessionRejectReason::IncorrectDataFormat,
                tag: 52,
            });
        }
        if m.msg_type() == b"D" && m.get(11).is_none() {
            return Err(FieldProblem {
                reason: SessionRejectReason::RequiredTagMissing,
                tag: 11,
            });
        }
        Ok(())
    }
}
