//! HL7 v2 messages in ER7 ("pipe") encoding: laboratory results (ORU^R01, OUL^R22) as the
//! township's laboratory systems send them, and the acknowledgements we answer with.
//!
//! - [`parse`]: bytes to a [`Message`] (separators from MSH, CR / LF / CRLF segment ends,
//!   character set from MSH-18), with field, component and subcomponent accessors that
//!   unescape on access;
//! - [`lab_results`]: the patient, orders and observations of a result message;
//! - [`ack`], [`ack_without_msh`]: original-mode acknowledgements;
//! - [`ts_to_ms`]: HL7 timestamps to epoch milliseconds.
//!
//! Like the rest of this crate, nothing here does I/O. The gateway (on receipt) and the
//! hub (on ingest) run the same code, so they agree on what a message means.
//!
//! Why no HL7 crate: the candidates (`hl7-parser` 0.3, `rust-hl7` 0.5, `hl7-2` 0.2) either
//! borrow the input (`Message<'a>`, which cannot own the text we decode from GB18030
//! ourselves), pull in parser-combinator or regex dependencies for what is a split on five
//! characters, describe themselves as experimental, or need a newer compiler than the
//! workspace's `rust-version`. None decodes by MSH-18. The tokenizer is small; the
//! lab-specific reading (which field means what) would have been ours in any case.

mod ack;
mod lab;
mod message;
mod ts;

pub use ack::{ack, ack_without_msh, error_text, AckCode};
pub use lab::{
    lab_results, Coded, LabResults, MessageKind, Observation, Order, Patient, Value,
    SUPPORTED_VERSIONS,
};
pub use message::{
    escape, parse, parse_header, unescape, Charset, Field, Message, Msh, Segment, Separators,
};
pub use ts::ts_to_ms;

/// Why a message was refused. Messages name the segment and the field, e.g.
/// "OBX-2 (value type) is missing in OBX 3"; segments other than MSH are counted per
/// name ("OBX 3" is the third OBX of the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    /// Nothing but whitespace.
    #[error("empty message")]
    Empty,
    /// The message does not start with an MSH segment.
    #[error("not an HL7 v2 message: it must start with MSH, found {0:?}")]
    NoMsh(String),
    /// MSH-1 / MSH-2 do not define usable separators.
    #[error("MSH-1/MSH-2 (separators) are invalid: {0}")]
    Separators(String),
    /// MSH-18 names a character set we cannot decode.
    #[error("MSH-18 (character set) {0:?} is not supported (UNICODE UTF-8, GB18030, 8859/1 are)")]
    UnsupportedCharset(String),
    /// The bytes are not valid in the character set the message declares.
    #[error("the message is not valid {charset}: {reason}")]
    Charset {
        /// The character set used.
        charset: String,
        /// What is wrong.
        reason: String,
    },
    /// A line does not start like a segment.
    #[error("segment {position} does not start with a segment ID: {found:?}")]
    BadSegment {
        /// 1-based position of the segment in the message.
        position: usize,
        /// The start of the line.
        found: String,
    },
    /// Segments are not in an order this message type allows.
    #[error("segment sequence error: {0}")]
    Sequence(String),
    /// A required segment is absent.
    #[error("the message has no {0} segment")]
    MissingSegment(&'static str),
    /// A required field is empty.
    #[error("{field} ({name}) is missing in {segment}")]
    MissingField {
        /// Where, e.g. "OBX 3".
        segment: String,
        /// Which, e.g. "OBX-2".
        field: String,
        /// What it is, e.g. "value type".
        name: &'static str,
    },
    /// A field's value does not fit its data type.
    #[error("{field} ({name}) in {segment} is invalid: {reason}")]
    InvalidField {
        /// Where, e.g. "OBX 3".
        segment: String,
        /// Which, e.g. "OBX-5".
        field: String,
        /// What it is, e.g. "observation value".
        name: &'static str,
        /// What is wrong, quoting the value.
        reason: String,
    },
    /// Not a message type we take (MSH-9).
    #[error("unsupported message type {0} (ORU^R01 and OUL^R22 are accepted)")]
    UnsupportedMessageType(String),
    /// Not an HL7 version we take (MSH-12).
    #[error("unsupported HL7 version {0:?} (2.3 to 2.5.1 are accepted)")]
    UnsupportedVersion(String),
    /// A result message must be about one patient.
    #[error("several patients in one message: PID-3 {first:?} and {other:?}")]
    SeveralPatients {
        /// The first patient's identifier.
        first: String,
        /// The other one.
        other: String,
    },
}

impl Hl7Error {
    /// The HL7 error code (table 0357) for ERR-3.
    pub fn hl7_code(&self) -> &'static str {
        match self {
            Hl7Error::Empty
            | Hl7Error::NoMsh(_)
            | Hl7Error::BadSegment { .. }
            | Hl7Error::Sequence(_)
            | Hl7Error::MissingSegment(_)
            | Hl7Error::SeveralPatients { .. } => "100",
            Hl7Error::MissingField { .. } => "101",
            Hl7Error::Separators(_)
            | Hl7Error::UnsupportedCharset(_)
            | Hl7Error::Charset { .. }
            | Hl7Error::InvalidField { .. } => "102",
            Hl7Error::UnsupportedMessageType(_) => "200",
            Hl7Error::UnsupportedVersion(_) => "203",
        }
    }

    /// How to acknowledge a message refused for this reason: `AR` when sending it again
    /// can never help (a type, version or character set we do not take), `AE` when the
    /// message itself is wrong and a corrected one would be accepted.
    pub fn ack_code(&self) -> AckCode {
        match self {
            Hl7Error::UnsupportedMessageType(_)
            | Hl7Error::UnsupportedVersion(_)
            | Hl7Error::UnsupportedCharset(_) => AckCode::AR,
            _ => AckCode::AE,
        }
    }
}

#[cfg(test)]
mod tests;
