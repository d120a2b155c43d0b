//! The loader: PE driver images into guest memory with their imports bound to the module crates,
//! and the driver host that runs them (`ica-load` is its command-line front end); [`isolate`] runs
//! a network adapter's driver host as a confined process of its own and restarts it when it fails.

pub mod coverage;
pub mod host;
pub mod image;
pub mod inf;
pub mod install;
pub mod isolate;
pub mod net;
pub mod pe;
pub mod registry;

pub use host::{DriverHost, HostError, LoadError};
