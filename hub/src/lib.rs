//! The county hub: receives instances from township gateways (DICOMweb STOW-RS), keeps
//! the originals and the index, and turns complete studies into exams for reading.

pub mod admin;
pub mod app;
pub mod config;
pub mod delivery;
pub mod ecg;
pub mod ingest;
pub mod lab;
pub mod reports;
pub mod signing;
pub mod stow;
pub mod tls;
pub mod turnaround;
pub mod worklist;

pub use app::{build_server, HubState};
pub use config::HubConfig;
