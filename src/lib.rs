//! iguana: a tiny initramfs init that runs OCI containers.
//!
//! The binary (`main.rs`) is PID 1 or a command-line tool; everything it
//! does lives here, one module per boot phase (see ARCHITECTURE.md), so that
//! tests and fuzz targets reach the same code.

pub mod boot;
pub mod child;
pub mod cli;
pub mod clock;
pub mod cmdline;
pub mod container;
pub mod early;
pub mod entropy;
pub mod extension;
pub mod flags;
pub mod fsutil;
pub mod handover;
pub mod image;
pub mod logging;
pub mod machine_id;
pub mod modules;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod net;
pub mod sys;
pub mod trust;
pub mod workflow;
