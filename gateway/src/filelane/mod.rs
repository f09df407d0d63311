//! The lanes of "file items": items that arrive whole, are kept byte for byte in a row
//! of their own table until the hub has them, and are sent to the hub one at a time,
//! each as one request with the original bytes as its body. Laboratory messages (HL7,
//! [`crate::lab`]) and ECG files ([`crate::ecg`]) travel this way.
//!
//! What the lanes share lives here: the durable table operations ([`db`]: the item
//! due next, the hub's verdict recorded, quarantine with the hub's reason, the figures
//! `gateway status` shows) and the request with its verdict ([`forward`]). What differs
//! between them is described by [`FileLane`] and its [`Table`]; how items get in
//! (MLLP framing and ACKs, the watched folder and file formats) stays in `lab/` and
//! `ecg/`.

pub mod db;
pub mod forward;

use crate::outbox::QuarantineKind;

/// A lane of file items. The discriminant is its place in [`FileLane::ALL`] (the
/// forwarder keeps per-lane state in arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileLane {
    /// HL7 laboratory messages (`lab_messages`, `POST /ingest/hl7`).
    Lab = 0,
    /// ECG files (`ecg_files`, `POST /ingest/ecg`).
    Ecg = 1,
}

/// How a lane's table is laid out (both follow the same pattern: `id`, `sha256`,
/// `body`, `state`, `attempts`, `next_attempt_at`, `last_error`, `last_error_at`,
/// `received_at`, `delivered_at`, `hub_status`, `patient_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table.
    pub name: &'static str,
    /// The kind of its quarantine rows.
    pub kind: QuarantineKind,
    /// The column naming an item to the operator (MSH-10, file name).
    pub name_column: &'static str,
    /// The column marking an urgent item (0/1).
    pub urgent_column: &'static str,
    /// The column holding the item's format, or `NULL` when the lane has one format.
    pub format_column: &'static str,
    /// What a hub rejection copies into the quarantine row, as
    /// `control_id, sha256, calling_ae, file_name` (in that order, `NULL` where the
    /// table has nothing).
    pub quarantine_columns: &'static str,
    /// Items go strictly in the order received: nothing passes one that waits for its
    /// retry (a corrected lab result must not overtake the one it corrects). Otherwise
    /// urgent first, then oldest, each item on its own timer.
    pub in_order: bool,
    /// The table keeps the hub's exam id of a delivered item.
    pub records_exam: bool,
}

const LAB: Table = Table {
    name: "lab_messages",
    kind: QuarantineKind::Hl7,
    name_column: "control_id",
    urgent_column: "urgent",
    format_column: "NULL",
    quarantine_columns: "control_id, sha256, peer, NULL",
    in_order: true,
    records_exam: false,
};

const ECG: Table = Table {
    name: "ecg_files",
    kind: QuarantineKind::Ecg,
    name_column: "file_name",
    urgent_column: "stat",
    format_column: "format",
    quarantine_columns: "NULL, sha256, NULL, file_name",
    in_order: false,
    records_exam: true,
};

impl FileLane {
    /// Every file lane, in the order the forwarder looks at them.
    pub const ALL: [FileLane; 2] = [FileLane::Lab, FileLane::Ecg];

    /// Its table.
    pub fn table(self) -> &'static Table {
        match self {
            FileLane::Lab => &LAB,
            FileLane::Ecg => &ECG,
        }
    }

    /// What one item is called in logs: `lab message`, `ECG file`.
    pub fn item(self) -> &'static str {
        match self {
            FileLane::Lab => "lab message",
            FileLane::Ecg => "ECG file",
        }
    }

    /// What one item is called in the hub's refusal as recorded: `message`, `file`.
    pub fn noun(self) -> &'static str {
        match self {
            FileLane::Lab => "message",
            FileLane::Ecg => "file",
        }
    }

    /// The queue's name in logs: `lab`, `ECG`.
    pub fn queue(self) -> &'static str {
        match self {
            FileLane::Lab => "lab",
            FileLane::Ecg => "ECG",
        }
    }

    /// The name the hub's failures are logged under.
    pub fn request_name(self) -> &'static str {
        match self {
            FileLane::Lab => "HL7 ingest",
            FileLane::Ecg => "ECG ingest",
        }
    }

    /// The request path (with its query) for an item.
    pub fn hub_path(self, item: &db::DueFile) -> String {
        match self {
            FileLane::Lab => crate::lab::forward::INGEST_PATH.to_string(),
            FileLane::Ecg => crate::ecg::forward::ingest_path(item.urgent, &item.name),
        }
    }

    /// The media type the bytes are sent as.
    pub fn content_type(self) -> &'static str {
        match self {
            FileLane::Lab => crate::lab::forward::CONTENT_TYPE_ER7,
            FileLane::Ecg => crate::ecg::forward::CONTENT_TYPE_OCTETS,
        }
    }

    /// The extension of the quarantine file for an item the hub rejected.
    pub fn quarantine_extension(self, item: &db::DueFile) -> String {
        match self {
            FileLane::Lab => "hl7".to_string(),
            FileLane::Ecg => crate::ecg::quarantine_extension(item.format.as_deref(), &item.name),
        }
    }
}
