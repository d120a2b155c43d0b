//! Linux side of the driver host: device backends (software models, VFIO), upper edges (TAP,
//! audio sinks) and sandboxing. The walking skeleton needs none of it yet: drivers run against the
//! host-side I/O API alone.

pub mod bus;
pub mod device;
pub mod net;
pub mod packet;
pub mod pci;
pub mod rtl8139;
pub mod tap;
