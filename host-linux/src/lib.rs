//! Linux side of the driver host: PCI devices (sysfs facts, a bus of software device models and
//! the models themselves, real functions through VFIO), packet ports and the TAP upper edge, and
//! the bridge that connects a guest network adapter to Linux, and the confinement of a driver-host
//! process.

pub mod bus;
pub mod device;
pub mod models;
pub mod net;
pub mod packet;
pub mod pci;
pub mod rtl8139;
pub mod sandbox;
pub mod tap;
pub mod vfio;
