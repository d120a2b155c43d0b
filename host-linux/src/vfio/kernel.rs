//! The kernel's vfio-pci as a [`VfioBackend`]: opening a function through the container / group /
//! device file API (type1 IOMMU, or no-IOMMU mode), its regions (mmap'ed where VFIO allows it,
//! pread/pwrite otherwise), INTx on an eventfd, and the IOMMU mapping of guest memory.
//!
//! Only the sysfs checks and the steps up to opening `/dev/vfio/vfio` run on machines without
//! VFIO (the tests cover those); the rest needs a function bound to vfio-pci and comes with the
//! real-hardware tests.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::uapi::*;
use super::{bind_instructions, Paths, VfioBackend, VfioError, VFIO_DRIVER};
use crate::device::Dma;

fn check(rc: libc::c_int) -> io::Result<i32> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `ioctl(fd, request, arg)` with a structure; the result or the OS error.
///
/// # Safety
/// `arg` must point to a live value of the layout `request` expects (with its `argsz` set).
unsafe fn ioctl_ptr<T>(fd: RawFd, request: u64, arg: *mut T) -> io::Result<i32> {
    check(libc::ioctl(fd, request as _, arg))
}

/// `ioctl(fd, request, arg)` with an integer argument (or none: 0).
///
/// # Safety
/// `request` must take an integer argument or none.
unsafe fn ioctl_val(fd: RawFd, request: u64, arg: libc::c_ulong) -> io::Result<i32> {
    check(libc::ioctl(fd, request as _, arg))
}

/// An mmap'ed part of a region.
struct Mapping {
    /// Offset inside the region.
    offset: u64,
    len: u64,
    ptr: *mut u8,
}

/// One region of the device file.
struct Region {
    size: u64,
    /// Offset of the region in the device file.
    offset: u64,
    maps: Vec<Mapping>,
}

/// A function opened through the kernel's vfio-pci. Dropping it unmaps guest memory from the
/// IOMMU, turns INTx signalling off and closes the device, group and container (in that order).
pub struct KernelVfio {
    address: String,
    /// Regions 0..=7 (BARs, ROM, config).
    regions: Vec<Region>,
    /// The INTx eventfd, when the function has an interrupt pin.
    intx: Option<OwnedFd>,
    /// The IOMMU mapping (iova, size).
    dma: Option<(u64, u64)>,
    /// No-IOMMU mode: VFIO without DMA translation.
    noiommu: bool,
    device: File,
    _group: File,
    container: File,
}

/// Whether `address` is `DDDD:BB:DD.F` (hex domain, bus, device; function 0..=7).
fn valid_address(address: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let p: Vec<&str> = address.split(':').collect();
    if p.len() != 3 || !hex(p[0], 4) || !hex(p[1], 2) {
        return false;
    }
    match p[2].split_once('.') {
        Some((d, f)) => {
            hex(d, 2)
                && u8::from_str_radix(d, 16).is_ok_and(|d| d < 32)
                && f.len() == 1
                && f.as_bytes()[0].is_ascii_digit()
                && f.as_bytes()[0] <= b'7'
        }
        None => false,
    }
}

/// The final component of a symlink's target (`../../bus/pci/drivers/e1000` -> `e1000`).
fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Opens a VFIO character device, explaining the usual failures.
fn open_dev(path: &Path, what: &str) -> Result<File, VfioError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| {
            let p = path.display();
            VfioError(match e.kind() {
                io::ErrorKind::NotFound => {
                    format!("{p}: does not exist ({what}; load the driver: modprobe vfio-pci)")
                }
                io::ErrorKind::PermissionDenied => format!(
                    "{p}: permission denied (run as root, or give this user the VFIO device files)"
                ),
                _ if e.raw_os_error() == Some(libc::EBUSY) => {
                    format!("{p}: busy (another process, e.g. a VM, has this IOMMU group open)")
                }
                _ => format!("{p}: cannot open: {e}"),
            })
        })
}

/// Devices of an IOMMU group that keep it from being viable: bound to a driver other than
/// vfio-pci, pci-stub or pcieport (bridges).
fn group_blockers(group_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(group_dir.join("devices")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let driver = link_name(&e.path().join("driver"))?;
            (!matches!(driver.as_str(), VFIO_DRIVER | "pci-stub" | "pcieport"))
                .then(|| format!("{name} (driver: {driver})"))
        })
        .collect();
    out.sort();
    out
}

impl KernelVfio {
    /// Opens function `address` (see [`super::VfioPciDevice::open`]).
    pub fn open(paths: &Paths, address: &str) -> Result<KernelVfio, VfioError> {
        let err = |m: String| VfioError(format!("{address}: {m}"));
        if !valid_address(address) {
            return Err(err(
                "not a PCI address (expected DDDD:BB:DD.F, as in /sys/bus/pci/devices)".into(),
            ));
        }
        let dev_dir = paths.sysfs_pci.join(address);
        if !dev_dir.exists() {
            return Err(err(format!(
                "no such PCI function ({} does not exist)",
                dev_dir.display()
            )));
        }
        let driver = link_name(&dev_dir.join("driver"));
        if driver.as_deref() != Some(VFIO_DRIVER) {
            return Err(err(format!(
                "not bound to vfio-pci ({}); bind it with: {}",
                driver
                    .as_deref()
                    .map(|d| format!("driver: {d}"))
                    .unwrap_or_else(|| "no driver".into()),
                bind_instructions(address, driver.as_deref())
            )));
        }
        let group_link = dev_dir.join("iommu_group");
        let group = link_name(&group_link).ok_or_else(|| {
            err(format!(
                "has no IOMMU group ({} missing): turn the IOMMU on (intel_iommu=on or \
                 amd_iommu=on on the kernel command line), or load vfio with \
                 enable_unsafe_noiommu_mode=1 before binding",
                group_link.display()
            ))
        })?;
        let container_path = paths.dev_vfio.join("vfio");
        let container = open_dev(&container_path, "the VFIO container device")?;
        let cpath = container_path.display().to_string();
        // SAFETY: argument-less ioctl on our container fd.
        let version = unsafe { ioctl_val(container.as_raw_fd(), VFIO_GET_API_VERSION, 0) }
            .map_err(|e| VfioError(format!("{cpath}: VFIO_GET_API_VERSION: {e}")))?;
        if version != VFIO_API_VERSION {
            return Err(VfioError(format!(
                "{cpath}: VFIO API version {version}, ICA speaks version {VFIO_API_VERSION}"
            )));
        }
        let type1_path = paths.dev_vfio.join(&group);
        let noiommu_path = paths.dev_vfio.join(format!("noiommu-{group}"));
        let noiommu = !type1_path.exists() && noiommu_path.exists();
        let has = |ext: u64| {
            // SAFETY: VFIO_CHECK_EXTENSION takes the extension number by value.
            unsafe {
                ioctl_val(
                    container.as_raw_fd(),
                    VFIO_CHECK_EXTENSION,
                    ext as libc::c_ulong,
                )
            }
            .is_ok_and(|r| r > 0)
        };
        let iommu = if noiommu {
            if !has(VFIO_NOIOMMU_IOMMU) {
                return Err(VfioError(format!(
                    "{cpath}: IOMMU group {group} is a no-IOMMU group, but the container does \
                     not offer no-IOMMU mode"
                )));
            }
            VFIO_NOIOMMU_IOMMU
        } else if has(VFIO_TYPE1V2_IOMMU) {
            VFIO_TYPE1V2_IOMMU
        } else if has(VFIO_TYPE1_IOMMU) {
            VFIO_TYPE1_IOMMU
        } else {
            return Err(VfioError(format!(
                "{cpath}: no type1 IOMMU support (the vfio_iommu_type1 module is not loaded?)"
            )));
        };
        let group_path = if noiommu { noiommu_path } else { type1_path };
        let group_file = open_dev(&group_path, &format!("IOMMU group {group}"))?;
        let gpath = group_path.display().to_string();
        let mut status = vfio_group_status {
            argsz: argsz::<vfio_group_status>(),
            flags: 0,
        };
        // SAFETY: a live vfio_group_status with argsz set.
        unsafe { ioctl_ptr(group_file.as_raw_fd(), VFIO_GROUP_GET_STATUS, &mut status) }
            .map_err(|e| VfioError(format!("{gpath}: VFIO_GROUP_GET_STATUS: {e}")))?;
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            let blockers = group_blockers(&group_link);
            return Err(VfioError(format!(
                "IOMMU group {group} is not viable: every device in it must be bound to vfio-pci \
                 (or have no driver){}",
                if blockers.is_empty() {
                    String::new()
                } else {
                    format!("; bound elsewhere: {}", blockers.join(", "))
                }
            )));
        }
        let mut cfd: RawFd = container.as_raw_fd();
        // SAFETY: VFIO_GROUP_SET_CONTAINER reads the container fd through the pointer.
        unsafe { ioctl_ptr(group_file.as_raw_fd(), VFIO_GROUP_SET_CONTAINER, &mut cfd) }
            .map_err(|e| VfioError(format!("{gpath}: VFIO_GROUP_SET_CONTAINER: {e}")))?;
        // SAFETY: VFIO_SET_IOMMU takes the IOMMU model by value.
        unsafe {
            ioctl_val(
                container.as_raw_fd(),
                VFIO_SET_IOMMU,
                iommu as libc::c_ulong,
            )
        }
        .map_err(|e| VfioError(format!("{cpath}: VFIO_SET_IOMMU({iommu}): {e}")))?;
        let name = CString::new(address).map_err(|_| err("bad address".into()))?;
        let group_fd = group_file.as_raw_fd();
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD reads a NUL-terminated device name.
        let fd = unsafe { ioctl_ptr(group_fd, VFIO_GROUP_GET_DEVICE_FD, name.as_ptr().cast_mut()) }
            .map_err(|e| err(format!("VFIO_GROUP_GET_DEVICE_FD on {gpath}: {e}")))?;
        // SAFETY: the ioctl returned a new descriptor that nothing else owns.
        let device = unsafe { File::from_raw_fd(fd) };
        let mut dev = KernelVfio {
            address: address.to_string(),
            regions: Vec::new(),
            intx: None,
            dma: None,
            noiommu,
            device,
            _group: group_file,
            container,
        };
        dev.setup().map_err(err)?;
        if noiommu {
            tracing::warn!(
                "{address}: VFIO runs in no-IOMMU mode: registers and interrupts work, but the \
                 device's DMA would not be translated, so bus mastering stays off"
            );
        }
        Ok(dev)
    }

    /// Device info, reset, regions and INTx.
    fn setup(&mut self) -> Result<(), String> {
        let fd = self.device.as_raw_fd();
        let mut info = vfio_device_info {
            argsz: argsz::<vfio_device_info>(),
            ..Default::default()
        };
        // SAFETY: a live vfio_device_info with argsz set.
        unsafe { ioctl_ptr(fd, VFIO_DEVICE_GET_INFO, &mut info) }
            .map_err(|e| format!("VFIO_DEVICE_GET_INFO: {e}"))?;
        if info.flags & VFIO_DEVICE_FLAGS_PCI == 0
            || info.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX
        {
            return Err(format!(
                "VFIO does not present it as a PCI device (flags {:#x}, {} regions)",
                info.flags, info.num_regions
            ));
        }
        if info.flags & VFIO_DEVICE_FLAGS_RESET != 0 {
            // SAFETY: argument-less ioctl on our device fd.
            if let Err(e) = unsafe { ioctl_val(fd, VFIO_DEVICE_RESET, 0) } {
                tracing::warn!("{}: VFIO_DEVICE_RESET failed: {e}", self.address);
            }
        }
        for index in 0..=VFIO_PCI_CONFIG_REGION_INDEX {
            let region = self
                .region(index)
                .map_err(|e| format!("VFIO_DEVICE_GET_REGION_INFO({index}): {e}"))?;
            self.regions.push(region);
        }
        self.setup_intx()
    }

    /// Region `index`: its info, and mmaps of the parts VFIO lets us map (a BAR region whole,
    /// or the areas of its sparse-mmap capability, which leave out e.g. an MSI-X table).
    fn region(&self, index: u32) -> io::Result<Region> {
        let fd = self.device.as_raw_fd();
        let head = argsz::<vfio_region_info>() as usize;
        let mut buf = vec![0u64; head / 8];
        let info = loop {
            let argsz = (buf.len() * 8) as u32;
            let mut want = vfio_region_info {
                argsz,
                index,
                ..Default::default()
            };
            // SAFETY: `buf` holds at least a vfio_region_info; the kernel writes at most argsz
            // bytes.
            unsafe {
                std::ptr::write(buf.as_mut_ptr().cast::<vfio_region_info>(), want);
                ioctl_ptr(fd, VFIO_DEVICE_GET_REGION_INFO, buf.as_mut_ptr())?;
                want = std::ptr::read(buf.as_ptr().cast::<vfio_region_info>());
            }
            if want.argsz as usize > buf.len() * 8 {
                buf.resize((want.argsz as usize).div_ceil(8), 0);
                continue;
            }
            break want;
        };
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut region = Region {
            size: info.size,
            offset: info.offset,
            maps: Vec::new(),
        };
        if index > 5 || info.size == 0 || info.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Ok(region);
        }
        let mut areas = vec![(0, info.size)];
        if info.flags & VFIO_REGION_INFO_FLAG_CAPS != 0 {
            if let Some(sparse) = sparse_areas(&bytes, info.cap_offset as usize) {
                areas = sparse;
            }
        }
        for (offset, len) in areas {
            if len == 0 {
                continue;
            }
            // SAFETY: a shared mapping of the device file at the region's offset; the result is
            // checked, and the mapping is owned by `region` (unmapped in Drop).
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    (info.offset + offset) as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                tracing::debug!(
                    "{}: mmap of region {index} at {offset:#x} failed ({}); using pread/pwrite",
                    self.address,
                    io::Error::last_os_error()
                );
                continue;
            }
            region.maps.push(Mapping {
                offset,
                len,
                ptr: ptr.cast(),
            });
        }
        Ok(region)
    }

    /// Routes INTx to a new eventfd (functions without an interrupt pin have no INTx).
    fn setup_intx(&mut self) -> Result<(), String> {
        let fd = self.device.as_raw_fd();
        let mut info = vfio_irq_info {
            argsz: argsz::<vfio_irq_info>(),
            index: VFIO_PCI_INTX_IRQ_INDEX,
            ..Default::default()
        };
        // SAFETY: a live vfio_irq_info with argsz set.
        unsafe { ioctl_ptr(fd, VFIO_DEVICE_GET_IRQ_INFO, &mut info) }
            .map_err(|e| format!("VFIO_DEVICE_GET_IRQ_INFO(INTx): {e}"))?;
        if info.count == 0 {
            return Ok(());
        }
        if info.flags & VFIO_IRQ_INFO_EVENTFD == 0 || info.flags & VFIO_IRQ_INFO_MASKABLE == 0 {
            return Err(format!(
                "INTx cannot be signalled through an eventfd (flags {:#x})",
                info.flags
            ));
        }
        // SAFETY: plain eventfd(2) call; the result is checked before being wrapped.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(format!("eventfd: {}", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let mut set = vfio_irq_set_eventfd {
            set: vfio_irq_set {
                argsz: argsz::<vfio_irq_set_eventfd>(),
                flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                index: VFIO_PCI_INTX_IRQ_INDEX,
                start: 0,
                count: 1,
            },
            fd: efd.as_raw_fd(),
        };
        // SAFETY: a live vfio_irq_set followed by one eventfd, argsz covering both.
        unsafe { ioctl_ptr(fd, VFIO_DEVICE_SET_IRQS, &mut set) }
            .map_err(|e| format!("VFIO_DEVICE_SET_IRQS(INTx eventfd): {e}"))?;
        self.intx = Some(efd);
        Ok(())
    }

    /// INTx signalling with `flags` and no data (unmask; trigger with count 0 turns it off).
    fn irq_action(&self, flags: u32, count: u32) -> io::Result<()> {
        let mut set = vfio_irq_set {
            argsz: argsz::<vfio_irq_set>(),
            flags: VFIO_IRQ_SET_DATA_NONE | flags,
            index: VFIO_PCI_INTX_IRQ_INDEX,
            start: 0,
            count,
        };
        // SAFETY: a live vfio_irq_set with argsz set and no data.
        unsafe { ioctl_ptr(self.device.as_raw_fd(), VFIO_DEVICE_SET_IRQS, &mut set) }.map(drop)
    }

    /// The mmap'ed pointer for `len` bytes at `offset` of region `index`, if mapped and aligned.
    fn mapped(&self, index: u32, offset: u64, len: usize) -> Option<*mut u8> {
        let region = self.regions.get(index as usize)?;
        if !offset.is_multiple_of(len as u64) {
            return None;
        }
        region
            .maps
            .iter()
            .find(|m| offset >= m.offset && offset + len as u64 <= m.offset + m.len)
            .map(|m| m.ptr.wrapping_add((offset - m.offset) as usize))
    }

    /// The device-file offset of `len` bytes at `offset` of region `index`, if inside it.
    fn file_offset(&self, index: u32, offset: u64, len: usize) -> io::Result<u64> {
        let region = self
            .regions
            .get(index as usize)
            .filter(|r| offset + len as u64 <= r.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(region.offset + offset)
    }
}

/// The sparse-mmap areas in a region info's capability chain (`cap_offset`: first capability).
fn sparse_areas(info: &[u8], mut cap: usize) -> Option<Vec<(u64, u64)>> {
    let u32_at = |o: usize| Some(u32::from_le_bytes(info.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(info.get(o..o + 8)?.try_into().ok()?));
    let mut hops = 0;
    while cap != 0 && hops < 16 {
        let id = u16::from_le_bytes(info.get(cap..cap + 2)?.try_into().ok()?);
        if id == VFIO_REGION_INFO_CAP_SPARSE_MMAP {
            let n = u32_at(cap + 8)? as usize;
            let first = cap + std::mem::size_of::<vfio_region_info_cap_sparse_mmap>();
            return (0..n)
                .map(|i| {
                    let a = first + i * std::mem::size_of::<vfio_region_sparse_mmap_area>();
                    Some((u64_at(a)?, u64_at(a + 8)?))
                })
                .collect();
        }
        cap = u32_at(cap + 4)? as usize;
        hops += 1;
    }
    None
}

impl VfioBackend for KernelVfio {
    fn region_size(&self, index: u32) -> u64 {
        self.regions.get(index as usize).map_or(0, |r| r.size)
    }

    fn read(&mut self, index: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(p) = self.mapped(index, offset, buf.len()) {
            // SAFETY: `p` points at `buf.len()` aligned bytes inside a live mapping of the
            // region; device registers are read with one volatile access of their width.
            unsafe {
                match buf.len() {
                    1 => buf[0] = p.read_volatile(),
                    2 => buf.copy_from_slice(&p.cast::<u16>().read_volatile().to_le_bytes()),
                    4 => buf.copy_from_slice(&p.cast::<u32>().read_volatile().to_le_bytes()),
                    8 => buf.copy_from_slice(&p.cast::<u64>().read_volatile().to_le_bytes()),
                    _ => return Err(io::ErrorKind::InvalidInput.into()),
                }
            }
            return Ok(());
        }
        let at = self.file_offset(index, offset, buf.len())?;
        self.device.read_exact_at(buf, at)
    }

    fn write(&mut self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Some(p) = self.mapped(index, offset, data.len()) {
            let word = |n: usize| {
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(data);
                u64::from_le_bytes(b)
            };
            // SAFETY: as in `read`: an aligned access of its width inside the live mapping.
            unsafe {
                match data.len() {
                    1 => p.write_volatile(data[0]),
                    2 => p.cast::<u16>().write_volatile(word(2) as u16),
                    4 => p.cast::<u32>().write_volatile(word(4) as u32),
                    8 => p.cast::<u64>().write_volatile(word(8)),
                    _ => return Err(io::ErrorKind::InvalidInput.into()),
                }
            }
            return Ok(());
        }
        let at = self.file_offset(index, offset, data.len())?;
        self.device.write_all_at(data, at)
    }

    fn intx_fired(&self) -> bool {
        let Some(fd) = &self.intx else {
            return false;
        };
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut count as *mut u64).cast::<libc::c_void>(),
                8,
            )
        };
        n == 8 && count > 0
    }

    fn unmask_intx(&mut self) -> io::Result<()> {
        self.irq_action(VFIO_IRQ_SET_ACTION_UNMASK, 1)
    }

    fn wake_fd(&self) -> Option<RawFd> {
        self.intx.as_ref().map(|fd| fd.as_raw_fd())
    }

    fn map_dma(&mut self, window: &dbt::DmaWindow) -> Result<(), String> {
        if self.noiommu {
            return Err(
                "VFIO runs in no-IOMMU mode: nothing would translate the device's DMA \
                 to guest memory, so ICA cannot let it master the bus (this needs an IOMMU: \
                 intel_iommu=on or amd_iommu=on)"
                    .into(),
            );
        }
        let mut map = vfio_iommu_type1_dma_map {
            argsz: argsz::<vfio_iommu_type1_dma_map>(),
            flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: window.host_addr() as u64,
            iova: window.phys(),
            size: window.size(),
        };
        // SAFETY: a live vfio_iommu_type1_dma_map; the window stays mapped in this process for
        // the life of its GuestMemory and its pages are never discarded (see dma_window).
        unsafe { ioctl_ptr(self.container.as_raw_fd(), VFIO_IOMMU_MAP_DMA, &mut map) }.map_err(
            |e| {
                let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
                    " (the locked-memory limit, ulimit -l, must cover it; root has no limit)"
                } else {
                    ""
                };
                format!(
                    "VFIO_IOMMU_MAP_DMA of guest memory ({} MiB at IO address {:#x}): {e}{hint}",
                    window.size() >> 20,
                    window.phys()
                )
            },
        )?;
        self.dma = Some((window.phys(), window.size()));
        Ok(())
    }

    fn poll(&mut self, _dma: &mut dyn Dma) {}
}

impl Drop for KernelVfio {
    fn drop(&mut self) {
        if let Some((iova, size)) = self.dma.take() {
            let mut unmap = vfio_iommu_type1_dma_unmap {
                argsz: argsz::<vfio_iommu_type1_dma_unmap>(),
                flags: 0,
                iova,
                size,
            };
            // SAFETY: a live vfio_iommu_type1_dma_unmap for the mapping made in map_dma.
            if let Err(e) =
                unsafe { ioctl_ptr(self.container.as_raw_fd(), VFIO_IOMMU_UNMAP_DMA, &mut unmap) }
            {
                tracing::warn!("{}: VFIO_IOMMU_UNMAP_DMA: {e}", self.address);
            }
        }
        if self.intx.is_some() {
            if let Err(e) = self.irq_action(VFIO_IRQ_SET_ACTION_TRIGGER, 0) {
                tracing::warn!("{}: turning INTx signalling off: {e}", self.address);
            }
        }
        for m in self.regions.iter().flat_map(|r| &r.maps) {
            // SAFETY: a mapping made in `region` and used by nothing after this.
            unsafe { libc::munmap(m.ptr.cast(), m.len as usize) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        assert!(valid_address("0000:03:00.0"));
        assert!(valid_address("0000:af:1f.7"));
        for bad in [
            "03:00.0",
            "0000:03:00",
            "0000:03:20.0",
            "0000:03:00.8",
            "x000:03:00.0",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
    }

    #[test]
    fn sparse_mmap_areas_from_the_capability_chain() {
        // A region info (32 bytes) followed by a type capability (16 bytes) that points to a
        // sparse-mmap capability with two areas.
        let mut info = vec![0u8; 32];
        let mut cap = |id: u16, next: u32, body: &[u8]| {
            info.extend_from_slice(&id.to_le_bytes());
            info.extend_from_slice(&1u16.to_le_bytes());
            info.extend_from_slice(&next.to_le_bytes());
            info.extend_from_slice(body);
        };
        cap(2, 48, &[0; 8]);
        let mut body = 2u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 4]);
        for v in [0u64, 0x2000, 0x3000, 0x1000] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        cap(VFIO_REGION_INFO_CAP_SPARSE_MMAP, 0, &body);
        assert_eq!(
            sparse_areas(&info, 32),
            Some(vec![(0, 0x2000), (0x3000, 0x1000)])
        );
        assert_eq!(sparse_areas(&info[..60], 32), None);
        assert_eq!(sparse_areas(&info, 0), None);
    }
}
