//! Integration tests of the gateway with real DICOM clients (dcmtk's `echoscu` and
//! `storescu`, plus a raw dicom-ul SCU for malformed input), a real SQLite outbox and,
//! where installed, Orthanc as a real STOW-RS server; a minimal TLS hub stand-in for the
//! gateway key and TLS trust; a stand-in for the hub's report delivery feed; the `hl7`
//! Python package's `mllp_send` as a laboratory system with a stand-in for the hub's HL7
//! ingest; the shared ECG samples imported through the watched folder and `gateway import`
//! with a stand-in for the hub's ECG ingest. One test binary, a module per area.

mod binary;
mod ecg;
mod file_lanes;
mod forward;
mod helpers;
mod lab;
mod receive;
mod report_hub;
mod reports;
mod security;
mod status_cli;
mod tls_support;
