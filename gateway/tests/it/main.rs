//! Integration tests of the gateway with real DICOM clients (dcmtk's `echoscu` and
//! `storescu`, plus a raw dicom-ul SCU for malformed input), a real SQLite outbox and,
//! where installed, Orthanc as a real STOW-RS server. One test binary, a module per area.

mod binary;
mod forward;
mod helpers;
mod receive;
mod status_cli;
