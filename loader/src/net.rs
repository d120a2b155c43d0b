//! Network adapters: an NDIS miniport running in a driver host, bound to a PCI device (a software
//! model or a real function through VFIO), as the Linux side's [`NetMiniport`]. Starting one is
//! what NDIS does on Windows after the miniport's DriverEntry registered: the bus's resources
//! become the adapter's, MiniportInitialize runs, and from then on the host loop hands it frames,
//! delivers its interrupts (and tells the device when each was handled) and collects indications.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use host_linux::bus::{PciResources, SharedPciBus};
use host_linux::device::PciDevice;
use host_linux::net::{NetError, NetEvent, NetMiniport};
use ndis::{AdapterEvent, AdapterSetup, AdapterStats, BusConfig, RequestResult, Resource};
use ntoskrnl::pnp::Driver;

use crate::host::DriverFile;
use crate::{DriverHost, HostError};

/// How long a pended OID request may take before the host gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Interrupt deliveries per service() call before a line that stays asserted is an interrupt
/// storm.
const MAX_INTERRUPTS_PER_SERVICE: usize = 256;

/// OIDs the host queries (NDIS 5.1 and 6 share them).
pub mod oid {
    pub const GEN_SUPPORTED_LIST: u32 = 0x0001_0101;
    pub const GEN_MAXIMUM_FRAME_SIZE: u32 = 0x0001_0106;
    pub const GEN_LINK_SPEED: u32 = 0x0001_0107;
    pub const GEN_VENDOR_DESCRIPTION: u32 = 0x0001_010D;
    pub const GEN_CURRENT_PACKET_FILTER: u32 = 0x0001_010E;
    pub const GEN_MEDIA_CONNECT_STATUS: u32 = 0x0001_0114;
    pub const GEN_XMIT_OK: u32 = 0x0002_0101;
    pub const GEN_RCV_OK: u32 = 0x0002_0102;
    pub const GEN_XMIT_ERROR: u32 = 0x0002_0103;
    pub const GEN_RCV_ERROR: u32 = 0x0002_0104;
    pub const GEN_RCV_NO_BUFFER: u32 = 0x0002_0105;
    pub const P802_3_PERMANENT_ADDRESS: u32 = 0x0101_0101;
    pub const P802_3_CURRENT_ADDRESS: u32 = 0x0101_0102;
    pub const P802_3_MULTICAST_LIST: u32 = 0x0101_0103;
}

/// NDIS_PACKET_TYPE_DIRECTED | MULTICAST | BROADCAST: what a protocol such as TCP/IP sets.
pub const PACKET_FILTER_DEFAULT: u32 = 0x01 | 0x02 | 0x08;

/// PCI configuration space of one bus slot, for NdisReadPciSlotInformation / NdisMGetBusData.
struct SlotConfig {
    bus: SharedPciBus,
    slot: usize,
}

impl BusConfig for SlotConfig {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> usize {
        let n = buf.len().min(256usize.saturating_sub(offset as usize));
        self.bus.with(|b| {
            for (i, byte) in buf[..n].iter_mut().enumerate() {
                *byte = b.config_read(self.slot, (offset as usize + i) as u16, 1) as u8;
            }
        });
        n
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> usize {
        let n = data.len().min(256usize.saturating_sub(offset as usize));
        self.bus.with(|b| {
            for (i, byte) in data[..n].iter().enumerate() {
                b.config_write(self.slot, (offset as usize + i) as u16, 1, u32::from(*byte));
            }
        });
        n
    }
}

/// The resources a PCI device was given, as the bus driver reports them.
pub fn pci_resources(res: &PciResources) -> Vec<Resource> {
    let mut out: Vec<Resource> = res
        .io_ranges()
        .map(|(start, len)| Resource::Port {
            start: u64::from(start),
            length: u32::from(len),
        })
        .collect();
    out.extend(res.mmio_ranges().map(|(start, len)| Resource::Memory {
        start,
        length: len as u32,
    }));
    out.push(Resource::Interrupt {
        level: res.irq,
        vector: res.irq,
        affinity: 1,
    });
    out
}

/// What the CLI shows about an adapter (all from OID queries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicInfo {
    pub description: String,
    pub permanent_address: [u8; 6],
    pub current_address: [u8; 6],
    pub link_up: bool,
    /// Link speed in bit/s.
    pub link_speed: u64,
    /// Largest payload (OID_GEN_MAXIMUM_FRAME_SIZE: the MTU).
    pub mtu: u32,
    pub xmit_ok: u64,
    pub rcv_ok: u64,
    pub xmit_error: u64,
    pub rcv_error: u64,
    pub rcv_no_buffer: u64,
}

/// Formats a MAC address as Linux does.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An NDIS miniport adapter (NDIS 5 or NDIS 6) running on a PCI device model, or virtual.
pub struct NetAdapter {
    /// The driver host (kernel, drivers, PCI bus).
    pub host: DriverHost,
    /// The miniport driver.
    pub driver: Driver,
    /// The adapter handle (NDIS_MINIPORT_BLOCK).
    pub adapter: u64,
    image: String,
    wake: Vec<RawFd>,
    /// What the miniport indicated and [`NetMiniport::service`] has not handed out yet (also what
    /// it indicated while the host waited for a pended OID request).
    backlog: Vec<AdapterEvent>,
}

impl NetAdapter {
    /// Loads a miniport, plugs `device` into the host's PCI bus and initializes the adapter on it.
    /// `config_key` is the registry key NdisOpenConfiguration reads (the adapter's driver key, or
    /// the service's Parameters key when nothing was installed); `wake` lists fds whose
    /// readability means the device model has input (e.g. its wire TAP); the device's own wake fd
    /// (a VFIO interrupt eventfd) is added to them.
    pub fn start(
        host: DriverHost,
        driver_path: &Path,
        device: Box<dyn PciDevice>,
        config_key: Option<&str>,
        wake: Vec<RawFd>,
    ) -> Result<NetAdapter, HostError> {
        let file = DriverFile::read(driver_path)?;
        Self::start_file(host, &file, Some(device), config_key, wake)
    }

    /// Loads a virtual (hardware-less) miniport and initializes an adapter with no resources and
    /// no bus, as a root-enumerated virtual NIC is started. `config_key` as for
    /// [`start`](Self::start).
    pub fn start_virtual(
        host: DriverHost,
        driver_path: &Path,
        config_key: Option<&str>,
    ) -> Result<NetAdapter, HostError> {
        let file = DriverFile::read(driver_path)?;
        Self::start_file(host, &file, None, config_key, Vec::new())
    }

    /// [`start`](Self::start) (with a device) or [`start_virtual`](Self::start_virtual)
    /// (without) of a driver file already read.
    pub fn start_file(
        mut host: DriverHost,
        file: &DriverFile,
        device: Option<Box<dyn PciDevice>>,
        config_key: Option<&str>,
        wake: Vec<RawFd>,
    ) -> Result<NetAdapter, HostError> {
        let driver = host.load_driver_file(file)?;
        let registered =
            ndis::registered_miniport(&mut host.k, driver.object).ok_or_else(|| {
                HostError::DriverFailed {
                    driver: driver.service.clone(),
                    what: "DriverEntry (no NDIS miniport registered)",
                    status: ndis::NDIS_STATUS_FAILURE,
                }
            })?;
        let config_key = match config_key {
            Some(k) => k.to_string(),
            None => format!(
                r"{}\Parameters",
                registered.registry_path.trim_end_matches('\\')
            ),
        };
        let setup = match device {
            Some(device) => {
                let res = host.attach_pci_device(device);
                AdapterSetup {
                    name: format!("{} (PCI slot {})", driver.service, res.slot),
                    config_key,
                    resources: pci_resources(&res),
                    bus: Some(Box::new(SlotConfig {
                        bus: host.pci_bus().clone(),
                        slot: res.slot,
                    })),
                }
            }
            None => AdapterSetup {
                name: format!("{} (virtual)", driver.service),
                config_key,
                resources: Vec::new(),
                bus: None,
            },
        };
        let image = registered.image;
        let adapter = match ndis::miniport::initialize(&mut host.k, registered.handle, setup) {
            Ok(Ok(a)) => a,
            Ok(Err(status)) => {
                return Err(HostError::DriverFailed {
                    driver: driver.service.clone(),
                    what: "MiniportInitialize",
                    status,
                })
            }
            Err(e) => return Err(host.fail(e)),
        };
        let mut nic = NetAdapter {
            host,
            driver,
            adapter,
            image,
            wake,
            backlog: Vec::new(),
        };
        // What a protocol binding does first: receive directed, multicast and broadcast frames.
        let r = nic.set(
            oid::GEN_CURRENT_PACKET_FILTER,
            &PACKET_FILTER_DEFAULT.to_le_bytes(),
        )?;
        if r.status != ndis::NDIS_STATUS_SUCCESS {
            tracing::warn!(target: "ica::net", "setting the packet filter failed: {:#x}", r.status);
        }
        Ok(nic)
    }

    /// Waits for a pended request, servicing the adapter meanwhile (what it indicates is kept for
    /// the next [`NetMiniport::service`]).
    fn finish(&mut self, r: Option<RequestResult>) -> Result<RequestResult, HostError> {
        if let Some(r) = r {
            return Ok(r);
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            self.pump()?;
            if let Some(r) = ndis::miniport::completed_request(&mut self.host.k, self.adapter) {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(HostError::DriverFailed {
                    driver: self.driver.service.clone(),
                    what: "OID request (never completed)",
                    status: ndis::miniport::NDIS_STATUS_PENDING,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// OID query with a buffer of `len` bytes.
    pub fn query(&mut self, oid: u32, len: u32) -> Result<RequestResult, HostError> {
        let r = ndis::miniport::query(&mut self.host.k, self.adapter, oid, len)
            .map_err(|e| self.host.fail(e))?;
        self.finish(r)
    }

    /// OID set.
    pub fn set(&mut self, oid: u32, data: &[u8]) -> Result<RequestResult, HostError> {
        let r = ndis::miniport::set(&mut self.host.k, self.adapter, oid, data)
            .map_err(|e| self.host.fail(e))?;
        self.finish(r)
    }

    fn query_u64(&mut self, oid: u32) -> Result<u64, HostError> {
        let r = self.query(oid, 8)?;
        let mut b = [0u8; 8];
        let n = r.data.len().min(8);
        b[..n].copy_from_slice(&r.data[..n]);
        Ok(u64::from_le_bytes(b))
    }

    fn query_mac(&mut self, oid: u32) -> Result<[u8; 6], HostError> {
        let r = self.query(oid, 6)?;
        let mut mac = [0u8; 6];
        if r.data.len() == 6 {
            mac.copy_from_slice(&r.data);
        }
        Ok(mac)
    }

    /// MAC addresses, link state, MTU, speed and statistics, from OID queries.
    pub fn info(&mut self) -> Result<NicInfo, HostError> {
        let d = self.query(oid::GEN_VENDOR_DESCRIPTION, 256)?.data;
        let description = String::from_utf8_lossy(&d)
            .trim_end_matches('\0')
            .to_string();
        Ok(NicInfo {
            description,
            permanent_address: self.query_mac(oid::P802_3_PERMANENT_ADDRESS)?,
            current_address: self.query_mac(oid::P802_3_CURRENT_ADDRESS)?,
            // NdisMediaStateConnected = 0.
            link_up: self.query_u64(oid::GEN_MEDIA_CONNECT_STATUS)? == 0,
            link_speed: self.query_u64(oid::GEN_LINK_SPEED)? * 100,
            mtu: self.query_u64(oid::GEN_MAXIMUM_FRAME_SIZE)? as u32,
            xmit_ok: self.query_u64(oid::GEN_XMIT_OK)?,
            rcv_ok: self.query_u64(oid::GEN_RCV_OK)?,
            xmit_error: self.query_u64(oid::GEN_XMIT_ERROR)?,
            rcv_error: self.query_u64(oid::GEN_RCV_ERROR)?,
            rcv_no_buffer: self.query_u64(oid::GEN_RCV_NO_BUFFER)?,
        })
    }

    /// The host-side counters of the adapter's data path.
    pub fn stats(&mut self) -> AdapterStats {
        ndis::miniport::stats(&mut self.host.k, self.adapter).unwrap_or_default()
    }

    /// One round of work: device DMA, interrupts (ISR + DPC), timers, CheckForHang, returns;
    /// appends the miniport's indications to the backlog.
    fn pump(&mut self) -> Result<(), HostError> {
        for _ in 0..MAX_INTERRUPTS_PER_SERVICE {
            let lines = self.host.poll_pci();
            if lines.is_empty() {
                break;
            }
            let mut claimed = false;
            for line in lines {
                claimed |= ndis::interrupt::deliver(&mut self.host.k, line)
                    .map_err(|e| self.host.fail(e))?;
                // ISR and DPC ran: a VFIO device unmasks its line (it fires again if still
                // asserted).
                self.host.pci_bus().end_of_interrupt(line);
            }
            if !claimed {
                tracing::warn!(target: "ica::net", "interrupt asserted but no ISR claimed it");
                break;
            }
        }
        ndis::miniport::periodic(&mut self.host.k, self.adapter).map_err(|e| self.host.fail(e))?;
        let events = ndis::miniport::take_events(&mut self.host.k, self.adapter);
        self.backlog.extend(events);
        Ok(())
    }

    /// Halts the adapter and unloads the miniport; returns what the driver failed to release
    /// (resources NDIS had to reclaim, pool still allocated by the image), empty when clean.
    /// With the verifier on: everything it found (those included), one line each.
    pub fn stop(mut self) -> Result<Vec<String>, HostError> {
        let mut findings =
            ndis::miniport::halt(&mut self.host.k, self.adapter).map_err(|e| self.host.fail(e))?;
        self.host.unload_driver(&self.driver)?;
        if self.host.k.verifier.enabled() {
            let found = self.host.k.verifier.take_findings();
            return Ok(found.iter().map(ToString::to_string).collect());
        }
        let leaked = self.host.k.pool.bytes_owned_by(&self.image);
        if leaked != 0 {
            findings.push(format!(
                "{}: {leaked} bytes of pool still allocated after unload",
                self.image
            ));
        }
        Ok(findings)
    }
}

fn net_error(e: HostError) -> NetError {
    NetError {
        message: e.to_string(),
    }
}

impl NetMiniport for NetAdapter {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        ndis::miniport::send(&mut self.host.k, self.adapter, frames)
            .map_err(|e| net_error(self.host.fail(e)))
    }

    /// Services the adapter; an adapter its miniport removed (NdisMRemoveMiniport) is an error:
    /// the caller stops it (halt and unload), as Windows removes the device.
    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        self.pump().map_err(net_error)?;
        let mut removed = false;
        events.extend(self.backlog.drain(..).filter_map(|e| match e {
            AdapterEvent::Receive(f) => Some(NetEvent::Receive(f)),
            AdapterEvent::Link(up) => Some(NetEvent::Link(up)),
            AdapterEvent::Status(_) => None,
            AdapterEvent::Removed => {
                removed = true;
                None
            }
        }));
        if removed {
            return Err(NetError::new(format!(
                "{}: the miniport found its adapter unrecoverable and removed it (NdisMRemoveMiniport)",
                self.image
            )));
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        // The next NDIS (kernel) timer; CheckForHang runs every few seconds and the bridge's poll
        // cap covers it.
        ndis::timer::next_deadline(&self.host.k)
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        let mut fds = self.wake.clone();
        fds.extend(self.host.pci_bus().with(|b| b.wake_fds()));
        fds
    }
}
