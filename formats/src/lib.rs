//! Format code shared by the hub, the viewer API and the gateway.
//!
//! Everything here works on readers and byte slices handed in by the caller: no
//! network, no database. Each submodule is one family of formats.

pub mod critical;
pub mod dicom;
pub mod ecg;
pub mod hl7;
pub mod report;
