//! The DIMSE command layer (PS3.7) that dicom-ul does not provide: reading C-ECHO-RQ
//! and C-STORE-RQ command sets and writing their responses.
//!
//! Command sets are always Implicit VR Little Endian, group 0000 only, and small; we
//! parse them by hand rather than through dicom-object so that a hostile command set
//! cannot make us allocate more than the (bounded) bytes we already hold.

use std::fmt;

/// Command Field values we understand (PS3.7 E.1).
pub mod command_field {
    /// C-STORE-RQ.
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-STORE-RSP.
    pub const C_STORE_RSP: u16 = 0x8001;
    /// C-ECHO-RQ.
    pub const C_ECHO_RQ: u16 = 0x0030;
    /// C-ECHO-RSP.
    pub const C_ECHO_RSP: u16 = 0x8030;
    /// C-CANCEL-RQ (ignored: a C-STORE cannot be cancelled half-way here).
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// The Verification SOP Class (C-ECHO).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

/// CommandDataSetType value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;

/// Largest command set we accept. Real ones are a few hundred bytes; the bound stops a
/// peer from streaming an endless "command" into memory.
pub const MAX_COMMAND_SET_LEN: usize = 64 * 1024;

const TAG_GROUP_LENGTH: u16 = 0x0000;
const TAG_AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
const TAG_COMMAND_FIELD: u16 = 0x0100;
const TAG_MESSAGE_ID: u16 = 0x0110;
const TAG_MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
const TAG_PRIORITY: u16 = 0x0700;
const TAG_COMMAND_DATA_SET_TYPE: u16 = 0x0800;
const TAG_STATUS: u16 = 0x0900;
const TAG_ERROR_COMMENT: u16 = 0x0902;
const TAG_AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
const TAG_MOVE_ORIGINATOR_AE: u16 = 0x1030;
const TAG_MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;

/// A command set that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimseError {
    /// The bytes end inside an element.
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    /// An element outside group 0000 appeared in the command set.
    #[error("command set contains element ({0:04X},{1:04X}) outside group 0000")]
    NotCommandGroup(u16, u16),
    /// A required element is absent.
    #[error("command set lacks {0}")]
    Missing(&'static str),
    /// An element has an impossible length for its type.
    #[error("command element {0} has invalid length {1}")]
    BadLength(&'static str, u32),
}

/// A parsed command set: the elements a C-ECHO or C-STORE service needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// Command Field (0000,0100).
    pub command_field: u16,
    /// Message ID (0000,0110), echoed in the response.
    pub message_id: Option<u16>,
    /// Affected SOP Class UID (0000,0002).
    pub affected_sop_class_uid: Option<String>,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_sop_instance_uid: Option<String>,
    /// Priority (0000,0700): 0 medium, 1 high, 2 low.
    pub priority: Option<u16>,
    /// Command Data Set Type (0000,0800); 0x0101 means no data set follows.
    pub data_set_type: u16,
    /// Move Originator AE Title (0000,1030), when the store is a C-MOVE sub-operation.
    pub move_originator_ae: Option<String>,
    /// Move Originator Message ID (0000,1031).
    pub move_originator_message_id: Option<u16>,
}

impl Command {
    /// Whether a data set follows this command.
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }
}

/// Parse an Implicit VR Little Endian command set.
pub fn parse_command(bytes: &[u8]) -> Result<Command, DimseError> {
    let mut cmd = Command {
        data_set_type: NO_DATA_SET,
        ..Command::default()
    };
    let mut command_field = None;
    let mut pos = 0usize;
    while pos < bytes.len() {
        let header = bytes.get(pos..pos + 8).ok_or(DimseError::Truncated(pos))?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if group != 0x0000 {
            return Err(DimseError::NotCommandGroup(group, element));
        }
        let start = pos + 8;
        // Checked against what we hold before slicing: a declared length is a claim.
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= bytes.len())
            .ok_or(DimseError::Truncated(pos))?;
        let value = &bytes[start..end];
        match element {
            TAG_COMMAND_FIELD => command_field = Some(us(value, "CommandField")?),
            TAG_MESSAGE_ID => cmd.message_id = Some(us(value, "MessageID")?),
            TAG_PRIORITY => cmd.priority = Some(us(value, "Priority")?),
            TAG_COMMAND_DATA_SET_TYPE => cmd.data_set_type = us(value, "CommandDataSetType")?,
            TAG_AFFECTED_SOP_CLASS_UID => cmd.affected_sop_class_uid = Some(text(value)),
            TAG_AFFECTED_SOP_INSTANCE_UID => cmd.affected_sop_instance_uid = Some(text(value)),
            TAG_MOVE_ORIGINATOR_AE => cmd.move_originator_ae = Some(text(value)),
            TAG_MOVE_ORIGINATOR_MESSAGE_ID => {
                cmd.move_originator_message_id = Some(us(value, "MoveOriginatorMessageID")?)
            }
            // Group length and anything else (e.g. retired elements) carry nothing we need.
            _ => {}
        }
        pos = end;
    }
    cmd.command_field = command_field.ok_or(DimseError::Missing("CommandField"))?;
    Ok(cmd)
}

fn us(value: &[u8], name: &'static str) -> Result<u16, DimseError> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(DimseError::BadLength(name, value.len() as u32)),
    }
}

/// UI/AE values are padded with NUL (UI) or space (AE) to even length.
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

/// A DIMSE status with an optional Error Comment (0000,0902) naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Status code (0000,0900).
    pub code: u16,
    /// Error Comment, sent with failures so the modality's log says what was wrong.
    pub comment: Option<String>,
}

impl Status {
    /// 0x0000: success.
    pub const SUCCESS: u16 = 0x0000;
    /// 0xA700: refused, out of resources (we could not store it durably).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// 0xA900: error, data set does not match SOP class.
    pub const DATA_SET_DOES_NOT_MATCH: u16 = 0xA900;
    /// 0xC000: error, cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;

    /// Success, no comment.
    pub fn success() -> Status {
        Status {
            code: Self::SUCCESS,
            comment: None,
        }
    }

    /// A failure status with a comment.
    pub fn failure(code: u16, comment: impl Into<String>) -> Status {
        Status {
            code,
            comment: Some(comment.into()),
        }
    }

    /// Whether this is the success status.
    pub fn is_success(&self) -> bool {
        self.code == Self::SUCCESS
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.code)?;
        if let Some(c) = &self.comment {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// Build a C-ECHO-RSP command set answering `message_id`.
pub fn echo_response(message_id: u16, sop_class_uid: &str, status: &Status) -> Vec<u8> {
    let mut w = CommandWriter::default();
    w.ui(TAG_AFFECTED_SOP_CLASS_UID, sop_class_uid);
    w.us(TAG_COMMAND_FIELD, command_field::C_ECHO_RSP);
    w.us(TAG_MESSAGE_ID_BEING_RESPONDED_TO, message_id);
    w.us(TAG_COMMAND_DATA_SET_TYPE, NO_DATA_SET);
    w.us(TAG_STATUS, status.code);
    if let Some(c) = &status.comment {
        w.lo(TAG_ERROR_COMMENT, c);
    }
    w.finish()
}

/// Build a C-STORE-RSP command set answering `message_id`.
pub fn store_response(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    status: &Status,
) -> Vec<u8> {
    let mut w = CommandWriter::default();
    w.ui(TAG_AFFECTED_SOP_CLASS_UID, sop_class_uid);
    w.us(TAG_COMMAND_FIELD, command_field::C_STORE_RSP);
    w.us(TAG_MESSAGE_ID_BEING_RESPONDED_TO, message_id);
    w.us(TAG_COMMAND_DATA_SET_TYPE, NO_DATA_SET);
    w.us(TAG_STATUS, status.code);
    if let Some(c) = &status.comment {
        w.lo(TAG_ERROR_COMMENT, c);
    }
    w.ui(TAG_AFFECTED_SOP_INSTANCE_UID, sop_instance_uid);
    w.finish()
}

/// Build a C-ECHO-RQ command set (used by tests and diagnostics acting as an SCU).
pub fn echo_request(message_id: u16) -> Vec<u8> {
    let mut w = CommandWriter::default();
    w.ui(TAG_AFFECTED_SOP_CLASS_UID, VERIFICATION_SOP_CLASS);
    w.us(TAG_COMMAND_FIELD, command_field::C_ECHO_RQ);
    w.us(TAG_MESSAGE_ID, message_id);
    w.us(TAG_COMMAND_DATA_SET_TYPE, NO_DATA_SET);
    w.finish()
}

/// Build a C-STORE-RQ command set (used by tests acting as an SCU).
pub fn store_request(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Vec<u8> {
    let mut w = CommandWriter::default();
    w.ui(TAG_AFFECTED_SOP_CLASS_UID, sop_class_uid);
    w.us(TAG_COMMAND_FIELD, command_field::C_STORE_RQ);
    w.us(TAG_MESSAGE_ID, message_id);
    w.us(TAG_PRIORITY, 0);
    // Any value other than 0x0101 announces a data set; 0x0000 is what dcmtk sends.
    w.us(TAG_COMMAND_DATA_SET_TYPE, 0x0000);
    w.ui(TAG_AFFECTED_SOP_INSTANCE_UID, sop_instance_uid);
    w.finish()
}

/// Parse a response command set's status (used by tests acting as an SCU).
pub fn parse_status(bytes: &[u8]) -> Result<(u16, Option<u16>, Option<String>), DimseError> {
    let mut pos = 0usize;
    let mut status = None;
    let mut responded_to = None;
    let mut comment = None;
    while pos + 8 <= bytes.len() {
        let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let end = (pos + 8)
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or(DimseError::Truncated(pos))?;
        let value = &bytes[pos + 8..end];
        match element {
            TAG_STATUS => status = Some(us(value, "Status")?),
            TAG_MESSAGE_ID_BEING_RESPONDED_TO => {
                responded_to = Some(us(value, "MessageIDBeingRespondedTo")?)
            }
            TAG_ERROR_COMMENT => comment = Some(text(value)),
            _ => {}
        }
        pos = end;
    }
    Ok((
        status.ok_or(DimseError::Missing("Status"))?,
        responded_to,
        comment,
    ))
}

/// Writes group-0000 elements in ascending tag order (callers add them in order) and
/// prefixes the Command Group Length.
#[derive(Default)]
struct CommandWriter {
    body: Vec<u8>,
}

impl CommandWriter {
    fn header(&mut self, element: u16, len: usize) {
        self.body.extend_from_slice(&0u16.to_le_bytes());
        self.body.extend_from_slice(&element.to_le_bytes());
        self.body.extend_from_slice(&(len as u32).to_le_bytes());
    }

    fn us(&mut self, element: u16, value: u16) {
        self.header(element, 2);
        self.body.extend_from_slice(&value.to_le_bytes());
    }

    fn ui(&mut self, element: u16, value: &str) {
        let v = value.trim_end_matches(['\0', ' ']);
        let pad = v.len() % 2;
        self.header(element, v.len() + pad);
        self.body.extend_from_slice(v.as_bytes());
        if pad == 1 {
            self.body.push(0);
        }
    }

    /// LO: at most 64 characters, no backslash (the value separator), no control
    /// characters; padded with a space. Error comments are made to fit rather than
    /// refused, because a clipped reason is better than none.
    fn lo(&mut self, element: u16, value: &str) {
        let cleaned: String = value
            .chars()
            .map(|c| {
                if c == '\\' {
                    '/'
                } else if c.is_control() || !c.is_ascii() {
                    // The command set has no Specific Character Set: default repertoire only.
                    '?'
                } else {
                    c
                }
            })
            .take(64)
            .collect();
        let v = cleaned.trim_end();
        let pad = v.len() % 2;
        self.header(element, v.len() + pad);
        self.body.extend_from_slice(v.as_bytes());
        if pad == 1 {
            self.body.push(b' ');
        }
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 12);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&TAG_GROUP_LENGTH.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A C-ECHO-RQ exactly as dcmtk 3.6.7 echoscu sends it (captured from the wire,
    /// MessageID changed from 1 to 7).
    const DCMTK_ECHO_RQ: &[u8] = &[
        0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00,
        0x00, // group length 56
        0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00, b'1', b'.', b'2', b'.', b'8', b'4', b'0',
        b'.', b'1', b'0', b'0', b'0', b'8', b'.', b'1', b'.', b'1',
        0x00, // affected SOP class
        0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x00, // command field
        0x00, 0x00, 0x10, 0x01, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00, // message id 7
        0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // no data set
    ];

    #[test]
    fn parses_a_dcmtk_echo_request() {
        let cmd = parse_command(DCMTK_ECHO_RQ).expect("parses");
        assert_eq!(cmd.command_field, command_field::C_ECHO_RQ);
        assert_eq!(cmd.message_id, Some(7));
        assert_eq!(
            cmd.affected_sop_class_uid.as_deref(),
            Some(VERIFICATION_SOP_CLASS)
        );
        assert!(!cmd.has_data_set());
    }

    #[test]
    fn our_echo_request_matches_dcmtk_bytes() {
        assert_eq!(echo_request(7), DCMTK_ECHO_RQ);
    }

    #[test]
    fn store_request_round_trips() {
        let bytes = store_request(42, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5");
        // group length covers everything after its own element
        let gl = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!(gl, bytes.len() - 12);
        let cmd = parse_command(&bytes).expect("parses");
        assert_eq!(cmd.command_field, command_field::C_STORE_RQ);
        assert_eq!(cmd.message_id, Some(42));
        assert_eq!(
            cmd.affected_sop_class_uid.as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        // odd-length UID is NUL padded on the wire and trimmed on reading
        assert_eq!(cmd.affected_sop_instance_uid.as_deref(), Some("1.2.3.4.5"));
        assert_eq!(cmd.priority, Some(0));
        assert!(cmd.has_data_set());
    }

    #[test]
    fn store_response_echoes_message_id_and_comment() {
        let status = Status::failure(
            Status::CANNOT_UNDERSTAND,
            "not DICOM: no \"DICM\" prefix \\ at offset 128",
        );
        let bytes = store_response(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", &status);
        let (code, responded_to, comment) = parse_status(&bytes).expect("parses");
        assert_eq!(code, 0xC000);
        assert_eq!(responded_to, Some(9));
        let comment = comment.expect("comment");
        assert!(comment.starts_with("not DICOM"));
        assert!(
            !comment.contains('\\'),
            "backslash is the LO value separator"
        );
        assert!(bytes.len().is_multiple_of(2));
        // and our own parser sees a response command field
        let cmd = parse_command(&bytes).expect("parses as command");
        assert_eq!(cmd.command_field, command_field::C_STORE_RSP);
        assert_eq!(cmd.affected_sop_instance_uid.as_deref(), Some("1.2.3"));
    }

    #[test]
    fn long_error_comment_is_clipped_to_lo_length() {
        let long = "x".repeat(200);
        let bytes = echo_response(1, VERIFICATION_SOP_CLASS, &Status::failure(0xA700, long));
        let (_, _, comment) = parse_status(&bytes).expect("parses");
        assert_eq!(comment.map(|c| c.len()), Some(64));
    }

    #[test]
    fn success_response_has_no_comment() {
        let bytes = echo_response(3, VERIFICATION_SOP_CLASS, &Status::success());
        assert_eq!(parse_status(&bytes), Ok((0, Some(3), None)));
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating() {
        let mut bytes = echo_request(1);
        // claim a gigantic value length for the first element after the group length
        bytes[16..20].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        assert!(matches!(
            parse_command(&bytes),
            Err(DimseError::Truncated(_))
        ));
        assert_eq!(parse_command(&bytes[..5]), Err(DimseError::Truncated(0)));
    }

    #[test]
    fn elements_outside_group_zero_are_refused() {
        let mut bytes = echo_request(1);
        bytes.extend_from_slice(&[0x08, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse_command(&bytes),
            Err(DimseError::NotCommandGroup(0x0008, 0x0018))
        );
    }

    #[test]
    fn missing_command_field_is_reported() {
        let bytes = [0x00, 0x00, 0x10, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00];
        assert_eq!(
            parse_command(&bytes),
            Err(DimseError::Missing("CommandField"))
        );
        let bytes = [
            0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0, 0,
        ];
        assert_eq!(
            parse_command(&bytes),
            Err(DimseError::BadLength("CommandField", 4))
        );
    }
}
