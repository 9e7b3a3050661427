//! Tag numbers and enumerated values of the FIX 4.4 fields the session layer itself reads or
//! writes. Business fields are looked up through the dictionary; these are named because the
//! state machine branches on them.

/// BeginString (8): protocol version, first field of every message.
pub const BEGIN_STRING: u32 = 8;
/// BodyLength (9): bytes from after this field up to the CheckSum field.
pub const BODY_LENGTH: u32 = 9;
/// CheckSum (10): last field, sum of all preceding bytes modulo 256.
pub const CHECK_SUM: u32 = 10;
/// MsgSeqNum (34).
pub const MSG_SEQ_NUM: u32 = 34;
/// MsgType (35): third field of every message.
pub const MSG_TYPE: u32 = 35;
/// NewSeqNo (36), in SequenceReset.
pub const NEW_SEQ_NO: u32 = 36;
/// PossDupFlag (43): this sequence number may have been sent before.
pub const POSS_DUP_FLAG: u32 = 43;
/// RefSeqNum (45), in Reject: the MsgSeqNum of the rejected message.
pub const REF_SEQ_NUM: u32 = 45;
/// SenderCompID (49).
pub const SENDER_COMP_ID: u32 = 49;
/// SendingTime (52).
pub const SENDING_TIME: u32 = 52;
/// TargetCompID (56).
pub const TARGET_COMP_ID: u32 = 56;
/// Text (58): free text, used in Logout and Reject to say why.
pub const TEXT: u32 = 58;
/// BeginSeqNo (7), in ResendRequest.
pub const BEGIN_SEQ_NO: u32 = 7;
/// EndSeqNo (16), in ResendRequest; 0 means "up to the last sent".
pub const END_SEQ_NO: u32 = 16;
/// EncryptMethod (98), in Logon; baton supports only 0 (none).
pub const ENCRYPT_METHOD: u32 = 98;
/// HeartBtInt (108), in Logon: seconds between heartbeats.
pub const HEART_BT_INT: u32 = 108;
/// TestReqID (112): echoed in the Heartbeat that answers a TestRequest.
pub const TEST_REQ_ID: u32 = 112;
/// OrigSendingTime (122): SendingTime of the original transmission of a resent message.
pub const ORIG_SENDING_TIME: u32 = 122;
/// GapFillFlag (123), in SequenceReset.
pub const GAP_FILL_FLAG: u32 = 123;
/// ResetSeqNumFlag (141), in Logon: both sides restart at 1.
pub const RESET_SEQ_NUM_FLAG: u32 = 141;
/// RefTagID (371), in Reject: the tag that was wrong.
pub const REF_TAG_ID: u32 = 371;
/// RefMsgType (372), in Reject and BusinessMessageReject.
pub const REF_MSG_TYPE: u32 = 372;
/// SessionRejectReason (373), in Reject.
pub const SESSION_REJECT_REASON: u32 = 373;
/// BusinessRejectRefID (379), in BusinessMessageReject.
pub const BUSINESS_REJECT_REF_ID: u32 = 379;
/// BusinessRejectReason (380), in BusinessMessageReject.
pub const BUSINESS_REJECT_REASON: u32 = 380;
/// ClOrdID (11): the counterparty's id of an order request, echoed in every answer.
pub const CL_ORD_ID: u32 = 11;

/// The header and trailer fields that belong to one transmission of a message rather than to
/// what it says: a resend writes them anew (with PossDupFlag and OrigSendingTime), and two
/// transmissions of the same message differ only in them.
pub const TRANSMISSION: [u32; 10] = [
    BEGIN_STRING,
    BODY_LENGTH,
    MSG_TYPE,
    SENDER_COMP_ID,
    TARGET_COMP_ID,
    MSG_SEQ_NUM,
    SENDING_TIME,
    POSS_DUP_FLAG,
    ORIG_SENDING_TIME,
    CHECK_SUM,
];

/// MsgType values of the session layer and of the business messages baton supports.
pub mod msg_type {
    /// Heartbeat.
    pub const HEARTBEAT: &[u8] = b"0";
    /// TestRequest.
    pub const TEST_REQUEST: &[u8] = b"1";
    /// ResendRequest.
    pub const RESEND_REQUEST: &[u8] = b"2";
    /// Reject (session level).
    pub const REJECT: &[u8] = b"3";
    /// SequenceReset.
    pub const SEQUENCE_RESET: &[u8] = b"4";
    /// Logout.
    pub const LOGOUT: &[u8] = b"5";
    /// Logon.
    pub const LOGON: &[u8] = b"A";
    /// ExecutionReport.
    pub const EXECUTION_REPORT: &[u8] = b"8";
    /// OrderCancelReject.
    pub const ORDER_CANCEL_REJECT: &[u8] = b"9";
    /// NewOrderSingle.
    pub const NEW_ORDER_SINGLE: &[u8] = b"D";
    /// OrderCancelRequest.
    pub const ORDER_CANCEL_REQUEST: &[u8] = b"F";
    /// OrderCancelReplaceRequest.
    pub const ORDER_CANCEL_REPLACE_REQUEST: &[u8] = b"G";
    /// BusinessMessageReject.
    pub const BUSINESS_MESSAGE_REJECT: &[u8] = b"j";

    /// Session-level (administrative) messages: answered by the session layer itself and
    /// replaced by a SequenceReset-GapFill when a counterparty asks for them to be resent.
    pub fn is_admin(msg_type: &[u8]) -> bool {
        matches!(msg_type, b"0" | b"1" | b"2" | b"3" | b"4" | b"5" | b"A")
    }

    /// Every MsgType FIX 4.4 defines (93), whether or not the venue takes it. The venue
    /// dictionary lists only what the venue takes; this table tells a valid FIX 4.4 message the
    /// venue does not support (answered with BusinessMessageReject 380=3) from a MsgType that
    /// is not FIX at all (session Reject 373=11).
    pub const FIX44: [&[u8]; 93] = [
        b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9", b"A", b"B", b"C", b"D", b"E",
        b"F", b"G", b"H", b"J", b"K", b"L", b"M", b"N", b"P", b"Q", b"R", b"S", b"T", b"V", b"W",
        b"X", b"Y", b"Z", b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"j", b"k", b"l",
        b"m", b"n", b"o", b"p", b"q", b"r", b"s", b"t", b"u", b"v", b"w", b"x", b"y", b"z", b"AA",
        b"AB", b"AC", b"AD", b"AE", b"AF", b"AG", b"AH", b"AI", b"AJ", b"AK", b"AL", b"AM", b"AN",
        b"AO", b"AP", b"AQ", b"AR", b"AS", b"AT", b"AU", b"AV", b"AW", b"AX", b"AY", b"AZ", b"BA",
        b"BB", b"BC", b"BD", b"BE", b"BF", b"BG", b"BH",
    ];

    /// Whether `msg_type` is one FIX 4.4 defines (see [`FIX44`]).
    pub fn is_fix44(msg_type: &[u8]) -> bool {
        FIX44.contains(&msg_type)
    }
}

/// SessionRejectReason (373) values, FIX 4.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SessionRejectReason {
    /// 0: tag number not defined in the dictionary, or not a number.
    InvalidTagNumber = 0,
    /// 1: a field the message type requires is absent.
    RequiredTagMissing = 1,
    /// 2: the tag exists but not in this message type.
    TagNotDefinedForMessageType = 2,
    /// 3: the tag is in the dictionary but the venue does not take it.
    UndefinedTag = 3,
    /// 4: `tag=` with nothing after the equals sign.
    TagSpecifiedWithoutValue = 4,
    /// 5: an enumerated field with a value outside its list.
    ValueIsIncorrect = 5,
    /// 6: a value that does not parse as its type (e.g. letters in an int).
    IncorrectDataFormat = 6,
    /// 9: SenderCompID or TargetCompID do not match the session.
    CompIdProblem = 9,
    /// 10: SendingTime too far from the gateway's time.
    SendingTimeAccuracyProblem = 10,
    /// 11: MsgType not in the dictionary.
    InvalidMsgType = 11,
    /// 13: the same tag twice in one message.
    TagAppearsMoreThanOnce = 13,
    /// 14: header or trailer fields out of place.
    TagSpecifiedOutOfRequiredOrder = 14,
    /// 15: a repeating group's members out of order, or an instance not starting with the
    /// group's delimiter.
    RepeatingGroupFieldsOutOfOrder = 15,
    /// 16: NumInGroup differs from the instances that follow it.
    IncorrectNumInGroupCount = 16,
    /// 99: anything else.
    Other = 99,
}

impl SessionRejectReason {
    /// The value written in tag 373.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// BusinessRejectReason (380) values baton sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BusinessRejectReason {
    /// 0: anything else.
    Other = 0,
    /// 3: the venue does not take this message type.
    UnsupportedMessageType = 3,
    /// 4: no engine can take the message right now (not attached, failing over).
    ApplicationNotAvailable = 4,
    /// 5: a conditionally required field is missing.
    ConditionallyRequiredFieldMissing = 5,
}

impl BusinessRejectReason {
    /// The value written in tag 380.
    pub fn code(self) -> u32 {
        self as u32
    }
}
